//! Shared model health: cooldowns learned from rate limits and downtime.
//!
//! Clones of a [`FallbackLayer`](crate::fallback::FallbackLayer) share one [`Health`] through an
//! `Arc`, and an [`AutoRouteLayer`](crate::auto_route::AutoRouteLayer) can be given the same
//! one. A model that answered `RateLimited` (for as long as the upstream asked, or a short
//! default without any word on it), or failed with `Downtime` several times in a row, *cools
//! down*: it is tried last in fallback chains and ranked last by the auto router until the
//! cooldown ends.
//!
//! How long the upstream asked is read by [`wait_hint`](crate::classify::wait_hint), first
//! source first: `retry-after-ms` / `x-ms-retry-after-ms` / `Retry-After`; Gemini's and
//! Vertex AI's `RetryInfo.retryDelay` in the JSON error body (or, for a 200 event stream, in the
//! error event the layer classified it by); and, for a rate limit only, when
//! the limit that ran out resets: `x-ratelimit-remaining-*` at `0` with its
//! `x-ratelimit-reset-*` (`20s`, `6m0s`: OpenAI, Groq, Together, Fireworks...) or
//! `anthropic-ratelimit-*-remaining` with its `-reset` timestamp; last, for a rate limit or
//! a 503 / 529 only (an error event in a 200 stream counts by its own `code`), a delay its
//! error message states ("Please retry in 31.44s.", "Please
//! retry after 8 seconds.", "try again in 1m 30s"). A 429 with only
//! `x-ratelimit-reset-requests: 20s` thus cools its model for 20 s, not for the default 5.
//! A request is never refused on this state alone.
//!
//! A streamed answer that starts well counts when it ends, not at its first event (one that
//! fails before its first event counts at once, as any failure): a stream that breaks after
//! its first byte reached the caller (a read error, an end in the middle of an event, or a clean
//! end without the event that ends a stream in its API: `[DONE]`, a finish reason...) is a
//! `Downtime` failure of its model, observed when the break happens; one that ends well is a
//! success. A model whose streams keep breaking midway therefore cools down like one that
//! fails outright. A stream the caller drops before its end tells nothing.
//!
//! [`InMemoryHealth`] is the default. The state sits behind the small [`Health`] trait so that
//! several gateway instances can later share it through an existing store (Redis, ...).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower_llm_router::health::{Health, InMemoryHealth, Observation};
//! use tower_llm_router::ErrorClass;
//!
//! let health = Arc::new(InMemoryHealth::new());
//! assert!(!health.is_cooling_down("gpt-4o"));
//! health.observe("gpt-4o", Observation::failed(ErrorClass::RateLimited, Some(Duration::from_secs(30))));
//! assert!(health.is_cooling_down("gpt-4o"));
//! health.observe("gpt-4o", Observation::succeeded());
//! assert!(!health.is_cooling_down("gpt-4o"));
//! ```

use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::{fmt, ptr};

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::ErrorClass;

/// What one attempt on a model showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// `None` for a success, the failure's class otherwise.
    pub class: Option<ErrorClass>,
    /// How long the upstream asked to wait, if it said: its `Retry-After` (or the millisecond
    /// variants), Gemini's `RetryInfo` delay, when the rate limit it hit resets, or the delay
    /// the message of a rate limit, a 503 or a 529 states
    /// ([`wait_hint`](crate::classify::wait_hint)).
    pub retry_after: Option<Duration>,
    /// How long ago the attempt was sent, when known (see [`sent_ago`](Self::sent_ago)).
    pub sent_ago: Option<Duration>,
}

impl Observation {
    /// A successful answer.
    pub const fn succeeded() -> Self {
        Self {
            class: None,
            retry_after: None,
            sent_ago: None,
        }
    }

    /// A failed answer of the given class.
    pub const fn failed(class: ErrorClass, retry_after: Option<Duration>) -> Self {
        Self {
            class: Some(class),
            retry_after,
            sent_ago: None,
        }
    }

    /// Says how long ago the attempt was sent. A success of an attempt sent before a failure
    /// says nothing about the model since (the request was let in before the rate limit or the
    /// outage), so [`InMemoryHealth`] lets it end only a cooldown that began before the attempt
    /// was sent, and reset only a count of downtime failures all seen before it was sent.
    /// Without it, a success ends any cooldown and resets any count.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_llm_router::health::{Health, InMemoryHealth, Observation};
    /// use tower_llm_router::ErrorClass;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let health = InMemoryHealth::new();
    /// tokio::time::advance(Duration::from_secs(5)).await;
    /// health.observe("gpt-4o", Observation::failed(ErrorClass::RateLimited, Some(Duration::from_secs(30))));
    /// // Sent 10 s ago, before the 429: the cooldown stays.
    /// health.observe("gpt-4o", Observation::succeeded().sent_ago(Duration::from_secs(10)));
    /// assert!(health.is_cooling_down("gpt-4o"));
    /// // Sent after it: the model answers again.
    /// tokio::time::advance(Duration::from_secs(2)).await;
    /// health.observe("gpt-4o", Observation::succeeded().sent_ago(Duration::from_secs(1)));
    /// assert!(!health.is_cooling_down("gpt-4o"));
    /// # }
    /// ```
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub const fn sent_ago(mut self, ago: Duration) -> Self {
        self.sent_ago = Some(ago);
        self
    }
}

/// Shared knowledge about which models should be tried last.
///
/// Implementations must be cheap to read: [`is_cooling_down`](Health::is_cooling_down) is called
/// for every model of every routed request.
pub trait Health: Send + Sync + fmt::Debug + 'static {
    /// Whether `model` is cooling down now.
    fn is_cooling_down(&self, model: &str) -> bool;

    /// Records what an attempt on `model` showed.
    fn observe(&self, model: &str, observation: Observation);
}

