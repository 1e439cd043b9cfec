//! The pool against raw HTTP/1.1 servers on 127.0.0.1.

use super::*;
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A TCP server on 127.0.0.1 that hands each connection to `handle`; its URL, and the
/// count of connections it accepted.
async fn serve_each<F, Fut>(handle: F) -> (Url, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/mcp", listener.local_addr().unwrap())).unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let counter = accepts.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(handle(sock));
        }
    });
    (url, accepts)
}

/// Read the next request off `sock` into `buf` and take it out (requests here carry a 2-byte
/// body); false once the client closed or the read failed.
async fn next_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
            && buf.len() >= end + 4 + 2
        {
            buf.drain(..end + 4 + 2);
            return true;
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// A raw HTTP/1.1 server on 127.0.0.1 answering `ok` to every request; counts accepted
/// connections and, with `close_after = Some(d)`, closes each connection `d` after its first
/// answer without saying so (as a server does with an idle keep-alive connection).
async fn server(close_after: Option<Duration>) -> (Url, Arc<AtomicUsize>) {
    serve_each(move |mut sock| async move {
        let mut buf = Vec::new();
        while next_request(&mut sock, &mut buf).await {
            if sock.write_all(OK).await.is_err() {
                return;
            }
            if let Some(delay) = close_after {
                // Closed at once, without yielding: the close is out before the answer is
                // read.
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                return;
            }
        }
    })
    .await
}

/// A pool for `url` without TLS.
fn plain_pool(url: &Url) -> Arc<Pool> {
    Arc::new(Pool::new(url, None, None, Arc::default(), Arc::default()).unwrap())
}

/// Make `n` calls one after the other, each answered `ok`.
async fn calls_answered(pool: &Arc<Pool>, n: usize) {
    for _ in 0..n {
        assert_eq!(call(pool).await, "ok");
    }
}

fn request(pool: &Pool) -> Vec<u8> {
    let host = pool.authority().to_str().unwrap();
    format!("POST /mcp HTTP/1.1\r\nhost: {host}\r\ncontent-length: 2\r\n\r\n{{}}").into_bytes()
}

async fn call(pool: &Arc<Pool>) -> Bytes {
    let response = pool.send(&request(pool)).await.unwrap();
    response.body.collect().await.unwrap().to_bytes()
}

/// An upstream that refuses a large body from its head alone (413, 401, ...) answers and
/// closes before reading the rest; the write then fails with a reset, but the answer came
/// first and is what the caller gets.
#[tokio::test]
async fn an_answer_sent_before_a_large_body_was_read_is_heard() {
    let (url, _) = serve_each(|mut sock| async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let refusal = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\r\ntoo large";
        let _ = sock.write_all(refusal).await;
        // Dropped with the body unread: the kernel resets the connection.
    })
    .await;
    let pool = plain_pool(&url);
    let host = pool.authority().to_str().unwrap().to_owned();
    let body = vec![b'x'; 16 << 20];
    let mut request = format!(
        "POST /mcp HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let response = pool
        .send(&request)
        .await
        .expect("the upstream's answer, not the reset of the write");
    assert_eq!(response.status, 413);
    let text = response.body.collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], b"too large");
    assert!(
        pool.take_idle().is_none(),
        "a connection cut mid-request is not pooled"
    );
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let (url, accepts) = server(None).await;
    let pool = plain_pool(&url);
    calls_answered(&pool, 50).await;
    assert_eq!(accepts.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_count(), 1);
}

#[tokio::test]
async fn concurrent_requests_open_connections_then_reuse_them() {
    let (url, accepts) = server(None).await;
    let pool = plain_pool(&url);
    for _ in 0..5 {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { call(&pool).await })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap(), "ok");
        }
    }
    let opened = accepts.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&opened),
        "{opened} connections for 4 at a time"
    );
}

#[tokio::test]
async fn a_connection_closed_while_idle_is_replaced_not_reported() {
    let (url, accepts) = server(Some(Duration::ZERO)).await;
    let pool = plain_pool(&url);
    calls_answered(&pool, 20).await;
    assert_eq!(accepts.load(Ordering::SeqCst), 20);
}

