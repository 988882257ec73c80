//! A few values a thread made lately, kept to be shared instead of made again.
//!
//! A gateway's requests name a few models over and over: the payload keeps the `Arc<str>` of a
//! model it decoded ([`ChatRequest::parse`](crate::payload::ChatRequest::parse)), the fallback
//! layer the header values of a model's first answers. Each thread keeps its own (no lock, no
//! line two CPUs write), bounded: a new value replaces the oldest.

use std::cell::RefCell;
use std::thread::LocalKey;

/// How many values a [`Recent`] keeps.
pub(crate) const RECENT: usize = 4;

/// The longest model name whose values a thread keeps: a client's name can be long, and what is
/// kept stays until the thread ends (or is replaced).
pub(crate) const RECENT_MODEL_MAX: usize = 64;

/// The last [`RECENT`] values kept, the oldest replaced first.
pub(crate) struct Recent<T> {
    slots: [Option<T>; RECENT],
    next: usize,
}

impl<T> Recent<T> {
    /// Keeps nothing yet.
    pub(crate) const fn new() -> Self {
        Self {
            slots: [const { None }; RECENT],
            next: 0,
        }
    }

    /// The first value kept that `matches`.
    pub(crate) fn find(&self, mut matches: impl FnMut(&T) -> bool) -> Option<&T> {
        self.slots.iter().flatten().find(|value| matches(value))
    }

    /// Keeps `value`, in place of the oldest when all slots are taken.
    pub(crate) fn keep(&mut self, value: T) {
        if let Some(slot) = self.slots.get_mut(self.next) {
            *slot = Some(value);
        }
        self.next = (self.next + 1) % RECENT;
    }
}

/// Runs `f` on this thread's `Recent` in `key`; `None` while the thread is being torn down or
/// the values are borrowed already (nothing holds them across a call: then nothing is shared).
pub(crate) fn with<T: 'static, R>(
    key: &'static LocalKey<RefCell<Recent<T>>>,
    f: impl FnOnce(&mut Recent<T>) -> Option<R>,
) -> Option<R> {
    key.try_with(|recent| f(&mut *recent.try_borrow_mut().ok()?))
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_values_and_replaces_the_oldest() {
        let mut recent = Recent::new();
        assert!(recent.find(|_: &usize| true).is_none());
        for value in 0..RECENT + 2 {
            recent.keep(value);
        }
        // 0 and 1 were replaced by the two values after the first `RECENT`.
        for value in 0..RECENT + 2 {
            assert_eq!(
                recent.find(|&v| v == value).is_some(),
                value >= 2,
                "{value}"
            );
        }
    }
}
