//! The HTTP header names of MCP's transports, made once, and the header fields of the
//! forwarding path ([`Fields`], read through [`Lookup`]).
//!
//! A header map looked up by `&str` parses the name (checks and lower-cases every byte) on every
//! lookup; looked up by a `HeaderName` it only hashes. These are on every forwarded call.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// `Mcp-Session-Id`.
pub static SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// `MCP-Protocol-Version`.
pub static PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// `Mcp-Method` (2026-07-28).
pub static METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// `Mcp-Name` (2026-07-28).
pub static NAME: HeaderName = HeaderName::from_static("mcp-name");
/// `Last-Event-ID`.
pub static LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// Reading a request's or an answer's header fields by name, whatever holds them.
pub trait Lookup {
    /// The first value of the field `name`.
    fn value(&self, name: &HeaderName) -> Option<&[u8]>;

    /// That value as text: `None` unless it is visible ASCII (tabs and spaces allowed), as
    /// [`HeaderValue::to_str`] decides.
    fn text(&self, name: &HeaderName) -> Option<&str>;

    /// Whether the field `name` is present.
    fn contains(&self, name: &HeaderName) -> bool {
        self.value(name).is_some()
    }

    /// Whether the field `name` comes more than once (readers of the first and of the last
    /// copy would disagree).
    fn repeated(&self, name: &HeaderName) -> bool;

    /// Every field, as a header map (for a request passed on to another instance: a rare path).
    fn to_map(&self) -> HeaderMap;
}

impl Lookup for HeaderMap {
    fn value(&self, name: &HeaderName) -> Option<&[u8]> {
        self.get(name).map(HeaderValue::as_bytes)
    }

    fn to_map(&self) -> HeaderMap {
        self.clone()
    }

    fn text(&self, name: &HeaderName) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }

    fn repeated(&self, name: &HeaderName) -> bool {
        self.get_all(name).iter().nth(1).is_some()
    }
}

/// Whether `value` can be sent as a header's value as it is: what `HeaderValue::from_str`
/// accepts (no control byte but tab).
pub fn can_carry(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= b' ' && b != 0x7f))
}

/// `n` in decimal, written into `digits` (a `Content-Length` value without an allocation).
pub fn decimal(n: usize, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[at..];
        }
    }
}

