//! Ranking candidate models for a prompt: the [`RoutePolicy`] trait and the [`DefaultRouter`].
//!
//! # How the default router decides
//!
//! 1. [`difficulty`] scores the prompt in `[0, 1]` (see [`features`](super::features)).
//! 2. The score becomes a percentile `p`: the identity by default, or the rank of the score
//!    among a sample of your own traffic after [`DefaultRouter::calibrate`] (the same idea as
//!    RouteLLM's `calibrate_threshold`).
//! 3. Candidates are grouped into tiers by [`ModelProfile::strength`] (equal strength, same
//!    tier), tier `k` of `n` sitting at `q = k / (n - 1)`. With `strong_share = s > 0`, prompts
//!    with `p >= 1 - s` need the strongest tier (`need = 1`); the others split `[0, 1 - s)`
//!    evenly among the weaker tiers. With `s = 0` no prompt needs the strongest tier (unless it
//!    is the only one), not even at `p = 1`.
//! 4. Every candidate gets a utility `-(need - q)⁺ - 0.1·(q - need)⁺ - cost_weight·c`, where `c` is
//!    its blended price on a log scale normalised to the most expensive candidate (a model whose
//!    price is invalid, negative or not finite, costs as much as that one, ranks after any
//!    candidate of equal utility, and without a quality hint sits in the strongest tier). The
//!    ranking is by utility: first the cheapest tier that suffices, then the stronger tiers in
//!    order (overshooting costs a little), then the weaker tiers strongest first. So the fallbacks
//!    after the pick go *up* before they go down. A larger `cost_weight` lets a cheaper model
//!    that falls short win over an expensive one.
//!
//! Hard constraints (context window, output limit, vision, audio, video, file, tools,
//! structured output) are not part of the ranking: filter with [`fits`] first, or use
//! [`DefaultRouter::route_catalog`].
//!
//! # Measured quality
//!
//! On RouteLLM's evaluation data (GPT-4-1106 vs Mixtral-8x7B, decontaminated sets), with
//! RouteLLM's protocol (10 quantile bins, 11 thresholds, trapezoid area normalised to weak = 0
//! and strong = 1, CPT by linear interpolation). Cells are APGR / CPT(50%) / CPT(80%):
//!
//! | benchmark (n) | [`difficulty`] | prompt length | random (seed 42) | oracle |
//! |---|---|---|---|---|
//! | MMLU (14,037) | **0.604** / 30.5% / 69.9% | 0.583 / 36.7% / 69.5% | 0.484 | 1.268 |
//! | GSM8K (1,307) | **0.618** / 35.1% / 61.6% | 0.599 / 36.7% / 66.6% | 0.508 | 1.115 |
//! | MT-Bench (72) | **0.621** / 31.6% / 67.1% | 0.556 / 34.4% / 77.6% | 0.564 | 0.953 |
//! | mixed stream (2,614) | **0.591** / 39.4% / 64.6% | 0.564 / 40.7% / 69.1% | 0.494 | 1.202 |
//!
//! The mixed stream is every GSM8K prompt and as many MMLU prompts (fixed-seed sample), scored
//! as one: a router that cannot tell the two kinds apart, or sends the wrong one to the strong
//! model first, falls towards random there even when it does well on each alone. It is made
//! of MMLU and GSM8K prompts, so it is in-sample like those two rows; it was added after the
//! weights were set, and nothing was tuned on it.
//!
//! Bootstrap 95% intervals (`--bootstrap 1000`, resampling prompts): router MMLU
//! [0.587, 0.621], GSM8K [0.577, 0.660], MT-Bench [0.504, 0.777], mixed [0.557, 0.626];
//! router minus length MMLU [+0.011, +0.030], GSM8K [−0.003, +0.047], MT-Bench
//! [−0.018, +0.194], mixed [+0.006, +0.046].
//!
//! How to read these honestly:
//!
//! * Nothing is learned: the weights are hand-set. The within-kind weights come from the
//!   previous version, written while looking at MMLU and GSM8K (about five iterations), so
//!   those two rows are in-sample for that tuning. The task-kind word lists were written from
//!   general prompt types (not from any benchmark's prompts); the prior's strength was chosen
//!   among ±1, ±1.5 and ±2 (and a few asymmetric pairs) on MMLU and GSM8K (dropping the previous version's small code,
//!   math and easy-task terms moved MMLU from 0.600 to 0.611 and GSM8K from 0.614 to 0.617;
//!   the kind prior then costs MMLU 0.007 and changes GSM8K by +0.001).
//! * MT-Bench is **below the 0.75 goal**: 0.621, with an interval of about ±0.14. It was
//!   scored for exactly two frozen designs, never tuned on: this one (prior ±1.5) at 0.621,
//!   and one where the prior dominates (±3) with a −0.20 · ln(1 + numbers) within-kind term
//!   picked on MMLU and GSM8K (MMLU 0.601, GSM8K 0.619) at 0.611 [0.476, 0.752]. This one is
//!   kept: higher on MMLU and MT-Bench, 0.001 lower on GSM8K (all within noise), and one
//!   fitted term fewer. The previous version scored 0.585.
//! * Not used: math notation and code punctuation as kind evidence (MMLU falls to 0.56–0.59,
//!   see [`features`](super::features)). A learned component, trained leave-one-dataset-out
//!   (`scripts/lodo_ngram_check.py`: logistic model over 2^18 hashed word uni- and bigrams plus
//!   length, trained on the two other benchmarks): MMLU 0.449, GSM8K 0.502, below or at
//!   random, as was a ridge model over the cue counts in a throwaway prototype (MMLU 0.454,
//!   GSM8K 0.487). Their MT-Bench legs were not scored (that would have been a third
//!   MT-Bench run); nothing learned ships.
//! * Why the 0.75 on MT-Bench is not chased with more math and reasoning cues: on the two sets
//!   one may look at, the prompts those cues would mark have *smaller* strong-minus-weak gaps
//!   than the rest (mean of `strong − weak`, decontaminated). MMLU (gap 0.125): math notation
//!   0.013 (1,040 prompts) against 0.134; math words 0.083 (521) against 0.127; "how many /
//!   how much" 0.067 (314) against 0.126; only three or more numbers goes the other way, 0.154
//!   (3,885) against 0.114. GSM8K (0.220): "how many / how much" 0.200 (1,030) against 0.296.
//!   Counting numbers or notation as kind evidence costs MMLU 0.01 to 0.03 and GSM8K up to
//!   0.04 (checked without MT-Bench rows). Open-ended math and reasoning prompts judged by
//!   GPT-4, as in MT-Bench, may well gain more from the strong model; these two sets cannot
//!   show it, and MT-Bench may not be tuned on, so no third design was scored on it.
//! * Published references: RouteLLM's best MMLU router 0.603 / CPT(50%) 35.4%, RouteLLM `mf` on
//!   MT-Bench 0.802 (both need an embedding call per prompt).
//!
//! Reproduce from the repository root (with `../shared` beside it):
//!
//! ```text
//! cargo run --release --example route_eval -- \
//!     --input ../shared/routing-eval/routellm-gpt4-vs-mixtral.jsonl \
//!     --scores /tmp/scores.csv --svg /tmp/curves.svg --bootstrap 1000
//! ```
//!
//! # Latency
//!
//! `cargo bench --bench router` (criterion, plus p50/p90/p99 of 20,000 single calls) on the
//! 2-core development machine, for a 2,000-character prompt:
//! [`estimate_tokens`](super::estimate_tokens) p50 0.89 µs, [`difficulty`] p50 2.82 µs, a
//! decision with a ready [`PromptInfo`] p50 3.15 µs / p99 3.35 µs, and `PromptInfo::from_text`
//! plus the decision p50 4.10 µs (`cargo bench --bench decision_latency`, 100,000 decisions:
//! p99 4.2 to 6.7 µs over six runs). The cost is one pass over the text for the token
//! estimate and one for the cues (up to 16 KiB; words are read eight bytes at a time and
//! looked up in a perfect hash table) and, for ranking, a few allocations of the candidates'
//! size.
//!
//! **Catalog size.** In [`AutoRouteLayer`](crate::AutoRouteLayer), the default router reads
//! what the [`Catalog`] computed once when it was built (strengths, prices and their logs, the
//! strength order, the id order): per request it runs the constraints over the catalog in
//! strength order, computes a utility per candidate, selects the best
//! [`max_fallbacks`](crate::AutoRouteLayer::max_fallbacks)` + 17` and sorts only those (the
//! [`RouteDecision`](super::RouteDecision)'s ranking is bounded to them). A whole
//! `"model": "auto"` request (`cargo bench --bench decision_latency`, 100,000 decisions, the
//! same 2-core machine, thirteenth round, three runs while other builds ran) for a
//! 2,000-character prompt: 3 models p50 4.7 µs, 50 models p50 6.1 µs / p99 12 µs, 400 models
//! (OpenRouter's whole list) p50 12.1–12.4 µs / p99 18.7–25.7 µs, where it was p50 114–117 µs
//! before (the policy's ranking matched back to the candidates by comparing ids, a sort of 400
//! twice, and 400 names copied into each request's decision). Instructions per request
//! (callgrind): 82k, 100k and 208k for 3, 50 and 400 models, from 84k, 174k and 1,493k. These
//! runs shared the CPUs (the three-model p99 was 10.1–10.4 µs, against 4.2–6.7 µs idle in the
//! rounds above), so the p99s are high; by the p50s and the instruction counts, the 10 µs
//! target holds for catalogs of tens of models, not for OpenRouter's whole list, where the
//! per-candidate filter and utilities remain (about 0.4k instructions a model): restrict the
//! catalog ([`candidates`](crate::AutoRouteLayer::candidates)) to the models you mean to use.
//! A policy of your own ([`RoutePolicy`]), and [`DefaultRouter::route`] called directly, rank
//! every candidate they are given: 400 take the default router about 45 µs.
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::catalog::{Catalog, ModelProfile};
use super::features::{difficulty, PromptInfo};
use crate::BoxError;

