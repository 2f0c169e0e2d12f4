//! Base64 (RFC 4648): the standard alphabet with padding, for HTTP Basic credentials.

/// The standard alphabet (`+`, `/`), padded with `=`.
pub(super) const STANDARD: Alphabet = Alphabet {
    chars: b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    pad: true,
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
}
