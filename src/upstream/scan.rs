//! A validating scan of a JSON object's top level: its members' keys and the exact text of
//! their values, without building anything.
//!
//! This is what [`super::raw::Members`] needs on every forwarded call, three times per call
//! (the request, its params, the answer). serde_json did it through a visitor and `RawValue`,
//! more work than any other part of mcpgw's own code at the time (docs/PERFORMANCE.md, fifth
//! pass). The scan here checks the same grammar (RFC 8259: no
//! trailing commas or garbage, no control characters in strings, valid escapes and surrogate
//! pairs) in one pass, eight string bytes at a time.
//!
//! It never accepts a text that serde_json would refuse: where it is unsure (nesting deeper
//! than [`MAX_DEPTH`], a key it would have to unescape and cannot) it gives up, and the caller
//! falls back to serde_json, which then answers as it always did. Numbers are checked for
//! their grammar only, as serde_json's `RawValue` does.

use std::borrow::Cow;

/// Deepest nesting scanned (serde_json stops at 128; anything deeper is left to it).
pub const MAX_DEPTH: usize = 100;

/// A member of an object: its key (unescaped) and its value's text (no surrounding white space).
pub type Member<'t> = (Cow<'t, str>, &'t str);

/// The members of the object `text`, in order. `None` when `text` is not exactly one valid JSON
/// object.
pub fn members(text: &str) -> Option<Vec<Member<'_>>> {
    members_with(text, None).map(|(top, _)| top)
}

/// [`members`], and those of the object under key `inner` too, in the same pass: `Some` when
/// that member is an object (the last such member if the key repeats).
pub fn members_with<'t>(
    text: &'t str,
    inner: Option<&str>,
) -> Option<(Vec<Member<'t>>, Option<Vec<Member<'t>>>)> {
    let mut s = Scan { text, i: 0 };
    s.ws();
    if s.peek() != Some(b'{') {
        return None;
    }
    let mut top = Vec::with_capacity(6);
    let mut nested = None;
    s.collect(1, &mut top, inner.map(|key| (key, &mut nested)))?;
    s.ws();
    (s.i == text.len()).then_some((top, nested))
}

struct Scan<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// One value; `depth` is the nesting of the container it sits in.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(depth + 1),
            b'[' => self.seq(depth + 1, b']', |s| s.value(depth + 1)),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.text.as_bytes().get(self.i..end)? == word).then(|| self.i = end)
    }

    /// An object, from its `{`, read through.
    fn object(&mut self, depth: usize) -> Option<()> {
        self.seq(depth, b'}', |s| {
            s.string()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            s.value(depth)
        })
    }

    /// An object's members into `out`, from its `{`; with `inner`, the members of the object
    /// under that key go to its slot.
    fn collect(
        &mut self,
        depth: usize,
        out: &mut Vec<Member<'a>>,
        mut inner: Option<(&str, &mut Option<Vec<Member<'a>>>)>,
    ) -> Option<()> {
        self.seq(depth, b'}', |s| {
            let key_start = s.i;
            let escaped = s.string()?;
            let key = &s.text[key_start..s.i];
            let key = if escaped {
                Cow::Owned(serde_json::from_str::<String>(key).ok()?)
            } else {
                Cow::Borrowed(&key[1..key.len() - 1])
            };
            s.ws();
            s.eat(b':')?;
            s.ws();
            let start = s.i;
            match &mut inner {
                Some((want, slot)) if key == *want && s.peek() == Some(b'{') => {
                    let mut members = Vec::with_capacity(6);
                    s.collect(depth + 1, &mut members, None)?;
                    **slot = Some(members);
                }
                _ => s.value(depth)?,
            }
            out.push((key, &s.text[start..s.i]));
            Some(())
        })
    }

    /// An object or array, from its opening byte to its `close`, at nesting `depth`: `item`
    /// reads each member or element, the commas and white space between are read here.
    fn seq(
        &mut self,
        depth: usize,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(close) {
            self.i += 1;
            return Some(());
        }
        loop {
            item(self)?;
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                c if c == close => return Some(()),
                _ => return None,
            }
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.one_or_more_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.one_or_more_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn one_or_more_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }

    /// A string, from its opening quote to past its closing one; true if it has escapes.
    fn string(&mut self) -> Option<bool> {
        self.eat(b'"')?;
        let mut escaped = false;
        loop {
            self.i += plain_run(&self.text.as_bytes()[self.i..]);
            match self.next()? {
                b'"' => return Some(escaped),
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                // A control character: not allowed in a string.
                _ => return None,
            }
        }
    }

    /// What follows a backslash.
    fn escape(&mut self) -> Option<()> {
        match self.next()? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(()),
            b'u' => match self.hex4()? {
                // A high surrogate must be followed by an escaped low one.
                0xD800..=0xDBFF => {
                    self.eat(b'\\')?;
                    self.eat(b'u')?;
                    matches!(self.hex4()?, 0xDC00..=0xDFFF).then_some(())
                }
                0xDC00..=0xDFFF => None,
                _ => Some(()),
            },
            _ => None,
        }
    }

    fn hex4(&mut self) -> Option<u16> {
        let digits = self.text.as_bytes().get(self.i..self.i + 4)?;
        let mut v = 0u16;
        for &d in digits {
            v = v << 4 | u16::from(char::from(d).to_digit(16)? as u8);
        }
        self.i += 4;
        Some(v)
    }
}

