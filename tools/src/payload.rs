//! Entry payloads for people: text when the bytes are printable UTF-8, hex
//! otherwise, cut to a screen-friendly width unless the whole is asked for.

use std::fmt::Write as _;

/// Bytes of a text payload shown before cutting.
pub const TEXT_SHOWN_BYTES_MAX: usize = 64;
/// Bytes of a binary payload shown (as twice as many hex digits).
pub const HEX_SHOWN_BYTES_MAX: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Hex,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf8",
            Encoding::Hex => "hex",
        }
    }
}

/// A payload as shown. Invariant: `shown_bytes <= len`; `text` renders
/// exactly the first `shown_bytes` bytes.
pub struct Shown {
    pub encoding: Encoding,
    pub text: String,
    pub shown_bytes: usize,
    pub len: usize,
}

impl Shown {
    pub fn truncated(&self) -> bool {
        self.shown_bytes < self.len
    }

    /// For a terminal: quoted and escaped text or hex digits, then what was cut.
    pub fn human(&self) -> String {
        let mut out = match self.encoding {
            Encoding::Utf8 => format!("{:?}", self.text),
            Encoding::Hex => format!("0x{}", self.text),
        };
        if self.truncated() {
            let _ = write!(out, "…(+{} bytes)", self.len - self.shown_bytes);
        }
        out
    }
}

fn printable(c: char) -> bool {
    !c.is_control() || matches!(c, '\n' | '\t' | '\r')
}

pub fn show(payload: &[u8], full: bool) -> Shown {
    let len = payload.len();
    match std::str::from_utf8(payload) {
        Ok(s) if s.chars().all(printable) => {
            let mut cut = if full {
                len
            } else {
                len.min(TEXT_SHOWN_BYTES_MAX)
            };
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            Shown {
                encoding: Encoding::Utf8,
                text: s[..cut].to_owned(),
                shown_bytes: cut,
                len,
            }
        }
        _ => {
            let cut = if full {
                len
            } else {
                len.min(HEX_SHOWN_BYTES_MAX)
            };
            let mut text = String::with_capacity(2 * cut);
            for b in &payload[..cut] {
                let _ = write!(text, "{b:02x}");
            }
            Shown {
                encoding: Encoding::Hex,
                text,
                shown_bytes: cut,
                len,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_hex_are_cut_at_boundaries() {
        let s = show("héllo".repeat(20).as_bytes(), false);
        assert_eq!(s.encoding, Encoding::Utf8);
        assert!(s.truncated() && s.shown_bytes <= TEXT_SHOWN_BYTES_MAX);
        assert!(s.text.len() == s.shown_bytes);
        let h = show(&[0u8, 1, 2, 255], false);
        assert_eq!((h.encoding, h.text.as_str()), (Encoding::Hex, "000102ff"));
        assert!(!h.truncated());
        let full = show(&[7u8; 100], true);
        assert_eq!(full.text.len(), 200);
        assert_eq!(show(b"", false).human(), "\"\"");
    }
}