/// Completion tokens assumed by [`fits`] when the request sets no `max_tokens`.
pub const DEFAULT_COMPLETION_RESERVE: u64 = 1024;

/// A routing decision: the candidates best first, the prompt's difficulty and why.
///
/// ```
/// use std::borrow::Cow;
/// use tower_llm_router::auto_route::Ranking;
///
/// let r = Ranking::new(vec!["a".into(), "b".into()], 0.7, Cow::Borrowed("hard prompt"));
/// assert_eq!(r.first(), Some("a"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    /// Model ids, best first; the rest are the fallback chain.
    pub models: Vec<Arc<str>>,
    /// The prompt's difficulty in `[0, 1]`.
    pub score: f32,
    /// Why, in words (for logs and response extensions).
    pub reason: Cow<'static, str>,
}

impl Ranking {
    /// A ranking.
    pub fn new(models: Vec<Arc<str>>, score: f32, reason: Cow<'static, str>) -> Self {
        Ranking {
            models,
            score,
            reason,
        }
    }

    /// The chosen model, if any candidate was left.
    pub fn first(&self) -> Option<&str> {
        self.models.first().map(|m| &**m)
    }
}

/// Ranks candidate models for a prompt.
///
/// Implemented by [`DefaultRouter`] and by closures ([`policy_fn`] spares spelling out their
/// parameter types):
///
/// ```
/// use std::borrow::Cow;
/// use tower_llm_router::auto_route::{ModelProfile, PromptInfo, Ranking, RoutePolicy};
///
/// // Always the cheapest first.
/// let cheapest = |_: &PromptInfo<'_>, c: &[&ModelProfile]| {
///     let mut v = c.to_vec();
///     v.sort_by(|a, b| a.blended_price().total_cmp(&b.blended_price()));
///     Ranking::new(v.iter().map(|m| m.id.clone()).collect(), 0.0, Cow::Borrowed("cheapest"))
/// };
/// let a = ModelProfile::new("a", 8000, 5.0, 5.0);
/// let b = ModelProfile::new("b", 8000, 1.0, 1.0);
/// let r = cheapest.route(&PromptInfo::from_text("hi"), &[&a, &b]);
/// assert_eq!(r.first(), Some("b"));
/// ```
pub trait RoutePolicy: Send + Sync + 'static {
    /// Ranks `candidates` (which already satisfy the hard constraints) for `prompt`.
    fn route(&self, prompt: &PromptInfo<'_>, candidates: &[&ModelProfile]) -> Ranking;
}

impl<F> RoutePolicy for F
where
    F: Fn(&PromptInfo<'_>, &[&ModelProfile]) -> Ranking + Send + Sync + 'static,
{
    fn route(&self, prompt: &PromptInfo<'_>, candidates: &[&ModelProfile]) -> Ranking {
        self(prompt, candidates)
    }
}

impl<P: RoutePolicy + ?Sized> RoutePolicy for Arc<P> {
    fn route(&self, prompt: &PromptInfo<'_>, candidates: &[&ModelProfile]) -> Ranking {
        (**self).route(prompt, candidates)
    }
}

/// A [`RoutePolicy`] from a closure, without spelling out the parameter types.
///
/// Closures are policies already, but one bound to a variable (or passed to a generic
/// function) needs its parameter types written out: `|p: &PromptInfo<'_>, c: &[&ModelProfile]|`.
/// `policy_fn` gives them to the compiler and returns the closure itself.
///
/// ```
/// use std::borrow::Cow;
/// use tower_llm_router::auto_route::{policy_fn, ModelProfile, PromptInfo, Ranking, RoutePolicy};
///
/// // Long prompts to the model with the largest window, the rest in catalog order.
/// let policy = policy_fn(|prompt, candidates| {
///     let mut c = candidates.to_vec();
///     if prompt.text.len() > 20 {
///         c.sort_by_key(|m| std::cmp::Reverse(m.context_window));
///     }
///     Ranking::new(c.iter().map(|m| m.id.clone()).collect(), 0.0, Cow::Borrowed("by length"))
/// });
/// let small = ModelProfile::new("small", 8_000, 0.1, 0.4);
/// let large = ModelProfile::new("large", 200_000, 3.0, 15.0);
/// let long = PromptInfo::from_text("Summarise this long report for me, please.");
/// assert_eq!(policy.route(&long, &[&small, &large]).first(), Some("large"));
/// assert_eq!(policy.route(&PromptInfo::from_text("hi"), &[&small, &large]).first(), Some("small"));
/// ```
pub fn policy_fn<F>(f: F) -> F
where
    F: Fn(&PromptInfo<'_>, &[&ModelProfile]) -> Ranking + Send + Sync + 'static,
{
    f
}

/// An [`AsyncRoutePolicy`] from a closure that returns a boxed future ([`RouteFuture`]), which
/// may borrow the prompt and the candidates.
///
/// ```
/// use std::borrow::Cow;
/// use tower_llm_router::auto_route::{async_policy_fn, AsyncRoutePolicy, ModelProfile, PromptInfo, Ranking};
///
/// let remote = async_policy_fn(|prompt, candidates| {
///     Box::pin(async move {
///         // ... send `prompt.text` to a classifier service ...
///         let pick = if prompt.text.contains("prove") { 1 } else { 0 };
///         let id = candidates.get(pick).ok_or("no candidate")?.id.clone();
///         Ok(Ranking::new(vec![id], 0.5, Cow::Borrowed("remote")))
///     })
/// });
/// let small = ModelProfile::new("small", 8_000, 0.1, 0.4);
/// let large = ModelProfile::new("large", 200_000, 3.0, 15.0);
/// let prompt = PromptInfo::from_text("prove that there are infinitely many primes");
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let r = rt.block_on(remote.route(&prompt, &[&small, &large])).unwrap();
/// assert_eq!(r.first(), Some("large"));
/// ```
pub fn async_policy_fn<F>(f: F) -> AsyncPolicyFn<F>
where
    F: for<'a> Fn(&'a PromptInfo<'a>, &'a [&'a ModelProfile]) -> RouteFuture<'a>
        + Send
        + Sync
        + 'static,
{
    AsyncPolicyFn { f }
}

/// An [`AsyncRoutePolicy`] made from a closure; see [`async_policy_fn`].
#[derive(Clone, Copy)]
pub struct AsyncPolicyFn<F> {
    f: F,
}

impl<F> fmt::Debug for AsyncPolicyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncPolicyFn")
            .field("f", &std::any::type_name::<F>())
            .finish()
    }
}

impl<F> AsyncRoutePolicy for AsyncPolicyFn<F>
where
    F: for<'a> Fn(&'a PromptInfo<'a>, &'a [&'a ModelProfile]) -> RouteFuture<'a>
        + Send
        + Sync
        + 'static,
{
    fn route<'a>(
        &'a self,
        prompt: &'a PromptInfo<'a>,
        candidates: &'a [&'a ModelProfile],
    ) -> RouteFuture<'a> {
        (self.f)(prompt, candidates)
    }
}

