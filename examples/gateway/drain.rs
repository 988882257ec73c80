//! The connections of one worker: told to finish on shutdown, cut when they wait too long for a
//! request head.
//!
//! Graceful shutdown that costs a flag check per poll of a connection: hyper-util's
//! `GracefulShutdown::watch` polls a `tokio::sync::watch` `changed()` future on every poll of
//! every connection (the waiters' mutex and a coop budget check): ~650 of the gateway's ~63k
//! instructions per request in `callgrind`, for something used once. Here a connection
//! registers its waker in an `AtomicWaker` (two compare-and-swaps) and loads a flag: ~190 (a
//! second flag, for the head timeout, is one more load).
//! The same waker closes a connection that [`Drain::cut_stale`] finds waiting for a head for too
//! long (see [`crate::head_timeout`]), before shutdown and during it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use hyper_util::server::graceful::GracefulConnection;
use pin_project_lite::pin_project;
use tokio::sync::watch;

use crate::head_timeout::Activity;

/// Below this many entries the registry is not pruned.
const MIN_PRUNE_LEN: usize = 64;

/// The connections of one server, to be told to finish when it shuts down.
///
/// [`Drain::watch`] takes `&mut self` and [`Drain::shutdown`] takes `self`: a connection
/// cannot be registered while shutdown is signalling, so the registry needs no lock, and
/// one registered before shutdown starts is always told (it registers its waker before
/// it checks the flag, and shutdown sets the flag before it wakes).
#[derive(Debug)]
pub struct Drain {
    /// Every connection watched, dead or alive; pruned of dead ones as it grows (see
    /// [`Drain::watch`]).
    signals: Vec<Weak<Signal>>,
    /// Closed once every connection's receiver (held, never polled, by [`Draining`]) is gone.
    counted: watch::Sender<()>,
}

/// What shutdown and the head timeout tell one connection.
#[derive(Debug)]
struct Signal {
    /// Set once, by [`Drain::shutdown`].
    draining: AtomicBool,
    /// Set once, by [`Drain::cut_stale`]: the connection is closed at its next poll.
    cut: AtomicBool,
    /// The connection's task, woken when `draining` or `cut` is set.
    waker: AtomicWaker,
    /// The connection's requests, counted by its service.
    activity: Arc<Activity>,
}

impl Drain {
    /// A registry with no connections.
    pub fn new() -> Self {
        // The first receiver is dropped at once: only connections count.
        let (counted, _) = watch::channel(());
        Self {
            signals: Vec::new(),
            counted,
        }
    }

    /// Wraps an accepted connection so that [`Drain::shutdown`] can tell it to finish, and
    /// [`Drain::cut_stale`] can close it once `activity` (counted by its service) says it has
    /// waited too long for a head.
    ///
    /// The registry is pruned of finished connections when it holds more than twice as many
    /// entries as there are live connections (and at least 64): its size stays within about
    /// twice the peak of live connections, at an amortized constant cost per connection.
    pub fn watch<C: GracefulConnection>(
        &mut self,
        connection: C,
        activity: Arc<Activity>,
    ) -> Draining<C> {
        let live = self.counted.receiver_count();
        if self.signals.len() >= MIN_PRUNE_LEN && self.signals.len() > 2 * live {
            self.signals.retain(|signal| signal.strong_count() > 0);
        }
        let signal = Arc::new(Signal {
            draining: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            activity,
        });
        self.signals.push(Arc::downgrade(&signal));
        Draining {
            connection,
            signal,
            told: false,
            _counted: self.counted.subscribe(),
        }
    }

    /// Takes one look at every live connection's [`Activity`] (every half head timeout) and
    /// closes those it finds stale.
    pub fn cut_stale(&self) {
        for signal in self.signals.iter().filter_map(Weak::upgrade) {
            if signal.activity.look() {
                signal.cut.store(true, Ordering::Release);
                signal.waker.wake();
            }
        }
    }

    /// Tells every connection to finish (in-flight requests are answered, idle keep-alive
    /// connections close), then waits until every connection's future has completed or been
    /// dropped, still closing stale connections ([`Drain::cut_stale`]) on each tick of
    /// `looks`, the accept loop's (the same phase, so that no connection is cut sooner than
    /// without shutdown). hyper's graceful shutdown closes a connection that has read nothing
    /// and only turns keep-alive off on one that holds part of a request head: without the
    /// looks, a client that sent half a head held shutdown up for ever.
    pub async fn shutdown(self, looks: &mut tokio::time::Interval) {
        for signal in self.signals.iter().filter_map(Weak::upgrade) {
            signal.draining.store(true, Ordering::Release);
            signal.waker.wake();
        }
        let mut closed = std::pin::pin!(self.counted.closed());
        loop {
            tokio::select! {
                () = &mut closed => return,
                _ = looks.tick() => self.cut_stale(),
            }
        }
    }

    /// The registry's length, dead entries included (read by `tests/gateway.rs`).
    #[cfg(test)]
    #[allow(dead_code)]
    pub fn registered(&self) -> usize {
        self.signals.len()
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

pin_project! {
    /// A connection watched by a [`Drain`]: it starts hyper's graceful shutdown of the
    /// connection once the drain says so (`told`), ends (`None`, the connection dropped and so
    /// closed) once cut, and keeps the connection counted in [`Drain::shutdown`]'s wait until
    /// dropped (`_counted`, never polled).
    pub struct Draining<C> {
        #[pin]
        connection: C,
        signal: Arc<Signal>,
        told: bool,
        _counted: watch::Receiver<()>,
    }
}

impl<C: GracefulConnection> Future for Draining<C> {
    type Output = Option<C::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // Registered before the flags are read: a shutdown or a cut that sets its flag after
        // these reads wakes the waker just registered.
        this.signal.waker.register(cx.waker());
        if this.signal.cut.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        if !*this.told && this.signal.draining.load(Ordering::Acquire) {
            *this.told = true;
            this.connection.as_mut().graceful_shutdown();
        }
        this.connection.poll(cx).map(Some)
    }
}
