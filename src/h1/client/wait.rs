//! The upstream wait: waiting for a quick upstream without going to sleep.
//!
//! When mcpgw has one request in flight and nothing else to do, the worker that sent it would
//! park in `epoll_wait` and the kernel would idle its CPU; the answer, often back within tens
//! of microseconds on loopback, then has to wake that CPU first, which on a virtual machine
//! costs about as much as the upstream's own work. So at low load the sender watches the socket
//! for a short, bounded while before it parks, and reads the answer itself when it comes (see
//! [`Tcp`]). docs/PERFORMANCE.md has what it was measured to save.
//!
//! "Low load" must be judged before the watch, because a watching worker admits nothing else:
//! counting what is in flight at that moment would always find one. So each downstream request
//! notes, when it is admitted ([`Wait::serving`]), whether the gateway was idle just before it:
//! no other request in service, the worker that took it had parked since its previous one, and
//! no request found the gateway otherwise in the last [`CROWD_WINDOW_US`]. The watch happens
//! only for the request so noted, while it is the only one in service and in flight
//! ([`Wait::busy`]) and the other workers are parked. Under load (a worker going from one
//! request straight to the next, or requests overlapping, now or a moment ago) nobody watches:
//! the CPU it would burn is what the queued work, and on a shared machine the upstream, need.
//!
//! A [`Wait`] is one value, made where `serve` builds the runtime (`--upstream-spin-us`), whose
//! park hook holds an `Arc` of it; the client cache hands it to every pool, and the request path
//! reaches it through `Registry::wait`. A client cache made without one (tools, tests) gets its
//! own, with the default budget and no runtime to watch.

use std::cell::Cell;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// The default longest wait (`serve --upstream-spin-us`).
pub const DEFAULT_BUDGET: Duration = Duration::from_micros(100);

/// How long after a crowd nobody watches, in microseconds. At concurrency 16 on a shared machine
/// the gateway often holds a single request for a moment, between its clients' turns, and a
/// watch then burns the CPU the upstream and the clients are waiting for; such moments come
/// within microseconds of a crowded one. A single client never crowds the gateway.
pub const CROWD_WINDOW_US: u64 = 20_000;

thread_local! {
    /// Whether this worker parked since the previous request it admitted (see
    /// [`Wait::parked`]). Per thread because it is a fact about one worker, and tokio tells a
    /// worker's hook nothing but that it runs on that worker's thread: no index to keep it in
    /// the [`Wait`] by. Written by the park hook, read by [`Wait::serving`], nothing else.
    static PARKED: Cell<bool> = const { Cell::new(false) };
}

/// The upstream wait of one gateway: its budget, and the counts it judges the load by.
#[derive(Debug)]
pub struct Wait {
    /// The longest wait; zero never waits.
    budget: Duration,
    /// Upstream requests in flight through the pools.
    in_flight: AtomicUsize,
    /// Downstream `POST /mcp` requests being served (admitted, not yet answered).
    serving: AtomicUsize,
    /// Whether the latest request admitted found the gateway idle.
    quiet: AtomicBool,
    /// When a request was last admitted into a busy gateway ([`Wait::now_us`]; 0: never).
    last_crowd_us: AtomicU64,
    /// The serving runtime's counters, to see whether its other workers are parked.
    runtime: OnceLock<tokio::runtime::RuntimeMetrics>,
    /// The origin of [`Wait::now_us`].
    start: Instant,
}

impl Default for Wait {
    fn default() -> Self {
        Self::new(DEFAULT_BUDGET)
    }
}

impl Wait {
    /// A wait of at most `budget` (zero: never wait).
    pub fn new(budget: Duration) -> Self {
        Self {
            budget,
            in_flight: AtomicUsize::new(0),
            serving: AtomicUsize::new(0),
            quiet: AtomicBool::new(true),
            last_crowd_us: AtomicU64::new(0),
            runtime: OnceLock::new(),
            start: Instant::now(),
        }
    }

    /// Watch this runtime's workers: its builder must call [`Wait::parked`] before each park.
    /// Without it (tests, tools), a request alone in service and in flight is enough.
    pub fn watch_runtime(&self, runtime: &tokio::runtime::Handle) {
        let _ = self.runtime.set(runtime.metrics());
    }

    /// The runtime's `on_thread_park` hook: this worker is about to park.
    pub fn parked(&self) {
        PARKED.set(true);
    }

    /// Whether this worker parked since the previous request it admitted.
    fn parked_since_last(&self) -> bool {
        self.runtime.get().is_none() || PARKED.replace(false)
    }

