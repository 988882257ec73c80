//! The gateway's log output: where lines go ([`LogWriter`]) and two cheaper parts for
//! tracing-subscriber's default line format ([`CachedTime`], [`PlainFields`]).
//!
//! The line per request went through tracing-subscriber's `SystemTime` and `DefaultFields`: 12k
//! instructions per request, as much as a fifth of all the gateway does for a request
//! (callgrind). Most of it was the calendar arithmetic of each timestamp, `Debug`-escaping
//! strings character by character, and styling field names for a terminal that is not there.
//! The two parts here write the same text (a test compares them with tracing-subscriber's, line
//! for line) and do the expensive part only when a value needs it.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::io::{BufWriter, Stdout, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::FormatFields;

/// Where log lines go: stdout, unbuffered on a terminal; otherwise (a file, a pipe, a log
/// collector) through a 64 KiB buffer flushed every 200 ms and at exit, so that the line per
/// request costs no `write` system call of its own. Each event is written whole, so lines
/// never interleave.
#[derive(Clone)]
pub(crate) struct LogWriter(Option<Arc<Mutex<BufWriter<Stdout>>>>);

impl LogWriter {
    pub(crate) fn new(buffered: bool) -> Self {
        if !buffered {
            return Self(None);
        }
        let buffer = Arc::new(Mutex::new(BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        )));
        let flusher = Arc::downgrade(&buffer);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let Some(buffer) = flusher.upgrade() else {
                return;
            };
            let locked = buffer.lock();
            if let Ok(mut buffer) = locked {
                let _ = buffer.flush();
            }
        });
        Self(Some(buffer))
    }

    pub(crate) fn flush_now(&self) {
        if let Some(Ok(mut buffer)) = self.0.as_ref().map(|b| b.lock()) {
            let _ = buffer.flush();
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.0 {
            Some(buffer) => match buffer.lock() {
                Ok(mut buffer) => buffer.write(buf),
                Err(_) => Ok(buf.len()),
            },
            None => std::io::stdout().write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match &self.0 {
            Some(buffer) => match buffer.lock() {
                Ok(mut buffer) => buffer.write_all(buf),
                Err(_) => Ok(()),
            },
            None => std::io::stdout().write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &self.0 {
            // Flushed by the background thread and at exit.
            Some(_) => Ok(()),
            None => std::io::stdout().flush(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        self.clone()
    }
}

/// `2026-11-26T07:24:59.813303Z`: UTC with microseconds, as tracing-subscriber's
/// [`SystemTime`] writes it. The date and time of day are worked out once per second per
/// thread; each line formats only its microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CachedTime;

/// `YYYY-MM-DDTHH:MM:SS`.
pub(crate) type SecondText = [u8; 19];

thread_local! {
    /// The last second this thread formatted, and its text.
    static LAST_SECOND: Cell<(u64, SecondText)> = const { Cell::new((u64::MAX, [0; 19])) };
}

impl FormatTime for CachedTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let since_epoch = std::time::SystemTime::now().duration_since(UNIX_EPOCH);
        let Ok(since_epoch) = since_epoch else {
            return SystemTime.format_time(w);
        };
        let second = since_epoch.as_secs();
        let Some(text) = second_text_cached(second) else {
            return SystemTime.format_time(w);
        };
        let mut fraction = *b".000000Z";
        write_digits(&mut fraction[1..7], u64::from(since_epoch.subsec_micros()));
        // Both are ASCII digits and punctuation.
        w.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)?;
        w.write_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?)
    }
}

fn second_text_cached(second: u64) -> Option<SecondText> {
    LAST_SECOND.with(|last| {
        let (cached, text) = last.get();
        if cached == second {
            return Some(text);
        }
        let text = second_text(second)?;
        last.set((second, text));
        Some(text)
    })
}

/// The text of a second since the Unix epoch, for years up to 9999 (past that,
/// [`SystemTime`]'s own format takes over).
pub(crate) fn second_text(second: u64) -> Option<SecondText> {
    let days = second / 86_400;
    let of_day = second % 86_400;
    let (year, month, day) = civil_from_days(days);
    if year > 9999 {
        return None;
    }
    let mut text = *b"0000-00-00T00:00:00";
    write_digits(&mut text[0..4], year);
    write_digits(&mut text[5..7], month);
    write_digits(&mut text[8..10], day);
    write_digits(&mut text[11..13], of_day / 3600);
    write_digits(&mut text[14..16], of_day % 3600 / 60);
    write_digits(&mut text[17..19], of_day % 60);
    Some(text)
}

