//! The text framing of an upstream's answer in the `classify` and `layer` targets, so that
//! seeds stay readable: a status line, header lines up to a blank line, then the body.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// `data` up to its first `\n`, and what follows it.
pub fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// The status (`None` when the first line is not one), the headers (a line that is not a
/// valid header is skipped; a line may end with `\r\n`) and the body of an answer.
pub fn answer(data: &[u8]) -> (Option<StatusCode>, HeaderMap, &[u8]) {
    let (status_line, mut rest) = split_line(data);
    let status = std::str::from_utf8(status_line)
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok());
    let mut headers = HeaderMap::new();
    loop {
        let (line, after) = split_line(rest);
        rest = after;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    (status, headers, rest)
}