/// The in-memory [`Health`]: per-model atomics in a map read as a snapshot, without a lock.
///
/// * `RateLimited` cools a model down for as long as the upstream asked
///   ([`Observation::retry_after`]: its `Retry-After`, Gemini's `RetryInfo` delay, the
///   reset of the exhausted limit from `x-ratelimit-reset-*` / `anthropic-ratelimit-*-reset`,
///   or the delay its message states, see [`wait_hint`](crate::classify::wait_hint); capped by
///   [`max_cooldown`](InMemoryHealth::max_cooldown)), or for
///   [`rate_limit_cooldown`](InMemoryHealth::rate_limit_cooldown) without any of them.
/// * `Downtime` [`downtime_threshold`](InMemoryHealth::downtime_threshold) times in a row cools
///   it down for the last failure's `Retry-After`, `RetryInfo` delay or, for a 503 or 529, the
///   delay its message states (an upstream may say how long its outage lasts; a rate limit's
///   reset does not count for downtime; capped by
///   [`max_cooldown`](InMemoryHealth::max_cooldown)), or for
///   [`downtime_cooldown`](InMemoryHealth::downtime_cooldown) without one.
/// * A second cooldown never shortens the first (the later deadline wins).
/// * A success resets the count and ends the cooldown, unless its attempt was sent before the
///   latest downtime failure (for the count) or before the cooldown began (for the cooldown)
///   ([`Observation::sent_ago`]): requests in flight when a model answered 429 or went down
///   were let in before, and their successes neither cut a `Retry-After` short nor keep an
///   outage from counting.
///
/// Only failures create entries, and at most [`max_models`](InMemoryHealth::max_models) models
/// are tracked, so clients sending arbitrary model names cannot grow the map without bound.
/// When the map is full, a model failing for the first time still gets an entry:
///
/// * The entries that hold nothing (no cooldown left, no downtime failure counted: models
///   whose failures are over) make room: all of them leave the map at once.
/// * If every entry still holds something, one leaves: a model only counting downtime
///   failures (none of today's routing depends on it; the one whose latest failure is
///   oldest), else the cooling model whose cooldown ends first. The new failure is the
///   freshest news about the upstreams, and that entry had the least left to say: its model
///   is tried in its turn again, and cools down again if it fails again.
///
/// Names only reach the map when an upstream rate-limits or fails them, and an allow-list
/// (`FallbackLayer::allow_models`) keeps names of no model you serve from there: with fewer
/// models allowed than `max_models`, no entry that holds something ever leaves. Without one,
/// a client whose made-up names the upstream fails can end cooldowns early, as above.
///
/// No call a request makes takes a lock. While no model is cooling down or counting downtime
/// failures, both calls are a few atomic loads (about 6 ns per request, `benches/health.rs`),
/// also after models failed and recovered. While one is, lookups read a snapshot of the map
/// ([`arc_swap`]): nothing the other CPUs write to, so two workers do not slow each other.
/// Only a model's first failure takes a lock, to copy the map with the model added (and, when
/// it is full, to choose the entries that leave it).
pub struct InMemoryHealth {
    epoch: Instant,
    /// Replaced whole, never changed in place: readers load the current snapshot.
    models: ArcSwap<Models>,
    /// Held while a new model is added, so that two first failures do not copy the map at
    /// once and the bound holds. Entries leave the map only under it.
    adding: Mutex<()>,
    /// Models with a cooldown deadline set (cleared by a success, or by a lookup that finds it
    /// past). While there is none, a lookup answers without loading the snapshot: a model that
    /// failed once an hour ago and has been asked about since costs a request nothing.
    cooling: AtomicUsize,
    /// Models whose count of consecutive downtime failures is not zero. While there is none
    /// (nor a cooldown), a success has nothing to reset.
    counting: AtomicUsize,
    downtime_threshold: u32,
    downtime_cooldown: Duration,
    rate_limit_cooldown: Duration,
    max_cooldown: Duration,
    max_models: usize,
}

#[derive(Debug, Default)]
struct ModelState {
    /// Milliseconds since `epoch` until which the model cools down; 0 = not cooling.
    cooling_until_ms: AtomicU64,
    /// Microseconds since `epoch` when the latest cooldown was set: a success of an attempt
    /// sent before it does not end it.
    cooled_at_us: AtomicU64,
    /// Microseconds since `epoch` when the latest downtime failure was seen: a success of an
    /// attempt sent before it does not reset the count.
    failed_at_us: AtomicU64,
    consecutive_downtime: AtomicU32,
    /// Set while the entry may be leaving the map, and for good once it has left: a failure
    /// recorded on it looks afterwards (see [`InMemoryHealth::record_failure`]).
    evicted: AtomicBool,
}

impl ModelState {
    /// Whether the entry says nothing about its model at `now_ms`: no cooldown left, no
    /// downtime failure counted.
    fn holds_nothing(&self, now_ms: u64) -> bool {
        self.consecutive_downtime.load(Ordering::Acquire) == 0
            && self.cooling_until_ms.load(Ordering::Acquire) <= now_ms
    }

    /// Orders the entries when every one holds something: the lowest leaves. Entries only
    /// counting downtime failures first (no routing decision depends on them yet), the oldest
    /// latest failure first; then cooling ones, the earliest end first.
    fn eviction_rank(&self, now_ms: u64) -> (bool, u64) {
        let until = self.cooling_until_ms.load(Ordering::Acquire);
        if until > now_ms {
            (true, until)
        } else {
            (false, self.failed_at_us.load(Ordering::Acquire))
        }
    }
}

