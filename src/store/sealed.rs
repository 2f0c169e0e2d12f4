//! Inline upstream secrets encrypted at rest. A source is stored as the JSON text it was
//! given; with `TIDEMARK_SECRET_KEY` set, each inline secret in that text is replaced,
//! in place, by `{"encrypted": "<base64 of nonce ‖ ciphertext ‖ tag>"}` (AES-256-GCM, a
//! random 96-bit nonce per secret, the secret's JSON pointer as associated data so a
//! ciphertext cannot be moved to another field), and every other byte of the text is
//! kept. Reading reverses it before the text is parsed, so the rest of tidemark never sees
//! the encrypted form, and the API never accepts it (see [`crate::spec::secret`]).
//!
//! Without a key, texts are stored as given. A text stored before the key was set still
//! reads (its secrets are encrypted when the source is next written); a text with
//! encrypted secrets does not read without the right key, and says so.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{StoreError, StoreResult};
use crate::spec::SourceSpec;
use crate::spec::de::{escape_token, parse};

/// Where a source spec can hold an inline secret. Sealing finds the secrets from the
/// parsed spec itself (every value that serializes as `{"redacted": true}`), so a secret
/// field added later is encrypted too; a test checks this list names all of them, so
/// that reading finds them.
const SECRET_POINTERS: &[&str] = &[
    "/webhook_secret",
    "/auth/token",
    "/auth/password",
    "/auth/value",
    "/auth/client_secret",
    "/auth/refresh_token",
];

const NONCE_BYTES: usize = 12;

/// The key that encrypts stored upstream secrets: 32 bytes. Never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl FromStr for SecretKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let hex = || -> Option<Vec<u8>> {
            (s.len() == 64 && s.is_ascii()).then_some(())?;
            (0..64)
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
                .collect()
        };
        let base64 = || {
            use base64::engine::general_purpose::{STANDARD, URL_SAFE};
            let unpadded = s.trim_end_matches('=');
            let padded = format!("{unpadded}{}", "=".repeat((4 - unpadded.len() % 4) % 4));
            STANDARD
                .decode(&padded)
                .or_else(|_| URL_SAFE.decode(&padded))
                .ok()
        };
        // The message never repeats the value: it is a secret, even when malformed.
        hex()
            .or_else(base64)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(SecretKey)
            .ok_or_else(|| {
                "the secret key must be 32 bytes, written as 64 hex characters or in base64 \
                 (e.g. the output of `openssl rand -base64 32`)"
                    .to_owned()
            })
    }
}

/// Encrypts and decrypts the inline secrets of stored source specs.
#[derive(Clone)]
pub struct Sealer {
    cipher: Option<Aes256Gcm>,
}

impl Sealer {
    pub fn new(key: Option<&SecretKey>) -> Self {
        Self {
            cipher: key.map(|k| Aes256Gcm::new(&Key::<Aes256Gcm>::from(*k.bytes()))),
        }
    }

    /// The text to store for `spec`, given as `raw`: `raw` itself without a key, otherwise
    /// `raw` with each inline secret encrypted in place.
    pub fn seal(&self, spec: &SourceSpec, raw: &str) -> StoreResult<String> {
        let Some(cipher) = &self.cipher else {
            return Ok(raw.to_owned());
        };
        let redacted = serde_json::to_value(spec)
            .map_err(|e| StoreError::Corrupt(format!("a source spec does not serialize: {e}")))?;
        let mut pointers = BTreeSet::new();
        redacted_pointers(&redacted, String::new(), &mut pointers);
        let pointers: Vec<&str> = pointers.iter().map(String::as_str).collect();
        let mut edits = Vec::new();
        // A member given twice is found twice; each inline form is encrypted (the one the
        // parse ignored is a secret all the same).
        for found in find(raw, &pointers) {
            let plain = match serde_json::from_str::<Value>(found.value.get()) {
                Ok(Value::String(plain)) => plain,
                Ok(Value::Object(mut object)) => match object.remove("value") {
                    Some(Value::String(plain)) => plain,
                    _ => continue,
                },
                _ => continue,
            };
            let nonce = Nonce::try_generate()
                .map_err(|e| StoreError::Corrupt(format!("no random nonce for a secret: {e}")))?;
            let sealed = cipher
                .encrypt(&nonce, payload(plain.as_bytes(), &found.pointer))
                .map_err(|_| StoreError::Corrupt("a secret could not be encrypted".into()))?;
            let mut bytes = nonce.to_vec();
            bytes.extend_from_slice(&sealed);
            let encrypted = serde_json::json!({ "encrypted": STANDARD.encode(bytes) });
            edits.push((found.span, encrypted.to_string()));
        }
        Ok(splice(raw, edits))
    }

