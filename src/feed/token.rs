//! Feed tokens, the `since` and `until` of the change feed: opaque to clients, versioned
//! (the first byte) and authenticated with a server secret, so a client can neither forge
//! a position nor carry a token over to another filter or another database unnoticed.
//!
//! Version 1, before URL-safe base64 without padding (76 characters): `1 | epoch (8) |
//! scope (8) | position (8) | head (8) | horizon (8) | HMAC-SHA256 (first 16)`, integers
//! big-endian.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The only version this build writes and reads.
const VERSION: u8 = 1;
/// The first 16 bytes of the HMAC: 128 bits are far beyond guessing.
const TAG_LEN: usize = 16;
const BODY_LEN: usize = 1 + 8 + 8 + 8 + 8 + 8;
const TOKEN_LEN: usize = BODY_LEN + TAG_LEN;
/// Longer text cannot be a token; refused before decoding anything.
const MAX_TEXT_LEN: usize = 128;

/// The feed epoch of a database: a random id made with the database, so a token from
/// another database (or one rebuilt from scratch) is recognized and expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(pub [u8; 8]);

/// A hash of a normalized `stream` filter: a token reads the feed only through the
/// filter it was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeHash(pub [u8; 8]);

/// What a feed token says, once authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedToken {
    pub epoch: Epoch,
    pub scope: ScopeHash,
    /// Every change at or below this position has been handed out.
    pub position: i64,
    /// The feed head of the snapshot that issued the token (at least `position`): a stream
    /// of the scope created after it is not the stream the token was issued for.
    pub head: i64,
    /// The purge horizon of that snapshot: a purge that raises it past `position` may
    /// have removed a deletion the holder has not seen yet.
    pub horizon: i64,
}

/// Text that is not a token this server issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    /// Not a token of a version this build reads.
    #[error("not a feed token")]
    Malformed,
    /// Shaped like a token, but not authenticated by this database's secret: tampered
    /// with, or issued by another database (`epoch` is what it claims; nothing of it can
    /// be trusted, so it only ever tells which refusal to give).
    #[error("a feed token this database did not issue")]
    Unauthenticated { epoch: Epoch },
}