    /// Microseconds since this wait was made, from 1.
    fn now_us(&self) -> u64 {
        let since = self.start.elapsed().as_micros();
        u64::try_from(since).unwrap_or(u64::MAX).saturating_add(1)
    }

    /// Whether the gateway was crowded within [`CROWD_WINDOW_US`] before `now`.
    fn crowded_lately(&self, now: u64) -> bool {
        let last = self.last_crowd_us.load(Ordering::Relaxed);
        last != 0 && now.saturating_sub(last) < CROWD_WINDOW_US
    }

    /// Count a downstream request in, noting whether the gateway was idle just before it; it
    /// counts as served until the guard is dropped.
    pub fn serving(&self) -> Serving<'_> {
        let others = self.serving.fetch_add(1, Ordering::Relaxed);
        let parked = self.parked_since_last();
        let now = self.now_us();
        let idle = others == 0 && parked;
        // Written only when they change (the crowd's time at most once a millisecond): under
        // load every request comes here, from every worker, and a store each time would bounce
        // their cache lines between cores.
        if !idle {
            let last = self.last_crowd_us.load(Ordering::Relaxed);
            if last == 0 || now.saturating_sub(last) >= 1000 {
                self.last_crowd_us.store(now, Ordering::Relaxed);
            }
        }
        let quiet = idle && !self.crowded_lately(now);
        if self.quiet.load(Ordering::Relaxed) != quiet {
            self.quiet.store(quiet, Ordering::Relaxed);
        }
        Serving(self)
    }

    /// Count an upstream request in flight until the guard is dropped.
    pub(super) fn busy(&self) -> Busy<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self)
    }

    /// Wait until `fd` is readable or the budget is spent, if the gateway is at low load (see
    /// the module's text); true if it became readable.
    pub(super) fn wait(&self, fd: &impl AsFd) -> bool {
        !self.budget.is_zero()
            && self.in_flight.load(Ordering::Relaxed) == 1
            && self.serving.load(Ordering::Relaxed) <= 1
            && self.quiet.load(Ordering::Relaxed)
            && self.alone()
            && readable_within(fd, self.budget)
    }

    /// Whether every other worker of the runtime is parked, with nothing queued for them.
    fn alone(&self) -> bool {
        let Some(runtime) = self.runtime.get() else {
            return true;
        };
        // An odd park/unpark count means the worker is parked.
        let busy = (0..runtime.num_workers())
            .filter(|&w| runtime.worker_park_unpark_count(w) % 2 == 0)
            .count();
        busy <= 1 && runtime.global_queue_depth() == 0
    }
}

/// One downstream request being served, for as long as it lives ([`Wait::serving`]).
#[derive(Debug)]
pub struct Serving<'a>(&'a Wait);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One upstream request in flight, for as long as it lives ([`Wait::busy`]).
pub(super) struct Busy<'a>(&'a Wait);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether `fd` became readable within `budget`, watched without sleeping.
pub(super) fn readable_within(fd: &impl AsFd, budget: Duration) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let started = Instant::now();
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        if poll(&mut fds, Some(&zero)).is_ok_and(|n| n > 0) {
            return true;
        }
        if started.elapsed() >= budget {
            return false;
        }
        std::hint::spin_loop();
    }
}

/// The TCP stream under a pooled connection (and under its TLS, if any).
///
/// tokio learns that a socket is readable only from its I/O driver's next `epoll_wait`, which
/// with two workers is often running on the other one: after the wait saw the answer arrive, a
/// read through tokio alone would find the socket "not ready", park, and leave the answer to the
/// other worker (two cross-thread wake-ups per call, as `strace` shows). So when the wait saw the
/// socket readable (`seen`) and tokio says it is not, this reads the socket directly, once.
/// Should the read find nothing after all, the waker tokio just registered still stands.
///
/// It also notes whether the socket accepted any byte of a request ([`Marks::wrote`]): below
/// TLS, because a TLS stream may take a request's bytes into its own buffer and then fail to
/// send any of them, and only what reached the socket can have reached the upstream.
pub(super) struct Tcp {
    pub(super) stream: TcpStream,
    pub(super) marks: Arc<Marks>,
}

/// What a pooled connection and the socket under it tell each other (see [`Tcp`]).
#[derive(Debug, Default)]
pub(super) struct Marks {
    /// The wait (or the pool's liveness check) saw the socket readable: read it directly, once.
    pub(super) seen: AtomicBool,
    /// The socket accepted bytes since the pool last cleared this (before writing a request).
    pub(super) wrote: AtomicBool,
}

impl Tcp {
    /// Note bytes the socket accepted.
    fn note(&self, written: &Poll<std::io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
            self.marks.wrote.store(true, Ordering::Relaxed);
        }
    }
}