    /// Parses a stored text, decrypting its secrets first.
    pub fn open(&self, stored: &str) -> StoreResult<SourceSpec> {
        if !may_be_encrypted(stored) {
            return parse_stored(stored);
        }
        let mut edits = Vec::new();
        for found in find(stored, SECRET_POINTERS) {
            let Some(encrypted) = encrypted(found.value) else {
                continue;
            };
            let plain = self.decrypt(&encrypted, &found.pointer).map_err(|why| {
                let name = find(stored, &["/name"])
                    .first()
                    .and_then(|name| serde_json::from_str::<String>(name.value.get()).ok())
                    .unwrap_or_default();
                StoreError::Unreadable(format!(
                    "the secret of source `{name}` at `{}` cannot be decrypted: {why}",
                    found.pointer
                ))
            })?;
            let value = serde_json::json!({ "value": plain });
            edits.push((found.span, value.to_string()));
        }
        parse_stored(&splice(stored, edits))
    }

    /// Parses a stored text for its streams alone: encrypted secrets are replaced by a
    /// placeholder, not decrypted. For the scheduler, which reads every scheduled source
    /// every second and needs nothing else; a source whose secrets do not decrypt keeps
    /// being scheduled, and each of its jobs fails saying why.
    pub fn open_streams(&self, stored: &str) -> StoreResult<SourceSpec> {
        if !may_be_encrypted(stored) {
            return parse_stored(stored);
        }
        let edits = find(stored, SECRET_POINTERS)
            .into_iter()
            .filter(|found| encrypted(found.value).is_some())
            .map(|found| (found.span, r#"{"value":"(encrypted)"}"#.to_owned()))
            .collect();
        parse_stored(&splice(stored, edits))
    }

    /// The secret `encrypted` holds; the error says why not (never with any of it).
    fn decrypt(&self, encrypted: &str, pointer: &str) -> Result<String, &'static str> {
        let cipher = self
            .cipher
            .as_ref()
            .ok_or("it is encrypted and TIDEMARK_SECRET_KEY is not set")?;
        let bytes = STANDARD
            .decode(encrypted)
            .ok()
            .filter(|b| b.len() > NONCE_BYTES)
            .ok_or("it is not an encrypted value")?;
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let nonce = Nonce::try_from(nonce).map_err(|_| "its nonce is malformed")?;
        let plain = cipher
            .decrypt(&nonce, payload(sealed, pointer))
            .map_err(|_| {
                "TIDEMARK_SECRET_KEY is not the key it was encrypted with, or the stored text \
             was altered"
            })?;
        String::from_utf8(plain).map_err(|_| "it does not decrypt to text")
    }
}

/// The associated data binds a ciphertext to the field it was made for.
fn payload<'a>(msg: &'a [u8], pointer: &'a str) -> Payload<'a, 'a> {
    Payload {
        msg,
        aad: pointer.as_bytes(),
    }
}

fn parse_stored(text: &str) -> StoreResult<SourceSpec> {
    parse(text.as_bytes()).map_err(|e| StoreError::Corrupt(format!("stored source spec: {e:?}")))
}

/// The ciphertext of an `{"encrypted": "..."}` value.
fn encrypted(value: &RawValue) -> Option<String> {
    match serde_json::from_str::<Value>(value.get()).ok()? {
        Value::Object(mut object) if object.len() == 1 => match object.remove("encrypted")? {
            Value::String(text) => Some(text),
            _ => None,
        },
        _ => None,
    }
}

/// The pointers of every `{"redacted": true}` (an inline secret, serialized) in `value`.
fn redacted_pointers(value: &Value, at: String, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) if map.len() == 1 && map.get("redacted") == Some(&Value::Bool(true)) => {
            found.insert(at);
        }
        Value::Object(map) => {
            for (key, value) in map {
                redacted_pointers(value, format!("{at}/{}", escape_token(key)), found);
            }
        }
        Value::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                redacted_pointers(value, format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

/// The members of a JSON object in document order, duplicates included, each value
/// borrowed from the text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Each<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Each<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'a>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'a RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Each(std::marker::PhantomData))
    }
}

/// Whether `stored` can hold an encrypted secret: tidemark writes the name unescaped, and
/// the API refuses it in any spelling, so a text without it is parsed as it is (every
/// text stored without a key, and every one stored before the key was set).
fn may_be_encrypted(stored: &str) -> bool {
    stored.contains("\"encrypted\"")
}

