//! The gateway example's log format (`examples/gateway/log.rs`): the same lines as
//! tracing-subscriber's default format, its timestamps and the calendar behind them.

#[allow(dead_code)]
#[path = "../examples/gateway/log.rs"]
mod log;

use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use log::{second_text, CachedTime, Millis, PlainFields};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::MakeWriter;

/// Lines written by a subscriber, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }
}

#[derive(Debug)]
struct Failure(&'static str, Option<Box<Failure>>);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.1.as_deref().map(|e| e as _)
    }
}

/// Events of every kind of field the gateway's lines and the layers' spans carry, and
/// values that need escaping.
fn events() {
    tracing::info!(
        target: "gateway",
        model = "gpt-4o-mini",
        attempts = "openai/gpt-4o=rate_limited, google/gemini-2.5-flash=ok",
        served = "google/gemini-2.5-flash",
        status = 200u16,
        ms = %1.25,
        "chat completion"
    );
    tracing::warn!(
        target: "gateway",
        model = "we\"ird\\ \n\t\u{1b}[31m \u{85} модель \u{300}",
        "chat completion: no upstream answered"
    );
    tracing::info!("listening on {} ({} workers, {:?})", "http://x", 2, "q\"");
    tracing::info!("bell \u{7} esc \u{1b}[2J del \u{7f} c1 \u{9b} back \u{8} ff \u{c} end");
    tracing::info!(
        r#type = "x",
        flag = true,
        n = -3i64,
        f = 1.0f64,
        some = ?Some("y"),
        log.target = "skipped",
        "fields"
    );
    tracing::info!(only = "fields, no message");
    tracing::error!(message = "message field \u{1b}", x = 1u64);
    let chained = Failure(
        "outer \u{1b}[1m",
        Some(Box::new(Failure(
            "middle",
            Some(Box::new(Failure("root \u{9b}", None))),
        ))),
    );
    tracing::error!(
        error = &chained as &(dyn std::error::Error + 'static),
        "failed"
    );
    let alone = Failure("alone", None);
    tracing::error!(error = &alone as &(dyn std::error::Error + 'static));
    let span = tracing::info_span!(
        "llm_router.fallback",
        gen_ai.request.model = "a\"b",
        attempt = 2u64
    );
    span.in_scope(|| {
        tracing::info_span!("llm_router.attempt", k = %"v")
            .in_scope(|| tracing::warn!(status = 503u16, "attempt failed"))
    });
}

fn written(configure: impl FnOnce(Captured) -> tracing::Dispatch) -> Vec<String> {
    let captured = Captured::default();
    tracing::dispatcher::with_default(&configure(captured.clone()), events);
    captured.lines()
}

/// Splits off the timestamp: `(timestamp, rest)`.
fn split(line: &str) -> (&str, &str) {
    line.split_once(' ').unwrap()
}

#[test]
fn lines_are_those_of_tracing_subscribers_default_format() {
    let theirs = written(|w| {
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(w)
            .finish()
            .into()
    });
    let ours = written(|w| {
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_timer(CachedTime)
            .fmt_fields(PlainFields)
            .with_writer(w)
            .finish()
            .into()
    });
    assert_eq!(theirs.len(), 10, "{theirs:#?}");
    assert_eq!(ours.len(), theirs.len(), "{ours:#?}");
    for (ours, theirs) in ours.iter().zip(&theirs) {
        let ((our_time, our_rest), (their_time, their_rest)) = (split(ours), split(theirs));
        assert_eq!(our_rest, their_rest);
        assert_eq!(
            our_time.len(),
            their_time.len(),
            "{our_time} / {their_time}"
        );
    }
    // What the escaping is for: no control character reaches the log.
    assert!(ours.iter().all(|l| !l.chars().any(char::is_control)));
}

#[test]
fn durations_are_written_in_milliseconds_with_two_decimals() {
    let ms = |nanos| Millis(Duration::from_nanos(nanos)).to_string();
    assert_eq!(ms(0), "0.00");
    assert_eq!(ms(4_999), "0.00");
    assert_eq!(ms(5_000), "0.01");
    assert_eq!(ms(690_000), "0.69");
    assert_eq!(ms(1_234_567), "1.23");
    assert_eq!(ms(99_995_000), "100.00");
    assert_eq!(ms(12_345_678_901), "12345.68");
    // As `{:.2}` of the float wrote them, away from the halfway cases it rounds to even.
    for nanos in (0..50_000_000u64).step_by(7_919) {
        let float = format!("{:.2}", Duration::from_nanos(nanos).as_secs_f64() * 1e3);
        if (nanos % 10_000) != 5_000 {
            assert_eq!(ms(nanos), float, "{nanos} ns");
        }
    }
}

#[test]
fn the_time_is_what_tracing_subscriber_writes() {
    let format = |timer: &dyn Fn(&mut Writer<'_>) -> fmt::Result| {
        let mut text = String::new();
        timer(&mut Writer::new(&mut text)).unwrap();
        text
    };
    // Read both within one second (a second may end between the two reads).
    let (ours, theirs) = loop {
        let theirs = format(&|w| SystemTime.format_time(w));
        let ours = format(&|w| CachedTime.format_time(w));
        if ours[..19] == theirs[..19] {
            break (ours, theirs);
        }
    };
    assert_eq!(ours.len(), theirs.len());
    assert_eq!((&ours[19..20], &ours[26..]), (".", "Z"));
    assert!(ours[20..26].bytes().all(|b| b.is_ascii_digit()));
}

#[test]
fn seconds_become_the_calendar_dates_httpdate_gives() {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // From the epoch to 9999-12-31T23:59:59, in a prime stride (about 100,000 seconds,
    // every time of day and day of the 400-year cycle), and the edges.
    let last = 253_402_300_799u64;
    let seconds =
        (0..=last)
            .step_by(2_534_023)
            .chain([951_782_400, 951_868_799, 4_102_444_799, last]);
    for second in seconds {
        let ours = second_text(second).unwrap();
        let ours = std::str::from_utf8(&ours).unwrap();
        // "Sat, 26 Nov 2026 07:24:59 GMT"
        let http = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
        let parts: Vec<&str> = http.split([' ', ',']).filter(|p| !p.is_empty()).collect();
        let month = MONTHS.iter().position(|m| *m == parts[2]).unwrap() + 1;
        let expected = format!("{}-{month:02}-{}T{}", parts[3], parts[1], parts[4]);
        assert_eq!(ours, expected, "second {second}");
    }
    assert_eq!(
        second_text(last + 1),
        None,
        "year 10000 is left to SystemTime"
    );
}

/// A `RUST_LOG` that is not a filter (`gateway=debg`) is not silently replaced by the default:
/// the gateway says so. Unset or blank, the default is used without a word.
#[test]
fn an_invalid_rust_log_is_reported() {
    let default = "info,tower_llm_router=warn";
    let default_filter = tracing_subscriber::EnvFilter::new(default).to_string();
    let (filter, warning) = log::env_filter(Some("gateway=debg"), default);
    assert_eq!(filter.to_string(), default_filter);
    let warning = warning.expect("a warning");
    assert!(
        warning.contains("RUST_LOG") && warning.contains(default),
        "{warning}"
    );
    for unset in [None, Some(""), Some("  ")] {
        let (filter, warning) = log::env_filter(unset, default);
        assert_eq!(
            (filter.to_string(), warning),
            (default_filter.clone(), None)
        );
    }
    let (filter, warning) = log::env_filter(Some("warn,gateway=debug"), default);
    assert_eq!(
        (filter.to_string(), warning),
        ("gateway=debug,warn".to_owned(), None)
    );
}
