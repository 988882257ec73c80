//! Prometheus metrics, written by hand in the text exposition format: counters are atomics in a
//! table fixed at start (one row per configured model, `none` and `other`), so the hot path
//! takes no lock and allocates nothing.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tower_llm_router::fallback::{Attempts, Outcome};
use tower_llm_router::ErrorClass;

/// The outcomes a request is counted under: `ok`, each error class, `rejected` (refused by the
/// layers, no upstream call), `transport_error` (the last attempt got no answer at all),
/// `cancelled` (the client left, or the drain was cut, before the answer's end),
/// `passed_through` (not routed: the upstream's answer, whatever it is), and for a stream that
/// ended with an error event after its head, `broken` (the upstream cut it) or `stalled` (it
/// sent nothing for `[timeouts] idle`).
const OUTCOMES: [&str; 12] = [
    "ok",
    "moderation",
    "context_length",
    "rate_limited",
    "downtime",
    "other",
    "rejected",
    "transport_error",
    "cancelled",
    "passed_through",
    "broken",
    "stalled",
];
const REJECTED: usize = 6;
// The outcome labels above list every error class, in `ErrorClass::ALL` order.
const _: () = assert!(ErrorClass::ALL.len() == 5);
const TRANSPORT_ERROR: usize = 7;
const CANCELLED: usize = 8;
const PASSED_THROUGH: usize = 9;
const BROKEN: usize = 10;
const STALLED: usize = 11;

/// Upper bounds of the latency buckets, in seconds: up to 600 s, the OpenAI SDKs' own timeout,
/// since a non-streamed answer's head may take up to `[timeouts] headers` (300 s) and a stream
/// runs for minutes (with buckets ending at 30 s, a 31 s stream and a 5 min one were alike).
const BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

type Counters = [AtomicU64; OUTCOMES.len()];

/// The label of requests no model answered (refused by the layers, or no answer at all).
const NONE: &str = "none";
/// The label of models that are not configured: any id a client sends in `models` can answer,
/// and one label each would let clients grow the table without bound.
const OTHER: &str = "other";

/// The gateway's metrics: one table per worker, written by that worker's requests only (a counter
/// two CPUs write for every request moves its cache line between them each time), summed by
/// [`Metrics::render`].
#[derive(Debug)]
pub struct Metrics {
    /// The model labels, sorted: the configured models, [`NONE`] and [`OTHER`].
    models: Box<[Box<str>]>,
    /// The counters of `models[i]`.
    requests: Box<[Counters]>,
    fallbacks: [AtomicU64; ErrorClass::ALL.len()],
    /// Failed attempts sent again to the same model (`[fallback] retries`), by class.
    retries: [AtomicU64; ErrorClass::ALL.len()],
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    /// The whole length of streamed answers, from the request to the stream's end.
    stream_buckets: [AtomicU64; BUCKETS.len()],
    stream_count: AtomicU64,
    stream_sum_us: AtomicU64,
    /// Requests refused for want of a valid client key (401), on any route.
    unauthorized: AtomicU64,
}

/// What one request ended as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The layers answered (the last attempt's outcome decides the label).
    Answered,
    /// The last attempt failed without an answer: 502.
    TransportError,
    /// The client left, or the drain was cut, before the answer's end (a stream's, or the head
    /// of any other answer).
    Cancelled,
    /// The layers passed the request through; the upstream answered.
    PassedThrough,
    /// A stream broke after its head: the upstream cut it, and its client got an error event.
    Broken,
    /// A stream stalled after its head (`[timeouts] idle`), and its client got an error event.
    Stalled,
}

fn class_index(class: ErrorClass) -> usize {
    ErrorClass::ALL
        .iter()
        .position(|c| *c == class)
        .unwrap_or(ErrorClass::ALL.len() - 1)
}

