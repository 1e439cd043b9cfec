//! A byte-stream adapter that fails once one SSE event grows past a limit, so an upstream that
//! sends an endless or oversized event costs a bounded buffer, not the gateway's memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

/// Why the stream was cut.
#[derive(Debug, thiserror::Error)]
pub enum BoundedError<E> {
    /// The underlying stream failed.
    #[error(transparent)]
    Inner(E),
    /// One event exceeded the limit.
    #[error("an event exceeds {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

/// Wraps a byte stream; counts bytes since the last blank line (event boundary).
#[derive(Debug)]
pub struct Bounded<S> {
    inner: S,
    limit: usize,
    since_boundary: usize,
    last: u8,
}

impl<S> Bounded<S> {
    /// Allow events of at most `limit` bytes.
    pub fn new(inner: S, limit: usize) -> Self {
        Self {
            inner,
            limit,
            since_boundary: 0,
            last: 0,
        }
    }
}

impl<S, E> Stream for Bounded<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, BoundedError<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                for &b in chunk.iter() {
                    // "\n\n" (or "\r\n\r\n", whose last two bytes are "\n" after "\r") ends an event.
                    if b == b'\n' && (this.last == b'\n' || this.since_boundary == 0) {
                        this.since_boundary = 0;
                    } else if b != b'\r' {
                        this.since_boundary += 1;
                    }
                    if b != b'\r' {
                        this.last = b;
                    }
                }
                if this.since_boundary > this.limit {
                    return Poll::Ready(Some(Err(BoundedError::TooLarge { limit: this.limit })));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BoundedError::Inner(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn run(chunks: Vec<&'static [u8]>, limit: usize) -> Vec<bool> {
        let s = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, ()>(Bytes::from_static(c))),
        );
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(Bounded::new(s, limit).map(|r| r.is_ok()).collect())
    }

    #[test]
    fn events_under_the_limit_pass_and_a_long_one_is_cut() {
        assert_eq!(
            run(vec![b"data: 12345\n\n", b"data: 67890\n\n"], 16),
            vec![true, true]
        );
        assert_eq!(
            run(vec![b"data: ", b"0123456789", b"0123456789"], 16),
            vec![true, true, false]
        );
        assert_eq!(
            run(vec![b"data: 12345\r\n\r\n", b"data: 67890\r\n\r\n"], 16),
            vec![true, true]
        );
    }
}
