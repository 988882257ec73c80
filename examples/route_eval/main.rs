//! Scores prompts with the default router's difficulty and, when the input carries outcomes,
//! evaluates the routing quality by RouteLLM's protocol.
//!
//! ```text
//! cargo run --release --example route_eval -- --input FILE.jsonl --scores OUT.csv [--svg OUT.svg]
//! ```
//!
//! Input: JSON lines with `id` and `prompt`. Output: `id,score` (the difficulty in `[0, 1]`).
//! Lines in other common shapes are read too (`question_id`, MT-Bench's `turns`, chat
//! `messages`, outcomes as booleans: see `input.rs`); a line that still cannot be scored is
//! skipped, and the run says which (the first ten) on stderr.
//!
//! When lines also carry `dataset`, `strong` and `weak` (per-prompt quality of a strong and a
//! weak model, as in `../shared/routing-eval/routellm-gpt4-vs-mixtral.jsonl`), rows with
//! `routellm_contaminated: true` are dropped and, per dataset, the example prints APGR and
//! CPT(50%) / CPT(80%) for the router, the prompt-length baseline, a random baseline (fixed
//! seed) and the oracle, computed as `routellm/evals/evaluate.py` does:
//!
//! * scores get a fixed-seed jitter of at most 1e-6 (RouteLLM's `qcut` fails on ties);
//! * 11 thresholds: the edges of 10 quantile bins (linear interpolation, as numpy);
//! * at each threshold `t_i`, prompts with score `>= t_i` (`> t_10` for the last) go to the
//!   strong model; the point is (share of strong calls, mean quality);
//! * APGR: trapezoid area under quality vs share, with weak = 0 and strong = 1;
//! * CPT(x): share of strong calls where quality reaches `weak + x·(strong − weak)`, by linear
//!   interpolation over the points sorted by share (`np.interp`).
//!
//! With both MMLU and GSM8K in the input, a `mixed` row scores one stream of every GSM8K
//! prompt and as many MMLU prompts (fixed-seed sample): a router must tell the two kinds apart,
//! and send the kind where the strong model gains more (GSM8K) to it first.
//!
//! `--bootstrap N` adds 95% percentile intervals (N resamples of the prompts, fixed seed) of
//! the router's and the length baseline's APGR and of their difference.
//!
//! `--svg` draws the quality-vs-strong-share curves of every dataset; `--features` writes the
//! cue counts of [`Features`] per prompt (for calibrating your own weights; keep such
//! per-prompt outputs out of the repository).
use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};

use tower_llm_router::auto_route::{difficulty, Features, PromptInfo};

mod input;
mod protocol;

use input::{parse_line, Line, Outcomes};
use protocol::{curve, evaluate, jittered, length, means, metrics, mixed_stream, Rng, Row, MIXED};

/// How many skipped lines the run names on stderr.
const SKIPPED_NAMED: usize = 10;

