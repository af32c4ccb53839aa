//! Lossless text encoding of byte paths for JSON.
//!
//! Unix file names are bytes, JSON strings are Unicode. The encoding:
//!
//! * every maximal run of valid UTF-8 is written as is, except `%`, written `%25`;
//! * every byte that is not part of valid UTF-8 is written `%XX` (two uppercase hex
//!   digits).
//!
//! Control characters such as a newline or a backslash are valid UTF-8 and are left to
//! JSON's own escaping (`\n`, `\\`). Decoding turns every `%XX` back into its byte.
//! The encoding is one-to-one: a decoder accepts only the canonical form (the one
//! `encode` produces), so `%41` for `A`, lowercase hex or a lone `%` are rejected and
//! no two strings name the same path. An all-UTF-8 name without `%` is unchanged, so
//! documents written by tools that know nothing of this (the seed's) read the same.

use std::borrow::Cow;

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Encodes raw path bytes into their canonical text form.
pub fn encode(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if !text.contains('%') {
            return Cow::Borrowed(text);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if ch == '%' {
                out.push_str("%25");
            } else {
                out.push(ch);
            }
        }
        for &byte in chunk.invalid() {
            push_escaped(&mut out, byte);
        }
    }
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, byte: u8) {
    out.push('%');
    out.push(HEX_UPPER[usize::from(byte >> 4)] as char);
    out.push(HEX_UPPER[usize::from(byte & 0xf)] as char);
}

/// Why a text path is not a canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// `%` not followed by two uppercase hex digits.
    BadEscape,
    /// A well-formed escape that the encoder would not have produced.
    NotCanonical,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::BadEscape => {
                f.write_str("'%' must be followed by two uppercase hex digits")
            }
            DecodeError::NotCanonical => {
                f.write_str("escape '%XX' used for a byte that must be written as is")
            }
        }
    }
}

/// Decodes the canonical text form back into raw bytes.
pub fn decode(text: &str) -> Result<Cow<'_, [u8]>, DecodeError> {
    if !text.contains('%') {
        return Ok(Cow::Borrowed(text.as_bytes()));
    }
    let src = text.as_bytes();
    let mut out = Vec::with_capacity(src.len());
    let mut idx = 0;
    while idx < src.len() {
        if src[idx] == b'%' {
            let hi = src.get(idx + 1).and_then(|&d| upper_hex_value(d));
            let lo = src.get(idx + 2).and_then(|&d| upper_hex_value(d));
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push((hi << 4) | lo),
                _ => return Err(DecodeError::BadEscape),
            }
            idx += 3;
        } else {
            out.push(src[idx]);
            idx += 1;
        }
    }
    if encode(&out) != text {
        return Err(DecodeError::NotCanonical);
    }
    Ok(Cow::Owned(out))
}

fn upper_hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_utf8_is_unchanged() {
        assert_eq!(encode(b"/etc/passwd"), "/etc/passwd");
        assert_eq!(encode("/é\n\\".as_bytes()), "/é\n\\");
    }

    #[test]
    fn odd_bytes_are_escaped() {
        assert_eq!(encode(b"/a\xffb%c"), "/a%FFb%25c");
        assert_eq!(decode("/a%FFb%25c").unwrap().as_ref(), b"/a\xffb%c");
    }

    #[test]
    fn non_canonical_forms_are_rejected() {
        assert_eq!(decode("/%41"), Err(DecodeError::NotCanonical));
        assert_eq!(decode("/%ff"), Err(DecodeError::BadEscape));
        assert_eq!(decode("/%F"), Err(DecodeError::BadEscape));
        assert_eq!(decode("/100%"), Err(DecodeError::BadEscape));
        // 0xC3 0xA9 is 'é': valid UTF-8 must be written as is.
        assert_eq!(decode("/%C3%A9"), Err(DecodeError::NotCanonical));
    }

    proptest! {
        #[test]
        fn round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = encode(&bytes);
            let decoded = decode(&text).unwrap();
            prop_assert_eq!(decoded.as_ref(), &bytes[..]);
        }

        #[test]
        fn decode_is_injective(text in "[a-z%A-F0-9/\u{e9}]{0,16}") {
            if let Ok(bytes) = decode(&text) {
                prop_assert_eq!(encode(&bytes), text.as_str());
            }
        }
    }
}