/// Whether `value` is visible ASCII, tab or space.
pub fn is_visible(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// `value` as text when it is visible ASCII, tab or space.
pub fn visible(value: &[u8]) -> Option<&str> {
    is_visible(value)
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Header fields as they came on the wire: one copy of the head, and where each field's name
/// and value lie in it, rather than an `http::HeaderMap` per head (hashing, a `HeaderName` per
/// field, allocations, for the few fields a call reads; docs/PERFORMANCE.md, ninth pass): those
/// few are found by a scan of a dozen, which compares one word per field ([`key`]) before it
/// compares a name.
///
/// Names compare without regard to case. The parser that found the fields (httparse) has
/// checked them: names are tokens, values hold no control byte but tab.
#[derive(Clone, Debug, Default)]
pub struct Fields {
    head: Bytes,
    spans: Vec<Span>,
}

/// Where one field lies in the head.
#[derive(Clone, Copy, Debug)]
struct Span {
    /// Its name's [`key`].
    key: u32,
    /// Its name's start (its length is in `key`).
    name: u32,
    /// Its value's start and end.
    value: [u32; 2],
}

/// A word that two names equal without regard to case share: their length, and their first
/// and last bytes lowered. The names of one head differ in it nearly always.
/// Whether the name `field` came as is `want` (lower case): most clients send names in lower
/// case, so a plain comparison first, and one without regard to case only if that fails.
#[inline]
fn same_name(field: &[u8], want: &[u8]) -> bool {
    field == want || field.eq_ignore_ascii_case(want)
}

#[inline]
fn key(name: &[u8]) -> u32 {
    match name {
        [] => 0,
        [first, .., last] | [first @ last] => {
            (name.len() as u32) << 16
                | u32::from(first.to_ascii_lowercase()) << 8
                | u32::from(last.to_ascii_lowercase())
        }
    }
}

impl Fields {
    /// The fields of `head` at `spans`: per field, where its name and its value start and
    /// end in `head` (a span outside it is a bug of the caller and panics).
    pub fn new(head: Bytes, spans: impl IntoIterator<Item = [u32; 4]>) -> Self {
        let spans = spans
            .into_iter()
            .map(|[ns, ne, vs, ve]| Span {
                key: key(&head[ns as usize..ne as usize]),
                name: ns,
                value: [vs, ve],
            })
            .collect();
        Self { head, spans }
    }

    /// Every value of the field `name`, in order.
    pub fn get_all<'a>(&'a self, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
        let want = name.as_str().as_bytes();
        let wanted = key(want);
        self.spans
            .iter()
            .filter(move |span| span.key == wanted && same_name(self.name(span), want))
            .map(|span| self.value_of(span))
    }

    /// Every field as a header map (for a request passed on whole: a rare path).
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.spans.len());
        for span in &self.spans {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(self.name(span)),
                http::HeaderValue::from_bytes(self.value_of(span)),
            ) {
                map.append(name, value);
            }
        }
        map
    }

    #[inline]
    fn name(&self, span: &Span) -> &[u8] {
        let start = span.name as usize;
        &self.head[start..start + (span.key >> 16) as usize]
    }

    #[inline]
    fn value_of(&self, span: &Span) -> &[u8] {
        &self.head[span.value[0] as usize..span.value[1] as usize]
    }
}

impl Lookup for Fields {
    fn value(&self, name: &HeaderName) -> Option<&[u8]> {
        // A plain loop: as `get_all(name).next()` the test of each field was a call of its own.
        let want = name.as_str().as_bytes();
        let wanted = key(want);
        for span in &self.spans {
            if span.key == wanted && same_name(self.name(span), want) {
                return Some(self.value_of(span));
            }
        }
        None
    }

    fn text(&self, name: &HeaderName) -> Option<&str> {
        // httparse let no control byte but tab through: ASCII is visible text here.
        std::str::from_utf8(self.value(name)?)
            .ok()
            .filter(|text| text.is_ascii())
    }

    fn repeated(&self, name: &HeaderName) -> bool {
        let want = name.as_str().as_bytes();
        let wanted = key(want);
        self.spans
            .iter()
            .filter(|span| span.key == wanted && same_name(self.name(span), want))
            .nth(1)
            .is_some()
    }

    fn to_map(&self) -> HeaderMap {
        Fields::to_map(self)
    }
}

/// A request's headers as its server read them: a map from hyper, or the fields of a head the
/// listener's own HTTP/1.1 loop parsed.
#[derive(Debug)]
pub enum Incoming {
    /// From hyper (every route but the listener's hot one, and every other transport).
    Map(HeaderMap),
    /// From `crate::h1::server`.
    Wire(Fields),
}

impl Lookup for Incoming {
    fn value(&self, name: &HeaderName) -> Option<&[u8]> {
        match self {
            Self::Map(map) => map.value(name),
            Self::Wire(fields) => fields.value(name),
        }
    }

    fn text(&self, name: &HeaderName) -> Option<&str> {
        match self {
            Self::Map(map) => map.text(name),
            Self::Wire(fields) => fields.text(name),
        }
    }

    fn repeated(&self, name: &HeaderName) -> bool {
        match self {
            Self::Map(map) => map.repeated(name),
            Self::Wire(fields) => fields.repeated(name),
        }
    }

    fn to_map(&self) -> HeaderMap {
        match self {
            Self::Map(map) => map.clone(),
            Self::Wire(fields) => fields.to_map(),
        }
    }
}

