//! Shared model health. (being written)