/// How many bytes at the start of `b` need no attention inside a string: not a quote, not a
/// backslash, not a control character. Eight bytes at a time while it can.
fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // High bit of each byte of `w` that is below `n` (exact for the lowest such byte; bytes of
    // 0x80 and up never count, which keeps UTF-8 sequences out).
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGH;
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let hits = below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20);
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde_json's verdict on whether `text` is one JSON object.
    fn serde_accepts(text: &str) -> bool {
        matches!(
            serde_json::from_str::<serde_json::Value>(text),
            Ok(serde_json::Value::Object(_))
        )
    }

    #[test]
    fn members_and_their_exact_text() {
        let text = " {\"a\" : 1 ,\"b\\u0041\":\t[true, {\"x\": null}] , \"c\": \"q\\\"\" }\n";
        let m = members(text).unwrap();
        assert_eq!(
            m,
            [
                (Cow::Borrowed("a"), "1"),
                (Cow::Owned("bA".to_owned()), "[true, {\"x\": null}]"),
                (Cow::Borrowed("c"), "\"q\\\"\""),
            ]
        );
        assert_eq!(members("{}").unwrap(), []);
    }

    /// Texts on both sides of the grammar's edges: the scan must agree with serde_json on
    /// every one it accepts, and accept the ordinary ones.
    #[test]
    fn agrees_with_serde_json() {
        let cases = [
            r#"{"a":1}"#,
            r#"{"a":-0.5e+10}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
            r#"{"a":+1}"#,
            r#"{"a":1,}"#,
            r#"{"a":[1,]}"#,
            r#"{,}"#,
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":falsey}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\u12G4"}"#,
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"a":"\ud83d"}"#,
            r#"{"a":"\ude00"}"#,
            r#"{"a":"\ud83d\u0041"}"#,
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"nul\u{0}\"}",
            "{\"a\":\"del\u{7f} é ☃ 😀\"}",
            r#"{"a":"0123456789abcdef\"0123456789"}"#,
            r#"{"a":"long string with no escapes at all, well past eight bytes"}"#,
            r#"{"a":{"b":{"c":[[],{}]}}}"#,
            r#"{"a":1} x"#,
            r#"{"a":1}}"#,
            r#"{"a":1"#,
            r#"{"a":"unterminated}"#,
            r#"[1]"#,
            r#""s""#,
            "",
            "{\"a\":1}\u{a0}",
            "\u{feff}{}",
            r#"{"a":[1 2]}"#,
            r#"{1:2}"#,
            r#"{"a":1 "b":2}"#,
        ];
        for text in cases {
            let ours = members(text).is_some();
            assert_eq!(ours, serde_accepts(text), "{text:?}");
        }
    }

    #[test]
    fn deep_nesting_is_left_to_serde_json() {
        let deep = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert!(members(&deep(MAX_DEPTH - 1)).is_some());
        assert!(members(&deep(MAX_DEPTH)).is_none());
        assert!(members(&deep(10_000)).is_none());
    }

    #[test]
    fn every_position_of_a_special_byte_is_found() {
        for len in 0..20 {
            for special in [b'"', b'\\', 0x1f, 0] {
                for at in 0..len {
                    let mut b = vec![b'x'; len];
                    b[at] = special;
                    assert_eq!(plain_run(&b), at, "len {len}, {special:#x} at {at}");
                }
                assert_eq!(plain_run(&vec![0xc3; len]), len);
            }
        }
    }
}