/// The future returned by [`AsyncRoutePolicy::route`].
pub type RouteFuture<'a> = Pin<Box<dyn Future<Output = Result<Ranking, BoxError>> + Send + 'a>>;

/// A policy that may wait, for example on a remote classifier.
///
/// Run it behind [`RemoteWithFallback`] so that a slow or failing remote does not hold up or
/// fail the request. [`async_policy_fn`] makes one from a closure.
///
/// ```
/// use std::borrow::Cow;
/// use tower_llm_router::auto_route::{AsyncRoutePolicy, ModelProfile, PromptInfo, Ranking, RouteFuture};
///
/// struct Remote;
/// impl AsyncRoutePolicy for Remote {
///     fn route<'a>(&'a self, _: &'a PromptInfo<'a>, c: &'a [&'a ModelProfile]) -> RouteFuture<'a> {
///         Box::pin(async move {
///             // ... ask a classifier service ...
///             Ok(Ranking::new(vec![c[0].id.clone()], 0.5, Cow::Borrowed("remote")))
///         })
///     }
/// }
/// # let m = ModelProfile::new("m", 8000, 1.0, 1.0);
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let r = rt.block_on(Remote.route(&PromptInfo::from_text("hi"), &[&m])).unwrap();
/// assert_eq!(r.first(), Some("m"));
/// ```
pub trait AsyncRoutePolicy: Send + Sync + 'static {
    /// Ranks `candidates` for `prompt`.
    fn route<'a>(
        &'a self,
        prompt: &'a PromptInfo<'a>,
        candidates: &'a [&'a ModelProfile],
    ) -> RouteFuture<'a>;
}

/// Runs an [`AsyncRoutePolicy`] with a timeout, and a local [`RoutePolicy`] when the remote
/// times out, fails, or names no candidate.
///
/// Models the remote names that are not among the candidates are dropped from its ranking.
///
/// # Runtime
///
/// The timeout is a tokio timer, armed when the remote's future is not ready on its first
/// poll. Polled outside any tokio runtime, such a remote is dropped and the local policy
/// ranks (the reason says so). On a tokio runtime built without the time driver
/// (`Builder::new_current_thread().build()` without `enable_time` or `enable_all`), tokio
/// panics when the timer is armed, and it offers no way to check for the driver beforehand:
/// build the runtime with `enable_time` (`#[tokio::main]` and `Runtime::new` do).
///
/// ```
/// use std::time::Duration;
/// use tower_llm_router::auto_route::{
///     AsyncRoutePolicy, DefaultRouter, ModelProfile, PromptInfo, RemoteWithFallback, RouteFuture,
/// };
///
/// struct Down;
/// impl AsyncRoutePolicy for Down {
///     fn route<'a>(&'a self, _: &'a PromptInfo<'a>, _: &'a [&'a ModelProfile]) -> RouteFuture<'a> {
///         Box::pin(async { Err("connection refused".into()) })
///     }
/// }
/// let policy = RemoteWithFallback::new(Down, DefaultRouter::new(), Duration::from_millis(50));
/// let m = ModelProfile::new("m", 8000, 1.0, 1.0);
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
/// let r = rt.block_on(policy.route_or_fallback(&PromptInfo::from_text("hi"), &[&m]));
/// assert_eq!(r.first(), Some("m"));
/// assert!(r.reason.contains("connection refused"));
/// ```
#[derive(Debug, Clone)]
pub struct RemoteWithFallback<A, L> {
    remote: A,
    local: L,
    timeout: Duration,
}

impl<A: AsyncRoutePolicy, L: RoutePolicy> RemoteWithFallback<A, L> {
    /// Runs `remote` for at most `timeout`, else `local`.
    pub fn new(remote: A, local: L, timeout: Duration) -> Self {
        RemoteWithFallback {
            remote,
            local,
            timeout,
        }
    }

    /// The ranking of the remote policy, or of the local one (whose reason then says why).
    pub async fn route_or_fallback(
        &self,
        prompt: &PromptInfo<'_>,
        candidates: &[&ModelProfile],
    ) -> Ranking {
        let mut remote = self.remote.route(prompt, candidates);
        // The timer is armed only for a remote that is not ready at once, and only on a tokio
        // runtime: `tokio::time::timeout` panics outside one.
        let first = std::future::poll_fn(|cx| Poll::Ready(remote.as_mut().poll(cx))).await;
        let outcome = match first {
            Poll::Ready(r) => Ok(r),
            Poll::Pending if tokio::runtime::Handle::try_current().is_err() => {
                Err(Cow::Borrowed("no tokio runtime to time the remote policy"))
            }
            Poll::Pending => tokio::time::timeout(self.timeout, remote)
                .await
                .map_err(|_| format!("remote policy timed out after {:?}", self.timeout).into()),
        };
        let why: Cow<'static, str> = match outcome {
            Ok(Ok(mut r)) => {
                r.models.retain(|m| candidates.iter().any(|c| c.id == *m));
                if !r.models.is_empty() || candidates.is_empty() {
                    return r;
                }
                Cow::Borrowed("remote policy named no candidate")
            }
            Ok(Err(e)) => format!("remote policy failed: {e}").into(),
            Err(why) => why,
        };
        let mut r = self.local.route(prompt, candidates);
        r.reason = format!("{why}; local: {}", r.reason).into();
        r
    }
}

impl<A: AsyncRoutePolicy, L: RoutePolicy> AsyncRoutePolicy for RemoteWithFallback<A, L> {
    fn route<'a>(
        &'a self,
        prompt: &'a PromptInfo<'a>,
        candidates: &'a [&'a ModelProfile],
    ) -> RouteFuture<'a> {
        Box::pin(async move { Ok(self.route_or_fallback(prompt, candidates).await) })
    }
}

