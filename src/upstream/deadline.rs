//! The upstream request's timeout, on a timer its connection task keeps.
//!
//! `tokio::time::timeout` puts a timer in tokio's timer wheel when the request first waits and
//! takes it out when the request ends, both under the one lock every worker's timers share: two
//! turns at a global lock per forwarded call, and the wheel's lines touched from both cores. The
//! listener's HTTP/1.1 loop answers one request at a time per connection, so each connection
//! task keeps one timer ([`scope`]) that its requests borrow in turn. The timer is only ever set
//! earlier than the deadline a request waits for: most requests use it as it is, and when it
//! fires for an earlier request's deadline it is moved to the current one (as the loop's own
//! header and body timer does). So a busy connection touches the wheel about once per timeout
//! period, not twice per request.
//!
//! Outside such a task (the other transports, health checks), or for a second request while
//! the timer is lent out, a request gets a timer of its own, as before.

use std::cell::RefCell;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

// A task-local rather than a parameter, the one left on the request path: the timer belongs to
// the listener's connection task (`h1::server`) and is borrowed at the far end of the call, in
// the upstream client, through every stage of the pipeline between them. Passed down, it would
// be a `&mut` slot in every stage's signature for the one transport that keeps a timer, and the
// stages could not lend it on safely (a request that is still waiting must not lose it).
tokio::task_local! {
    /// The connection task's timer: `Some(None)` before its first request, `Some(timer)` between
    /// requests, `None` while a request has it.
    static KEPT: RefCell<Option<Option<Timer>>>;
}

/// A timer and the instant it is set for.
#[derive(Debug)]
struct Timer {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
}

/// Run `task` (a connection's whole life) with a timer its requests can borrow.
pub fn scope<F: Future>(task: F) -> impl Future<Output = F::Output> {
    KEPT.scope(RefCell::new(Some(None)), task)
}

/// `work`, or `None` once `timeout` has passed first.
pub async fn within<F: Future>(timeout: Duration, work: F) -> Option<F::Output> {
    let deadline = Instant::now() + timeout;
    let Some(kept) = Lent::take() else {
        return tokio::time::timeout_at(deadline, work).await.ok();
    };
    let mut lent = Lent(Some(kept.unwrap_or_else(|| Timer {
        sleep: Box::pin(tokio::time::sleep_until(deadline)),
        at: deadline,
    })));
    let mut work = pin!(work);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        // Empty only once dropped, so never here.
        let Some(timer) = lent.0.as_mut() else {
            return Poll::Pending;
        };
        if timer.at > deadline {
            timer.at = deadline;
            timer.sleep.as_mut().reset(deadline);
        }
        while timer.sleep.as_mut().poll(cx).is_ready() {
            if timer.at >= deadline {
                return Poll::Ready(None);
            }
            // Fired for an earlier request's deadline: wait for this one's.
            timer.at = deadline;
            timer.sleep.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// The timer while a request has it; given back when the request ends, however it ends.
struct Lent(Option<Timer>);

impl Lent {
    /// The task's timer (`Some(None)` before its first request), unless the task keeps none or
    /// another request has it.
    fn take() -> Option<Option<Timer>> {
        KEPT.try_with(|kept| kept.borrow_mut().take())
            .ok()
            .flatten()
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // Dropped outside the task's scope (its future dropped elsewhere): the timer goes with it.
        let _ = KEPT.try_with(|kept| *kept.borrow_mut() = Some(self.0.take()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the task keeps a timer set for some instant: (kept, set for).
    fn kept() -> (bool, Option<Instant>) {
        KEPT.with(|k| match &*k.borrow() {
            Some(timer) => (true, timer.as_ref().map(|t| t.at)),
            None => (false, None),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_turn_share_one_timer_set_no_later_than_their_deadline() {
        scope(async {
            assert_eq!(kept(), (true, None));
            let first = Instant::now() + Duration::from_secs(30);
            assert_eq!(within(Duration::from_secs(30), async { 1 }).await, Some(1));
            assert_eq!(
                kept(),
                (true, Some(first)),
                "set for the first request's deadline"
            );
            tokio::time::advance(Duration::from_secs(10)).await;
            // A later request keeps the timer where it is (earlier than its own deadline)...
            assert_eq!(within(Duration::from_secs(30), async { 2 }).await, Some(2));
            assert_eq!(kept(), (true, Some(first)));
            // ...and one with a shorter timeout that has to wait moves it earlier.
            let short = Instant::now() + Duration::from_secs(5);
            let waits = async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                3
            };
            assert_eq!(within(Duration::from_secs(5), waits).await, Some(3));
            assert_eq!(kept(), (true, Some(short)));
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_that_fires_for_an_earlier_deadline_waits_for_the_current_one() {
        scope(async {
            within(Duration::from_secs(30), async {}).await;
            tokio::time::advance(Duration::from_secs(20)).await;
            // The timer is set 10 s ahead; this request may take 30 s.
            let started = Instant::now();
            let slow = within(
                Duration::from_secs(30),
                tokio::time::sleep(Duration::from_secs(25)),
            );
            assert_eq!(slow.await, Some(()), "not cut off at the earlier deadline");
            assert_eq!(started.elapsed(), Duration::from_secs(25));
            let started = Instant::now();
            let stuck = within(Duration::from_secs(30), std::future::pending::<()>());
            assert_eq!(stuck.await, None);
            assert_eq!(
                started.elapsed(),
                Duration::from_secs(30),
                "cut off at its own deadline"
            );
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_beside_the_borrower_or_outside_a_scope_gets_its_own_timer() {
        // No scope: a timer of its own.
        let started = Instant::now();
        assert_eq!(
            within(Duration::from_secs(3), std::future::pending::<()>()).await,
            None
        );
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        scope(async {
            let started = Instant::now();
            // Two at once in one task: the second finds the timer lent out.
            let (outer, inner) = tokio::join!(
                within(Duration::from_secs(30), std::future::pending::<()>()),
                within(Duration::from_secs(2), std::future::pending::<()>()),
            );
            assert_eq!((outer, inner), (None, None));
            assert_eq!(started.elapsed(), Duration::from_secs(30));
            assert!(kept().1.is_some(), "given back after the timeout");
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_dropped_midway_gives_the_timer_back() {
        scope(async {
            let dropped = within(Duration::from_secs(30), std::future::pending::<()>());
            let _ = tokio::time::timeout(Duration::from_secs(1), dropped).await;
            assert!(kept().1.is_some(), "the timer is back for the next request");
        })
        .await;
    }
}
