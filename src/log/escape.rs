//! Escaping for text that someone else chose (an initiator's names and keys, a tgtadm
//! payload) on its way into a log line.
//!
//! A log line is read by people on terminals and by programs that split on newlines. An
//! InitiatorName may contain anything a peer puts in a Login Request (RFC 7143 §6.1 limits
//! keys to UTF-8 and the name to 223 bytes, but that is checked after we may want to log it):
//! a newline forges a second line, an ESC sequence rewrites the operator's terminal, a
//! right-to-left override reorders what they read. [`Untrusted`] is the one wrapper that every
//! such string passes through: it quotes the text, escapes what could do any of that, and
//! caps the length, so one log call cannot grow into a flood of bytes either.

use std::fmt;

/// How many characters of one untrusted string a log line shows; the rest is counted.
pub const MAX_CHARS: usize = 256;

/// A string from outside (peer or admin), shown quoted and escaped: `\n`, `\r`, `\t`, `\\`,
/// `\"`, other control characters (C0, DEL, C1) and Unicode bidirectional controls as
/// `\u{..}`; longer than [`MAX_CHARS`] characters is cut, with the number of characters left
/// out. Never panics, whatever the input.
#[derive(Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl Untrusted<'_> {
    /// Whether `c` is shown as an escape rather than as itself.
    fn must_escape(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let mut chars = self.0.chars();
        for (shown, c) in chars.by_ref().enumerate() {
            if shown == MAX_CHARS {
                let rest = 1 + chars.count();
                return write!(f, "\"...(+{rest} chars)");
            }
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                c if Self::must_escape(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(s: &str) -> String {
        Untrusted(s).to_string()
    }

    #[test]
    fn plain_names_are_only_quoted() {
        assert_eq!(
            show("iqn.1993-08.org.debian:01:abc"),
            "\"iqn.1993-08.org.debian:01:abc\""
        );
        assert_eq!(show(""), "\"\"");
        assert_eq!(show("é名"), "\"é名\"");
    }

    #[test]
    fn line_breaks_and_terminal_escapes_cannot_reach_the_log() {
        let hostile =
            "iqn.x\nFAKE-LOG-LINE: admin logged in\r\x1b[31mred\x1b[0m\x07\u{7f}\u{85}\u{202e}";
        let s = show(hostile);
        assert_eq!(
            s,
            "\"iqn.x\\nFAKE-LOG-LINE: admin logged in\\r\\u{1b}[31mred\\u{1b}[0m\\u{7}\\u{7f}\\u{85}\\u{202e}\""
        );
        assert!(s.chars().all(|c| !c.is_control()));
    }

    #[test]
    fn quotes_and_backslashes_stay_unambiguous() {
        assert_eq!(show("a\"b\\n"), "\"a\\\"b\\\\n\"");
    }

    #[test]
    fn long_text_is_cut_with_a_count() {
        let long = "x".repeat(MAX_CHARS + 1000);
        let s = show(&long);
        assert!(s.ends_with("\"...(+1000 chars)"), "{s}");
        assert_eq!(s.len(), MAX_CHARS + 2 + "...(+1000 chars)".len());
        assert_eq!(show(&"y".repeat(MAX_CHARS)).len(), MAX_CHARS + 2);
    }
}