/// Why a model cannot serve a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unfit {
    /// Prompt tokens plus the completion reserve exceed the context window.
    ContextWindow {
        /// Estimated prompt tokens plus `max_tokens` (or the default reserve).
        needed: u64,
        /// The model's window.
        window: u64,
    },
    /// The request has images and the model has no vision.
    NoVision,
    /// The request has audio parts and the model takes no audio input.
    NoAudio,
    /// The request has video parts and the model takes no video input.
    NoVideo,
    /// The request has file parts (PDFs) and the model takes no file input.
    NoFile,
    /// The request declares tools and the model has no tool calling.
    NoTools,
    /// The request wants a JSON schema and the model has no structured output.
    NoStructuredOutput,
    /// The request's `max_tokens` (or `max_completion_tokens`) is over the model's
    /// [`max_output_tokens`](ModelProfile::max_output_tokens).
    MaxOutputTokens {
        /// The request's `max_tokens`.
        requested: u64,
        /// The model's output limit.
        limit: u64,
    },
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfit::ContextWindow { needed, window } => write!(
                f,
                "needs about {needed} tokens (prompt and completion), over its context window of {window}"
            ),
            Unfit::NoVision => f.pad("the request has images and the model takes no image input"),
            Unfit::NoAudio => f.pad("the request has audio and the model takes no audio input"),
            Unfit::NoVideo => f.pad("the request has video and the model takes no video input"),
            Unfit::NoFile => f.pad("the request has a file and the model takes no file input"),
            Unfit::NoTools => f.pad("the request declares tools and the model has no tool calling"),
            Unfit::NoStructuredOutput => {
                f.pad("the request asks for a JSON schema and the model has no structured output")
            }
            Unfit::MaxOutputTokens { requested, limit } => write!(
                f,
                "the request's max_tokens of {requested} is over the model's output limit of {limit} tokens"
            ),
        }
    }
}

impl std::error::Error for Unfit {}

/// Whether `profile` can serve `prompt` at all.
///
/// The context check uses `estimated_tokens + max_tokens` (or
/// [`DEFAULT_COMPLETION_RESERVE`] when absent); a `context_window` of 0 means unknown and
/// passes. A `max_tokens` over the model's
/// [`max_output_tokens`](ModelProfile::max_output_tokens), when known, does not fit either
/// (without `max_tokens` the provider's own default applies, within its limit).
///
/// ```
/// use tower_llm_router::auto_route::{fits, Capabilities, ModelProfile, PromptInfo, Unfit};
///
/// let small = ModelProfile::new("small", 2048, 0.1, 0.1);
/// let mut p = PromptInfo::from_text("Describe this picture.");
/// assert_eq!(fits(&p, &small), Ok(()));
/// p.images = 1;
/// assert_eq!(fits(&p, &small), Err(Unfit::NoVision));
/// p.images = 0;
/// p.max_tokens = Some(4000);
/// assert!(matches!(fits(&p, &small), Err(Unfit::ContextWindow { window: 2048, .. })));
/// ```
pub fn fits(prompt: &PromptInfo<'_>, profile: &ModelProfile) -> Result<(), Unfit> {
    fits_with_reserve(prompt, profile, DEFAULT_COMPLETION_RESERVE)
}

fn fits_with_reserve(
    prompt: &PromptInfo<'_>,
    profile: &ModelProfile,
    reserve: u64,
) -> Result<(), Unfit> {
    let caps = profile.capabilities;
    if prompt.images > 0 && !caps.vision {
        return Err(Unfit::NoVision);
    }
    if prompt.audio > 0 && !caps.audio {
        return Err(Unfit::NoAudio);
    }
    if prompt.videos > 0 && !caps.video {
        return Err(Unfit::NoVideo);
    }
    if prompt.files > 0 && !caps.file {
        return Err(Unfit::NoFile);
    }
    if prompt.has_tools && !caps.tools {
        return Err(Unfit::NoTools);
    }
    if prompt.wants_json_schema && !caps.structured_output {
        return Err(Unfit::NoStructuredOutput);
    }
    if let (Some(requested), Some(limit)) = (prompt.max_tokens, profile.max_output_tokens) {
        if limit > 0 && requested > limit {
            return Err(Unfit::MaxOutputTokens { requested, limit });
        }
    }
    let needed = prompt
        .estimated_tokens
        .saturating_add(prompt.max_tokens.unwrap_or(reserve));
    if profile.context_window > 0 && needed > profile.context_window {
        return Err(Unfit::ContextWindow {
            needed,
            window: profile.context_window,
        });
    }
    Ok(())
}

/// The built-in router: prompt difficulty picks a strength tier, cost breaks the rest.
///
/// See the [module docs](self) for the rule.
///
/// ```
/// use tower_llm_router::auto_route::{DefaultRouter, ModelProfile, PromptInfo, RoutePolicy};
///
/// let cheap = ModelProfile::new("cheap", 128_000, 0.15, 0.6);
/// let strong = ModelProfile::new("strong", 200_000, 3.0, 15.0);
/// let router = DefaultRouter::new().strong_share(0.3);
///
/// let r = router.route(&PromptInfo::from_text("hi there!"), &[&strong, &cheap]);
/// assert_eq!(r.models, ["cheap".into(), "strong".into()]);
///
/// let hard = "Write a Rust function `fn lis(v: &[i64]) -> Vec<i64>` that returns the longest \
///     strictly increasing subsequence in O(n log n), not just its length. Explain why the \
///     patience sorting invariant holds, prove the complexity bound, and list the edge cases \
///     (empty input, all equal values, negative numbers) your tests must cover.";
/// let r = router.route(&PromptInfo::from_text(hard), &[&cheap, &strong]);
/// assert_eq!(r.first(), Some("strong"));
/// ```
#[derive(Debug, Clone)]
pub struct DefaultRouter {
    strong_share: f32,
    cost_weight: f32,
    reserve: u64,
    /// Sorted difficulty sample from [`DefaultRouter::calibrate`].
    calibration: Option<Arc<[f32]>>,
}

impl Default for DefaultRouter {
    fn default() -> Self {
        Self::new()
    }
}

impl DefaultRouter {
    /// `strong_share` 0.3, `cost_weight` 0.1, completion reserve 1,024 tokens, no calibration.
    pub const fn new() -> Self {
        DefaultRouter {
            strong_share: 0.3,
            cost_weight: 0.1,
            reserve: DEFAULT_COMPLETION_RESERVE,
            calibration: None,
        }
    }