/// The fields of a complete response head, for tests that need a [`Fields`].
#[cfg(test)]
pub(crate) fn response_fields(head: &'static [u8]) -> Fields {
    let mut slots = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut slots);
    assert!(response.parse(head).unwrap().is_complete());
    let at = |s: &[u8]| (s.as_ptr() as usize - head.as_ptr() as usize) as u32;
    let spans: Vec<[u32; 4]> = response
        .headers
        .iter()
        .map(|f| {
            let (n, v) = (at(f.name.as_bytes()), at(f.value));
            [n, n + f.name.len() as u32, v, v + f.value.len() as u32]
        })
        .collect();
    Fields::new(Bytes::from_static(head), spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &'static [u8]) -> Fields {
        response_fields(head)
    }

    #[test]
    fn decimals_are_written_as_display_writes_them() {
        for n in [0, 7, 10, 99, 100, 1_234_567, usize::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn fields_are_found_by_name_without_regard_to_case_first_value_first() {
        let f = parsed(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMCP-Session-Id: abc\r\n\
              Vary: a\r\nvary: b\r\nX-Bin: caf\xe9\r\nX-Empty:\r\n\r\n",
        );
        assert_eq!(f.spans.len(), 6);
        assert_eq!(
            f.text(&http::header::CONTENT_TYPE),
            Some("application/json")
        );
        assert_eq!(f.text(&SESSION_ID), Some("abc"));
        let vary: Vec<_> = f.get_all(&http::header::VARY).collect();
        assert_eq!(vary, [b"a".as_slice(), b"b".as_slice()]);
        assert_eq!(f.text(&http::header::VARY), Some("a"));
        // Not visible ASCII: there as bytes, not as text (as HeaderValue::to_str says).
        let bin = HeaderName::from_static("x-bin");
        assert_eq!(f.value(&bin), Some(b"caf\xe9".as_slice()));
        assert_eq!(f.text(&bin), None);
        assert_eq!(f.text(&HeaderName::from_static("x-empty")), Some(""));
        assert!(!f.contains(&http::header::LINK));
        // A name that is a prefix of another is not it.
        assert!(!f.contains(&HeaderName::from_static("content")));
    }

    #[test]
    fn httparse_refuses_the_control_bytes_that_text_relies_on_it_to_refuse() {
        // `Fields::text` takes ASCII for visible text because httparse let no control byte
        // but tab into a value; this holds it to that.
        for bad in [0x00u8, 0x01, 0x0b, 0x1f, 0x7f] {
            let mut head = b"HTTP/1.1 200 OK\r\nX-A: a".to_vec();
            head.push(bad);
            head.extend_from_slice(b"b\r\n\r\n");
            let mut slots = [httparse::EMPTY_HEADER; 4];
            let mut response = httparse::Response::new(&mut slots);
            assert!(
                response.parse(&head).is_err(),
                "byte {bad:#04x} let through"
            );
        }
    }

    #[test]
    fn a_map_and_the_wire_fields_of_one_head_answer_alike() {
        let f =
            parsed(b"HTTP/1.1 200 OK\r\nHost: a\r\nAccept: b\r\nAccept: c\r\nX-Tab: d\te\r\n\r\n");
        let mut map = HeaderMap::new();
        for (name, value) in [
            ("host", "a"),
            ("accept", "b"),
            ("accept", "c"),
            ("x-tab", "d\te"),
        ] {
            map.append(name, HeaderValue::from_static(value));
        }
        for name in ["host", "accept", "x-tab", "absent"] {
            let name = HeaderName::from_static(name);
            assert_eq!(Lookup::value(&map, &name), f.value(&name), "{name}");
            assert_eq!(Lookup::text(&map, &name), f.text(&name), "{name}");
            let wire = Incoming::Wire(f.clone());
            let hyper = Incoming::Map(map.clone());
            assert_eq!(wire.text(&name), hyper.text(&name), "{name}");
        }
    }
}