/// A value found at one of the pointers [`find`] looks for.
struct Found<'a> {
    pointer: String,
    /// Where the value is in the text.
    span: Range<usize>,
    value: &'a RawValue,
}

/// Every value at one of `pointers` in `text`, in one pass: a member given twice is found
/// twice, and a path through anything but objects finds nothing.
fn find<'a>(text: &'a str, pointers: &[&str]) -> Vec<Found<'a>> {
    let mut found = Vec::new();
    if let Ok(root) = serde_json::from_str::<&'a RawValue>(text) {
        walk(text, root, String::new(), pointers, &mut found);
    }
    found
}

fn walk<'a>(
    text: &'a str,
    value: &'a RawValue,
    at: String,
    pointers: &[&str],
    found: &mut Vec<Found<'a>>,
) {
    if pointers.contains(&at.as_str()) {
        // The value borrows from `text`; its place there is its address's offset.
        let start = (value.get().as_ptr() as usize).checked_sub(text.as_ptr() as usize);
        if let Some(span) = start.map(|start| start..start + value.get().len())
            && text.get(span.clone()) == Some(value.get())
        {
            found.push(Found {
                pointer: at,
                span,
                value,
            });
        }
        return;
    }
    let below = |p: &&str| {
        p.strip_prefix(at.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    };
    if !pointers.iter().any(below) {
        return;
    }
    if let Ok(members) = serde_json::from_str::<Members<'a>>(value.get()) {
        for (key, child) in members.0 {
            walk(
                text,
                child,
                format!("{at}/{}", escape_token(&key)),
                pointers,
                found,
            );
        }
    }
}

