//! OpenRouter-style routing for [reqwest] and [reqwest-middleware] client code.
//!
//! [reqwest-middleware]: reqwest_middleware

mod convert;
mod middleware;
mod service;

pub use self::middleware::FallbackMiddleware;
pub use self::service::{ReqwestMiddlewareService, ReqwestService, ResponseFuture};