/// The server secret that authenticates tokens. Never printed.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn new(secret: [u8; 32]) -> Self {
        TokenKey(secret)
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// The token's text.
    pub fn encode(&self, token: &FeedToken) -> String {
        let mut bytes = [0u8; TOKEN_LEN];
        bytes[0] = VERSION;
        bytes[1..9].copy_from_slice(&token.epoch.0);
        bytes[9..17].copy_from_slice(&token.scope.0);
        bytes[17..25].copy_from_slice(&token.position.to_be_bytes());
        bytes[25..33].copy_from_slice(&token.head.to_be_bytes());
        bytes[33..41].copy_from_slice(&token.horizon.to_be_bytes());
        let tag = self.tag(&bytes[..BODY_LEN]);
        bytes[BODY_LEN..].copy_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads and authenticates a token's text.
    pub fn decode(&self, text: &str) -> Result<FeedToken, InvalidToken> {
        if text.len() > MAX_TEXT_LEN {
            return Err(InvalidToken::Malformed);
        }
        // The decoder refuses non-zero trailing bits, so one token has one text.
        let bytes = URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|_| InvalidToken::Malformed)?;
        let bytes: [u8; TOKEN_LEN] = bytes.try_into().map_err(|_| InvalidToken::Malformed)?;
        if bytes[0] != VERSION {
            return Err(InvalidToken::Malformed);
        }
        let field = |at: usize| -> [u8; 8] {
            let mut out = [0u8; 8];
            out.copy_from_slice(&bytes[at..at + 8]);
            out
        };
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        mac.update(&bytes[..BODY_LEN]);
        mac.verify_truncated_left(&bytes[BODY_LEN..]).map_err(|_| {
            InvalidToken::Unauthenticated {
                epoch: Epoch(field(1)),
            }
        })?;
        let token = FeedToken {
            epoch: Epoch(field(1)),
            scope: ScopeHash(field(9)),
            position: i64::from_be_bytes(field(17)),
            head: i64::from_be_bytes(field(25)),
            horizon: i64::from_be_bytes(field(33)),
        };
        // Authentic tokens always satisfy this; checked so nothing downstream has to.
        if token.position < 0 || token.horizon < 0 || token.head < token.position.max(token.horizon)
        {
            return Err(InvalidToken::Malformed);
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn key() -> TokenKey {
        TokenKey::new([7; 32])
    }

    fn sample() -> FeedToken {
        FeedToken {
            epoch: Epoch([1, 2, 3, 4, 5, 6, 7, 8]),
            scope: ScopeHash([9; 8]),
            position: 1234,
            head: 5678,
            horizon: 99,
        }
    }

    #[test]
    fn a_token_round_trips_and_is_url_safe() {
        let text = key().encode(&sample());
        assert_eq!(text.len(), 76);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(key().decode(&text), Ok(sample()));
    }

    #[test]
    fn another_key_or_version_is_refused() {
        let text = key().encode(&sample());
        assert_eq!(
            TokenKey::new([8; 32]).decode(&text),
            Err(InvalidToken::Unauthenticated {
                epoch: sample().epoch
            })
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
        bytes[0] = 2;
        assert_eq!(
            key().decode(&URL_SAFE_NO_PAD.encode(&bytes)),
            Err(InvalidToken::Malformed)
        );
    }

    /// Arbitrary text and mutations of valid tokens (flipped bits, changed, dropped or
    /// added characters, re-encoded bytes) never panic and are never accepted.
    #[test]
    fn the_decoder_refuses_everything_it_did_not_issue() {
        const ALPHABET: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ .%";
        let mut rng = StdRng::seed_from_u64(0x71de_4a4c);
        let key = key();
        for round in 0..20_000u32 {
            let token = FeedToken {
                epoch: Epoch(rng.random()),
                scope: ScopeHash(rng.random()),
                position: rng.random_range(0..i64::MAX / 2),
                head: i64::MAX / 2 + rng.random_range(0..1000),
                horizon: rng.random_range(0..i64::MAX / 2),
            };
            let valid = key.encode(&token);
            assert_eq!(key.decode(&valid), Ok(token));
            let mutated = match round % 6 {
                // Random text of a plausible length, from the token alphabet and beyond.
                0 => {
                    let len = rng.random_range(0..100);
                    (0..len)
                        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                        .collect::<String>()
                }
                // Random bytes, as lossy UTF-8.
                1 => {
                    let bytes: Vec<u8> =
                        (0..rng.random_range(0..80)).map(|_| rng.random()).collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                // One character replaced.
                2 => {
                    let mut chars: Vec<u8> = valid.clone().into_bytes();
                    let at = rng.random_range(0..chars.len());
                    let mut c = ALPHABET[rng.random_range(0..64)];
                    while c == chars[at] {
                        c = ALPHABET[rng.random_range(0..64)];
                    }
                    chars[at] = c;
                    String::from_utf8(chars).unwrap()
                }
                // One bit of the decoded bytes flipped, then re-encoded.
                3 => {
                    let mut bytes = URL_SAFE_NO_PAD.decode(&valid).unwrap();
                    let bit = rng.random_range(0..bytes.len() * 8);
                    bytes[bit / 8] ^= 1 << (bit % 8);
                    URL_SAFE_NO_PAD.encode(&bytes)
                }
                // Truncated or extended.
                4 => {
                    let mut text = valid.clone();
                    if rng.random() {
                        text.truncate(rng.random_range(0..text.len()));
                    } else {
                        for _ in 0..rng.random_range(1..8) {
                            text.push(ALPHABET[rng.random_range(0..64)] as char);
                        }
                    }
                    text
                }
                // Fields of the body changed with a guessed tag kept.
                _ => {
                    let mut bytes = URL_SAFE_NO_PAD.decode(&valid).unwrap();
                    let at = rng.random_range(1..BODY_LEN);
                    bytes[at] = bytes[at].wrapping_add(rng.random_range(1..=255));
                    URL_SAFE_NO_PAD.encode(&bytes)
                }
            };
            if mutated != valid {
                assert!(key.decode(&mutated).is_err(), "{mutated:?}");
            }
        }
    }
}
