//! The bytes of request bodies a layer's services hold at once (`max_buffered_bytes`).
//!
//! A routed body is buffered whole and held until the last attempt is done with it (to send it
//! again to the next model), and every clone of a layer's service holds its own requests'
//! bodies. Without a bound, clients that upload large bodies and then stall (a byte a minute
//! keeps a body timeout away) make a server hold one body per connection they open.
//!
//! A layer with a budget counts, in one atomic shared by every service cloned from it, the
//! memory of the bodies it buffers: as each frame arrives, what its buffer will hold once the
//! frame is in (the bytes sent, or the buffer allocated at the declared `Content-Length` when
//! one is declared). A frame that does not fit ends the request with a 503 ([`over_budget`]).
//! The finished buffer is a [`Bytes`] whose owner carries the [`Reservation`]: the bytes are
//! given back when the last reference to that buffer is dropped, wherever it is (the layer's
//! future, an attempt's body in the client's connection task, a body handed to a layer
//! below), exactly once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;

use crate::ApiError;

/// A layer's budget: its limit and what its services hold now. Clones share it.
#[derive(Clone, Debug)]
pub(crate) struct BufferBudget(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    limit: usize,
    held: AtomicUsize,
}

impl BufferBudget {
    pub(crate) fn new(limit: usize) -> Self {
        Self(Arc::new(Shared {
            limit,
            held: AtomicUsize::new(0),
        }))
    }

    pub(crate) fn limit(&self) -> usize {
        self.0.limit
    }

    /// Whether `bytes` more fit now: a declared `Content-Length` that does not is refused
    /// before a byte of its body is read. A snapshot: the body is charged as it arrives.
    pub(crate) fn fits(&self, bytes: u64) -> bool {
        let free = self
            .0
            .limit
            .saturating_sub(self.0.held.load(Ordering::Relaxed));
        bytes <= free as u64
    }

    /// An empty reservation, to grow as a body arrives.
    pub(crate) fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }
}

/// Bytes taken from a [`BufferBudget`] for one body, given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: BufferBudget,
    bytes: usize,
}

impl Reservation {
    /// Grows the reservation to `total` bytes if the difference fits in the budget; else
    /// leaves it as it is and returns `false`.
    pub(crate) fn grow_to(&mut self, total: usize) -> bool {
        let more = total.saturating_sub(self.bytes);
        if more == 0 {
            return true;
        }
        let limit = self.budget.0.limit;
        let taken = self
            .budget
            .0
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(more).filter(|&after| after <= limit)
            });
        if taken.is_ok() {
            self.bytes = total;
        }
        taken.is_ok()
    }

    /// Grows the reservation to `total` bytes whatever is left: for memory that exists
    /// already (a copy made of a body that was charged), which refusing would not free.
    pub(crate) fn force_to(&mut self, total: usize) {
        let more = total.saturating_sub(self.bytes);
        if more > 0 {
            self.budget.0.held.fetch_add(more, Ordering::Relaxed);
            self.bytes = total;
        }
    }

    pub(crate) fn budget(&self) -> &BufferBudget {
        &self.budget
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.0.held.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

/// A buffer and the reservation that counts it: the owner of a [`Bytes`] made by [`hold`].
struct Held<T> {
    buffer: T,
    _reservation: Reservation,
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Held<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// `buffer` as [`Bytes`] that give `reservation` back when the last reference to them (a clone,
/// a slice) is dropped. One allocation (the owner's), only for a layer with a budget.
pub(crate) fn hold<T>(buffer: T, reservation: Reservation) -> Bytes
where
    T: AsRef<[u8]> + Send + 'static,
{
    Bytes::from_owner(Held {
        buffer,
        _reservation: reservation,
    })
}

/// Charges `bytes`, a copy made of a body charged to `budget` (the auto router's rewrite of
/// it), to the same budget, whatever is left: the copy exists already, and the body it was
/// made from is given back once dropped.
pub(crate) fn charge_copy(bytes: Bytes, budget: &BufferBudget) -> Bytes {
    let mut reservation = budget.reservation();
    reservation.force_to(bytes.len());
    hold(bytes, reservation)
}

/// The 503 for a body that does not fit in the layer's budget: the server's own overload
/// (`overloaded`, as for a `LoadShed` below the layer), which a client may retry shortly
/// (`Retry-After: 1`: bodies are given back as their requests end).
#[cold]
pub(crate) fn over_budget(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "overloaded",
        format!("the server holds as many request bodies as it may ({limit} bytes): retry shortly"),
    )
    .retry_after_secs(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(budget: &BufferBudget) -> usize {
        budget.0.held.load(Ordering::Relaxed)
    }

    #[test]
    fn a_reservation_grows_within_the_limit_and_is_given_back_once() {
        let budget = BufferBudget::new(100);
        let mut a = budget.reservation();
        assert!(a.grow_to(60));
        assert!(a.grow_to(40), "shrinking asks nothing");
        let mut b = budget.reservation();
        assert!(!b.grow_to(41), "60 + 41 is over 100");
        assert!(b.grow_to(40));
        assert_eq!(held(&budget), 100);
        assert!(!budget.fits(1));
        drop(a);
        assert_eq!(held(&budget), 40);
        assert!(budget.fits(60) && !budget.fits(61));
        drop(b);
        assert_eq!(held(&budget), 0);
    }

    #[test]
    fn held_bytes_are_given_back_when_the_last_reference_is_dropped() {
        let budget = BufferBudget::new(10);
        let mut reservation = budget.reservation();
        assert!(reservation.grow_to(8));
        let bytes = hold(vec![7u8; 8], reservation);
        let slice = bytes.slice(2..4);
        let clone = bytes.clone();
        drop(bytes);
        drop(clone);
        assert_eq!(held(&budget), 8, "a slice still holds the buffer");
        assert_eq!(&slice[..], &[7, 7]);
        drop(slice);
        assert_eq!(held(&budget), 0);
    }

    #[test]
    fn a_copy_is_charged_even_past_the_limit() {
        let budget = BufferBudget::new(4);
        let copy = charge_copy(Bytes::from_static(b"123456"), &budget);
        assert_eq!(held(&budget), 6);
        assert!(!budget.fits(1));
        assert!(!budget.reservation().grow_to(1));
        drop(copy);
        assert_eq!(held(&budget), 0);
    }
}
