//! Parsing JSON documents into spec types while keeping track of *where* an error is,
//! as an RFC 6901 JSON pointer, so a 422 names the field at fault.
//!
//! serde's own error type carries only a message, so a validation error raised deep inside
//! a type (or inside a hand-written `Deserialize` that re-enters serde, which loses
//! `serde_path_to_error`'s tracking) encodes its relative pointer in the message between
//! two `MARK` characters; [`parse`] joins it with the path serde tracked to that point.

use std::fmt::Display;

use serde::de::DeserializeOwned;
use serde_json::Value;

const MARK: char = '\u{1}';

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON at all (syntax error, truncated).
    Malformed(String),
    /// JSON, but not a valid document: `pointer` names the field at fault.
    Invalid { pointer: String, message: String },
}

/// A serde error for the field at `pointer`, relative to the value being deserialized.
pub fn error_at<E: serde::de::Error>(pointer: &str, message: impl Display) -> E {
    E::custom(format!("{MARK}{pointer}{MARK}{message}"))
}

/// Escapes one reference token of a JSON pointer.
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Parses a request body.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ParseError> {
    // Syntax first, so that a truncated or trailing-garbage body is reported as such
    // rather than as whatever field the typed parse happens to miss first.
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|e| ParseError::Malformed(e.to_string()))?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // The syntax is known good, so every error is about the document's content (serde_json
    // files some of those, such as a number where an enum is expected, as "syntax").
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let (pointer, message) = locate(e.path(), &e.inner().to_string());
        ParseError::Invalid { pointer, message }
    })?;
    de.end().map_err(|e| ParseError::Malformed(e.to_string()))?;
    Ok(value)
}

/// Parses a request body that must be a JSON object (or `null`, where `T` takes it). Any
/// other document is refused as such, at the pointer `""`, rather than with what serde
/// makes of it: an array is read as a struct's fields in order, which says "invalid
/// length 0, expected struct SourceSpec with 9 elements".
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ParseError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|e| ParseError::Malformed(e.to_string()))?;
    let found = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{' | b'n') | None => return parse(bytes),
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(_) => "a number",
    };
    Err(ParseError::Invalid {
        pointer: String::new(),
        message: format!("expected a JSON object, found {found}"),
    })
}

/// Deserializes a nested value from inside a hand-written `Deserialize`, carrying the
/// nested error's location out through the enclosing deserializer.
pub fn nested<T: DeserializeOwned, E: serde::de::Error>(value: Value) -> Result<T, E> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let (pointer, message) = locate(e.path(), &e.inner().to_string());
        error_at(&pointer, message)
    })
}

/// Joins the path serde tracked with a relative pointer carried in the message, and strips
/// serde_json's " at line L column C" suffix, which only restates the position.
fn locate(path: &serde_path_to_error::Path, message: &str) -> (String, String) {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                pointer.push('/');
                pointer.push_str(&escape_token(key));
            }
            // An externally tagged variant is a key of the document (`{"cron": ...}`).
            Segment::Enum { variant } => {
                pointer.push('/');
                pointer.push_str(&escape_token(variant));
            }
            Segment::Unknown => {}
        }
    }
    let message = strip_position(message);
    // An array where a struct was expected (serde reads it as the fields in order).
    let message =
        if message.starts_with("invalid length ") && message.contains(", expected struct ") {
            "expected a JSON object, found an array"
        } else {
            message
        };
    match message
        .strip_prefix(MARK)
        .and_then(|rest| rest.split_once(MARK))
    {
        Some((relative, message)) => (pointer + relative, message.to_owned()),
        None => (pointer, message.to_owned()),
    }
}

fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => &message[..at],
        _ => message,
    }
}

/// Reads a required string member of a JSON object, for hand-written `Deserialize`s.
pub fn take_str<E: serde::de::Error>(
    map: &mut serde_json::Map<String, Value>,
    field: &str,
) -> Result<String, E> {
    match map.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(error_at(
            &format!("/{}", escape_token(field)),
            format!("expected a string, found {}", kind_of(&other)),
        )),
        None => Err(E::custom(format!("missing field `{field}`"))),
    }
}

/// A short name of a JSON value's type, for messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u8,
    }

    fn invalid_pointer(body: &str) -> String {
        match parse::<Outer>(body.as_bytes()) {
            Err(ParseError::Invalid { pointer, .. }) => pointer,
            other => panic!("expected an invalid document, got {other:?}"),
        }
    }

    #[test]
    fn wrong_type_points_at_the_field() {
        assert_eq!(
            invalid_pointer(r#"{"items":[{"n":1},{"n":"x"}]}"#),
            "/items/1/n"
        );
    }

    #[test]
    fn unknown_field_points_at_the_unknown_field() {
        assert_eq!(
            invalid_pointer(r#"{"items":[{"n":1,"m~/":2}]}"#),
            "/items/0/m~0~1"
        );
    }

    #[test]
    fn arrays_where_objects_belong_say_so() {
        for body in ["[]", " [1, 2]", "\"x\"", "3", "true"] {
            match parse_object::<Outer>(body.as_bytes()) {
                Err(ParseError::Invalid { pointer, message }) => {
                    assert_eq!(pointer, "", "{body}");
                    assert!(
                        message.starts_with("expected a JSON object, found "),
                        "{message}"
                    );
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        assert_eq!(
            parse_object::<Option<Outer>>(b"null")
                .unwrap()
                .map(|o| o.items.len()),
            None
        );
        match parse::<Outer>(br#"{"items": [[]]}"#) {
            Err(ParseError::Invalid { pointer, message }) => {
                assert_eq!(pointer, "/items/0");
                assert_eq!(message, "expected a JSON object, found an array");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_object::<Outer>(b"[1,"),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn syntax_errors_are_malformed() {
        assert!(matches!(
            parse::<Outer>(b"{\"items\": ["),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            parse::<Outer>(b"{\"items\": []} x"),
            Err(ParseError::Malformed(_))
        ));
    }
}
