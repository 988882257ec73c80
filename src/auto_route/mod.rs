//! `AutoRouteLayer`. (being written)
#![allow(missing_docs, missing_debug_implementations)]
/// placeholder
pub struct AutoRoute;
/// placeholder
pub struct AutoRouteLayer;
