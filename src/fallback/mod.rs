//! `FallbackLayer`. (being written)
#![allow(missing_docs, missing_debug_implementations)]
/// placeholder
pub struct Fallback;
/// placeholder
pub struct FallbackLayer;
