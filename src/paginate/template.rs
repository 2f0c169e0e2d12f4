//! Filling request templates (docs/design.md §4a): the placeholders of
//! [`crate::spec::template`] get the values a strategy has for one request. In a JSON body
//! a string that is exactly one placeholder becomes the typed value (a number stays a
//! number), `null` when it has none; in text (path, query, headers) the value's text is
//! put in, and a query parameter or header with a placeholder that has no value is left
//! out. Values are put in as they are: a value that itself looks like a placeholder is
//! never expanded again.

use std::sync::Arc;

use serde_json::Value;

use crate::spec::source::RequestSpec;
use crate::spec::template::{Piece, Placeholder, pieces, request_strings};

/// The values a strategy has for one request; `None` where it has none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values {
    pub since: Option<Value>,
    pub from_id: Option<Value>,
    pub cursor: Option<Value>,
    pub limit: Option<u32>,
    pub offset: Option<u64>,
    pub page: Option<u64>,
    /// The parent record of a child stream's request, whose members its
    /// `{{parent.<pointer>}}` placeholders name.
    pub parent: Option<Arc<Value>>,
}

impl Values {
    /// The typed value of `placeholder`.
    pub fn get(&self, placeholder: &Placeholder) -> Option<Value> {
        match placeholder {
            Placeholder::Since => self.since.clone(),
            Placeholder::FromId => self.from_id.clone(),
            Placeholder::Cursor => self.cursor.clone(),
            Placeholder::Limit => self.limit.map(Value::from),
            Placeholder::Offset => self.offset.map(Value::from),
            Placeholder::Page => self.page.map(Value::from),
            // A member the parent record lacks has no value, as `null` has none.
            Placeholder::Parent(pointer) => self
                .parent
                .as_ref()?
                .pointer(pointer.as_str())
                .filter(|value| !value.is_null())
                .cloned(),
        }
    }

    /// The value of `placeholder` as text: strings as they are, numbers with their exact
    /// digits, anything else as compact JSON (a position).
    pub fn text(&self, placeholder: &Placeholder) -> Option<String> {
        self.get(placeholder).map(|value| match value {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }
}

/// Which placeholders a stream's path, query and header templates place: a value they
/// place is not also sent as the strategy's own query parameter. A body places nothing
/// (the strategy's parameters go beside it), except that a token stream with a body sends
/// none of its own, as it always has.
#[derive(Debug, Clone, Default)]
pub struct Placed(Vec<Placeholder>);

impl Placed {
    pub fn of(request: &RequestSpec) -> Self {
        let mut placed = Vec::new();
        let strings = request_strings(request);
        let outside_body = strings
            .iter()
            .filter(|(pointer, _)| !pointer.starts_with("/request/body"));
        for (_, text) in outside_body {
            for piece in pieces(text).unwrap_or_default() {
                if let Piece::Slot(placeholder) = piece
                    && !placed.contains(&placeholder)
                {
                    placed.push(placeholder);
                }
            }
        }
        Placed(placed)
    }

    pub fn has(&self, placeholder: &Placeholder) -> bool {
        self.0.contains(placeholder)
    }
}

/// `template` with its placeholders' text put in; `None` when one has no value.
pub fn text(template: &str, values: &Values) -> Option<String> {
    let Ok(pieces) = pieces(template) else {
        return Some(template.to_owned());
    };
    let mut out = String::with_capacity(template.len());
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Slot(placeholder) => out.push_str(&values.text(&placeholder)?),
        }
    }
    Some(out)
}

/// A path template with each value percent-encoded as (part of) one path segment, so a
/// value can never add segments or a query; a placeholder without a value is left empty.
pub fn path(template: &str, values: &Values) -> String {
    let Ok(pieces) = pieces(template) else {
        return template.to_owned();
    };
    let mut out = String::with_capacity(template.len());
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Slot(placeholder) => {
                for byte in values.text(&placeholder).unwrap_or_default().bytes() {
                    if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                        out.push(char::from(byte));
                    } else {
                        out.push_str(&format!("%{byte:02X}"));
                    }
                }
            }
        }
    }
    out
}

