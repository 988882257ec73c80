//! RouteLLM's evaluation protocol (`routellm/evals/evaluate.py`), shared by `route_eval` and
//! the routing-quality test (`tests/routing_quality.rs`).

use std::collections::BTreeMap;

/// One prompt: its router score and both models' quality on it.
#[derive(Clone, Copy)]
pub struct Row {
    /// Characters of the prompt (the length baseline).
    pub prompt_chars: usize,
    /// The router's score.
    pub score: f64,
    /// Quality of the strong model's answer.
    pub strong: f64,
    /// Quality of the weak model's answer.
    pub weak: f64,
}

/// splitmix64: a tiny fixed-seed generator for jitter and the random baseline.
pub struct Rng(pub u64);

impl Rng {
    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The name of the mixed stream's row.
pub const MIXED: &str = "mixed";

/// The binary-outcome datasets mixed into one stream, when the input has both.
const MIXED_FROM: [&str; 2] = ["gsm8k", "mmlu"];

/// One stream of every prompt of the smaller dataset and as many, drawn without replacement
/// (fixed seed), of the larger: a router that only knows one kind of prompt does not do well on
/// it. Only datasets scored the same way (0/1 correctness) are mixed, so MT-Bench's 1-10 judge
/// scores stay out.
pub fn mixed_stream(by_dataset: &BTreeMap<String, Vec<Row>>) -> Option<Vec<Row>> {
    let [a, b] = MIXED_FROM.map(|name| by_dataset.get(name));
    let (a, b) = (a?, b?);
    let each = a.len().min(b.len());
    let mut rng = Rng(0x313D);
    let mut mixed = Vec::with_capacity(2 * each);
    for rows in [a, b] {
        // A partial Fisher-Yates shuffle: the first `each` of a random permutation.
        let mut pool = rows.clone();
        for i in 0..each {
            let j =
                i + ((rng.next_f64() * (pool.len() - i) as f64) as usize).min(pool.len() - i - 1);
            pool.swap(i, j);
        }
        mixed.extend_from_slice(&pool[..each]);
    }
    Some(mixed)
}

/// (share of strong calls in %, mean quality) at each of the 11 thresholds, sorted by share.
pub fn curve(rows: &[Row], scores: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = rows.len();
    let mut points: Vec<(f64, f64)> = (0..=10)
        .map(|i| {
            let t = quantile(&sorted, i as f64 / 10.0);
            let mut strong_calls = 0usize;
            let mut total = 0.0;
            for (r, &s) in rows.iter().zip(scores) {
                let to_strong = if i < 10 { s >= t } else { s > t };
                if to_strong {
                    strong_calls += 1;
                    total += r.strong;
                } else {
                    total += r.weak;
                }
            }
            (100.0 * strong_calls as f64 / n as f64, total / n as f64)
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

/// numpy's default (linear) quantile of sorted values.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * p;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

pub struct Metrics {
    /// Area under the performance-gap-recovered curve (random is about 0.5).
    pub apgr: f64,
    /// Share of strong calls (%) that recovers half the gap.
    pub cpt50: f64,
    /// Share of strong calls (%) that recovers 80% of the gap.
    pub cpt80: f64,
}

pub fn metrics(curve: &[(f64, f64)], strong: f64, weak: f64) -> Metrics {
    let trapz = |f: &dyn Fn(f64) -> f64| {
        curve
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) / 100.0 * (f(w[0].1) + f(w[1].1)) / 2.0)
            .sum::<f64>()
    };
    let auc = trapz(&|y| y);
    let weak_auc = trapz(&|_| weak);
    let strong_auc = trapz(&|_| strong);
    let ys: Vec<f64> = curve.iter().map(|p| p.1).collect();
    let xs: Vec<f64> = curve.iter().map(|p| p.0).collect();
    Metrics {
        apgr: (auc - weak_auc) / (strong_auc - weak_auc),
        cpt50: interp(0.5 * (strong - weak) + weak, &ys, &xs),
        cpt80: interp(0.8 * (strong - weak) + weak, &ys, &xs),
    }
}

/// `np.interp(x, xp, fp)`: clamps at the ends, binary search for the segment (like numpy, it
/// assumes `xp` increasing; on a non-monotone curve it returns what numpy returns).
pub fn interp(x: f64, xp: &[f64], fp: &[f64]) -> f64 {
    let n = xp.len();
    if x <= xp[0] {
        return fp[0];
    }
    if x >= xp[n - 1] {
        return fp[n - 1];
    }
    // Largest j with xp[j] <= x.
    let (mut lo, mut hi) = (0usize, n - 1);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if xp[mid] <= x {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let j = lo;
    if xp[j + 1] == xp[j] {
        return fp[j];
    }
    fp[j] + (x - xp[j]) * (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])
}

/// `value` of each row plus RouteLLM's tie-breaking jitter (at most 1e-6) drawn from `rng`.
pub fn jittered(rows: &[Row], rng: &mut Rng, value: impl Fn(&Row) -> f64) -> Vec<f64> {
    rows.iter()
        .map(|r| value(r) + 1e-6 * rng.next_f64())
        .collect()
}

/// The prompt-length baseline: `ln(1 + chars)`.
pub fn length(row: &Row) -> f64 {
    (row.prompt_chars as f64).ln_1p()
}

/// The mean quality of the strong and of the weak model.
pub fn means(rows: &[Row]) -> (f64, f64) {
    let n = rows.len() as f64;
    (
        rows.iter().map(|r| r.strong).sum::<f64>() / n,
        rows.iter().map(|r| r.weak).sum::<f64>() / n,
    )
}

/// APGR and CPTs of `scores` (one per row) on `rows`.
pub fn evaluate(rows: &[Row], scores: &[f64]) -> Metrics {
    let (strong, weak) = means(rows);
    metrics(&curve(rows, scores), strong, weak)
}