/// The tracked models by name, replaced whole.
type Models = HashMap<Arc<str>, Arc<ModelState>>;

impl InMemoryHealth {
    /// A health store with the defaults below.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            models: ArcSwap::default(),
            adding: Mutex::new(()),
            cooling: AtomicUsize::new(0),
            counting: AtomicUsize::new(0),
            downtime_threshold: 3,
            downtime_cooldown: Duration::from_secs(30),
            rate_limit_cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(600),
            max_models: 4096,
        }
    }

    /// Consecutive `Downtime` failures that start a cooldown. Defaults to `3`; `0` counts as
    /// `1` (the first failure starts one).
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn downtime_threshold(mut self, failures: u32) -> Self {
        self.downtime_threshold = failures.max(1);
        self
    }

    /// How long a model that kept failing with `Downtime` cools down, unless its last failure
    /// asked for a wait (`Retry-After`, `RetryInfo`, a 503's "retry in 20 seconds"). Defaults to 30 seconds, the window OpenRouter's load balancer uses
    /// for "significant outages".
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn downtime_cooldown(mut self, cooldown: Duration) -> Self {
        self.downtime_cooldown = cooldown;
        self
    }

    /// Cooldown after a `RateLimited` answer that says neither how long to wait nor when its
    /// limit resets. Defaults to 5 seconds, LiteLLM's default cooldown.
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn rate_limit_cooldown(mut self, cooldown: Duration) -> Self {
        self.rate_limit_cooldown = cooldown;
        self
    }

    /// The longest cooldown an upstream can ask for (`Retry-After`, a rate limit's reset,
    /// Gemini's `RetryInfo`). Defaults to 10 minutes. The
    /// configured cooldowns ([`rate_limit_cooldown`](Self::rate_limit_cooldown),
    /// [`downtime_cooldown`](Self::downtime_cooldown)) are not capped by it.
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn max_cooldown(mut self, cap: Duration) -> Self {
        self.max_cooldown = cap;
        self
    }

    /// How many models are tracked at most: a full map makes room for a model failing for the
    /// first time by dropping the entries that hold nothing, else the one that holds least (see
    /// [`InMemoryHealth`]). `0` tracks none: nothing ever cools down. Defaults to `4096`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_llm_router::health::{Health, InMemoryHealth, Observation};
    /// use tower_llm_router::ErrorClass;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let limited =
    ///     |secs| Observation::failed(ErrorClass::RateLimited, Some(Duration::from_secs(secs)));
    /// let health = InMemoryHealth::new().max_models(2);
    /// health.observe("a", limited(10));
    /// health.observe("b", limited(60));
    /// // Both cooling: the cooldown that ends first makes room.
    /// health.observe("c", limited(30));
    /// assert!(!health.is_cooling_down("a"));
    /// assert!(health.is_cooling_down("b") && health.is_cooling_down("c"));
    /// // Once they are over, the entries of "b" and "c" hold nothing and make room.
    /// tokio::time::advance(Duration::from_secs(61)).await;
    /// health.observe("d", limited(30));
    /// health.observe("e", limited(30));
    /// assert!(health.is_cooling_down("d") && health.is_cooling_down("e"));
    /// # }
    /// ```
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn max_models(mut self, max: usize) -> Self {
        self.max_models = max;
        self
    }

    /// When `model`'s cooldown ends, if it is cooling down now.
    pub fn cooling_until(&self, model: &str) -> Option<Instant> {
        if self.cooling.load(Ordering::Acquire) == 0 {
            return None;
        }
        let until = self.with_state(model, |state| {
            state.cooling_until_ms.load(Ordering::Acquire)
        })?;
        let until = self.epoch + Duration::from_millis(until);
        (until > Instant::now()).then_some(until)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether a success's attempt was sent at or after `since` (microseconds since `epoch`),
    /// or does not say when it was sent: only then does it say something about the model since.
    fn sent_since(&self, observation: Observation, since: &AtomicU64) -> bool {
        let Some(ago) = observation.sent_ago else {
            return true;
        };
        let ago = u64::try_from(ago.as_micros()).unwrap_or(u64::MAX);
        let sent = self.now_us().saturating_sub(ago);
        sent >= since.load(Ordering::Acquire)
    }

    /// Whether a success may have anything to reset: a model counting downtime failures, or one
    /// with a cooldown deadline.
    fn anything_to_reset(&self) -> bool {
        self.counting.load(Ordering::Acquire) != 0 || self.cooling.load(Ordering::Acquire) != 0
    }

    /// Clears `state`'s cooldown deadline unless another thread changed it first, and counts
    /// the model out of `cooling` if this call cleared it.
    fn clear_cooldown(&self, state: &ModelState, deadline: u64) {
        let cleared = state.cooling_until_ms.compare_exchange(
            deadline,
            0,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if deadline != 0 && cleared.is_ok() {
            self.cooling.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// `f` of `model`'s state in the current snapshot: no reference count taken (two more
    /// atomic writes on a line every worker's requests write). Callers first check `cooling`
    /// or `counting`: while both are 0 (no model ever failed, the usual state, or every
    /// failure is over) there is nothing to look up.
    fn with_state<R>(&self, model: &str, f: impl FnOnce(&ModelState) -> R) -> Option<R> {
        self.models.load().get(model).map(|state| f(state))
    }

    /// Records a failure of `model` (a rate limit or downtime), adding an entry for it if it
    /// has none.
    ///
    /// A failure recorded on an entry that is leaving the map (see [`make_room`]) is not lost:
    /// the fences here and in [`make_room`] make sure that either the evicting thread sees the
    /// failure and keeps the entry, or this thread sees the entry marked and, under the lock,
    /// once the eviction is done, records the failure again where the model's entry now is.
    ///
    /// [`make_room`]: Self::make_room
    fn record_failure(&self, model: &str, observation: Observation) {
        // A model failing again is already there: no lock.
        let stale = match self.models.load().get(model) {
            Some(state) => {
                self.fail(state, observation);
                fence(Ordering::SeqCst);
                if !state.evicted.load(Ordering::Relaxed) {
                    return;
                }
                Some(Arc::clone(state))
            }
            None => None,
        };
        self.record_locked(model, stale.as_deref(), observation);
    }

    /// Records a failure under the `adding` lock: of a model without an entry, or again, of one
    /// whose entry `stale` was marked for eviction while the failure was recorded there.
    fn record_locked(&self, model: &str, stale: Option<&ModelState>, observation: Observation) {
        let _adding = self.adding.lock().unwrap_or_else(|e| e.into_inner());
        let models = self.models.load_full();
        let current = models.get(model);
        if let Some(stale) = stale {
            if current.is_some_and(|state| ptr::eq(&**state, stale)) {
                // The eviction saw the failure and kept the entry: it is recorded.
                return;
            }
            // Gone: what landed on it after it left the map is taken back (each failure there
            // is recorded again by its own thread, as this one is below).
            self.forget(stale);
        }
        if let Some(state) = current {
            // Added by another thread since, or again after the eviction.
            self.fail(state, observation);
            return;
        }
        if self.max_models == 0 {
            return;
        }
        let state = Arc::new(ModelState::default());
        // Before the map is published: a lookup never finds the new entry empty.
        self.fail(&state, observation);
        let (mut next, evicted) = if models.len() < self.max_models {
            // Keys and states are `Arc`s: the copy allocates only the table.
            (HashMap::clone(&models), Vec::new())
        } else {
            self.make_room(&models)
        };
        next.insert(Arc::from(model), state);
        self.models.store(Arc::new(next));
        for state in &evicted {
            self.forget(state);
        }
    }

    /// A copy of the full map without the entries that make room for one more model, and those
    /// entries (already marked `evicted`). Called under the `adding` lock.
    fn make_room(&self, models: &Models) -> (Models, Vec<Arc<ModelState>>) {
        let now = self.now_ms();
        Self::mark_idle(models, now);
        // Pairs with the fence in `record_failure`: a failure recorded on a marked entry is
        // seen by `sweep` (the entry stays) or its thread sees the mark (and records it again).
        fence(Ordering::SeqCst);
        self.sweep(models, now)
    }

    /// Marks the entries that hold nothing at `now_ms` as leaving.
    fn mark_idle(models: &Models, now_ms: u64) {
        for state in models.values() {
            if state.holds_nothing(now_ms) {
                state.evicted.store(true, Ordering::Relaxed);
            }
        }
    }

    /// [`make_room`](Self::make_room) once the idle entries are marked: the marked ones that
    /// still hold nothing leave, the others are unmarked; then, if that is not room enough, the
    /// entry that holds least leaves.
    fn sweep(&self, models: &Models, now_ms: u64) -> (Models, Vec<Arc<ModelState>>) {
        // Copied as the insert path copies it (no key hashed again), then thinned in place.
        let mut kept = HashMap::clone(models);
        let mut evicted = Vec::new();
        kept.retain(|_, state| {
            // Only this thread, under the lock, marks entries still in the map.
            if !state.evicted.load(Ordering::Relaxed) {
                return true;
            }
            if state.holds_nothing(now_ms) {
                evicted.push(Arc::clone(state));
                return false;
            }
            state.evicted.store(false, Ordering::Relaxed);
            true
        });
        if kept.len() >= self.max_models {
            // Every entry holds something: the one that holds least leaves, with what it holds
            // (a failure recorded on it before its mark included).
            let least = kept
                .iter()
                .min_by_key(|(_, state)| state.eviction_rank(now_ms))
                .map(|(name, _)| Arc::clone(name));
            if let Some(state) = least.and_then(|name| kept.remove(&name)) {
                state.evicted.store(true, Ordering::Relaxed);
                evicted.push(state);
            }
        }
        (kept, evicted)
    }

    /// Ends what an entry that left the map holds: its cooldown and its count, each counted out
    /// of `cooling` / `counting` by whichever thread takes it to 0 (this one, or a lookup or a
    /// success that got there first), so never twice. A failure recorded on the entry after
    /// this reads the `evicted` mark (its update reads what this one wrote).
    fn forget(&self, state: &ModelState) {
        if state.cooling_until_ms.swap(0, Ordering::AcqRel) != 0 {
            self.cooling.fetch_sub(1, Ordering::AcqRel);
        }
        if state.consecutive_downtime.swap(0, Ordering::AcqRel) != 0 {
            self.counting.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Records a rate limit or a downtime failure on `state`.
    fn fail(&self, state: &ModelState, observation: Observation) {
        match observation.class {
            Some(ErrorClass::RateLimited) => {
                let cooldown = self
                    .asked_for(observation)
                    .unwrap_or(self.rate_limit_cooldown);
                self.cool_down(state, cooldown);
            }
            Some(ErrorClass::Downtime) => {
                // Set first: a success that reads the new count sees when it was seen.
                state
                    .failed_at_us
                    .fetch_max(self.now_us(), Ordering::AcqRel);
                // Saturating: after 2^32 failures in a row a wrapped count would read 0
                // and count the model into `counting` a second time.
                let before = state
                    .consecutive_downtime
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        Some(n.saturating_add(1))
                    })
                    .unwrap_or_else(|n| n);
                if before == 0 {
                    self.counting.fetch_add(1, Ordering::AcqRel);
                }
                let failures = before.saturating_add(1);
                if failures >= self.downtime_threshold {
                    let cooldown = self
                        .asked_for(observation)
                        .unwrap_or(self.downtime_cooldown);
                    self.cool_down(state, cooldown);
                }
            }
            _ => {}
        }
    }

    /// The wait the upstream asked for, capped by [`max_cooldown`](Self::max_cooldown). Only what
    /// an upstream asks for is capped: the configured cooldowns apply as they are set.
    fn asked_for(&self, observation: Observation) -> Option<Duration> {
        observation
            .retry_after
            .map(|asked| asked.min(self.max_cooldown))
    }

    fn cool_down(&self, state: &ModelState, cooldown: Duration) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX));
        // Set first: a success that reads the new deadline sees when it began.
        state
            .cooled_at_us
            .fetch_max(self.now_us(), Ordering::AcqRel);
        // The later deadline wins: a shorter second cooldown must not cut the first short.
        let before = state.cooling_until_ms.fetch_max(until, Ordering::AcqRel);
        if before == 0 && until != 0 {
            self.cooling.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Default for InMemoryHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InMemoryHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tracked = self.models.load().len();
        f.debug_struct("InMemoryHealth")
            .field("tracked_models", &tracked)
            .field("downtime_threshold", &self.downtime_threshold)
            .field("downtime_cooldown", &self.downtime_cooldown)
            .field("rate_limit_cooldown", &self.rate_limit_cooldown)
            .field("max_cooldown", &self.max_cooldown)
            .finish()
    }
}

impl Health for InMemoryHealth {
    fn is_cooling_down(&self, model: &str) -> bool {
        if self.cooling.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.with_state(model, |state| {
            let until = state.cooling_until_ms.load(Ordering::Acquire);
            if until == 0 {
                return false;
            }
            let cooling = until > self.now_ms();
            if !cooling {
                // Past: cleared, so that once every ended cooldown has been seen, lookups no
                // longer load the snapshot.
                self.clear_cooldown(state, until);
            }
            cooling
        })
        .unwrap_or(false)
    }

    fn observe(&self, model: &str, observation: Observation) {
        match observation.class {
            None if !self.anything_to_reset() => {}
            None => {
                self.with_state(model, |state| {
                    // Read first: most successes have nothing to reset, and a write takes the
                    // line away from the other CPUs' caches.
                    if state.consecutive_downtime.load(Ordering::Acquire) != 0
                        && self.sent_since(observation, &state.failed_at_us)
                        && state.consecutive_downtime.swap(0, Ordering::AcqRel) != 0
                    {
                        self.counting.fetch_sub(1, Ordering::AcqRel);
                    }
                    let until = state.cooling_until_ms.load(Ordering::Acquire);
                    if until != 0 && self.sent_since(observation, &state.cooled_at_us) {
                        self.clear_cooldown(state, until);
                    }
                });
            }
            Some(ErrorClass::RateLimited | ErrorClass::Downtime) => {
                self.record_failure(model, observation);
            }
            // Moderation, context length and other failures say something about the request,
            // not about the model's health.
            Some(_) => {}
        }
    }
}

impl<H: Health + ?Sized> Health for Arc<H> {
    fn is_cooling_down(&self, model: &str) -> bool {
        (**self).is_cooling_down(model)
    }

    fn observe(&self, model: &str, observation: Observation) {
        (**self).observe(model, observation)
    }
}

/// Moves the models that are cooling down to the end of `chain`, keeping the order within
/// each group. Returns the models it passed over: those cooling down that stood before a model
/// that is well, in chain order (empty, and not allocated, when none did; a model cooling down
/// after every well one keeps its place and is not passed over).
pub(crate) fn healthy_first<T: AsRef<str> + Clone>(health: &dyn Health, chain: &mut [T]) -> Vec<T> {
    // Chains are short (capped at a handful of models): an insertion-style stable partition
    // costs nothing and needs no allocation.
    let mut healthy = 0;
    let mut passed_over = Vec::new();
    for i in 0..chain.len() {
        if !health.is_cooling_down(chain[i].as_ref()) {
            // In place already while no model before it cools down: the usual case.
            if healthy != i {
                // `chain[healthy..i]` holds every model cooling down so far, in chain order;
                // those after the ones already counted were met since the last well model.
                passed_over.extend_from_slice(&chain[healthy + passed_over.len()..i]);
                chain[healthy..=i].rotate_right(1);
            }
            healthy += 1;
        }
    }
    passed_over
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_limit_cools_down_for_retry_after_then_recovers() {
        let health = InMemoryHealth::new();
        health.observe(
            "a",
            Observation::failed(ErrorClass::RateLimited, Some(Duration::from_secs(10))),
        );
        assert!(health.is_cooling_down("a"));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!health.is_cooling_down("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn downtime_needs_consecutive_failures() {
        let health = InMemoryHealth::new().downtime_threshold(3);
        for _ in 0..2 {
            health.observe("m", Observation::failed(ErrorClass::Downtime, None));
        }
        assert!(!health.is_cooling_down("m"));
        health.observe("m", Observation::succeeded());
        for _ in 0..2 {
            health.observe("m", Observation::failed(ErrorClass::Downtime, None));
        }
        assert!(!health.is_cooling_down("m"), "a success resets the count");
        health.observe("m", Observation::failed(ErrorClass::Downtime, None));
        assert!(health.is_cooling_down("m"));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!health.is_cooling_down("m"));
    }

    /// The defaults the setters and the README give: a rate limit without a wait cools for
    /// 5 s, three downtime failures in a row for 30 s, and an upstream's wait is capped at
    /// 10 minutes.
    #[tokio::test(start_paused = true)]
    async fn the_defaults_are_the_documented_ones() {
        let health = InMemoryHealth::new();
        let now = Instant::now();
        let cooling_for = |model| health.cooling_until(model).map(|until| until - now);
        let secs = |secs| Some(Duration::from_secs(secs));
        let limited = |wait| Observation::failed(ErrorClass::RateLimited, wait);
        let down = || Observation::failed(ErrorClass::Downtime, None);
        health.observe("limited", limited(None));
        assert_eq!(cooling_for("limited"), secs(5));
        health.observe("down", down());
        health.observe("down", down());
        assert_eq!(cooling_for("down"), None, "two failures are not three");
        health.observe("down", down());
        assert_eq!(cooling_for("down"), secs(30));
        health.observe("capped", limited(secs(86_400)));
        assert_eq!(cooling_for("capped"), secs(600));
    }

    /// `downtime_threshold(0)` counts as 1: the first downtime failure starts a cooldown.
    #[test]
    fn a_zero_downtime_threshold_counts_as_one() {
        let health = InMemoryHealth::new().downtime_threshold(0);
        health.observe("m", Observation::failed(ErrorClass::Downtime, None));
        assert!(health.is_cooling_down("m"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_second_cooldown_keeps_the_first_deadline() {
        let health = InMemoryHealth::new();
        let limited =
            |secs| Observation::failed(ErrorClass::RateLimited, Some(Duration::from_secs(secs)));
        health.observe("m", limited(60));
        health.observe("m", limited(1));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(health.is_cooling_down("m"));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_capped() {
        let health = InMemoryHealth::new().max_cooldown(Duration::from_secs(60));
        health.observe(
            "m",
            Observation::failed(ErrorClass::RateLimited, Some(Duration::from_secs(86_400))),
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!health.is_cooling_down("m"));
    }

    /// Repeated downtime cools a model down for the last failure's `Retry-After` when it sent
    /// one (capped), else for `downtime_cooldown`.
    #[tokio::test(start_paused = true)]
    async fn repeated_downtime_cools_down_for_its_retry_after() {
        let health = InMemoryHealth::new()
            .downtime_threshold(2)
            .downtime_cooldown(Duration::from_secs(30))
            .max_cooldown(Duration::from_secs(60));
        let down = |secs: Option<u64>| {
            Observation::failed(ErrorClass::Downtime, secs.map(Duration::from_secs))
        };
        for (model, retry_after, cooling) in [("brief", Some(2), 2), ("long", Some(600), 60)] {
            health.observe(model, down(None));
            health.observe(model, down(retry_after));
            assert_eq!(
                health.cooling_until(model),
                Some(tokio::time::Instant::now() + Duration::from_secs(cooling)),
                "{model}"
            );
        }
        health.observe("plain", down(None));
        health.observe("plain", down(None));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(health.is_cooling_down("plain") && !health.is_cooling_down("brief"));
    }

    /// `max_cooldown` caps what an upstream's `Retry-After` asks for, not the cooldowns the
    /// store is configured with.
    #[tokio::test(start_paused = true)]
    async fn configured_cooldowns_longer_than_the_retry_after_cap_are_kept() {
        let health = InMemoryHealth::new()
            .max_cooldown(Duration::from_secs(60))
            .rate_limit_cooldown(Duration::from_secs(120))
            .downtime_threshold(1)
            .downtime_cooldown(Duration::from_secs(300));
        health.observe(
            "limited",
            Observation::failed(ErrorClass::RateLimited, None),
        );
        health.observe("down", Observation::failed(ErrorClass::Downtime, None));
        tokio::time::advance(Duration::from_secs(90)).await;
        assert!(
            health.is_cooling_down("limited"),
            "120 s configured, not 60"
        );
        assert!(health.is_cooling_down("down"), "300 s configured, not 60");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!health.is_cooling_down("limited"));
        tokio::time::advance(Duration::from_secs(180)).await;
        assert!(!health.is_cooling_down("down"));
    }

    #[test]
    fn request_classes_do_not_cool_a_model_down() {
        let health = InMemoryHealth::new();
        for class in [
            ErrorClass::Moderation,
            ErrorClass::ContextLength,
            ErrorClass::Other,
        ] {
            health.observe("m", Observation::failed(class, None));
        }
        assert!(!health.is_cooling_down("m"));
    }

    /// `cooling` and `counting` count exactly the tracked entries with a cooldown deadline set
    /// and with downtime failures counted, and no tracked entry is marked as leaving.
    fn assert_counters_match_the_map(health: &InMemoryHealth) {
        let models = health.models.load();
        let set = |field: fn(&ModelState) -> bool| models.values().filter(|s| field(s)).count();
        assert_eq!(
            health.cooling.load(Ordering::Acquire),
            set(|s| s.cooling_until_ms.load(Ordering::Acquire) != 0)
        );
        assert_eq!(
            health.counting.load(Ordering::Acquire),
            set(|s| s.consecutive_downtime.load(Ordering::Acquire) != 0)
        );
        assert_eq!(set(|s| s.evicted.load(Ordering::Acquire)), 0);
    }

    fn tracked(health: &InMemoryHealth) -> Vec<String> {
        let mut names: Vec<String> = health.models.load().keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }

    fn limited(secs: u64) -> Observation {
        Observation::failed(ErrorClass::RateLimited, Some(Duration::from_secs(secs)))
    }

    fn down() -> Observation {
        Observation::failed(ErrorClass::Downtime, None)
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_map_drops_the_entries_that_hold_nothing() {
        let health = InMemoryHealth::new().max_models(2);
        // A cooldown that has ended, not looked up since: still counted in `cooling`.
        health.observe("over", limited(1));
        // A downtime failure that a success reset.
        health.observe("reset", down());
        health.observe("reset", Observation::succeeded());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(health.cooling.load(Ordering::Acquire), 1);
        health.observe("new", limited(10));
        assert!(health.is_cooling_down("new"));
        assert_eq!(tracked(&health), ["new"]);
        assert_counters_match_the_map(&health);
        // Both left at once: the next model needs no eviction.
        health.observe("next", limited(10));
        assert!(health.is_cooling_down("new") && health.is_cooling_down("next"));
        assert_counters_match_the_map(&health);
    }

    /// When every entry holds something, a model only counting downtime failures leaves first
    /// (the oldest latest failure first), then the cooling model whose cooldown ends first.
    #[tokio::test(start_paused = true)]
    async fn when_every_entry_holds_something_the_one_holding_least_leaves() {
        let health = InMemoryHealth::new().max_models(2).downtime_threshold(3);
        health.observe("old", down());
        tokio::time::advance(Duration::from_secs(1)).await;
        health.observe("recent", down());
        health.observe("cooling", limited(60));
        assert_eq!(tracked(&health), ["cooling", "recent"]);
        health.observe("new", limited(30));
        assert_eq!(tracked(&health), ["cooling", "new"]);
        assert_eq!(health.counting.load(Ordering::Acquire), 0);
        // All cooling: the cooldown that ends first (30 s, "new") leaves.
        health.observe("newer", limited(45));
        assert!(!health.is_cooling_down("new"));
        assert!(health.is_cooling_down("cooling") && health.is_cooling_down("newer"));
        assert_eq!(health.cooling.load(Ordering::Acquire), 2);
        assert_counters_match_the_map(&health);
    }

    #[tokio::test(start_paused = true)]
    async fn counters_return_to_zero_once_everything_has_ended() {
        let health = InMemoryHealth::new()
            .max_models(2)
            .downtime_threshold(2)
            .downtime_cooldown(Duration::from_secs(30));
        let names: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            match i % 3 {
                0 => health.observe(name, limited(i as u64 + 1)),
                1 => health.observe(name, down()),
                _ => (0..2).for_each(|_| health.observe(name, down())),
            }
            tokio::time::advance(Duration::from_millis(100)).await;
            assert!(health.models.load().len() <= 2);
            assert_counters_match_the_map(&health);
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        // Lookups end the cooldowns that are over; successes reset the counts.
        assert!(names.iter().all(|name| !health.is_cooling_down(name)));
        assert_eq!(health.cooling.load(Ordering::Acquire), 0);
        names
            .iter()
            .for_each(|name| health.observe(name, Observation::succeeded()));
        assert_eq!(health.counting.load(Ordering::Acquire), 0);
        assert!(!health.anything_to_reset());
    }

    /// A thread that found an entry in a snapshot taken before it left records its failure
    /// there, sees the mark and records it again in the map: once, counted once.
    #[tokio::test(start_paused = true)]
    async fn a_failure_recorded_on_an_entry_that_left_is_recorded_again() {
        let health = InMemoryHealth::new().max_models(2).downtime_threshold(1);
        health.observe("a", limited(1));
        health.observe("b", limited(1));
        let a = Arc::clone(health.models.load().get("a").unwrap());
        tokio::time::advance(Duration::from_secs(2)).await;
        health.observe("c", limited(10));
        assert_eq!(tracked(&health), ["c"]);
        // What `record_failure` does with `a` taken from the old snapshot.
        health.fail(&a, down());
        fence(Ordering::SeqCst);
        assert!(a.evicted.load(Ordering::Relaxed));
        health.record_locked("a", Some(&a), down());
        assert_eq!(tracked(&health), ["a", "c"]);
        assert!(health.is_cooling_down("a"));
        assert!(a.holds_nothing(0), "taken back from the entry that left");
        assert_counters_match_the_map(&health);
        let state = Arc::clone(health.models.load().get("a").unwrap());
        assert_eq!(state.consecutive_downtime.load(Ordering::Acquire), 1);
    }

    /// A failure recorded on an idle entry between its mark and the sweep keeps the entry; the
    /// thread that recorded it, having seen the mark, does not record it twice.
    #[tokio::test(start_paused = true)]
    async fn a_failure_seen_by_the_sweep_keeps_its_entry() {
        let health = InMemoryHealth::new().max_models(2).downtime_threshold(3);
        health.observe("a", limited(1));
        health.observe("b", limited(1));
        tokio::time::advance(Duration::from_secs(2)).await;
        let models = health.models.load_full();
        let now = health.now_ms();
        InMemoryHealth::mark_idle(&models, now);
        let a = Arc::clone(&models["a"]);
        health.fail(&a, down());
        assert!(a.evicted.load(Ordering::Relaxed));
        let (mut kept, evicted) = health.sweep(&models, now);
        assert!(!a.evicted.load(Ordering::Relaxed));
        assert_eq!(evicted.len(), 1);
        assert!(Arc::ptr_eq(&evicted[0], &models["b"]));
        // Published as `record_locked` does, with the model that needed the room.
        let c = Arc::new(ModelState::default());
        health.fail(&c, limited(10));
        kept.insert(Arc::from("c"), c);
        health.models.store(Arc::new(kept));
        evicted.iter().for_each(|state| health.forget(state));
        // The thread that saw the mark finds its entry kept.
        health.record_locked("a", Some(&a), down());
        assert_eq!(tracked(&health), ["a", "c"]);
        assert_eq!(a.consecutive_downtime.load(Ordering::Acquire), 1);
        assert_counters_match_the_map(&health);
    }

    /// Threads record failures and successes of more models than the map holds, and look them
    /// up: the bound holds throughout, and the counters end exact.
    #[test]
    fn concurrent_churn_over_more_models_than_the_bound_keeps_the_counters_exact() {
        const MAX: usize = 4;
        let health = InMemoryHealth::new()
            .max_models(MAX)
            .downtime_threshold(2)
            .downtime_cooldown(Duration::from_millis(2));
        let names: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
        std::thread::scope(|scope| {
            for seed in 1..=6_u64 {
                let (health, names) = (&health, &names);
                scope.spawn(move || {
                    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    for _ in 0..40_000 {
                        // xorshift64
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let name = &names[(x % names.len() as u64) as usize];
                        let ms = Duration::from_millis(x >> 60);
                        match (x >> 8) % 5 {
                            0 => health.observe(
                                name,
                                Observation::failed(ErrorClass::RateLimited, Some(ms)),
                            ),
                            1 => health.observe(name, down()),
                            2 | 3 => health.observe(name, Observation::succeeded()),
                            _ => {
                                health.is_cooling_down(name);
                            }
                        }
                        assert!(health.models.load().len() <= MAX);
                    }
                });
            }
        });
        // Idle entries leave together: the map can end below the bound.
        assert!((1..=MAX).contains(&health.models.load().len()));
        assert_counters_match_the_map(&health);
        for name in &names {
            health.observe(name, Observation::succeeded());
        }
        assert_eq!(health.cooling.load(Ordering::Acquire), 0);
        assert_eq!(health.counting.load(Ordering::Acquire), 0);
    }

    #[test]
    fn first_failures_on_many_threads_are_all_kept_up_to_the_bound() {
        let health = InMemoryHealth::new().max_models(300);
        let names: Vec<Vec<String>> = (0..4)
            .map(|t| (0..100).map(|m| format!("t{t}-m{m}")).collect())
            .collect();
        std::thread::scope(|scope| {
            for names in &names {
                let health = &health;
                scope.spawn(move || {
                    for name in names {
                        health.observe(name, Observation::failed(ErrorClass::RateLimited, None));
                    }
                });
            }
        });
        // Each added model copies the snapshot: two copies made at once would lose one.
        let cooling = names.iter().flatten();
        assert_eq!(cooling.filter(|m| health.is_cooling_down(m)).count(), 300);
        assert_eq!(health.models.load().len(), 300);
        assert_eq!(health.cooling.load(Ordering::Acquire), 300);
    }

    #[tokio::test(start_paused = true)]
    async fn the_snapshot_is_skipped_once_nothing_is_left_to_reset() {
        let health = InMemoryHealth::new().downtime_threshold(2);
        let quiet = |health: &InMemoryHealth| !health.anything_to_reset();
        assert!(quiet(&health));
        // A downtime failure leaves a count for the next success to reset.
        health.observe("a", Observation::failed(ErrorClass::Downtime, None));
        assert!(!quiet(&health));
        health.observe("a", Observation::succeeded());
        assert!(quiet(&health), "the count was reset");
        // A rate limit: cooling until its deadline; once a lookup has seen it end, nothing is
        // left to look up, though the model stays tracked and no success came.
        health.observe(
            "b",
            Observation::failed(ErrorClass::RateLimited, Some(Duration::from_secs(10))),
        );
        assert!(!quiet(&health) && health.is_cooling_down("b"));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!health.is_cooling_down("b"));
        assert!(quiet(&health));
        assert_eq!(health.models.load().len(), 2);
        // A new cooldown counts again.
        health.observe("b", Observation::failed(ErrorClass::RateLimited, None));
        assert!(!quiet(&health) && health.is_cooling_down("b"));
        health.observe("b", Observation::succeeded());
        assert!(quiet(&health) && !health.is_cooling_down("b"));
        // Counting resumes from a clean state.
        for _ in 0..2 {
            health.observe("a", Observation::failed(ErrorClass::Downtime, None));
        }
        assert!(health.is_cooling_down("a"));
    }

    #[test]
    fn a_count_of_failures_that_would_wrap_is_counted_once() {
        let health = InMemoryHealth::new();
        health.observe("m", Observation::failed(ErrorClass::Downtime, None));
        let state = health.models.load().get("m").cloned().unwrap();
        state
            .consecutive_downtime
            .store(u32::MAX - 1, Ordering::Release);
        for _ in 0..3 {
            health.observe("m", Observation::failed(ErrorClass::Downtime, None));
        }
        assert_eq!(state.consecutive_downtime.load(Ordering::Acquire), u32::MAX);
        assert_eq!(health.counting.load(Ordering::Acquire), 1);
        health.observe("m", Observation::succeeded());
        assert_eq!(health.counting.load(Ordering::Acquire), 0);
    }

    #[test]
    fn healthy_first_is_a_stable_partition() {
        let health = InMemoryHealth::new();
        for m in ["b", "d"] {
            health.observe(m, Observation::failed(ErrorClass::RateLimited, None));
        }
        let mut chain = ["a", "b", "c", "d", "e"];
        assert_eq!(healthy_first(&health, &mut chain), ["b", "d"]);
        assert_eq!(chain, ["a", "c", "e", "b", "d"]);
        // Cooling down after every well model: kept in place, not passed over.
        let mut chain = ["a", "b", "c", "d"];
        assert_eq!(healthy_first(&health, &mut chain), ["b"]);
        assert_eq!(chain, ["a", "c", "b", "d"]);
        let mut chain = ["b", "d"];
        assert!(healthy_first(&health, &mut chain).is_empty());
        assert_eq!(chain, ["b", "d"]);
        let mut chain = ["a", "c"];
        let passed_over = healthy_first(&health, &mut chain);
        assert_eq!(
            passed_over.capacity(),
            0,
            "nothing allocated when all are well"
        );
    }
}
