//! Bytes as an upstream's `text/event-stream` body, parsed the way
//! `upstream/streamable.rs` does: `without_bom`, then `eventsource_stream` over a chunked byte
//! stream, events larger than `MAX_BODY` refused, each data field parsed as JSON and classified.
//!
//! The first byte picks the chunk size, so the same body is also tried split mid-line,
//! mid-CRLF and mid-UTF-8. Properties: nothing panics; the stream ends (the source is finite
//! and always ready, so the parser may never ask to wait).

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::{FutureExt, StreamExt};
use mcpgw::upstream::streamable::{MAX_BODY, without_bom};

/// One input.
pub fn run(data: &[u8]) {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    let chunks: Vec<Result<Bytes, std::convert::Infallible>> = body
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let mut events = without_bom(futures_util::stream::iter(chunks)).eventsource();
    // Every event costs at least one input byte, so this bounds the loop.
    for _ in 0..=body.len() + 1 {
        let next = events
            .next()
            .now_or_never()
            .expect("event stream waited on an always-ready source");
        let Some(event) = next else {
            return;
        };
        let Ok(event) = event else {
            // streamable.rs: "broken event stream", the call fails.
            return;
        };
        if event.data.is_empty() {
            continue;
        }
        if event.data.len() > MAX_BODY {
            return;
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&event.data) else {
            return;
        };
        let _ = mcpgw::jsonrpc::kind(&value);
        let _ = value.get("method").is_none()
            && (value.get("result").is_some() || value.get("error").is_some());
    }
    panic!("event stream produced more events than input bytes");
}
