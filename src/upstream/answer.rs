//! Reading an upstream's HTTP answer, for both transports: its status (a refusal, a redirect),
//! a whole body within a limit, or the events of an event stream. One SSE parser reads every
//! event stream an upstream sends (the legacy transport's `GET`, Streamable HTTP's answers and
//! standing streams).

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use http::StatusCode;
use http::header::LOCATION;
use http_body_util::{BodyDataStream, BodyExt};

use super::UpstreamError;
use super::clients::UpstreamClient;
use super::diagnose::{closed_after_cert_request, diagnose};
use crate::h1::client::pool::is_reset;
use crate::h1::client::response::CLOSED;
use crate::h1::client::{Driven, PoolError};
use crate::h1::fields::{Fields, Lookup};

/// Largest JSON answer (or single event) accepted from an upstream.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Why a request got no answer from the pool, for the caller: a connection cut after the
/// request went out is a call the upstream may have run ([`UpstreamError::ClosedDuringCall`]);
/// anything else is diagnosed in one sentence ([`UpstreamError::Connect`]). Every transport's
/// sends come here.
pub fn send_failed(client: &UpstreamClient, err: &PoolError) -> UpstreamError {
    if let PoolError::Cut { fresh, source, .. } = err
        // A TLS server that refuses the client certificate closes a new connection the same
        // way, before it reads the request: that is said as such.
        && !(*fresh && closed_after_cert_request(&client.identity, &client.observations).is_some())
    {
        return cut(source);
    }
    UpstreamError::Connect {
        diagnosis: diagnose(err, err.is_timeout(), client),
    }
}

/// A connection that closed or was reset while a request's answer was due.
fn cut(e: &std::io::Error) -> UpstreamError {
    let text = e.to_string();
    let how = match text.strip_prefix(CLOSED) {
        Some(rest) => rest.trim_start().to_owned(),
        None => text,
    };
    UpstreamError::ClosedDuringCall { how }
}

/// A broken body read: a connection cut mid-answer is a call the upstream may have run;
/// `otherwise` says what anything else means.
fn broken_body(
    err: &(dyn std::error::Error + 'static),
    otherwise: impl FnOnce() -> UpstreamError,
) -> UpstreamError {
    match err.downcast_ref::<std::io::Error>() {
        Some(io) if is_reset(io) => cut(io),
        _ => otherwise(),
    }
}

/// The answer of a request whose event stream ended before it: the upstream may have run it.
pub fn stream_ended() -> UpstreamError {
    UpstreamError::ClosedDuringCall {
        how: "its event stream ended before the answer".into(),
    }
}

/// What a status other than 2xx means: a redirect (never followed, on any transport: the
/// request was meant for this upstream and carries its credentials) names the status and the
/// origin it points to, nothing more of the URL; any other status keeps an excerpt of `body`
/// apart.
/// `base` is the URL the request went to, against which a relative `Location` is read.
pub fn refused(
    status: StatusCode,
    headers: &Fields,
    body: &[u8],
    base: &url::Url,
) -> UpstreamError {
    let (detail, excerpt) = if status.is_redirection() {
        let origin = headers
            .text(&LOCATION)
            .and_then(|to| base.join(to).ok())
            .map(|to| to.origin())
            .filter(url::Origin::is_tuple);
        let detail = match origin {
            Some(origin) => format!(
                ": a redirect to {}, which mcpgw does not follow",
                origin.ascii_serialization()
            ),
            None => ": a redirect, which mcpgw does not follow".to_owned(),
        };
        (detail, String::new())
    } else {
        (String::new(), excerpt(body))
    };
    UpstreamError::Status {
        status: status.as_u16(),
        detail,
        excerpt,
    }
}

/// Whether a `Content-Type` value starts with `media_type` (lower case), in any case: read as
/// bytes, without a copy lowered for the comparison.
pub fn starts_with_media_type(content_type: &[u8], media_type: &str) -> bool {
    content_type
        .get(..media_type.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(media_type.as_bytes()))
}

/// The whole body, at most [`MAX_BODY`] bytes; the connection goes back to the pool after.
pub async fn read_limited(client: &UpstreamClient, body: Driven) -> Result<Bytes, UpstreamError> {
    match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(UpstreamError::Protocol {
                detail: format!("the answer exceeds {MAX_BODY} bytes"),
            })
        }
        Err(err) => Err(broken_body(&*err, || UpstreamError::Connect {
            diagnosis: diagnose(&*err, false, client),
        })),
    }
}

