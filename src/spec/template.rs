//! Placeholders in a stream's request templates (docs/design.md §4a): strings in
//! `request.path`, in `request.query` and `request.headers` values, anywhere in
//! `request.body` and in a keyset stream's `pagination.query` maps may hold `{{since}}`,
//! `{{from_id}}`, `{{cursor}}`, `{{limit}}`, `{{offset}}`, `{{page}}` and, in child streams,
//! `{{parent.<JSON pointer>}}`. This module only reads templates; `paginate` fills them.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::de::escape_token;
use super::names::JsonPointer;
use super::source::RequestSpec;

/// One placeholder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Placeholder {
    /// The since value (keyset: the last record's updated time; token streams without a
    /// since filter: the token, as before templates existed).
    Since,
    /// A keyset stream's last id.
    FromId,
    /// The token or position.
    Cursor,
    /// The page size.
    Limit,
    /// The offset of an offset stream.
    Offset,
    /// The page number of an offset stream.
    Page,
    /// A member of the parent record, in a child stream.
    Parent(JsonPointer),
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Placeholder::Since => "since",
            Placeholder::FromId => "from_id",
            Placeholder::Cursor => "cursor",
            Placeholder::Limit => "limit",
            Placeholder::Offset => "offset",
            Placeholder::Page => "page",
            Placeholder::Parent(pointer) => return write!(f, "{{{{parent.{pointer}}}}}"),
        };
        write!(f, "{{{{{name}}}}}")
    }
}

/// A piece of a template string: literal text or a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Slot(Placeholder),
}

/// Splits a template string into text and placeholders. A `{{` with no `}}` after it is
/// text; a `{{name}}` whose name is none of the placeholders is refused (a typo would
/// otherwise be sent as it is).
pub fn pieces(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        let name = &rest[open + 2..open + 2 + close];
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        pieces.push(Piece::Slot(placeholder(name)?));
        rest = &rest[open + 2 + close + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

fn placeholder(name: &str) -> Result<Placeholder, String> {
    Ok(match name {
        "since" => Placeholder::Since,
        "from_id" => Placeholder::FromId,
        "cursor" => Placeholder::Cursor,
        "limit" => Placeholder::Limit,
        "offset" => Placeholder::Offset,
        "page" => Placeholder::Page,
        _ => match name.strip_prefix("parent.") {
            Some(pointer) => Placeholder::Parent(
                JsonPointer::try_from(pointer.to_owned())
                    .map_err(|e| format!("`{{{{{name}}}}}`: {e}"))?,
            ),
            None => {
                return Err(format!(
                    "`{{{{{name}}}}}` is no placeholder: expected {{{{since}}}}, {{{{from_id}}}}, {{{{cursor}}}}, {{{{limit}}}}, {{{{offset}}}}, {{{{page}}}} or {{{{parent./pointer}}}}"
                ));
            }
        },
    })
}

/// The placeholder a string is, when it is exactly one (and nothing else).
pub fn whole(text: &str) -> Option<Placeholder> {
    match pieces(text).ok()?.as_slice() {
        [Piece::Slot(p)] => Some(p.clone()),
        _ => None,
    }
}

/// Every template string of a stream's request, with its pointer relative to the stream:
/// `/request/path`, `/request/query/<name>`, `/request/headers/<name>` and the strings of
/// `/request/body` (member names are not templates).
pub fn request_strings(request: &RequestSpec) -> Vec<(String, &str)> {
    let mut found = vec![("/request/path".to_owned(), request.path.as_str())];
    found.extend(map_strings("/request/query", &request.query));
    for (name, value) in &request.headers {
        found.push((
            format!("/request/headers/{}", escape_token(name.as_str())),
            value.as_str(),
        ));
    }
    if let Some(body) = &request.body {
        body_strings("/request/body".to_owned(), body, &mut found);
    }
    found
}

/// The values of a map of query parameters, with their pointers under `at`.
pub fn map_strings<'a>(at: &str, map: &'a BTreeMap<String, String>) -> Vec<(String, &'a str)> {
    map.iter()
        .map(|(name, value)| (format!("{at}/{}", escape_token(name)), value.as_str()))
        .collect()
}

fn body_strings<'a>(at: String, value: &'a Value, found: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(s) => found.push((at, s)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                body_strings(format!("{at}/{i}"), item, found);
            }
        }
        Value::Object(members) => {
            for (name, member) in members {
                body_strings(format!("{at}/{}", escape_token(name)), member, found);
            }
        }
        _ => {}
    }
}

/// Whether any of `strings` holds `placeholder`.
pub fn mentions<'a>(mut strings: impl Iterator<Item = &'a str>, placeholder: &Placeholder) -> bool {
    strings.any(|text| {
        pieces(text)
            .unwrap_or_default()
            .iter()
            .any(|piece| matches!(piece, Piece::Slot(p) if p == placeholder))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_between_text() {
        assert_eq!(
            pieces("gte.{{since}}").unwrap(),
            [Piece::Text("gte."), Piece::Slot(Placeholder::Since)]
        );
        assert_eq!(
            pieces("(a.gt.{{since}},id.gt.{{from_id}})").unwrap(),
            [
                Piece::Text("(a.gt."),
                Piece::Slot(Placeholder::Since),
                Piece::Text(",id.gt."),
                Piece::Slot(Placeholder::FromId),
                Piece::Text(")"),
            ]
        );
        assert_eq!(pieces("{ a { b } }").unwrap(), [Piece::Text("{ a { b } }")]);
        assert_eq!(pieces("{{since").unwrap(), [Piece::Text("{{since")]);
        assert_eq!(pieces("").unwrap(), []);
        assert_eq!(whole("{{limit}}"), Some(Placeholder::Limit));
        assert_eq!(whole(" {{limit}}"), None);
        assert_eq!(
            whole("{{parent./id}}"),
            Some(Placeholder::Parent(
                JsonPointer::try_from("/id".to_owned()).unwrap()
            ))
        );
    }

    #[test]
    fn unknown_names_are_refused() {
        assert!(pieces("{{sinec}}").is_err());
        assert!(pieces("x {{ since }}").is_err());
        assert!(pieces("{{parent.id}}").is_err());
    }

    #[test]
    fn placeholders_print_as_written() {
        for text in ["{{since}}", "{{from_id}}", "{{parent./a~1b}}", "{{page}}"] {
            assert_eq!(whole(text).unwrap().to_string(), text);
        }
    }
}
