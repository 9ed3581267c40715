//! Which long-polling `Acquire` calls wake up when work appears: one at a time, in the order they
//! began to wait, instead of all of them.
//!
//! A new trial used to wake every waiting `Acquire`; each then ran a lease transaction under the
//! writer lock and all but one found nothing. With a thousand workers waiting (the end of a
//! search, a final phase, an epoch budget nearly spent) every completion cost a thousand
//! transactions. Now an event that queues work wakes the longest waiter; a waiter that leases a
//! trial passes the wake-up on (more trials may be queued behind it), one that finds the queue
//! empty does not, so a burst of trials drains waiter by waiter and a lone trial costs one or two
//! lease transactions whatever the number of waiters.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// The wake-up line of waiting `Acquire` calls, and a count of the lease transactions they run.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    line: Notify,
    lease_attempts: AtomicU64,
}

impl Wakeups {
    /// A future that completes at this waiter's turn; `enable` it before looking at the queue,
    /// so that work queued in between is not missed.
    pub fn notified(&self) -> Notified<'_> {
        self.line.notified()
    }

    /// Trials may be waiting: wakes the longest-waiting `Acquire`, or, when none waits, lets the
    /// next one to wait look once more at once.
    pub fn work_queued(&self) {
        self.line.notify_one();
    }

    /// Wakes every waiting `Acquire` (draining, a new or resumed experiment): rare events that
    /// every waiter must see, or that queue many trials at once.
    pub fn wake_all(&self) {
        self.line.notify_waiters();
    }

    /// Counts one lease transaction.
    pub fn lease_attempted(&self) {
        self.lease_attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// Lease transactions run so far.
    pub fn lease_attempts(&self) -> u64 {
        self.lease_attempts.load(Ordering::Relaxed)
    }
}