impl Metrics {
    /// Metrics with a row for each of `models` (the configured ids), `none` and `other`.
    pub fn new<'a>(models: impl IntoIterator<Item = &'a str>) -> Self {
        let mut labels: Vec<Box<str>> = models
            .into_iter()
            .chain([NONE, OTHER])
            .map(Box::from)
            .collect();
        labels.sort_unstable();
        labels.dedup();
        let requests = labels.iter().map(|_| Counters::default()).collect();
        Self {
            models: labels.into_boxed_slice(),
            requests,
            fallbacks: Default::default(),
            retries: Default::default(),
            buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            stream_buckets: Default::default(),
            stream_count: AtomicU64::new(0),
            stream_sum_us: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
        }
    }

    /// Counts a request refused for want of a valid client key: whoever tries keys against the
    /// gateway shows in `/metrics`, not only in the logs.
    pub fn record_unauthorized(&self) {
        self.unauthorized.fetch_add(1, Relaxed);
    }

    /// Records one request: the model that answered or was tried last (`None` when the layers
    /// refused it or passed it through), its attempts and how long it took until the response
    /// head (`None`: no head was sent).
    pub fn record(
        &self,
        model: Option<&str>,
        attempts: Option<&Attempts>,
        ended: Ended,
        head: Option<Duration>,
    ) {
        let outcome = match (ended, attempts.and_then(|a| a.tried.last())) {
            (Ended::TransportError, _) => TRANSPORT_ERROR,
            (Ended::Cancelled, _) => CANCELLED,
            (Ended::PassedThrough, _) => PASSED_THROUGH,
            (Ended::Broken, _) => BROKEN,
            (Ended::Stalled, _) => STALLED,
            (Ended::Answered, None) => REJECTED,
            (Ended::Answered, Some(last)) => match last.outcome {
                Outcome::Ok => 0,
                Outcome::Failed(class) => 1 + class_index(class),
            },
        };
        self.count(model.unwrap_or(NONE), outcome);
        if let Some(attempts) = attempts {
            // A failed attempt followed by one of another model moved on; one followed by the
            // same model's was retried (`[fallback] retries`).
            for pair in attempts.tried.windows(2) {
                if let Outcome::Failed(class) = pair[0].outcome {
                    let moved_on = pair[0].model != pair[1].model;
                    let counters = if moved_on {
                        &self.fallbacks
                    } else {
                        &self.retries
                    };
                    counters[class_index(class)].fetch_add(1, Relaxed);
                }
            }
        }
        if let Some(head) = head {
            observe(
                &self.buckets,
                &self.latency_count,
                &self.latency_sum_us,
                head,
            );
        }
    }

    /// Records how long a streamed answer took from the request to its end (however it ended).
    pub fn record_stream(&self, total: Duration) {
        observe(
            &self.stream_buckets,
            &self.stream_count,
            &self.stream_sum_us,
            total,
        );
    }

    /// The text exposition format of each worker's open connections (`counts`, in worker order).
    pub fn render_connections(counts: impl Iterator<Item = usize>) -> String {
        let mut out = String::from(
            "# HELP llm_gateway_worker_connections Open client connections, by worker thread.\n\
             # TYPE llm_gateway_worker_connections gauge\n",
        );
        for (worker, count) in counts.enumerate() {
            let _ = writeln!(
                out,
                "llm_gateway_worker_connections{{worker=\"{worker}\"}} {count}"
            );
        }
        out
    }

    fn count(&self, model: &str, outcome: usize) {
        let row = self
            .row(model)
            .or_else(|| self.row(OTHER))
            .and_then(|i| self.requests.get(i));
        if let Some(counters) = row {
            counters[outcome].fetch_add(1, Relaxed);
        }
    }

    fn row(&self, model: &str) -> Option<usize> {
        self.models.binary_search_by(|m| (**m).cmp(model)).ok()
    }

    /// The text exposition format of the sum of `shards` (one per worker, each written by its
    /// worker only).
    pub fn render(shards: &[Arc<Metrics>]) -> String {
        let sum = |counter: &dyn Fn(&Metrics) -> Option<&AtomicU64>| -> u64 {
            shards
                .iter()
                .filter_map(|shard| counter(shard))
                .map(|counter| counter.load(Relaxed))
                .sum()
        };
        let Some(first) = shards.first() else {
            return String::new();
        };
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP llm_gateway_requests_total Chat completion and Responses API requests, by the model that answered (the last one tried on a failure; the model asked when none was tried) and outcome (a stream's counted at its end).\n");
        out.push_str("# TYPE llm_gateway_requests_total counter\n");
        // Every shard has the same rows (the same configuration).
        for (row, model) in first.models.iter().enumerate() {
            for (outcome, name) in OUTCOMES.iter().enumerate() {
                let n = sum(&|m| m.requests.get(row)?.get(outcome));
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "llm_gateway_requests_total{{model=\"{}\",outcome=\"{name}\"}} {n}",
                        escape(model)
                    );
                }
            }
        }
        let by_class = [
            (
                "llm_gateway_fallbacks_total",
                "Attempts that failed and moved on to the next model, by error class.",
                (|m| &m.fallbacks) as fn(&Metrics) -> &[AtomicU64],
            ),
            (
                "llm_gateway_retries_total",
                "Attempts that failed and were sent again to the same model ([fallback] retries), by error class.",
                |m| &m.retries,
            ),
        ];
        for (name, help, counters) in by_class {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (index, class) in ErrorClass::ALL.iter().enumerate() {
                let n = sum(&|m| counters(m).get(index));
                let _ = writeln!(out, "{name}{{class=\"{}\"}} {n}", class.as_str());
            }
        }
        out.push_str("# HELP llm_gateway_unauthorized_total Requests refused for want of a valid client key (401), on any route.\n");
        out.push_str("# TYPE llm_gateway_unauthorized_total counter\n");
        let _ = writeln!(
            out,
            "llm_gateway_unauthorized_total {}",
            sum(&|m| Some(&m.unauthorized))
        );
        histogram(
            &mut out,
            "llm_gateway_request_duration_seconds",
            "Time until the response head: for a stream, its first content (the head goes out with the first event).",
            &|index| sum(&|m| m.buckets.get(index)),
            sum(&|m| Some(&m.latency_count)),
            sum(&|m| Some(&m.latency_sum_us)),
        );
        histogram(
            &mut out,
            "llm_gateway_stream_duration_seconds",
            "Time until a streamed answer ended: its last event, a break, a stall or the client leaving.",
            &|index| sum(&|m| m.stream_buckets.get(index)),
            sum(&|m| Some(&m.stream_count)),
            sum(&|m| Some(&m.stream_sum_us)),
        );
        out
    }
}

/// Counts `elapsed` in a histogram's bucket, count and sum.
fn observe(
    buckets: &[AtomicU64; BUCKETS.len()],
    count: &AtomicU64,
    sum_us: &AtomicU64,
    elapsed: Duration,
) {
    let secs = elapsed.as_secs_f64();
    if let Some(i) = BUCKETS.iter().position(|le| secs <= *le) {
        buckets[i].fetch_add(1, Relaxed);
    }
    count.fetch_add(1, Relaxed);
    sum_us.fetch_add(
        u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        Relaxed,
    );
}

/// Writes a histogram in the text exposition format: `bucket(i)` is the sum of the `i`th
/// bucket's counters (not cumulated yet).
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    bucket: &dyn Fn(usize) -> u64,
    count: u64,
    sum_us: u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = 0;
    for (index, le) in BUCKETS.iter().enumerate() {
        cumulative += bucket(index);
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {count}");
}

/// Escapes a label value (`\`, `"`, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