/// The SSE events of a response body: a leading BOM skipped, each event at most [`MAX_BODY`]
/// bytes, a connection cut mid-stream as [`UpstreamError::ClosedDuringCall`], any other broken
/// stream as a protocol error.
pub fn events(
    body: Driven,
) -> impl futures_util::Stream<Item = Result<eventsource_stream::Event, UpstreamError>> {
    without_bom(super::bounded::Bounded::new(
        BodyDataStream::new(body),
        MAX_BODY,
    ))
    .eventsource()
    .map(|event| {
        event.map_err(|e| {
            let protocol = || UpstreamError::Protocol {
                detail: format!("broken event stream ({e})"),
            };
            match &e {
                eventsource_stream::EventStreamError::Transport(
                    super::bounded::BoundedError::Inner(io),
                ) => broken_body(io, protocol),
                _ => protocol(),
            }
        })
    })
}

/// A short, printable excerpt of a body for error messages.
pub fn excerpt(body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let text: String = text.chars().filter(|c| !c.is_control()).collect();
    format!(": {}", text.trim())
}

/// The UTF-8 byte-order mark, which the SSE spec says to ignore at the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// An upstream's event-stream body with its leading byte-order mark(s) removed, even when split
/// across chunks. eventsource-stream 0.2.3 panics on a stream that starts with one (it slices one
/// byte off the three-byte char), which killed the request task: found by `fuzz/` (sse_parser).
pub fn without_bom<S, E>(body: S) -> impl futures_util::Stream<Item = Result<bytes::Bytes, E>>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>>,
{
    // `Some` until the first three bytes (or the end) decide whether a BOM is there.
    let mut head: Option<Vec<u8>> = Some(Vec::new());
    body.filter_map(move |item| {
        let out = match (item, head.take()) {
            (Ok(chunk), Some(mut buf)) => {
                buf.extend_from_slice(&chunk);
                // Every leading BOM: after one is stripped, a second would hit the same panic.
                let mut rest: &[u8] = &buf;
                while let Some(after) = rest.strip_prefix(BOM) {
                    rest = after;
                }
                if rest.len() < BOM.len() && BOM.starts_with(rest) {
                    head = Some(rest.to_vec());
                    None
                } else {
                    Some(Ok(bytes::Bytes::copy_from_slice(rest)))
                }
            }
            (item, pending) => {
                head = pending;
                Some(item)
            }
        };
        std::future::ready(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_match_in_any_case_with_or_without_parameters() {
        for (value, json, sse) in [
            (&b"application/json"[..], true, false),
            (b"Application/JSON; charset=utf-8", true, false),
            (b"TEXT/EVENT-STREAM", false, true),
            (b"text/event-stream;charset=UTF-8", false, true),
            (b"application/jso", false, false),
            (b"text/html", false, false),
            (b"", false, false),
        ] {
            let shown = String::from_utf8_lossy(value);
            assert_eq!(
                starts_with_media_type(value, "application/json"),
                json,
                "{shown}"
            );
            assert_eq!(
                starts_with_media_type(value, "text/event-stream"),
                sse,
                "{shown}"
            );
        }
    }

    fn fields(head: &'static [u8]) -> Fields {
        crate::h1::fields::response_fields(head)
    }

    #[test]
    fn a_redirect_names_its_status_and_the_origin_it_points_to_only() {
        let base = url::Url::parse("https://up.example:8443/mcp").unwrap();
        let head = b"HTTP/1.1 307 Temporary Redirect\r\nlocation: https://other.example/x?token=secret\r\n\r\n";
        let err = refused(StatusCode::TEMPORARY_REDIRECT, &fields(head), b"", &base).to_string();
        assert_eq!(
            err,
            "the upstream answered HTTP 307: a redirect to https://other.example, which mcpgw does not follow"
        );
        let head = b"HTTP/1.1 301 Moved Permanently\r\nlocation: /elsewhere\r\n\r\n";
        let err = refused(
            StatusCode::MOVED_PERMANENTLY,
            &fields(head),
            b"moved",
            &base,
        )
        .to_string();
        assert!(
            err.ends_with("a redirect to https://up.example:8443, which mcpgw does not follow"),
            "{err}"
        );
        let head = b"HTTP/1.1 302 Found\r\n\r\n";
        let err = refused(StatusCode::FOUND, &fields(head), b"", &base).to_string();
        assert_eq!(
            err,
            "the upstream answered HTTP 302: a redirect, which mcpgw does not follow"
        );
    }

    #[test]
    fn another_refusal_says_its_status_and_keeps_an_excerpt_of_its_body_apart() {
        let base = url::Url::parse("http://127.0.0.1:1/mcp").unwrap();
        let head = b"HTTP/1.1 500 Internal Server Error\r\n\r\n";
        let err = refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            &fields(head),
            b"boom\n",
            &base,
        );
        // What the body said is not in the message a caller sees, only for `probe`.
        assert_eq!(err.to_string(), "the upstream answered HTTP 500");
        let UpstreamError::Status { excerpt, .. } = err else {
            panic!("{err:?}");
        };
        assert_eq!(excerpt, ": boom");
    }
}