/// `text` with each range replaced (ranges do not overlap: they hold different leaves).
fn splice(text: &str, mut edits: Vec<(Range<usize>, String)>) -> String {
    edits.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
    let mut out = text.to_owned();
    for (span, replacement) in edits {
        out.replace_range(span, &replacement);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_32_bytes_in_hex_or_base64() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let key: SecretKey = hex.parse().unwrap();
        assert_eq!(key.bytes()[..3], [0x00, 0x11, 0x22]);
        assert_eq!(key.bytes()[31], 0xff);
        let b64 = "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=";
        assert_eq!(b64.parse::<SecretKey>(), Ok(key.clone()));
        assert_eq!(
            b64.trim_end_matches('=').parse::<SecretKey>(),
            Ok(key.clone())
        );
        let url_safe = b64.replace('/', "_");
        assert_eq!(url_safe.parse::<SecretKey>(), Ok(key.clone()));
        assert!(!format!("{key:?}").contains("00"));
        for bad in [
            "",
            &hex[..62],
            &format!("{hex}00"),
            &hex.replace('0', "g"),
            "c2hvcnQ=",
            "not a key at all, not base64 either!!",
        ] {
            let e = bad.parse::<SecretKey>().unwrap_err();
            assert!(bad.is_empty() || !e.contains(bad), "{e}");
        }
    }

    fn key(byte: u8) -> SecretKey {
        let hex: String = std::iter::repeat_n(format!("{byte:02x}"), 32).collect();
        hex.parse().unwrap()
    }

    /// Every auth kind with inline secrets, and a webhook secret; a body template that
    /// looks like a secret (but is the upstream's business) and odd spacing.
    fn sources() -> Vec<String> {
        let auths = [
            r#"{"type": "bearer", "token": "tok-s3cr3t-1"}"#,
            r#"{"type": "basic", "username": "u", "password": {"value": "pw-s3cr3t-2"}}"#,
            r#"{"type": "header", "name": "X-Key", "value": "hk-s3cr3t-3"}"#,
            r#"{"type": "query", "name": "key", "value": {"value": "qk-s3cr3t-4"}}"#,
            r#"{"type": "oauth2", "grant": "refresh_token", "token_url": "http://127.0.0.1:1/t",
                "client_id": "c", "client_secret": "cs-s3cr3t-5", "refresh_token": "rt-s3cr3t-6"}"#,
            r#"{"type": "bearer", "token": {"env": "SHOP_TOKEN"}}"#,
        ];
        auths
            .iter()
            .map(|auth| {
                format!(
                    r#"{{ "name":"shop" , "base_url": "http://127.0.0.1:9000",
  "auth":   {auth},
  "webhook_secret" :"wh-s3cr3t-7",
  "streams": [{{"name": "s", "request": {{"method": "POST", "path": "/q",
      "body": {{"auth": {{"token": {{"value": "not a secret"}}}}, "n": 1.50}}}},
    "records": {{"key": "/id"}}, "pagination": {{"type": "none"}}}}]}}"#
                )
            })
            .collect()
    }

    #[test]
    fn secrets_are_encrypted_in_place_and_read_back() {
        let sealer = Sealer::new(Some(&key(7)));
        for raw in sources() {
            let spec: SourceSpec = parse(raw.as_bytes()).unwrap();
            let sealed = sealer.seal(&spec, &raw).unwrap();
            assert!(!sealed.contains("s3cr3t"), "{sealed}");
            assert!(sealed.contains(r#"{"encrypted":""#), "{sealed}");
            // Everything but the secrets is kept byte for byte.
            let text_outside = |text: &str| -> String {
                let mut text = text.to_owned();
                let edits = find(&text, SECRET_POINTERS)
                    .into_iter()
                    .map(|found| (found.span, "0".to_owned()))
                    .collect();
                text = splice(&text, edits);
                text
            };
            assert_eq!(text_outside(&sealed), text_outside(&raw));
            assert!(sealed.contains(r#""n": 1.50"#));
            assert!(sealed.contains(r#"{"value": "not a secret"}"#));
            assert!(sealed.contains(r#"{"env": "SHOP_TOKEN"}"#) == raw.contains("SHOP_TOKEN"));
            // Reading gives the spec back, secrets and all.
            assert_eq!(sealer.open(&sealed).unwrap(), spec);
            // Two encryptions of one secret differ (a fresh nonce each).
            assert_ne!(sealer.seal(&spec, &raw).unwrap(), sealed);
        }
    }

    #[test]
    fn every_secret_field_is_one_reading_looks_for() {
        for raw in sources() {
            let spec: SourceSpec = parse(raw.as_bytes()).unwrap();
            let mut found = BTreeSet::new();
            redacted_pointers(
                &serde_json::to_value(&spec).unwrap(),
                String::new(),
                &mut found,
            );
            assert!(!found.is_empty());
            for pointer in found {
                assert!(SECRET_POINTERS.contains(&pointer.as_str()), "{pointer}");
            }
        }
    }

    #[test]
    fn without_a_key_texts_are_stored_as_given_and_old_texts_still_read() {
        let plain = Sealer::new(None);
        let sealer = Sealer::new(Some(&key(1)));
        for raw in sources() {
            let spec: SourceSpec = parse(raw.as_bytes()).unwrap();
            assert_eq!(plain.seal(&spec, &raw).unwrap(), raw);
            assert_eq!(sealer.open(&raw).unwrap(), spec);
            assert_eq!(plain.open(&raw).unwrap(), spec);
        }
    }

    #[test]
    fn a_wrong_key_or_no_key_cannot_read_encrypted_secrets() {
        let raw = &sources()[0];
        let spec: SourceSpec = parse(raw.as_bytes()).unwrap();
        let sealed = Sealer::new(Some(&key(1))).seal(&spec, raw).unwrap();
        for (reader, why) in [
            (Sealer::new(Some(&key(2))), "not the key"),
            (Sealer::new(None), "is not set"),
        ] {
            match reader.open(&sealed) {
                Err(StoreError::Unreadable(detail)) => {
                    assert!(detail.contains(why), "{detail}");
                    assert!(!detail.contains("s3cr3t"), "{detail}");
                }
                other => panic!("{other:?}"),
            }
            // The streams still read, for the scheduler.
            let streams = reader.open_streams(&sealed).unwrap();
            assert_eq!(streams.streams, spec.streams);
        }
        // A ciphertext moved to another field does not decrypt there.
        let token = find(&sealed, &["/auth/token"])[0].value.get().to_owned();
        let webhook = find(&sealed, &["/webhook_secret"]).remove(0);
        let moved = splice(&sealed, vec![(webhook.span, token)]);
        assert!(matches!(
            Sealer::new(Some(&key(1))).open(&moved),
            Err(StoreError::Unreadable(_))
        ));
    }

    #[test]
    fn a_member_given_twice_is_encrypted_twice() {
        let raw = r#"{"name": "shop", "base_url": "http://127.0.0.1:9000",
            "auth": {"type": "bearer", "token": "first-s3cr3t", "token": {"value": "last-s3cr3t"}},
            "streams": [{"name": "s", "request": {"path": "/q"}, "records": {"key": "/id"},
                         "pagination": {"type": "none"}}]}"#;
        let spec: SourceSpec = parse(raw.as_bytes()).unwrap();
        let sealer = Sealer::new(Some(&key(3)));
        let sealed = sealer.seal(&spec, raw).unwrap();
        assert!(!sealed.contains("s3cr3t"), "{sealed}");
        assert_eq!(sealer.open(&sealed).unwrap(), spec);
    }
}