impl tokio::io::AsyncRead for Tcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        let seen = this.marks.seen.swap(false, Ordering::Relaxed);
        if !seen || polled.is_ready() || buf.remaining() == 0 {
            return polled;
        }
        match rustix::io::read(&this.stream, buf.initialize_unfilled()) {
            Ok(n) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            // Nothing after all (or a signal came first): tokio's driver will report the data.
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }
}

impl tokio::io::AsyncWrite for Tcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.note(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.note(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::task::Waker;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn a_request_admitted_beside_another_is_not_quiet() {
        // No runtime is watched here, so every worker counts as having parked.
        let wait = Wait::default();
        let first = wait.serving();
        assert!(wait.quiet.load(Ordering::Relaxed));
        let second = wait.serving();
        assert!(!wait.quiet.load(Ordering::Relaxed));
        drop((first, second));
        // Alone now, but a moment after a crowd: still not quiet.
        let third = wait.serving();
        assert!(!wait.quiet.load(Ordering::Relaxed));
        drop(third);
        // Once the crowd is older than the window, a lone request is quiet again.
        let old = wait.now_us().saturating_sub(CROWD_WINDOW_US);
        wait.last_crowd_us.store(old, Ordering::Relaxed);
        let _fourth = wait.serving();
        assert!(wait.quiet.load(Ordering::Relaxed));
    }

    #[test]
    fn two_waits_do_not_share_their_counts() {
        let (a, b) = (Wait::default(), Wait::default());
        let _one = a.serving();
        let _two = a.serving();
        assert!(!a.quiet.load(Ordering::Relaxed));
        let _three = b.serving();
        assert!(b.quiet.load(Ordering::Relaxed));
        let _busy = a.busy();
        assert_eq!(a.in_flight.load(Ordering::Relaxed), 1);
        assert_eq!(b.in_flight.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_worker_that_went_from_request_to_request_without_parking_is_busy() {
        // Each test has a thread of its own, so this flag is this test's.
        let wait = Wait::default();
        assert!(!PARKED.replace(false));
        wait.parked();
        wait.parked();
        assert!(PARKED.replace(false));
        assert!(
            !PARKED.replace(false),
            "one park answers for one request only"
        );
    }

    #[test]
    fn a_zero_budget_never_waits() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.write_all(b"x").unwrap();
        let wait = Wait::new(Duration::ZERO);
        let _busy = wait.busy();
        assert!(!wait.wait(&b));
        let wait = Wait::default();
        let _busy = wait.busy();
        assert!(wait.wait(&b), "readable, alone, quiet: the wait sees it");
    }

    #[test]
    fn a_waiting_answer_ends_the_watch_and_silence_spends_the_budget() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let started = Instant::now();
        assert!(!readable_within(&b, Duration::from_millis(2)));
        assert!(started.elapsed() >= Duration::from_millis(2));
        a.write_all(b"x").unwrap();
        // Already readable: it returns at once, not after the (long) budget.
        let started = Instant::now();
        assert!(readable_within(&b, Duration::from_secs(30)));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_socket_the_spin_saw_readable_is_read_before_tokio_hears_of_it() {
        use tokio::io::AsyncRead as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let marks = Arc::new(Marks::default());
        let mut tcp = Tcp {
            stream,
            marks: marks.clone(),
        };
        let seen = &marks.seen;
        let mut space = [0u8; 64];
        let mut cx = Context::from_waker(Waker::noop());
        // A first exchange through tokio, read until "would block": tokio now knows the socket
        // is not readable.
        peer.write_all(b"first").await.unwrap();
        let mut first = [0u8; 5];
        tcp.read_exact(&mut first).await.unwrap();
        let mut buf = tokio::io::ReadBuf::new(&mut space);
        assert!(Pin::new(&mut tcp).poll_read(&mut cx, &mut buf).is_pending());
        peer.write_all(b"answer").await.unwrap();
        assert!(readable_within(&tcp.stream, Duration::from_secs(5)));
        // Polled without yielding, tokio's driver has not run since the bytes came: on its own
        // the stream still says "not ready"...
        assert!(Pin::new(&mut tcp).poll_read(&mut cx, &mut buf).is_pending());
        // ...but told by the spin, it reads them at once, and only once.
        seen.store(true, Ordering::Relaxed);
        assert!(Pin::new(&mut tcp).poll_read(&mut cx, &mut buf).is_ready());
        assert_eq!(buf.filled(), b"answer");
        assert!(!seen.load(Ordering::Relaxed));
        let mut buf = tokio::io::ReadBuf::new(&mut space);
        assert!(Pin::new(&mut tcp).poll_read(&mut cx, &mut buf).is_pending());
    }
}
