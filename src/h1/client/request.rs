//! HTTP/1.1 requests as bytes: a request line, the header fields in a fixed order, and the
//! body, written in one buffer that the pool sends in one write.
//!
//! Header values come as `HeaderValue`s or as strings the caller checked with
//! [`crate::h1::fields::can_carry`]; neither can hold CR or LF, so nothing put in a header can
//! end it early.

use std::borrow::Cow;

use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The `User-Agent` of every request upstream.
pub const AGENT: &str = concat!("mcpgw/", env!("CARGO_PKG_VERSION"));

/// A header of one message only (a 2026-07-28 routing header, `Last-Event-ID`), its value
/// already checked to be one a header can carry.
pub type Extra<'a> = (&'a HeaderName, Cow<'a, str>);

/// Header fields the request writes itself, whatever the connection's headers say.
const OWN_HEADERS: [HeaderName; 6] = [
    HOST,
    ACCEPT,
    CONTENT_TYPE,
    USER_AGENT,
    CONTENT_LENGTH,
    TRANSFER_ENCODING,
];

/// A JSON-RPC message as an HTTP/1.1 POST to `target` on `host`, accepting a JSON or an
/// event-stream answer: the connection's `headers`, then this message's own `extra` (which
/// replace any of the same name), then the fixed ones, then the body.
pub fn post_json(
    target: &http::Uri,
    host: &HeaderValue,
    headers: &HeaderMap,
    extra: &[Extra<'_>],
    body: &[u8],
) -> Vec<u8> {
    let mut digits = [0; 20];
    let own: [(&[u8], &[u8]); 4] = [
        (b"accept", b"application/json, text/event-stream"),
        (b"content-type", b"application/json"),
        (b"user-agent", AGENT.as_bytes()),
        (
            b"content-length",
            crate::h1::fields::decimal(body.len(), &mut digits),
        ),
    ];
    write("POST", target, host, headers, extra, &own, body)
}

/// A `GET` of an event stream at `target` on `host`.
pub fn get_events(
    target: &http::Uri,
    host: &HeaderValue,
    headers: &HeaderMap,
    extra: &[Extra<'_>],
) -> Vec<u8> {
    let own: [(&[u8], &[u8]); 2] = [
        (b"accept", b"text/event-stream"),
        (b"user-agent", AGENT.as_bytes()),
    ];
    write("GET", target, host, headers, extra, &own, b"")
}

/// A `DELETE` of `target` on `host` (a Streamable-HTTP session's end).
pub fn delete(target: &http::Uri, host: &HeaderValue, headers: &HeaderMap) -> Vec<u8> {
    let own: [(&[u8], &[u8]); 2] = [(b"user-agent", AGENT.as_bytes()), (b"content-length", b"0")];
    write("DELETE", target, host, headers, &[], &own, b"")
}

/// An HTTP/1.1 request to `target` on `host`: `headers` (but the [`OWN_HEADERS`] and those
/// `extra` replaces), then `extra`, then `own`, then `body`.
pub fn write(
    method: &str,
    target: &http::Uri,
    host: &HeaderValue,
    headers: &HeaderMap,
    extra: &[Extra<'_>],
    own: &[(&[u8], &[u8])],
    body: &[u8],
) -> Vec<u8> {
    let path = target.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Vec::with_capacity(320 + body.len());
    let field = |req: &mut Vec<u8>, name: &[u8], value: &[u8]| {
        req.extend_from_slice(name);
        req.extend_from_slice(b": ");
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
    };
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(path.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\n");
    field(&mut req, b"host", host.as_bytes());
    for (name, value) in headers {
        if OWN_HEADERS.contains(name) || extra.iter().any(|(n, _)| *n == name) {
            continue;
        }
        field(&mut req, name.as_str().as_bytes(), value.as_bytes());
    }
    for (name, value) in extra {
        field(&mut req, name.as_str().as_bytes(), value.as_bytes());
    }
    for (name, value) in own {
        field(&mut req, name, value);
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_written_once_per_header_with_the_fixed_ones_last() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer t"));
        // Fields the request writes itself, and one this message replaces.
        headers.insert(ACCEPT, HeaderValue::from_static("text/plain"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert("mcp-name", HeaderValue::from_static("old"));
        let extra = [(&crate::h1::fields::NAME, Cow::Borrowed("new"))];
        let target: http::Uri = "/mcp?x=1".parse().unwrap();
        let host = HeaderValue::from_static("h:1");
        let written = post_json(&target, &host, &headers, &extra, b"{\"a\":1}");
        let text = String::from_utf8(written).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "{\"a\":1}");
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("POST /mcp?x=1 HTTP/1.1"));
        let fields: Vec<&str> = lines.collect();
        assert_eq!(
            fields,
            [
                "host: h:1",
                "authorization: Bearer t",
                "mcp-name: new",
                "accept: application/json, text/event-stream",
                "content-type: application/json",
                &format!("user-agent: {AGENT}"),
                "content-length: 7",
            ]
        );
    }

    #[test]
    fn an_event_stream_is_asked_for_without_a_body() {
        let target: http::Uri = "/sse".parse().unwrap();
        let host = HeaderValue::from_static("h");
        let resume = [(&crate::h1::fields::LAST_EVENT_ID, Cow::Borrowed("7"))];
        let written = get_events(&target, &host, &HeaderMap::new(), &resume);
        let text = String::from_utf8(written).unwrap();
        assert_eq!(
            text,
            format!(
                "GET /sse HTTP/1.1\r\nhost: h\r\nlast-event-id: 7\r\naccept: text/event-stream\r\nuser-agent: {AGENT}\r\n\r\n"
            )
        );
    }
}