    /// Target share of requests for the strongest tier, in `[0, 1]` (exact after
    /// [`calibrate`](Self::calibrate) on representative traffic; without it the raw difficulty
    /// is the percentile). `0` sends no request to the strongest tier while a weaker one fits.
    /// Defaults to `0.3`; a value outside `[0, 1]` is clamped to it, and a non-finite one
    /// (NaN) leaves the default.
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn strong_share(mut self, share: f32) -> Self {
        self.strong_share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            0.3
        };
        self
    }

    /// How much a lower price counts against a quality shortfall (`>= 0`; 0 ignores price
    /// except among equally strong models). Defaults to `0.1`; a negative value counts as `0`,
    /// and a non-finite one (NaN, infinity) leaves the default.
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn cost_weight(mut self, weight: f32) -> Self {
        self.cost_weight = if weight.is_finite() {
            weight.max(0.0)
        } else {
            0.1
        };
        self
    }

    /// Completion tokens assumed by [`route_catalog`](Self::route_catalog), and by the
    /// context-window check of an [`AutoRouteLayer`](super::AutoRouteLayer) whose policy this
    /// router is, when a request sets no `max_tokens`. Defaults to
    /// [`DEFAULT_COMPLETION_RESERVE`].
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn completion_reserve(mut self, tokens: u64) -> Self {
        self.reserve = tokens;
        self
    }

    /// Uses the difficulty scores of a sample of your traffic so that `strong_share` is the
    /// share of that traffic sent to the strongest tier. Non-finite values are ignored.
    ///
    /// ```
    /// use tower_llm_router::auto_route::{DefaultRouter, ModelProfile, PromptInfo, RoutePolicy};
    ///
    /// let sample: Vec<f32> = (0..100).map(|i| i as f32 / 1000.0).collect(); // all below 0.1
    /// let router = DefaultRouter::new().strong_share(0.5).calibrate(&sample);
    /// let (weak, strong) = (ModelProfile::new("w", 0, 1.0, 1.0), ModelProfile::new("s", 0, 9.0, 9.0));
    /// // 0.095 is in the top half of that sample.
    /// assert_eq!(router.rank_with_difficulty(0.095, &[&weak, &strong]).first(), Some("s"));
    /// assert_eq!(router.rank_with_difficulty(0.01, &[&weak, &strong]).first(), Some("w"));
    /// ```
    #[must_use = "this returns the changed value; `self` is not changed in place"]
    pub fn calibrate(mut self, sample: &[f32]) -> Self {
        let mut v: Vec<f32> = sample.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f32::total_cmp);
        self.calibration = if v.is_empty() { None } else { Some(v.into()) };
        self
    }

    /// The prompt's difficulty (see [`difficulty`]).
    pub fn difficulty(&self, prompt: &PromptInfo<'_>) -> f32 {
        difficulty(prompt)
    }

    /// Checks [`fits`] with this router's completion reserve.
    pub fn fits(&self, prompt: &PromptInfo<'_>, profile: &ModelProfile) -> Result<(), Unfit> {
        fits_with_reserve(prompt, profile, self.reserve)
    }

    /// Filters `catalog` by [`fits`](Self::fits), then ranks what is left.
    ///
    /// ```
    /// use tower_llm_router::auto_route::{Catalog, DefaultRouter, ModelProfile, PromptInfo};
    ///
    /// let catalog = Catalog::from_profiles([
    ///     ModelProfile::new("tiny", 4_096, 0.1, 0.1),
    ///     ModelProfile::new("big", 1_000_000, 2.0, 8.0),
    /// ]);
    /// let mut p = PromptInfo::from_text("hi");
    /// p.max_tokens = Some(16_000);
    /// let r = DefaultRouter::new().route_catalog(&p, &catalog);
    /// assert_eq!(r.models, ["big".into()]);
    /// ```
    pub fn route_catalog(&self, prompt: &PromptInfo<'_>, catalog: &Catalog) -> Ranking {
        let candidates: Vec<&ModelProfile> = catalog
            .models()
            .iter()
            .filter(|m| self.fits(prompt, m).is_ok())
            .collect();
        self.route(prompt, &candidates)
    }

    fn percentile(&self, d: f32) -> f32 {
        match &self.calibration {
            None => d,
            Some(v) => {
                let below = v.partition_point(|x| *x < d);
                below as f32 / v.len() as f32
            }
        }
    }

    /// Ranks `candidates` for a prompt of difficulty `d` (what [`RoutePolicy::route`] does
    /// after computing the difficulty).
    pub fn rank_with_difficulty(&self, d: f32, candidates: &[&ModelProfile]) -> Ranking {
        let mut scored: Vec<Scored<'_>> = candidates
            .iter()
            .map(|&model| {
                let price = model.blended_price();
                Scored::new(model, model.strength(), price, price.ln_1p(), 0)
            })
            .collect();
        // Weakest first, as `catalog::sort_by_strength`.
        scored.sort_by(|a, b| {
            a.strength
                .total_cmp(&b.strength)
                .then(a.price.total_cmp(&b.price))
                .then(a.model.id.cmp(&b.model.id))
        });
        let reason = self.rank_sorted(d, &mut scored, usize::MAX, |a, b| {
            a.model.id.cmp(&b.model.id)
        });
        let models: Vec<Arc<str>> = scored.iter().map(|s| s.model.id.clone()).collect();
        Ranking::new(models, d, reason)
    }

    /// The first `best` models of [`rank_with_difficulty`](Self::rank_with_difficulty) over
    /// the models of `catalog` that `admits`, with what the catalog computed once: its
    /// strength order (the candidates come sorted, with no logarithm computed) and its id
    /// ranks (ties compare integers). Only those `best` are sorted: a selection, then a short
    /// sort, where the whole ranking of OpenRouter's list is a sort of 400.
    pub(crate) fn rank_in_catalog<'c>(
        &self,
        d: f32,
        catalog: &'c Catalog,
        mut admits: impl FnMut(&ModelProfile) -> bool,
        best: usize,
    ) -> (Vec<&'c Arc<str>>, Cow<'static, str>) {
        let index = catalog.index();
        let models = catalog.models();
        // Sized for the whole catalog: a filter's `collect` would grow it by reallocations.
        let mut scored: Vec<Scored<'c>> = Vec::with_capacity(models.len());
        let admitted = index
            .by_strength
            .iter()
            .map(|&i| i as usize)
            .filter(|&i| admits(&models[i]));
        scored.extend(admitted.map(|i| {
            let stats = index.stats[i];
            let id_rank = index.id_rank[i];
            Scored::new(
                &models[i],
                stats.strength,
                stats.price,
                stats.ln_price,
                id_rank,
            )
        }));
        let reason = self.rank_sorted(d, &mut scored, best, |a, b| a.id_rank.cmp(&b.id_rank));
        (
            scored.iter().take(best).map(|s| &s.model.id).collect(),
            reason,
        )
    }

    /// Ranks candidates sorted weakest first (ties: cheaper first, then by id, which `by_id`
    /// compares): tiers, utilities, then the `best` first of `scored` sorted best first, the
    /// others after them in no order. Returns the reason.
    fn rank_sorted(
        &self,
        d: f32,
        scored: &mut [Scored<'_>],
        best: usize,
        by_id: impl Fn(&Scored<'_>, &Scored<'_>) -> std::cmp::Ordering,
    ) -> Cow<'static, str> {
        if scored.is_empty() {
            return Cow::Borrowed("no candidate model");
        }
        let p = self.percentile(d);
        // A model whose price is invalid (infinite, see `ModelProfile::blended_price`) and that
        // has no quality hint joins the strongest tier of the others. Sorted last (infinitely
        // strong, then by id), it stays last among that tier's models once its strength is
        // theirs (their prices are finite, then by id): the order holds.
        let strongest = scored
            .iter()
            .map(|s| s.strength)
            .filter(|s| s.is_finite())
            .reduce(f32::max);
        if let Some(strongest) = strongest {
            for s in scored.iter_mut().filter(|s| s.strength.is_infinite()) {
                s.strength = strongest;
            }
        }
        let mut tier = 0usize;
        for i in 1..scored.len() {
            if scored[i].strength > scored[i - 1].strength {
                tier += 1;
            }
            scored[i].tier = tier;
        }
        let top = tier;
        let threshold = 1.0 - self.strong_share;
        let share = self.strong_share;
        // A share of 0 leaves the strongest tier out, even at percentile 1.
        let need_tier = if top == 0 || (share > 0.0 && p >= threshold) {
            top
        } else {
            // Split [0, threshold) evenly among the weaker tiers.
            (((p / threshold).max(0.0) * top as f32) as usize).min(top - 1)
        };
        let pos = |t: usize| if top == 0 { 1.0 } else { t as f32 / top as f32 };
        let need = pos(need_tier);
        let max_cost = scored
            .iter()
            .map(|s| s.ln_price)
            .filter(|c| c.is_finite())
            .fold(0.0f64, f64::max);
        for s in scored.iter_mut() {
            let q = pos(s.tier);
            let cost = normalised_cost(s.ln_price, max_cost);
            s.utility = -(need - q).max(0.0) - 0.1 * (q - need).max(0.0) - self.cost_weight * cost;
        }
        let order = |a: &Scored<'_>, b: &Scored<'_>| {
            b.utility
                .total_cmp(&a.utility)
                .then(a.price.total_cmp(&b.price))
                .then_with(|| by_id(a, b))
        };
        // A catalog's ids are unique: the order is total, and an unstable sort or a selection
        // gives the same. (Candidates passed by hand may repeat an id: then equal models
        // compare equal, and their order changes no id of the ranking.)
        let sorted = if best < scored.len() {
            scored.select_nth_unstable_by(best, order);
            &mut scored[..best]
        } else {
            &mut scored[..]
        };
        sorted.sort_unstable_by(order);
        let reason = format!(
            "difficulty {d:.2} (percentile {p:.2}, {}) needs tier {} of {}; {} ranked first",
            StrongestFrom(share),
            need_tier + 1,
            top + 1,
            scored[0].model.id
        );
        Cow::Owned(reason)
    }
}