/// An upstream that reads a request whole and closes without answering (it crashed
/// half-way) may have acted on it: on a reused connection as on a new one, the request is
/// not sent again, and the error says the connection was cut.
#[tokio::test]
async fn a_request_the_upstream_read_and_left_unanswered_is_not_sent_again() {
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let (url, accepts) = serve_each(move |mut sock| {
        let requests = counted.clone();
        async move {
            let mut buf = Vec::new();
            while next_request(&mut sock, &mut buf).await {
                // The first request on each connection is answered, the second is not.
                if requests.fetch_add(1, Ordering::SeqCst) % 2 == 1
                    || sock.write_all(OK).await.is_err()
                {
                    return;
                }
            }
        }
    })
    .await;
    let pool = plain_pool(&url);
    assert_eq!(call(&pool).await, "ok");
    assert_eq!(pool.idle_count(), 1);
    let err = pool.send(&request(&pool)).await.unwrap_err();
    assert!(
        matches!(&err, PoolError::Cut { fresh: false, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("before answering"), "{err}");
    assert_eq!(requests.load(Ordering::SeqCst), 2, "sent once each");
    assert_eq!(accepts.load(Ordering::SeqCst), 1, "no second connection");
}

#[tokio::test]
async fn idle_connections_the_upstream_closed_are_expired() {
    let (url, _) = server(Some(Duration::from_millis(200))).await;
    let pool = plain_pool(&url);
    let response = pool.send(&request(&pool)).await.unwrap();
    let body = response.body.collect().await.unwrap().to_bytes();
    assert_eq!(body, "ok");
    // Still open: pooled, and a sweep keeps it.
    pool.expire_idle();
    assert_eq!(pool.idle_count(), 1);
    // The server closes it 200 ms after answering; once that is seen, the sweep drops it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..100 {
        pool.expire_idle();
        if pool.idle_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn an_unanswered_body_is_drained_before_reuse() {
    let (url, accepts) = server(None).await;
    let pool = plain_pool(&url);
    for _ in 0..10 {
        let response = pool.send(&request(&pool)).await.unwrap();
        response.body.finish();
        // The drain runs in the background; wait for the connection to come back.
        for _ in 0..100 {
            if pool.idle_count() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(accepts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_with_bytes_after_its_answer_is_not_reused() {
    // Each connection answers once, with junk after the answer's end: a connection out of
    // step with its requests must be closed, not handed to the next request.
    let (url, accepts) = serve_each(|mut sock| async move {
        let mut buf = [0u8; 4096];
        if sock.read(&mut buf).await.unwrap_or(0) > 0 {
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokJUNK";
            let _ = sock.write_all(answer).await;
            // Held open: only the junk tells the pool something is wrong.
            let _ = sock.read(&mut buf).await;
        }
    })
    .await;
    let pool = plain_pool(&url);
    calls_answered(&pool, 3).await;
    assert_eq!(accepts.load(Ordering::SeqCst), 3);
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn refused_connections_say_so() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/mcp", listener.local_addr().unwrap())).unwrap();
    drop(listener);
    let pool = plain_pool(&url);
    let err = pool.send(&request(&pool)).await.unwrap_err();
    assert!(err.to_string().contains("Connection refused"), "{err}");
    assert!(!err.is_timeout());
}

/// A pooled connection whose socket refuses every write: it never reads, and `accepted` says
/// whether its socket took bytes before failing (as [`Tcp`] notes in [`Marks::wrote`]).
struct FailingWrites {
    marks: Arc<Marks>,
    accepted: bool,
}

impl tokio::io::AsyncRead for FailingWrites {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

impl tokio::io::AsyncWrite for FailingWrites {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.accepted {
            self.marks.wrote.store(true, Ordering::Relaxed);
        }
        Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A pool for `url` holding one idle connection whose writes fail (see [`FailingWrites`]).
fn pool_with_failing_connection(url: &Url, accepted: bool) -> Arc<Pool> {
    let pool = plain_pool(url);
    let marks = Arc::new(Marks::default());
    let io = FailingWrites {
        marks: marks.clone(),
        accepted,
    };
    pool.put(Pooled {
        wire: Buffered::new(Box::new(io)),
        watch: None,
        marks,
    });
    pool
}

/// The one case a request goes again: its write on a pooled connection failed before the
/// socket took a byte, so it never reached the upstream.
#[tokio::test]
async fn a_request_whose_write_failed_before_a_byte_left_goes_on_another_connection() {
    let (url, accepts) = server(None).await;
    let pool = pool_with_failing_connection(&url, false);
    assert_eq!(call(&pool).await, "ok");
    assert_eq!(
        accepts.load(Ordering::SeqCst),
        1,
        "sent on a new connection"
    );
}

/// Once the socket took bytes of it, a failed write may have delivered the request: it is
/// reported, not sent again.
#[tokio::test]
async fn a_request_whose_write_failed_after_bytes_left_is_not_sent_again() {
    let (url, accepts) = server(None).await;
    let pool = pool_with_failing_connection(&url, true);
    let err = pool.send(&request(&pool)).await.unwrap_err();
    assert!(
        matches!(&err, PoolError::Cut { fresh: false, .. }),
        "{err:?}"
    );
    assert_eq!(accepts.load(Ordering::SeqCst), 0, "not sent again");
}
