//! Base64 (RFC 4648), both alphabets: the standard one with padding for HTTP Basic
//! credentials, the URL-safe one without padding for the opaque cursors the dialects
//! hand out (so that they travel in a query string unescaped).

/// The standard alphabet (`+`, `/`), padded with `=`.
pub(super) const STANDARD: Alphabet = Alphabet {
    chars: b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    pad: true,
};
/// The URL-safe alphabet (`-`, `_`), unpadded.
pub(super) const URL_SAFE: Alphabet = Alphabet {
    chars: b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    pad: false,
};

pub(super) struct Alphabet {
    chars: &'static [u8; 64],
    pad: bool,
}

impl Alphabet {
    pub(super) fn encode(&self, bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
            let bits = (byte(0) << 16) | (byte(1) << 8) | byte(2);
            for i in 0..4 {
                // A chunk of n bytes fills n + 1 characters; the rest is padding.
                if i <= chunk.len() {
                    out.push(char::from(self.chars[(bits >> (18 - 6 * i) & 63) as usize]));
                } else if self.pad {
                    out.push('=');
                }
            }
        }
        out
    }

    /// The bytes of `text`, `None` if it is not in this alphabet (padding is accepted
    /// and ignored either way).
    pub(super) fn decode(&self, text: &str) -> Option<Vec<u8>> {
        let text = text.trim_end_matches('=');
        let mut out = Vec::with_capacity(text.len() * 3 / 4);
        let (mut bits, mut count) = (0u32, 0u32);
        for c in text.bytes() {
            let value = self.chars.iter().position(|&a| a == c)?;
            bits = (bits << 6) | value as u32;
            count += 6;
            if count >= 8 {
                count -= 8;
                out.push((bits >> count) as u8);
                bits &= (1 << count) - 1;
            }
        }
        // Leftover bits are the zero fill of the last character; one lone character
        // (six bits) cannot be the end of any encoding.
        (count < 6).then_some(out)
    }
}