/// One candidate as the default router ranks it: strength and price computed once, tier and
/// utility filled in.
struct Scored<'m> {
    model: &'m ModelProfile,
    strength: f32,
    price: f64,
    ln_price: f64,
    /// The id's rank in the catalog (0 when the ids themselves are compared).
    id_rank: u32,
    tier: usize,
    utility: f32,
}

impl<'m> Scored<'m> {
    fn new(
        model: &'m ModelProfile,
        strength: f32,
        price: f64,
        ln_price: f64,
        id_rank: u32,
    ) -> Self {
        Scored {
            model,
            strength,
            price,
            ln_price,
            id_rank,
            tier: 0,
            utility: 0.0,
        }
    }
}

/// A log price as a share of the dearest finite one (`max_cost`); an invalid (infinite) price costs as
/// much as the dearest, and the ranking's tie-break on price puts it after.
fn normalised_cost(ln_price: f64, max_cost: f64) -> f32 {
    if ln_price.is_infinite() {
        1.0
    } else if max_cost > 0.0 {
        (ln_price / max_cost) as f32
    } else {
        0.0
    }
}

/// Where the strongest tier starts, for a ranking's reason.
struct StrongestFrom(f32);

impl fmt::Display for StrongestFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 > 0.0 {
            write!(f, "strongest tier from {:.2}", 1.0 - self.0)
        } else {
            f.write_str("no share for the strongest tier")
        }
    }
}

impl RoutePolicy for DefaultRouter {
    fn route(&self, prompt: &PromptInfo<'_>, candidates: &[&ModelProfile]) -> Ranking {
        self.rank_with_difficulty(difficulty(prompt), candidates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auto_route::Capabilities;

    /// [`DefaultRouter::rank_with_difficulty`] as first written (a sorted copy, a tier list,
    /// a scored list), the oracle of `ranking_equals_the_reference`.
    fn reference_rank(r: &DefaultRouter, d: f32, candidates: &[&ModelProfile]) -> Ranking {
        if candidates.is_empty() {
            return Ranking::new(Vec::new(), d, Cow::Borrowed("no candidate model"));
        }
        let p = r.percentile(d);
        let mut sorted: Vec<&ModelProfile> = candidates.to_vec();
        crate::auto_route::catalog::sort_by_strength(&mut sorted);
        // Invalid prices (sorted last, infinitely strong) join the strongest priced tier.
        let strongest = sorted
            .iter()
            .map(|m| m.strength())
            .filter(|s| s.is_finite())
            .fold(None, |a: Option<f32>, s| Some(a.map_or(s, |a| a.max(s))));
        let strength = |m: &ModelProfile| match (m.strength(), strongest) {
            (s, Some(top)) if s.is_infinite() => top,
            (s, _) => s,
        };
        sorted.sort_by(|a, b| {
            strength(a)
                .total_cmp(&strength(b))
                .then(a.blended_price().total_cmp(&b.blended_price()))
                .then(a.id.cmp(&b.id))
        });
        let mut tiers = vec![0usize];
        for w in sorted.windows(2) {
            let last = tiers[tiers.len() - 1];
            tiers.push(last + usize::from(strength(w[1]) > strength(w[0])));
        }
        let top = tiers[tiers.len() - 1];
        let threshold = 1.0 - r.strong_share;
        let share = r.strong_share;
        // A share of 0 leaves the strongest tier out, even at percentile 1.
        let need_tier = if top == 0 || (share > 0.0 && p >= threshold) {
            top
        } else {
            (((p / threshold).max(0.0) * top as f32) as usize).min(top - 1)
        };
        let pos = |t: usize| if top == 0 { 1.0 } else { t as f32 / top as f32 };
        let need = pos(need_tier);
        let ln = |m: &ModelProfile| m.blended_price().ln_1p();
        let max_cost = sorted
            .iter()
            .map(|m| ln(m))
            .filter(|c| c.is_finite())
            .fold(0.0f64, f64::max);
        let mut scored: Vec<(f32, &ModelProfile)> = Vec::new();
        for (m, &t) in sorted.iter().zip(&tiers) {
            let q = pos(t);
            let cost = if ln(m).is_infinite() {
                1.0
            } else if max_cost > 0.0 {
                (ln(m) / max_cost) as f32
            } else {
                0.0
            };
            let u = -(need - q).max(0.0) - 0.1 * (q - need).max(0.0) - r.cost_weight * cost;
            scored.push((u, m));
        }
        scored.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then(a.1.blended_price().total_cmp(&b.1.blended_price()))
                .then(a.1.id.cmp(&b.1.id))
        });
        let models: Vec<Arc<str>> = scored.iter().map(|(_, m)| m.id.clone()).collect();
        let reason = format!(
            "difficulty {d:.2} (percentile {p:.2}, {}) needs tier {} of {}; {} ranked first",
            StrongestFrom(share),
            need_tier + 1,
            top + 1,
            models[0]
        );
        Ranking::new(models, d, reason.into())
    }