/// A JSON body template with its placeholders filled in.
pub fn body(template: &Value, values: &Values) -> Value {
    match template {
        Value::String(s) => match pieces(s).as_deref() {
            Ok([Piece::Slot(placeholder)]) => values.get(placeholder).unwrap_or(Value::Null),
            Ok(pieces) if pieces.iter().any(|p| matches!(p, Piece::Slot(_))) => {
                text(s, values).map_or(Value::Null, Value::String)
            }
            _ => template.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(|v| body(v, values)).collect()),
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(k, v)| (k.clone(), body(v, values)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values() -> Values {
        Values {
            since: Some(json!("2024-01-20T10:30:00Z")),
            from_id: Some(serde_json::from_str("1160406004324630614").unwrap()),
            cursor: Some(json!([1684739969.358085, 7])),
            limit: Some(50),
            offset: None,
            page: Some(3),
            parent: Some(Arc::new(
                serde_json::from_str(
                    r#"{"id": 1160406004324630614, "name": "a/b c", "none": null}"#,
                )
                .unwrap(),
            )),
        }
    }

    #[test]
    fn parent_members_fill_their_placeholders() {
        let parent = |p: &str| Placeholder::Parent(p.to_owned().try_into().unwrap());
        let v = values();
        assert_eq!(
            v.text(&parent("/id")).as_deref(),
            Some("1160406004324630614")
        );
        assert_eq!(v.text(&parent("/none")), None);
        assert_eq!(v.text(&parent("/missing")), None);
        assert_eq!(
            path("/orders/{{parent./id}}/lines/{{parent./name}}", &v),
            "/orders/1160406004324630614/lines/a%2Fb%20c"
        );
        let filled = body(&serde_json::json!({"order": "{{parent./id}}"}), &v);
        assert_eq!(filled["order"].to_string(), "1160406004324630614");
    }

    #[test]
    fn body_placeholders_become_typed_values_and_missing_ones_null() {
        let template = json!({
            "filters": [{"value": "{{since}}", "op": "GTE"}],
            "after": "{{from_id}}",
            "position": "{{cursor}}",
            "limit": "{{limit}}",
            "offset": "{{offset}}",
            "note": "page {{page}} of {{limit}}",
            "gone": "from {{offset}}",
            "plain": "{ no placeholder }",
            "n": 1,
        });
        let filled = body(&template, &values());
        assert_eq!(filled["filters"][0]["value"], "2024-01-20T10:30:00Z");
        assert_eq!(filled["after"].to_string(), "1160406004324630614");
        assert_eq!(filled["position"], json!([1684739969.358085, 7]));
        assert_eq!(filled["limit"], 50);
        assert_eq!(filled["offset"], Value::Null);
        assert_eq!(filled["note"], "page 3 of 50");
        assert_eq!(filled["gone"], Value::Null);
        assert_eq!(filled["plain"], "{ no placeholder }");
        assert_eq!(filled["n"], 1);
    }

    #[test]
    fn text_without_a_value_is_none_and_values_are_not_expanded_again() {
        assert_eq!(
            text("(updated_at.gt.{{since}},id.gt.{{from_id}})", &values()).as_deref(),
            Some("(updated_at.gt.2024-01-20T10:30:00Z,id.gt.1160406004324630614)")
        );
        assert_eq!(text("gte.{{offset}}", &values()), None);
        assert_eq!(
            text("{{cursor}}", &values()).as_deref(),
            Some("[1684739969.358085,7]")
        );
        let tricky = Values {
            since: Some(json!("{{limit}}")),
            ..values()
        };
        assert_eq!(text("{{since}}", &tricky).as_deref(), Some("{{limit}}"));
    }

    #[test]
    fn path_values_stay_inside_their_segment() {
        let v = Values {
            cursor: Some(json!("a/b?c#d e")),
            ..values()
        };
        assert_eq!(
            path("/items/{{cursor}}/page-{{page}}", &v),
            "/items/a%2Fb%3Fc%23d%20e/page-3"
        );
        assert_eq!(path("/items/{{offset}}", &v), "/items/");
    }
}
