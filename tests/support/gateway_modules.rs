// The gateway example's modules, compiled into the integration tests that drive the gateway
// (`include!`d at each test crate's root, as `app` refers to its siblings as `crate::...`;
// paths are relative to this file).
// One list, so that a module added to the gateway is added to every such test at once.

#[path = "../../examples/common/mod.rs"]
mod common;

#[allow(dead_code)]
#[path = "../../examples/gateway/app.rs"]
mod app;

#[allow(dead_code)]
#[path = "../../examples/gateway/args.rs"]
mod args;

#[path = "../../examples/gateway/balance.rs"]
mod balance;

#[allow(dead_code)]
#[path = "../../examples/gateway/config.rs"]
mod config;

#[path = "../../examples/gateway/drain.rs"]
mod drain;
#[path = "../../examples/gateway/head_timeout.rs"]
mod head_timeout;
#[allow(dead_code)]
#[path = "../../examples/gateway/log.rs"]
mod log;
#[allow(dead_code)]
#[path = "../../examples/gateway/metrics.rs"]
mod metrics;
#[allow(dead_code)]
#[path = "../../examples/gateway/reload.rs"]
mod reload;
#[path = "../../examples/gateway/require_model.rs"]
mod require_model;
#[path = "../../examples/gateway/stall.rs"]
mod stall;