struct Args {
    input: String,
    scores: String,
    svg: Option<String>,
    features: Option<String>,
    bootstrap: usize,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut input = None;
    let mut scores = None;
    let mut svg = None;
    let mut features = None;
    let mut bootstrap = 0;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--input" => input = it.next(),
            "--scores" => scores = it.next(),
            "--svg" => svg = it.next(),
            "--features" => features = it.next(),
            "--bootstrap" => {
                bootstrap = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--bootstrap needs a number of resamples")?
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let usage = "usage: route_eval --input FILE.jsonl --scores OUT.csv [--svg OUT.svg] \
                 [--features OUT.csv] [--bootstrap N]";
    Ok(Args {
        input: input.ok_or(usage)?,
        scores: scores.ok_or(usage)?,
        svg,
        features,
        bootstrap,
    })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let reader = BufReader::new(fs::File::open(&args.input)?);
    let mut out = BufWriter::new(fs::File::create(&args.scores)?);
    writeln!(out, "id,score")?;
    let mut feature_out = match &args.features {
        Some(p) => {
            let mut w = BufWriter::new(fs::File::create(p)?);
            writeln!(
                w,
                "id,dataset,strong,weak,chars,code,code_symbols,math,math_symbols,puzzle,light,numbers,reasoning,constraints,negations,commas,capitalized,non_latin"
            )?;
            Some(w)
        }
        None => None,
    };
    let mut by_dataset: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut n = 0usize;
    // How many lines were skipped, and why for the first few (an input of another shape
    // altogether would otherwise hold a message per line).
    let mut skipped = 0usize;
    let mut skipped_first: Vec<String> = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let Line {
            id,
            prompt,
            outcomes,
            contaminated,
        } = match parse_line(&line) {
            Ok(read) => read,
            Err(why) => {
                skipped += 1;
                if skipped_first.len() < SKIPPED_NAMED {
                    skipped_first.push(format!("line {}: {why}", i + 1));
                }
                continue;
            }
        };
        let score = difficulty(&PromptInfo::from_text(&prompt));
        writeln!(out, "{},{score}", csv_field(&id))?;
        if let Some(w) = &mut feature_out {
            let f = Features::extract(&prompt);
            let (dataset, strong, weak) = outcomes
                .as_ref()
                .map_or(("", f64::NAN, f64::NAN), |o| (&o.dataset, o.strong, o.weak));
            writeln!(
                w,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                csv_field(&id),
                dataset,
                strong,
                weak,
                f.chars,
                f.code,
                f.code_symbols,
                f.math,
                f.math_symbols,
                f.puzzle,
                f.light,
                f.numbers,
                f.reasoning,
                f.constraints,
                f.negations,
                f.commas,
                f.capitalized,
                f.non_latin
            )?;
        }
        n += 1;
        if let Some(Outcomes {
            dataset,
            strong,
            weak,
        }) = outcomes
        {
            if !contaminated {
                by_dataset.entry(dataset).or_default().push(Row {
                    prompt_chars: prompt.chars().count(),
                    score: f64::from(score),
                    strong,
                    weak,
                });
            }
        }
    }
    if skipped > 0 {
        // Said, not hidden: the scores file has no row for these ids.
        eprintln!("skipped {skipped} lines that could not be scored:");
        for why in &skipped_first {
            eprintln!("  {why}");
        }
        if n == 0 {
            return Err("no line of the input could be scored".into());
        }
    }
    out.flush()?;
    if let Some(w) = &mut feature_out {
        w.flush()?;
    }
    eprintln!("wrote {n} scores to {}", args.scores);
    if by_dataset.is_empty() {
        return Ok(());
    }
    if let Some(mixed) = mixed_stream(&by_dataset) {
        by_dataset.insert(MIXED.to_owned(), mixed);
    }

    println!(
        "RouteLLM protocol (10 qcut bins, 11 thresholds); cells: APGR / CPT(50%) / CPT(80%)\n"
    );
    println!(
        "{:<10} {:>6} {:>22} {:>22} {:>22} {:>22}",
        "dataset", "n", "router", "length", "random", "oracle"
    );
    let mut panels = Vec::new();
    let mut cis = Vec::new();
    for (name, rows) in &by_dataset {
        let mut rng = Rng(0x5EED);
        let mut methods: Vec<(&str, Vec<f64>)> = Vec::new();
        methods.push(("router", jittered(rows, &mut rng, |r| r.score)));
        methods.push(("length", jittered(rows, &mut rng, length)));
        let mut rand_rng = Rng(42);
        methods.push(("random", rows.iter().map(|_| rand_rng.next_f64()).collect()));
        methods.push(("oracle", jittered(rows, &mut rng, |r| r.strong - r.weak)));
        let (strong, weak) = means(rows);
        let mut line = format!("{name:<10} {:>6}", rows.len());
        let mut curves = Vec::new();
        for (method, scores) in &methods {
            let curve = curve(rows, scores);
            let m = metrics(&curve, strong, weak);
            let _ = write!(
                line,
                " {:>22}",
                format!("{:.3} / {:.1}% / {:.1}%", m.apgr, m.cpt50, m.cpt80)
            );
            curves.push((*method, curve));
        }
        println!("{line}");
        if args.bootstrap > 0 {
            cis.push((
                name.clone(),
                bootstrap(rows, &methods[0].1, &methods[1].1, args.bootstrap),
            ));
        }
        panels.push((name.clone(), strong, weak, curves));
    }
    for (name, [router, length, diff]) in &cis {
        println!(
            "{name:<10} bootstrap 95% CI of APGR ({} resamples): router [{:.3}, {:.3}], \
             length [{:.3}, {:.3}], router - length [{:+.3}, {:+.3}]",
            args.bootstrap, router.0, router.1, length.0, length.1, diff.0, diff.1
        );
    }
    println!(
        "\nrouter: tower_llm_router::auto_route::difficulty; length: ln(1 + chars); \
         random: uniform, seed 42; oracle: strong - weak"
    );
    if let Some(path) = &args.svg {
        fs::write(path, svg(&panels))?;
        eprintln!("wrote curves to {path}");
    }
    Ok(())
}

