//! The runtime of the targets that drive a service stack.

/// One current-thread runtime for every input, its clock paused: a timer (a retry's backoff)
/// moves the clock on as soon as the runtime is idle, so a wait costs no time.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
    })
}
