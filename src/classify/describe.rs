//! An error's text for an answer: its sources too, and no secret a URL in it carries.

use std::error::Error as StdError;

use super::transport::sources;
// The URL of every reqwest error among the sources written bare, exactly, before the text
// scan: reqwest's URL may hold characters (`)`) that end a URL for `without_url_secrets`.
#[cfg(feature = "reqwest")]
use crate::reqwest::reqwest_urls_bare;

/// What `error` says, for an answer or a log line: its text and its sources', joined by `": "`,
/// each source whose text the one before already holds left out, with every URL in them written
/// without its user, password, query and fragment.
///
/// An HTTP client's error often says only what failed (hyper-util's "client error (Connect)");
/// why is in its sources. The `source()` chain is walked as [`classify_error`](super::classify_error)
/// walks it (an `io::Error`'s wrapped error too, at most 32 deep). A URL's secrets are left out
/// because the text goes to clients: reqwest writes the request's URL (a `?key=` included) into
/// its errors. This is the text of the layers' own 502 (`upstream_unreachable`); a service that
/// answers its inner service's errors itself can answer with the same.
///
/// # Example
///
/// ```
/// use std::io;
/// use tower_llm_router::classify::describe_error;
///
/// #[derive(Debug)]
/// struct Connect(io::Error);
/// impl std::fmt::Display for Connect {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("client error (Connect)")
///     }
/// }
/// impl std::error::Error for Connect {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&self.0)
///     }
/// }
///
/// let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
/// assert_eq!(
///     describe_error(&Connect(refused)),
///     "client error (Connect): connection refused"
/// );
///
/// let leaky = io::Error::other("cannot reach https://user:pw@example.com/v1?key=secret");
/// assert_eq!(describe_error(&leaky), "cannot reach https://example.com/v1");
/// ```
pub fn describe_error(error: &(dyn StdError + 'static)) -> String {
    let mut text = String::new();
    let mut previous = String::new();
    for error in sources(error) {
        let shown = error.to_string();
        // An `io::Error` and many wrappers show the error they wrap as their own text.
        if !shown.is_empty() && !previous.contains(&shown) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&shown);
        }
        previous = shown;
    }
    without_url_secrets(&reqwest_urls_bare(error, text))
}

/// Without reqwest, no error carries a reqwest URL: `text` as it is.
#[cfg(not(feature = "reqwest"))]
fn reqwest_urls_bare(_: &(dyn StdError + 'static), text: String) -> String {
    text
}

/// `text` with every URL in it (`scheme://…`, up to a space, a quote or the `://` of a URL
/// inside it) written without its userinfo (`user:password@`), query and fragment.
fn without_url_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, url) = rest.split_at(at + "://".len());
        out.push_str(before);
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(url.len());
        // A URL before this one's query (`https://h:8https://u:p@h2/`, a proxy's
        // `http://proxy/https://u:p@h2/`) is one of its own, with its own userinfo: this one
        // ends where it starts. One in the query or the fragment goes with them.
        let secrets = url[..end].find(['?', '#']).unwrap_or(end);
        let end = url[..secrets].find("://").unwrap_or(end);
        let (url, after) = url.split_at(end);
        out.push_str(&bare(url));
        rest = after;
    }
    out.push_str(rest);
    out
}

/// What follows a URL's `://`, without userinfo, query and fragment. Brackets closing the URL's
/// text (`(https://…?key=…)`) stay.
fn bare(url: &str) -> String {
    let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
    let host = match url[..authority_end].rfind('@') {
        Some(at) => at + 1,
        None => 0,
    };
    let url = &url[host..];
    match url.find(['?', '#']) {
        Some(secret) => {
            let closing = url.len() - url.trim_end_matches([')', ']']).len();
            let closing = &url[url.len() - closing.min(url.len() - secret)..];
            format!("{}{closing}", &url[..secret])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_userinfo_query_and_fragment() {
        let cases = [
            ("no url here", "no url here"),
            ("https://host/v1", "https://host/v1"),
            (
                "at https://u:p@host:8/v1?key=k#f now",
                "at https://host:8/v1 now",
            ),
            ("(http://host/a?key=k)", "(http://host/a)"),
            ("[http://u@host]", "[http://host]"),
            ("http://host?key=k http://x@y/z#f", "http://host http://y/z"),
            ("url \"http://h/?a=b\"", "url \"http://h/\""),
            // An `@` in the path is not userinfo.
            ("http://host/a@b", "http://host/a@b"),
            ("ends with ://", "ends with ://"),
            ("://u:p@h?q", "://h"),
            // A URL inside another's authority or path is one of its own.
            ("http://p/https://u:p@h/x?k", "http://p/https://h/x"),
            ("http://u:p@h:8https://v:q@h2", "http://h:8https://h2"),
            ("x://a@://u@h/p", "x://://h/p"),
            // Inside the query or the fragment, it goes with them.
            ("http://p/?next=https://u:p@h/x&key=k", "http://p/"),
            ("http://p/#https://u:p@h", "http://p/"),
        ];
        for (text, expected) in cases {
            assert_eq!(without_url_secrets(text), expected, "{text}");
        }
    }

    #[derive(Debug)]
    struct Chain(&'static str, Option<Box<Chain>>);

    impl std::fmt::Display for Chain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Chain {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn chain(texts: &[&'static str]) -> Chain {
        texts
            .iter()
            .rev()
            .fold(None, |inner, text| Some(Chain(text, inner.map(Box::new))))
            .unwrap_or(Chain("", None))
    }

    #[test]
    fn sources_are_joined_each_once() {
        let cases: [(&[&str], &str); 5] = [
            (&["alone"], "alone"),
            (&["a", "b", "c"], "a: b: c"),
            (&["wrapper: inner", "inner", "root"], "wrapper: inner: root"),
            (&["same", "same", "root"], "same: root"),
            (&["", "after empty"], "after empty"),
        ];
        for (texts, expected) in cases {
            assert_eq!(describe_error(&chain(texts)), expected, "{texts:?}");
        }
    }

    #[test]
    fn a_wrapped_io_error_is_shown_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, chain(&["refused"]));
        assert_eq!(describe_error(&io), "refused");
    }
}
