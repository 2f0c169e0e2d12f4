//! Reads records out of an upstream reply without re-encoding them: each record is kept as
//! the exact text the upstream sent (no float/int round trip, no key reordering).

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::spec::names::JsonPointer;
use crate::spec::source::RecordsSpec;

/// One record of a reply.
#[derive(Debug, Clone)]
pub struct Item {
    /// The key as text (a number keeps its exact digits).
    pub key: String,
    /// The key as the upstream wrote it (for cursors that pass it back verbatim).
    pub key_value: Value,
    /// The record's JSON text, byte for byte.
    pub text: String,
    /// The value at `records.updated_at`, when configured.
    pub updated: Option<Value>,
    /// The record matches `records.deleted`.
    pub deleted: bool,
}

/// The parts of a reply a strategy needs.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub records: Vec<Item>,
    /// The value at the strategy's own pointer (next token, next position, next URL);
    /// `None` when it is absent or `null`.
    pub next: Option<Value>,
}

/// Why a reply could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtractError {
    /// Not JSON at all (truncated, an HTML error page): worth retrying.
    NotJson(String),
    /// JSON, but not the shape the stream describes: retrying will not help.
    Shape(String),
}

/// Reads `body` as `records` describes; `next` is the strategy's extra pointer.
pub fn extract(
    body: &[u8],
    records: &RecordsSpec,
    next: Option<&JsonPointer>,
) -> Result<Page, ExtractError> {
    let root: &RawValue = serde_json::from_slice(body)
        .map_err(|e| ExtractError::NotJson(format!("the reply is not JSON: {e}")))?;
    let list = find(root, records.path.as_str())?.ok_or_else(|| {
        ExtractError::Shape(format!(
            "the reply has nothing at the records path `{}`",
            records.path
        ))
    })?;
    let items: Vec<&RawValue> = serde_json::from_str(list.get()).map_err(|_| {
        ExtractError::Shape(format!(
            "the value at the records path `{}` is not an array",
            records.path
        ))
    })?;
    let mut page = Page {
        records: Vec::with_capacity(items.len()),
        next: None,
    };
    for (i, raw) in items.into_iter().enumerate() {
        page.records.push(item(i, raw, records)?);
    }
    if let Some(pointer) = next {
        page.next = find(root, pointer.as_str())?
            .map(|raw| serde_json::from_str::<Value>(raw.get()))
            .transpose()
            .map_err(|e| ExtractError::Shape(format!("`{pointer}`: {e}")))?
            .filter(|v| !v.is_null());
    }
    Ok(page)
}

fn item(i: usize, raw: &RawValue, spec: &RecordsSpec) -> Result<Item, ExtractError> {
    let value: Value = serde_json::from_str(raw.get())
        .map_err(|e| ExtractError::Shape(format!("record {i}: {e}")))?;
    let key_value = value
        .pointer(spec.key.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    let key = match &key_value {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(ExtractError::Shape(format!(
                "record {i} has no string or number key at `{}`",
                spec.key
            )));
        }
    };
    let updated = match &spec.updated_at {
        Some(pointer) => Some(
            value
                .pointer(pointer.as_str())
                .filter(|v| !v.is_null())
                .cloned()
                .ok_or_else(|| {
                    ExtractError::Shape(format!(
                        "record {i} (key {key}) has no updated time at `{pointer}`"
                    ))
                })?,
        ),
        None => None,
    };
    let deleted = spec
        .deleted
        .as_ref()
        .is_some_and(|d| value.pointer(d.pointer.as_str()) == Some(&d.equals));
    Ok(Item {
        key,
        key_value,
        text: raw.get().to_owned(),
        updated,
        deleted,
    })
}

/// The raw value at `pointer` (RFC 6901) under `root`, without parsing anything else.
fn find<'a>(root: &'a RawValue, pointer: &str) -> Result<Option<&'a RawValue>, ExtractError> {
    let mut current = root;
    if pointer.is_empty() {
        return Ok(Some(current));
    }
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let text = current.get().trim_start();
        let next = if text.starts_with('{') {
            let object: BTreeMap<String, &'a RawValue> = serde_json::from_str(current.get())
                .map_err(|e| ExtractError::Shape(format!("`{pointer}`: {e}")))?;
            object.get(&token).copied()
        } else if text.starts_with('[') {
            let array: Vec<&'a RawValue> = serde_json::from_str(current.get())
                .map_err(|e| ExtractError::Shape(format!("`{pointer}`: {e}")))?;
            token
                .parse::<usize>()
                .ok()
                .and_then(|i| array.get(i).copied())
        } else {
            None
        };
        match next {
            Some(value) => current = value,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> RecordsSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn records_keep_their_exact_text() {
        let body =
            br#"{"data": [ {"id": 1160406004324630614, "updated": 1684739969.358085,  "x": "a"} ],
            "meta": {"next_after_position": [1684739969.358085, 1160406004324630614]}}"#;
        let records = spec(r#"{"path": "/data", "key": "/id", "updated_at": "/updated"}"#);
        let next = JsonPointer::try_from("/meta/next_after_position".to_owned()).unwrap();
        let page = extract(body, &records, Some(&next)).unwrap();
        assert_eq!(page.records.len(), 1);
        let item = &page.records[0];
        assert_eq!(
            item.text,
            r#"{"id": 1160406004324630614, "updated": 1684739969.358085,  "x": "a"}"#
        );
        assert_eq!(item.key, "1160406004324630614");
        assert_eq!(
            item.updated.as_ref().unwrap().to_string(),
            "1684739969.358085"
        );
        assert_eq!(
            page.next.unwrap().to_string(),
            "[1684739969.358085,1160406004324630614]"
        );
    }

    #[test]
    fn deleted_predicate_and_root_arrays() {
        let body = br#"[{"id":"a","archived":true},{"id":"b","archived":false}]"#;
        let records = spec(r#"{"path": "", "key": "/id", "deleted": {"pointer": "/archived"}}"#);
        let page = extract(body, &records, None).unwrap();
        let deleted: Vec<bool> = page.records.iter().map(|r| r.deleted).collect();
        assert_eq!(deleted, [true, false]);
    }

    #[test]
    fn a_missing_records_path_is_not_an_empty_page() {
        let records = spec(r#"{"path": "/items", "key": "/id"}"#);
        let err = extract(br#"{"error": "oops"}"#, &records, None).unwrap_err();
        assert!(matches!(err, ExtractError::Shape(_)), "{err:?}");
        let err = extract(br#"{"items": {"a": 1}}"#, &records, None).unwrap_err();
        assert!(matches!(err, ExtractError::Shape(_)), "{err:?}");
    }

    #[test]
    fn truncated_and_html_bodies_are_not_json() {
        let records = spec(r#"{"path": "", "key": "/id"}"#);
        for body in [
            &b"[{\"id\": 1}, {\"id"[..],
            b"<html><body>502</body></html>",
        ] {
            let err = extract(body, &records, None).unwrap_err();
            assert!(matches!(err, ExtractError::NotJson(_)), "{err:?}");
        }
    }

    #[test]
    fn records_without_a_key_are_refused() {
        let records = spec(r#"{"path": "", "key": "/id"}"#);
        for body in [
            &br#"[{"x": 1}]"#[..],
            br#"[{"id": null}]"#,
            br#"[{"id": [1]}]"#,
        ] {
            assert!(matches!(
                extract(body, &records, None),
                Err(ExtractError::Shape(_))
            ));
        }
    }
}
