//! Upstream credentials: given inline (stored, never returned) or as a reference to an
//! environment variable of the tidemark process (resolved when a request is made).

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::de::{error_at, escape_token, kind_of, take_str};
use super::names::EnvName;

/// A credential. Input: `{"value": "..."}` (or a bare string) for an inline secret, or
/// `{"env": "NAME"}`. Output: inline secrets are never returned; they read
/// `{"redacted": true}`. An `env` reference is not secret and is returned as given.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Inline(String),
    Env(EnvName),
}

/// A credential: in requests `{"value": "..."}` (or a bare string) or `{"env": "NAME"}`;
/// in responses an inline secret reads `{"redacted": true}`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum SecretDoc {
    /// An environment variable of the tidemark process that holds the secret.
    Env {
        #[schema(value_type = String, example = "SHOP_TOKEN")]
        env: EnvName,
    },
    /// An inline secret (input only).
    Value { value: String },
    /// An inline secret, short form (input only).
    Bare(String),
    /// How an inline secret reads in every response (refused as input).
    Redacted { redacted: bool },
}

// `SecretDoc` is never built: it exists for its schema, which documents the hand-written
// serde impls of `Secret`.
impl utoipa::PartialSchema for Secret {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        SecretDoc::schema()
    }
}

impl ToSchema for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Secret(<redacted>)"),
            Secret::Env(name) => write!(f, "Secret(env {name})"),
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = Map::new();
        match self {
            Secret::Inline(_) => map.insert("redacted".into(), Value::Bool(true)),
            Secret::Env(name) => map.insert("env".into(), Value::String(name.to_string())),
        };
        map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let object = match Value::deserialize(d)? {
            Value::String(s) => return inline(s),
            Value::Object(object) => object,
            other => {
                return Err(D::Error::custom(format!(
                    "expected {{\"value\": \"...\"}} or {{\"env\": \"NAME\"}}, found {}",
                    kind_of(&other)
                )));
            }
        };
        let mut object = object;
        let secret = match (object.contains_key("value"), object.contains_key("env")) {
            (true, false) => inline(take_str(&mut object, "value")?)?,
            (false, true) => {
                let name = take_str(&mut object, "env")?;
                Secret::Env(EnvName::try_from(name).map_err(|e| error_at("/env", e))?)
            }
            (true, true) => {
                return Err(D::Error::custom("give either `value` or `env`, not both"));
            }
            (false, false) if object.contains_key("redacted") => {
                return Err(error_at(
                    "/redacted",
                    "a redacted secret cannot be stored: give the secret again as {\"value\": \"...\"} or {\"env\": \"NAME\"}",
                ));
            }
            // The form secrets take inside the database when TIDEMARK_SECRET_KEY is set;
            // never accepted from a client, who could otherwise plant a ciphertext.
            (false, false) if object.contains_key("encrypted") => {
                return Err(error_at(
                    "/encrypted",
                    "an encrypted secret cannot be given: give the secret itself as {\"value\": \"...\"} or {\"env\": \"NAME\"}; tidemark encrypts what it stores when TIDEMARK_SECRET_KEY is set",
                ));
            }
            (false, false) => {
                return Err(D::Error::custom(
                    "expected {\"value\": \"...\"} or {\"env\": \"NAME\"}",
                ));
            }
        };
        if let Some(field) = object.keys().next() {
            return Err(error_at(
                &format!("/{}", escape_token(field)),
                format!("unknown field `{field}`, expected `value` or `env`"),
            ));
        }
        Ok(secret)
    }
}

fn inline<E: serde::de::Error>(value: String) -> Result<Secret, E> {
    if value.is_empty() {
        Err(E::custom("a secret must not be empty"))
    } else {
        Ok(Secret::Inline(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_secrets_never_serialize() {
        let s: Secret = serde_json::from_str(r#"{"value":"hunter2"}"#).unwrap();
        let out = serde_json::to_string(&s).unwrap();
        assert_eq!(out, r#"{"redacted":true}"#);
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn env_references_round_trip() {
        let s: Secret = serde_json::from_str(r#"{"env":"SHOP_TOKEN"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"env":"SHOP_TOKEN"}"#
        );
    }

    #[test]
    fn bad_shapes_are_refused() {
        for bad in [
            r#"{}"#,
            r#"{"value":""}"#,
            r#"{"env":"1X"}"#,
            r#"{"value":"a","x":1}"#,
            "3",
            r#"{"redacted":true}"#,
            r#"{"encrypted":"AAAA"}"#,
        ] {
            assert!(serde_json::from_str::<Secret>(bad).is_err(), "{bad}");
        }
    }
}
