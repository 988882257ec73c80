//! Unit tests of the response rules, per provider shape.
