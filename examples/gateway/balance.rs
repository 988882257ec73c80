//! Connections spread evenly over the workers of `app::serve_per_core`.
//!
//! Every worker accepts from the shared listener, and the one that wakes first takes whatever
//! is waiting: a burst of connections (a client opening its pool) could land on one worker
//! and leave the other CPU's worker idle for as long as they stay open (seen in one start of
//! eight under `wrk -c64`; four more split them about 30 / 70). So a worker that accepts a connection while another serves fewer
//! hands it to the one with the fewest, through that worker's inbox. The counts are reserved when
//! a connection is placed, so a burst spreads even before the receivers have run; `/metrics`
//! shows them (`llm_gateway_worker_connections`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// The open connections of each worker.
#[derive(Debug)]
pub struct Balance {
    live: Box<[AtomicUsize]>,
}

impl Balance {
    /// Counts for `workers` workers, all at zero.
    pub fn new(workers: usize) -> Self {
        Self {
            live: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// Each worker's open connections.
    pub fn counts(&self) -> impl Iterator<Item = usize> + '_ {
        self.live.iter().map(|n| n.load(Ordering::Relaxed))
    }

    /// The worker with the fewest connections, when it has fewer than worker `me`.
    fn least_loaded(&self, me: usize) -> Option<usize> {
        let mine = self.live.get(me)?.load(Ordering::Relaxed);
        let (fewest, count) = self
            .counts()
            .enumerate()
            .min_by_key(|&(index, count)| (count, index != me))?;
        (count < mine).then_some(fewest)
    }

    /// Counts one more connection for `worker`, until the returned [`Live`] is dropped.
    pub fn open(self: &Arc<Self>, worker: usize) -> Live {
        if let Some(count) = self.live.get(worker) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        Live {
            balance: self.clone(),
            worker,
        }
    }
}

/// One open connection, counted for its worker while it lives.
#[derive(Debug)]
pub struct Live {
    balance: Arc<Balance>,
    worker: usize,
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(count) = self.balance.live.get(self.worker) {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A worker's end of the hand-over: the other workers' inboxes and its own.
#[derive(Debug)]
pub struct Handoff {
    me: usize,
    balance: Arc<Balance>,
    inboxes: Arc<[UnboundedSender<(std::net::TcpStream, Live)>]>,
    inbox: UnboundedReceiver<(std::net::TcpStream, Live)>,
}

impl Handoff {
    /// One end for each of the workers counted by `balance`.
    pub fn for_workers(balance: &Arc<Balance>) -> Vec<Handoff> {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            balance.live.iter().map(|_| unbounded_channel()).unzip();
        let inboxes: Arc<[_]> = senders.into();
        receivers
            .into_iter()
            .enumerate()
            .map(|(me, inbox)| Handoff {
                me,
                balance: balance.clone(),
                inboxes: inboxes.clone(),
                inbox,
            })
            .collect()
    }

    /// A connection this worker accepted: served here (`Some`, counted), or handed to a worker
    /// with fewer connections (`None`).
    pub fn place(&self, stream: TcpStream) -> Option<(TcpStream, Live)> {
        if let Some(other) = self.balance.least_loaded(self.me) {
            let live = self.balance.open(other);
            let sent = match (stream.into_std(), self.inboxes.get(other)) {
                (Ok(stream), Some(inbox)) => inbox.send((stream, live)),
                // A stream tokio cannot give back is dropped (closed), as a failed accept.
                (Err(_), _) => return None,
                (Ok(stream), None) => Err(tokio::sync::mpsc::error::SendError((stream, live))),
            };
            // A worker that has stopped receiving: served here after all.
            let (stream, _) = sent.err()?.0;
            return TcpStream::from_std(stream)
                .ok()
                .map(|stream| (stream, self.balance.open(self.me)));
        }
        Some((stream, self.balance.open(self.me)))
    }

    /// Takes no more connections from the other workers (a worker whose accept loop has ended
    /// calls this before it drains): a hand-over to this worker then fails, and the worker that
    /// accepted the connection serves it (it is still in its accept loop); those already
    /// queued here are closed, unread, as the graceful shutdown of a connection that has read
    /// nothing would. Left in the queue, they went unanswered until this worker's drain ended.
    pub fn close(&mut self) {
        self.inbox.close();
        while self.inbox.try_recv().is_ok() {}
    }

    /// The next connection another worker handed to this one.
    pub async fn next(&mut self) -> Option<(TcpStream, Live)> {
        loop {
            let (stream, live) = self.inbox.recv().await?;
            if let Ok(stream) = TcpStream::from_std(stream) {
                return Some((stream, live));
            }
        }
    }
}
