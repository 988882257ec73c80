//! Code shared by the examples (and their tests): simulated providers and the routing upstream
//! client. Included with `#[path = "common/mod.rs"] mod common;`.
#![allow(dead_code, unreachable_pub)]

pub mod providers;
pub mod upstream;
