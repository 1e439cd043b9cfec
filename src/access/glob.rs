//! The patterns policy rules are written in: `*` stands for any run of characters (none
//! included), `?` for exactly one, anything else for itself. Nothing else is special, so a URI
//! or a SPIFFE id is written as it is.

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: Box<str>,
    /// No `*` or `?`: compared whole.
    literal: bool,
}

impl Glob {
    /// The pattern `text`.
    pub fn new(text: &str) -> Self {
        Self {
            literal: !text.contains(['*', '?']),
            text: text.into(),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `candidate` matches the whole pattern.
    pub fn matches(&self, candidate: &str) -> bool {
        if self.literal {
            return *self.text == *candidate;
        }
        wildcard(self.text.as_bytes(), candidate.as_bytes())
    }
}

/// Iterative wildcard matching with one backtrack point (the last `*`): linear in practice,
/// `O(pattern × candidate)` at worst, never recursive.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(b'?') => {
                // One character, not one byte: skip the continuation bytes of a UTF-8 sequence.
                t += utf8_len(text[t]);
                p += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn stars_and_question_marks() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("delete_*", "delete_user", true),
            ("delete_*", "undelete_user", false),
            ("*delete*", "undelete_user", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "aéc", true),
            ("file:///srv/*/secret", "file:///srv/a/b/secret", true),
            ("file:///srv/*/secret", "file:///srv/a/b/secrets", false),
            (
                "spiffe://example.org/ns/*/sa/agent",
                "spiffe://example.org/ns/prod/sa/agent",
                true,
            ),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("**a", "bba", true),
            ("*a*b", "xaybzb", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern} ~ {text}"
            );
        }
    }
}