/// Year, month and day of the `days`-th day after 1970-01-01, in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Counted from 0000-03-01, so that the leap day ends each 400-year era's year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Writes `value` into `out` as decimal digits, zero-padded to its length.
fn write_digits(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// tracing-subscriber's [`DefaultFields`] without a terminal: `message`, then `name=value`
/// pairs, strings quoted and escaped as `Debug` writes them, the message stripped of terminal
/// control characters. A string that needs no escaping (the usual model name) is written as
/// it is instead of character by character; for a terminal, `DefaultFields` itself styles the
/// names.
#[derive(Debug, Default)]
pub(crate) struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        if writer.has_ansi_escapes() {
            return DefaultFields::new().format_fields(writer, fields);
        }
        let mut visitor = PlainVisitor {
            sanitize: writer.sanitizes_ansi_escapes(),
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Where a field's value goes: in the message's place (no name), or after `name=`.
enum Place {
    Message,
    Value,
}

struct PlainVisitor<'writer> {
    writer: Writer<'writer>,
    /// Whether the message is stripped of terminal control characters (tracing-subscriber's
    /// default).
    sanitize: bool,
    first: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Writes what goes before a field: a space after the first, and its name (none for the
    /// message). `None` for a field not written at all.
    fn start(&mut self, field: &Field) -> Option<Place> {
        let name = field.name();
        // With tracing-log, the metadata of `log` records comes as such fields; the line
        // already shows it.
        if self.result.is_err() || name.starts_with("log.") {
            return None;
        }
        if !std::mem::take(&mut self.first) {
            self.result = self.writer.write_char(' ');
        }
        if name == "message" {
            return Some(Place::Message);
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self
            .result
            .and_then(|()| self.writer.write_str(name))
            .and_then(|()| self.writer.write_char('='));
        Some(Place::Value)
    }

    fn write_message(&mut self, message: fmt::Arguments<'_>) {
        self.result = if self.sanitize {
            write!(Sanitized(&mut self.writer), "{message}")
        } else {
            self.writer.write_fmt(message)
        };
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match self.start(field) {
            None => {}
            Some(Place::Message) => self.write_message(format_args!("{value}")),
            Some(Place::Value) if needs_no_escape(value) => {
                self.result = ["\"", value, "\""]
                    .into_iter()
                    .try_for_each(|part| self.writer.write_str(part));
            }
            Some(Place::Value) => self.result = write!(self.writer, "{value:?}"),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match self.start(field) {
            None => {}
            Some(Place::Message) => self.write_message(format_args!("{value}")),
            Some(Place::Value) => self.result = self.writer.write_str(Decimal::new(value).as_str()),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match self.start(field) {
            None => {}
            Some(Place::Message) => self.write_message(format_args!("{value}")),
            Some(Place::Value) => {
                let sign = if value < 0 { "-" } else { "" };
                let digits = Decimal::new(value.unsigned_abs());
                self.result = self
                    .result
                    .and_then(|()| self.writer.write_str(sign))
                    .and_then(|()| self.writer.write_str(digits.as_str()));
            }
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let Some(place) = self.start(field) else {
            return;
        };
        let sanitize = self.sanitize;
        let text = |error| Escaped { error, sanitize };
        let mut line = format!("{:?}", text(value));
        if let Some(source) = value.source() {
            let mut sources = Vec::new();
            let mut next = Some(source);
            while let Some(error) = next {
                sources.push(text(error));
                next = error.source();
            }
            let _ = write!(line, " {}.sources={sources:?}", field.name());
        }
        if let Place::Message = place {
            self.write_message(format_args!("{line}"));
        } else {
            self.result = self.writer.write_str(&line);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match self.start(field) {
            None => {}
            Some(Place::Message) => self.write_message(format_args!("{value:?}")),
            Some(Place::Value) => self.result = write!(self.writer, "{value:?}"),
        }
    }
}

/// The decimal digits of a `u64`, written without the formatting machinery (a status code
/// per line).
pub(crate) struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    pub(crate) fn new(mut value: u64) -> Self {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                return Self { digits, start };
            }
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        // ASCII digits only.
        std::str::from_utf8(&self.digits[self.start..]).unwrap_or("?")
    }
}

/// A duration in milliseconds with two decimals (`0.69`), rounded half up, for the log line.
/// Worked out in integers: `{:.2}` of a float cost a tenth of the line.
pub(crate) struct Millis(pub(crate) Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hundredths = u64::try_from((self.0.as_nanos() + 5_000) / 10_000).unwrap_or(u64::MAX);
        let fraction = hundredths % 100;
        f.write_str(Decimal::new(hundredths / 100).as_str())?;
        f.write_str(if fraction < 10 { ".0" } else { "." })?;
        f.write_str(Decimal::new(fraction).as_str())
    }
}

/// Whether `Debug` writes `s` quoted but otherwise as it is: printable ASCII without `"` or
/// `\`.
fn needs_no_escape(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// Whether a message text holds a character tracing-subscriber escapes: the C0 controls a
/// terminal acts on, DEL, or a C1 control (`U+0080`..`U+009F`, encoded `C2 80`..`C2 9F`).
fn needs_sanitizing(s: &str) -> bool {
    s.bytes()
        .any(|b| matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f | 0xc2))
}

/// Writes through to the line, escaping what [`needs_sanitizing`] finds as tracing-subscriber
/// does.
struct Sanitized<W>(W);

impl<W: fmt::Write> fmt::Write for Sanitized<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !needs_sanitizing(s) {
            return self.0.write_str(s);
        }
        for ch in s.chars() {
            match ch {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", u32::from(ch))?,
                _ => self.0.write_char(ch)?,
            }
        }
        Ok(())
    }
}

/// An error's text, written by `Debug` as it is (no quotes), sanitized like a message: the
/// error and the entries of its `.sources` list.
struct Escaped<'e> {
    error: &'e dyn std::error::Error,
    sanitize: bool,
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sanitize {
            write!(Sanitized(f), "{}", self.error)
        } else {
            write!(f, "{}", self.error)
        }
    }
}

/// The log filter: `rust_log` (the `RUST_LOG` variable) when it is a valid filter, else
/// `default`; with a warning to log when it is set but not valid, which a typo
/// (`gateway=debg`) would otherwise leave unnoticed, the default silently in its place.
pub(crate) fn env_filter(
    rust_log: Option<&str>,
    default: &str,
) -> (tracing_subscriber::EnvFilter, Option<String>) {
    use tracing_subscriber::EnvFilter;
    match rust_log.filter(|value| !value.trim().is_empty()) {
        None => (EnvFilter::new(default), None),
        Some(value) => match EnvFilter::try_new(value) {
            Ok(filter) => (filter, None),
            Err(error) => (
                EnvFilter::new(default),
                Some(format!(
                    "RUST_LOG is not a valid filter ({error}): logging with {default:?} instead"
                )),
            ),
        },
    }
}