    proptest::proptest! {
        #[test]
        fn ranking_equals_the_reference(
            models in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["a", "b", "c", "d"]),
                    proptest::sample::select(vec![0.0, 0.1, 1.0, 3.0, 15.0, -1.0, f64::NAN, f64::INFINITY]),
                    proptest::sample::select(vec![0.0, 0.2, 4.0, 15.0, 60.0, f64::NAN]),
                    proptest::option::of(proptest::sample::select(vec![0.0f32, 0.5, 0.9, f32::NAN])),
                ),
                0..6,
            ),
            d in proptest::sample::select(vec![0.0f32, 0.1, 0.37, 0.5, 0.75, 0.99, 1.0, -0.5, 2.0, f32::NAN]),
            share in proptest::sample::select(vec![0.0f32, 0.25, 0.3, 1.0]),
            weight in proptest::sample::select(vec![0.0f32, 0.1, 5.0]),
            calibrate in proptest::bool::ANY,
        ) {
            let profiles: Vec<ModelProfile> = models
                .iter()
                .map(|(id, input, output, quality)| {
                    let m = ModelProfile::new(*id, 0, *input, *output);
                    match quality {
                        Some(q) => m.with_quality(*q),
                        None => m,
                    }
                })
                .collect();
            let candidates: Vec<&ModelProfile> = profiles.iter().collect();
            let mut r = DefaultRouter::new().strong_share(share).cost_weight(weight);
            if calibrate {
                r = r.calibrate(&[0.05, 0.2, 0.4, 0.6]);
            }
            let got = r.rank_with_difficulty(d, &candidates);
            let want = reference_rank(&r, d, &candidates);
            proptest::prop_assert_eq!(&got.models, &want.models);
            proptest::prop_assert_eq!(got.score.to_bits(), want.score.to_bits());
            proptest::prop_assert_eq!(got.reason, want.reason);
        }
    }

    proptest::proptest! {
        /// The ranking with the catalog's precomputed orders (what the layer runs) is the one
        /// over the same candidates in catalog order, whatever the subset of the catalog.
        #[test]
        fn ranking_in_the_catalog_equals_the_ranking_of_its_candidates(
            models in proptest::collection::vec(
                (
                    proptest::sample::select(vec![0.0, 0.1, 1.0, 3.0, 15.0, -1.0, f64::NAN, f64::INFINITY]),
                    proptest::sample::select(vec![0.0, 0.2, 4.0, 15.0, 60.0, f64::NAN]),
                    proptest::option::of(proptest::sample::select(vec![0.0f32, 0.5, 0.9, f32::NAN])),
                    proptest::bool::weighted(0.7),
                ),
                0..24,
            ),
            d in proptest::sample::select(vec![0.0f32, 0.1, 0.37, 0.5, 0.75, 0.99, 1.0, -0.5, 2.0, f32::NAN]),
            share in proptest::sample::select(vec![0.0f32, 0.25, 0.3, 1.0]),
            weight in proptest::sample::select(vec![0.0f32, 0.1, 5.0]),
        ) {
            // Ids in no particular order: the id ranks must not follow the catalog's order.
            let ids = ["q", "b", "x", "a", "m", "c", "z", "d", "k", "e", "y", "f"];
            let catalog = Catalog::from_profiles(models.iter().enumerate().map(
                |(i, (input, output, quality, _))| {
                    let id = format!("{}{}", ids[i % ids.len()], i / ids.len());
                    let m = ModelProfile::new(id, 0, *input, *output);
                    match quality {
                        Some(q) => m.with_quality(*q),
                        None => m,
                    }
                },
            ));
            let admitted = |m: &ModelProfile| {
                let i = catalog.models().iter().position(|c| c.id == m.id).unwrap_or(0);
                models[i].3
            };
            let candidates: Vec<&ModelProfile> =
                catalog.models().iter().filter(|m| admitted(m)).collect();
            let r = DefaultRouter::new().strong_share(share).cost_weight(weight);
            let want = r.rank_with_difficulty(d, &candidates);
            let (got, reason) = r.rank_in_catalog(d, &catalog, admitted, usize::MAX);
            let got: Vec<Arc<str>> = got.into_iter().cloned().collect();
            proptest::prop_assert_eq!(&got, &want.models);
            proptest::prop_assert_eq!(&reason, &want.reason);
            // The first `best` alone: the same models, and the same reason.
            let best = models.len() / 3;
            let (first, reason) = r.rank_in_catalog(d, &catalog, admitted, best);
            let first: Vec<Arc<str>> = first.into_iter().cloned().collect();
            proptest::prop_assert_eq!(&first[..], &want.models[..best.min(want.models.len())]);
            proptest::prop_assert_eq!(reason, want.reason);
        }
    }

    proptest::proptest! {
        /// For the same prompt and candidates, a larger cost weight never picks a dearer model,
        /// and a larger strong share never picks a weaker one (quality hints and derived
        /// strengths mixed, ties in price and strength included).
        #[test]
        fn cost_weight_and_strong_share_are_monotone(
            models in proptest::collection::vec(
                (
                    proptest::sample::select(vec![0.0, 0.1, 1.0, 3.0, 3.01, 15.0]),
                    proptest::sample::select(vec![0.0, 0.2, 4.0, 15.0, 60.0]),
                    proptest::option::of(proptest::sample::select(vec![0.0f32, 0.5, 0.9, 2.0])),
                ),
                1..7,
            ),
            d in 0.0f32..=1.0,
            shares in (0.0f32..=1.0, 0.0f32..=1.0),
            weights in (0.0f32..3.0, 0.0f32..3.0),
        ) {
            let profiles: Vec<ModelProfile> = models
                .iter()
                .enumerate()
                .map(|(i, (input, output, quality))| {
                    let m = ModelProfile::new(format!("m{i}"), 0, *input, *output);
                    match quality {
                        Some(q) => m.with_quality(*q),
                        None => m,
                    }
                })
                .collect();
            let c: Vec<&ModelProfile> = profiles.iter().collect();
            let first = |r: &DefaultRouter| {
                let ranking = r.rank_with_difficulty(d, &c);
                let id = ranking.first().map(str::to_owned);
                profiles.iter().find(|m| Some(&*m.id) == id.as_deref()).cloned().unwrap()
            };
            let (low, high) = (weights.0.min(weights.1), weights.0.max(weights.1));
            let r = DefaultRouter::new().strong_share(shares.0);
            let (a, b) = (first(&r.clone().cost_weight(low)), first(&r.cost_weight(high)));
            proptest::prop_assert!(b.blended_price() <= a.blended_price(), "{a:?} {b:?}");
            let (low, high) = (shares.0.min(shares.1), shares.0.max(shares.1));
            let r = DefaultRouter::new().cost_weight(weights.0);
            let (a, b) = (first(&r.clone().strong_share(low)), first(&r.strong_share(high)));
            proptest::prop_assert!(b.strength() >= a.strength(), "{a:?} {b:?}");
        }
    }

    fn trio() -> [ModelProfile; 3] {
        [
            ModelProfile::new("small", 32_000, 0.1, 0.2),
            ModelProfile::new("medium", 128_000, 1.0, 3.0),
            ModelProfile::new("large", 200_000, 5.0, 15.0),
        ]
    }

    fn ids(r: &Ranking) -> Vec<&str> {
        r.models.iter().map(|m| &**m).collect()
    }

    #[test]
    fn difficulty_picks_tier_and_fallbacks_go_up_first() {
        let [s, m, l] = trio();
        let c = [&l, &s, &m];
        let r = DefaultRouter::new().strong_share(0.25).cost_weight(0.0);
        // threshold 0.75: [0, 0.375) small, [0.375, 0.75) medium, [0.75, 1] large.
        assert_eq!(
            ids(&r.rank_with_difficulty(0.1, &c)),
            ["small", "medium", "large"]
        );
        assert_eq!(
            ids(&r.rank_with_difficulty(0.5, &c)),
            ["medium", "large", "small"]
        );
        assert_eq!(
            ids(&r.rank_with_difficulty(0.9, &c)),
            ["large", "medium", "small"]
        );
    }

    #[test]
    fn strong_share_moves_the_threshold() {
        let [s, _, l] = trio();
        let c = [&s, &l];
        let d = 0.6;
        let few = DefaultRouter::new().strong_share(0.1);
        let many = DefaultRouter::new().strong_share(0.6);
        assert_eq!(few.rank_with_difficulty(d, &c).first(), Some("small"));
        assert_eq!(many.rank_with_difficulty(d, &c).first(), Some("large"));
        assert_eq!(
            DefaultRouter::new()
                .strong_share(0.0)
                .rank_with_difficulty(0.99, &c)
                .first(),
            Some("small")
        );
    }

    /// A strong share of 0 sends nothing to the strongest tier: not the hardest prompts
    /// (difficulty 1), not prompts above every score of the calibration sample (percentile 1).
    #[test]
    fn a_strong_share_of_zero_never_picks_the_strongest_tier() {
        let [s, m, l] = trio();
        let c = [&s, &m, &l];
        let none = DefaultRouter::new().strong_share(0.0).cost_weight(0.0);
        let r = none.rank_with_difficulty(1.0, &c);
        assert_eq!(ids(&r), ["medium", "large", "small"]);
        assert!(
            r.reason.contains("no share for the strongest tier"),
            "{}",
            r.reason
        );
        let calibrated = none.calibrate(&[0.1, 0.2, 0.3]);
        assert_eq!(
            calibrated.rank_with_difficulty(0.9, &c).first(),
            Some("medium")
        );
        // One tier is the strongest and the weakest: it is still chosen.
        assert_eq!(
            calibrated.rank_with_difficulty(0.9, &[&l]).first(),
            Some("large")
        );
        // Any share above 0 reaches it.
        let few = DefaultRouter::new().strong_share(0.01).cost_weight(0.0);
        assert_eq!(few.rank_with_difficulty(1.0, &c).first(), Some("large"));
    }

    #[test]
    fn cost_weight_trades_quality_for_price() {
        let [s, m, l] = trio();
        let c = [&s, &m, &l];
        let hard = 0.95;
        let quality_first = DefaultRouter::new().cost_weight(0.0);
        assert_eq!(
            ids(&quality_first.rank_with_difficulty(hard, &c)),
            ["large", "medium", "small"]
        );
        // A large cost weight makes price dominate even for hard prompts.
        let frugal = DefaultRouter::new().cost_weight(5.0);
        assert_eq!(
            ids(&frugal.rank_with_difficulty(hard, &c)),
            ["small", "medium", "large"]
        );
        // In between, the medium model's saving outweighs its shortfall.
        let balanced = DefaultRouter::new().cost_weight(1.0);
        assert_eq!(
            balanced.rank_with_difficulty(hard, &c).first(),
            Some("medium")
        );
    }

    #[test]
    fn equal_strength_prefers_cheaper() {
        let a = ModelProfile::new("a", 0, 9.0, 9.0).with_quality(0.5);
        let b = ModelProfile::new("b", 0, 1.0, 1.0).with_quality(0.5);
        let r = DefaultRouter::new().cost_weight(0.0);
        assert_eq!(ids(&r.rank_with_difficulty(1.0, &[&a, &b])), ["b", "a"]);
        assert_eq!(ids(&r.rank_with_difficulty(0.0, &[&a, &b])), ["b", "a"]);
    }

    #[test]
    fn empty_and_single() {
        let r = DefaultRouter::new();
        assert!(r.rank_with_difficulty(0.5, &[]).models.is_empty());
        let [s, ..] = trio();
        assert_eq!(ids(&r.rank_with_difficulty(0.0, &[&s])), ["small"]);
        assert_eq!(ids(&r.rank_with_difficulty(f32::NAN, &[&s])), ["small"]);
    }

    #[test]
    fn fits_names_each_constraint() {
        let plain = ModelProfile::new("plain", 8_000, 1.0, 1.0);
        let all = ModelProfile::new("all", 8_000, 1.0, 1.0).with_capabilities(Capabilities::ALL);
        let base = PromptInfo::from_text("look");
        for (p, want) in [
            (PromptInfo { images: 2, ..base }, Unfit::NoVision),
            (PromptInfo { audio: 1, ..base }, Unfit::NoAudio),
            (PromptInfo { videos: 1, ..base }, Unfit::NoVideo),
            (PromptInfo { files: 1, ..base }, Unfit::NoFile),
            (
                PromptInfo {
                    has_tools: true,
                    ..base
                },
                Unfit::NoTools,
            ),
            (
                PromptInfo {
                    wants_json_schema: true,
                    ..base
                },
                Unfit::NoStructuredOutput,
            ),
        ] {
            assert_eq!(fits(&p, &plain), Err(want));
            assert_eq!(fits(&p, &all), Ok(()));
            assert!(!want.to_string().is_empty());
        }
        let long = PromptInfo {
            estimated_tokens: 7_000,
            ..base
        };
        assert_eq!(
            fits(&long, &all),
            Err(Unfit::ContextWindow {
                needed: 8_024,
                window: 8_000
            })
        );
        assert!(fits(&long, &all).unwrap_err().to_string().contains("8024"));
        let capped = all.clone().with_max_output_tokens(500);
        let asks = |n| PromptInfo {
            max_tokens: Some(n),
            ..base
        };
        assert_eq!(fits(&asks(500), &capped), Ok(()));
        let over = Unfit::MaxOutputTokens {
            requested: 501,
            limit: 500,
        };
        assert_eq!(fits(&asks(501), &capped), Err(over));
        assert!(over.to_string().contains("501") && over.to_string().contains("500"));
        // Without `max_tokens`, the provider's default applies: no limit to check.
        assert_eq!(fits(&base, &capped), Ok(()));
        assert_eq!(
            fits(&asks(501), &all.clone().with_max_output_tokens(0)),
            Ok(())
        );
        assert_eq!(
            fits(
                &PromptInfo {
                    max_tokens: Some(1000),
                    ..long
                },
                &all
            ),
            Ok(())
        );
        let router = DefaultRouter::new().completion_reserve(10);
        assert_eq!(router.fits(&long, &all), Ok(()));
        let unknown = ModelProfile::new("unknown", 0, 1.0, 1.0);
        assert_eq!(
            fits(
                &PromptInfo {
                    estimated_tokens: u64::MAX,
                    ..base
                },
                &unknown
            ),
            Ok(())
        );
    }

    struct Scripted(Result<Vec<&'static str>, &'static str>, Duration);

    impl AsyncRoutePolicy for Scripted {
        fn route<'a>(
            &'a self,
            _: &'a PromptInfo<'a>,
            _: &'a [&'a ModelProfile],
        ) -> RouteFuture<'a> {
            Box::pin(async move {
                tokio::time::sleep(self.1).await;
                match &self.0 {
                    Ok(v) => Ok(Ranking::new(
                        v.iter().map(|s| Arc::from(*s)).collect(),
                        0.5,
                        Cow::Borrowed("remote"),
                    )),
                    Err(e) => Err((*e).into()),
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn remote_with_fallback() {
        let [s, m, l] = trio();
        let c = [&s, &m, &l];
        let p = PromptInfo::from_text("hello");
        let local = |_: &PromptInfo<'_>, _: &[&ModelProfile]| {
            Ranking::new(vec!["small".into()], 0.0, Cow::Borrowed("local"))
        };
        let t = Duration::from_millis(100);

        let ok = RemoteWithFallback::new(
            Scripted(Ok(vec!["large", "gone", "medium"]), t / 2),
            local,
            t,
        );
        let r = ok.route_or_fallback(&p, &c).await;
        assert_eq!(ids(&r), ["large", "medium"]);
        assert_eq!(r.reason, "remote");

        let slow = RemoteWithFallback::new(Scripted(Ok(vec!["large"]), t * 2), local, t);
        let r = slow.route_or_fallback(&p, &c).await;
        assert_eq!(ids(&r), ["small"]);
        assert!(r.reason.contains("timed out"), "{}", r.reason);

        let failing = RemoteWithFallback::new(Scripted(Err("boom"), Duration::ZERO), local, t);
        let r = AsyncRoutePolicy::route(&failing, &p, &c).await.unwrap();
        assert_eq!(ids(&r), ["small"]);
        assert!(r.reason.contains("boom"));

        let stranger =
            RemoteWithFallback::new(Scripted(Ok(vec!["gone"]), Duration::ZERO), local, t);
        let r = stranger.route_or_fallback(&p, &c).await;
        assert!(r.reason.contains("no candidate"), "{}", r.reason);
    }

    #[test]
    fn route_uses_difficulty() {
        let [s, _, l] = trio();
        let r = DefaultRouter::new();
        let easy = r.route(&PromptInfo::from_text("Hi! Thanks!"), &[&s, &l]);
        assert_eq!(easy.first(), Some("small"));
        assert!(easy.score < 0.5);
        assert!(
            easy.reason.contains("small ranked first"),
            "{}",
            easy.reason
        );
    }
}
