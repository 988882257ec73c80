//! Model-id patterns: exact ids and `*` wildcards (`anthropic/*`, `*-mini`, `*`).

use std::fmt;
use std::sync::Arc;

/// A list of model-id patterns. A pattern without `*` matches one id exactly; `*` matches any
/// run of characters (`"openai/*"`, `"*:free"`, `"*"`).
///
/// # Example
///
/// ```
/// use tower_llm_router::fallback::ModelPatterns;
///
/// let allow = ModelPatterns::new(["gpt-4o-mini", "anthropic/*"]);
/// assert!(allow.matches("gpt-4o-mini"));
/// assert!(allow.matches("anthropic/claude-sonnet-4"));
/// assert!(!allow.matches("gpt-4o"));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ModelPatterns {
    patterns: Arc<[Box<str>]>,
}

impl ModelPatterns {
    /// Builds the list from patterns.
    pub fn new<I, P>(patterns: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        Self {
            patterns: patterns.into_iter().map(|p| p.as_ref().into()).collect(),
        }
    }

    /// Whether any pattern matches `model`.
    pub fn matches(&self, model: &str) -> bool {
        self.patterns.iter().any(|p| glob_matches(p, model))
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

impl fmt::Debug for ModelPatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.patterns.iter()).finish()
    }
}

/// `*`-glob match without allocation or backtracking blow-up: the classic greedy algorithm
/// that remembers the last star, O(len(pattern) * len(text)) in the worst case.
pub(crate) fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((spi, sti)) = star {
            pi = spi + 1;
            ti = sti + 1;
            star = Some((spi, sti + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs() {
        assert!(glob_matches("a", "a"));
        assert!(!glob_matches("a", "ab"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("*", "anything/at:all"));
        assert!(glob_matches("openai/*", "openai/gpt-4o"));
        assert!(!glob_matches("openai/*", "anthropic/claude"));
        assert!(glob_matches("*:free", "meta/llama:free"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        assert!(glob_matches("**", "x"));
    }
}