/// APGR of one resample (rows drawn with replacement) for two score vectors.
fn apgr_pair(rows: &[Row], a: &[f64], b: &[f64], rng: &mut Rng) -> (f64, f64) {
    let n = rows.len();
    let idx: Vec<usize> = (0..n)
        .map(|_| ((rng.next_f64() * n as f64) as usize).min(n - 1))
        .collect();
    let sample: Vec<Row> = idx.iter().map(|&i| rows[i]).collect();
    let apgr = |scores: &[f64]| {
        let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
        evaluate(&sample, &s).apgr
    };
    (apgr(a), apgr(b))
}

/// 95% percentile intervals of the router's APGR, the length baseline's, and their difference.
fn bootstrap(rows: &[Row], router: &[f64], length: &[f64], n: usize) -> [(f64, f64); 3] {
    let mut rng = Rng(7);
    let mut r = Vec::with_capacity(n);
    let mut l = Vec::with_capacity(n);
    let mut d = Vec::with_capacity(n);
    for _ in 0..n {
        let (a, b) = apgr_pair(rows, router, length, &mut rng);
        r.push(a);
        l.push(b);
        d.push(a - b);
    }
    let ci = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        (at(0.025), at(0.975))
    };
    [ci(&mut r), ci(&mut l), ci(&mut d)]
}

type Panel<'a> = (String, f64, f64, Vec<(&'a str, Vec<(f64, f64)>)>);

/// Hand-written SVG: one panel per dataset, performance gap recovered vs strong-call share.
fn svg(panels: &[Panel<'_>]) -> String {
    let (pw, ph, m) = (320.0, 260.0, 45.0);
    let width = panels.len() as f64 * (pw + m) + m;
    let height = ph + 2.0 * m + 30.0;
    let colors = [
        ("router", "#d62728"),
        ("length", "#1f77b4"),
        ("random", "#7f7f7f"),
        ("oracle", "#2ca02c"),
    ];
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (k, (name, strong, weak, curves)) in panels.iter().enumerate() {
        let gap = strong - weak;
        let pgr = |y: f64| if gap != 0.0 { (y - weak) / gap } else { 0.0 };
        // The PGR axis covers every curve (the oracle goes well above 1).
        let top = curves
            .iter()
            .flat_map(|(_, c)| c.iter().map(|p| pgr(p.1)))
            .fold(1.0f64, f64::max);
        let (ymin, ymax) = (-0.2, top + 0.1);
        let x0 = m + k as f64 * (pw + m);
        let y0 = m;
        let px = |share: f64| x0 + share / 100.0 * pw;
        let py = |pgr: f64| y0 + ph - (pgr - ymin) / (ymax - ymin) * ph;
        let _ = writeln!(
            s,
            r#"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{name} (weak {weak:.3}, strong {strong:.3})</text>"#,
            x0 + pw / 2.0,
            y0 - 10.0
        );
        for g in [0.0, 0.5, 1.0] {
            let _ = writeln!(
                s,
                r##"<line x1="{x0}" x2="{}" y1="{y}" y2="{y}" stroke="#ccc" stroke-dasharray="4 3"/><text x="{}" y="{}" text-anchor="end">{g}</text>"##,
                x0 + pw,
                x0 - 4.0,
                py(g) + 4.0,
                y = py(g)
            );
        }
        for t in [0.0, 25.0, 50.0, 75.0, 100.0] {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{t}%</text>"#,
                px(t),
                y0 + ph + 16.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">strong-model calls</text>"#,
            x0 + pw / 2.0,
            y0 + ph + 32.0
        );
        if k == 0 {
            let _ = writeln!(
                s,
                r#"<text x="12" y="{}" transform="rotate(-90 12 {})" text-anchor="middle">performance gap recovered</text>"#,
                y0 + ph / 2.0,
                y0 + ph / 2.0
            );
        }
        for (method, curve) in curves {
            let color = colors
                .iter()
                .find(|c| c.0 == *method)
                .map_or("black", |c| c.1);
            let pts: Vec<String> = curve
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(pgr(y))))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                pts.join(" ")
            );
        }
    }
    for (i, (method, color)) in colors.iter().enumerate() {
        let x = m + i as f64 * 90.0;
        let y = height - 12.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" x2="{}" y1="{}" y2="{}" stroke="{color}" stroke-width="3"/><text x="{}" y="{y}">{method}</text>"#,
            x + 20.0,
            y - 4.0,
            y - 4.0,
            x + 24.0
        );
    }
    s.push_str("</svg>\n");
    s
}
