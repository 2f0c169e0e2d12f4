//! Reads records out of an upstream reply without re-encoding them: each record is kept as
//! the exact text the upstream sent (no float/int round trip, no key reordering).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
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
    /// The values at the pointers the strategy reads besides the records (next token,
    /// position or URL, `done`, `resume`, `next_page`), by pointer; absent and `null`
    /// values are left out.
    pub values: BTreeMap<String, Value>,
}

impl Page {
    /// The value at `pointer`, one of those asked for; `None` when absent or `null`.
    pub fn value(&self, pointer: &JsonPointer) -> Option<&Value> {
        self.values.get(pointer.as_str())
    }
}

/// Why a reply could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtractError {
    /// Not JSON at all (truncated, an HTML error page): worth retrying.
    NotJson(String),
    /// JSON, but not the shape the stream describes: retrying will not help.
    Shape(String),
}

/// Reads `body` as `records` describes, and the values at `pointers` besides.
pub fn extract(
    body: &[u8],
    records: &RecordsSpec,
    pointers: &[JsonPointer],
) -> Result<Page, ExtractError> {
    let not_json =
        |e: serde_json::Error| ExtractError::NotJson(format!("the reply is not JSON: {e}"));
    let not_array = || {
        ExtractError::Shape(format!(
            "the value at the records path `{}` is not an array",
            records.path
        ))
    };
    // A reply that is the array itself is read once; otherwise the document is read as
    // raw JSON first and only the records' array is read again.
    let root: Option<&RawValue> = match (records.path.as_str(), pointers) {
        ("", []) => None,
        _ => Some(serde_json::from_slice(body).map_err(not_json)?),
    };
    let items: Vec<&RawValue> = match root {
        None => serde_json::from_slice(body).map_err(|e| {
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => not_array(),
                Err(_) => not_json(e),
            }
        })?,
        Some(root) => {
            let list = find(root, records.path.as_str())?.ok_or_else(|| {
                ExtractError::Shape(format!(
                    "the reply has nothing at the records path `{}`",
                    records.path
                ))
            })?;
            serde_json::from_str(list.get()).map_err(|_| not_array())?
        }
    };
    let mut page = Page {
        records: Vec::with_capacity(items.len()),
        values: BTreeMap::new(),
    };
    for (i, raw) in items.into_iter().enumerate() {
        page.records.push(item(i, raw, records)?);
    }
    if let Some(root) = root {
        for pointer in pointers {
            let value = find(root, pointer.as_str())?
                .map(|raw| serde_json::from_str::<Value>(raw.get()))
                .transpose()
                .map_err(|e| ExtractError::Shape(format!("`{pointer}`: {e}")))?
                .filter(|v| !v.is_null());
            if let Some(value) = value {
                page.values.insert(pointer.to_string(), value);
            }
        }
    }
    Ok(page)
}

/// Reads one record's key, updated time and deleted flag without parsing the rest of it:
/// one pass over the record picks out the members the pointers start with.
fn item(i: usize, raw: &RawValue, spec: &RecordsSpec) -> Result<Item, ExtractError> {
    let [key, updated, deleted] = at_pointers(
        raw,
        [
            Some(spec.key.as_str()),
            spec.updated_at.as_ref().map(|p| p.as_str()),
            spec.deleted.as_ref().map(|d| d.pointer.as_str()),
        ],
    )
    .map_err(|e| ExtractError::Shape(format!("record {i}: {e}")))?;
    let value = |raw: &RawValue| {
        serde_json::from_str::<Value>(raw.get())
            .map_err(|e| ExtractError::Shape(format!("record {i}: {e}")))
    };
    let key_value = key.map(value).transpose()?.unwrap_or(Value::Null);
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
            updated
                .map(value)
                .transpose()?
                .filter(|v| !v.is_null())
                .ok_or_else(|| {
                    ExtractError::Shape(format!(
                        "record {i} (key {key}) has no updated time at `{pointer}`"
                    ))
                })?,
        ),
        None => None,
    };
    let deleted = match (&spec.deleted, deleted) {
        (Some(predicate), found) => predicate.matches(found.map(value).transpose()?.as_ref()),
        (None, _) => false,
    };
    Ok(Item {
        key,
        key_value,
        text: raw.get().to_owned(),
        updated,
        deleted,
    })
}

/// The raw values at up to `N` pointers under `root`. An object is read once for the
/// members the pointers start with; deeper pointers then descend into those members.
fn at_pointers<'a, const N: usize>(
    root: &'a RawValue,
    pointers: [Option<&str>; N],
) -> Result<[Option<&'a RawValue>; N], serde_json::Error> {
    let mut found = [None; N];
    if !root.get().trim_start().starts_with('{') {
        for (slot, pointer) in found.iter_mut().zip(pointers) {
            if let Some(pointer) = pointer {
                *slot = find_raw(root, pointer)?;
            }
        }
        return Ok(found);
    }
    // (first token, the rest of the pointer) of each pointer below the root.
    let split: [Option<(String, &str)>; N] = pointers.map(|p| {
        let rest = p?.strip_prefix('/')?;
        let (first, rest) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
        Some((unescape(first), rest))
    });
    let names: Vec<&str> = split.iter().flatten().map(|(f, _)| f.as_str()).collect();
    let mut deserializer = serde_json::Deserializer::from_str(root.get());
    let members = Members { names: &names }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    let mut members = members.into_iter();
    for ((slot, pointer), split) in found.iter_mut().zip(pointers).zip(&split) {
        *slot = match (pointer, split) {
            (Some(""), _) => Some(root),
            (_, Some((_, rest))) => match members.next().flatten() {
                Some(member) => find_raw(member, rest)?,
                None => None,
            },
            _ => None,
        };
    }
    Ok(found)
}

/// Reads an object, keeping the raw value of each member named in `names` (the last one,
/// when a name repeats) and skipping every other value without building it.
struct Members<'n> {
    names: &'n [&'n str],
}

impl<'de> DeserializeSeed<'de> for Members<'_> {
    type Value = Vec<Option<&'de RawValue>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Members<'_> {
    type Value = Vec<Option<&'de RawValue>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = vec![None; self.names.len()];
        while let Some(name) = map.next_key_seed(Name)? {
            if self.names.contains(&name.as_ref()) {
                let value: &'de RawValue = map.next_value()?;
                for (slot, wanted) in found.iter_mut().zip(self.names) {
                    if *wanted == name.as_ref() {
                        *slot = Some(value);
                    }
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A member name, borrowed from the document unless it holds escapes.
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// An RFC 6901 reference token, unescaped.
fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// The raw value at `pointer` (RFC 6901) under `root`, without parsing anything else.
fn find<'a>(root: &'a RawValue, pointer: &str) -> Result<Option<&'a RawValue>, ExtractError> {
    find_raw(root, pointer).map_err(|e| ExtractError::Shape(format!("`{pointer}`: {e}")))
}

fn find_raw<'a>(
    root: &'a RawValue,
    pointer: &str,
) -> Result<Option<&'a RawValue>, serde_json::Error> {
    let mut current = root;
    if pointer.is_empty() {
        return Ok(Some(current));
    }
    for token in pointer.split('/').skip(1) {
        let token = unescape(token);
        let text = current.get().trim_start();
        let next = if text.starts_with('{') {
            let mut deserializer = serde_json::Deserializer::from_str(current.get());
            let names = [token.as_str()];
            let found = Members { names: &names }.deserialize(&mut deserializer)?;
            deserializer.end()?;
            found.into_iter().next().flatten()
        } else if text.starts_with('[') {
            let array: Vec<&'a RawValue> = serde_json::from_str(current.get())?;
            array_index(&token).and_then(|i| array.get(i).copied())
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

/// An array index as RFC 6901 writes it: digits, without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() > 1) {
        return None;
    }
    token.parse().ok()
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
        let page = extract(body, &records, std::slice::from_ref(&next)).unwrap();
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
            page.value(&next).unwrap().to_string(),
            "[1684739969.358085,1160406004324630614]"
        );
    }

    #[test]
    fn deleted_predicate_and_root_arrays() {
        let body = br#"[{"id":"a","archived":true},{"id":"b","archived":false}]"#;
        let records = spec(r#"{"path": "", "key": "/id", "deleted": {"pointer": "/archived"}}"#);
        let page = extract(body, &records, &[]).unwrap();
        let deleted: Vec<bool> = page.records.iter().map(|r| r.deleted).collect();
        assert_eq!(deleted, [true, false]);
    }

    /// Graph's delta: `@removed` with any `reason` (`deleted`, or `changed`: moved out of
    /// the collection's scope) is a deletion; `null` or no member is not.
    #[test]
    fn a_present_predicate_matches_any_value_but_null() {
        let body = br#"[{"id":"a","@removed":{"reason":"deleted"}},
                        {"id":"b","@removed":{"reason":"changed"}},
                        {"id":"c","displayName":"C"},
                        {"id":"d","@removed":null}]"#;
        let records = spec(
            r#"{"path": "", "key": "/id", "deleted": {"pointer": "/@removed", "present": true}}"#,
        );
        let page = extract(body, &records, &[]).unwrap();
        let deleted: Vec<bool> = page.records.iter().map(|r| r.deleted).collect();
        assert_eq!(deleted, [true, true, false, false]);
        // One value only, as before: `changed` alone misses the users deleted for good.
        let records = spec(
            r#"{"path": "", "key": "/id", "deleted": {"pointer": "/@removed/reason", "equals": "changed"}}"#,
        );
        let page = extract(body, &records, &[]).unwrap();
        let deleted: Vec<bool> = page.records.iter().map(|r| r.deleted).collect();
        assert_eq!(deleted, [false, true, false, false]);
    }

    #[test]
    fn pointers_reach_nested_members_escaped_names_and_array_records() {
        let body = br#"[
            {"x": {"deep": [1, {"id": "no"}]}, "meta": {"id": "k1", "a/b": {"t": "2024"}},
             "flags": [false, {"gone": true}]},
            {"meta": {"a/b": {"t": "2025"}, "id": "k2"}, "flags": []}
        ]"#;
        let records = spec(
            r#"{"path": "", "key": "/meta/id", "updated_at": "/meta/a~1b/t",
                "deleted": {"pointer": "/flags/1/gone"}}"#,
        );
        let page = extract(body, &records, &[]).unwrap();
        let read: Vec<(&str, String, bool)> = page
            .records
            .iter()
            .map(|r| {
                (
                    r.key.as_str(),
                    r.updated.as_ref().unwrap().to_string(),
                    r.deleted,
                )
            })
            .collect();
        assert_eq!(
            read,
            [
                ("k1", "\"2024\"".into(), true),
                ("k2", "\"2025\"".into(), false)
            ]
        );
        // A repeated member counts once, with its last value; escaped names are matched
        // unescaped; a record may be an array.
        let key = |body: &[u8], pointer: &str| {
            let records = spec(&format!(r#"{{"path": "", "key": "{pointer}"}}"#));
            extract(body, &records, &[]).unwrap().records[0].key.clone()
        };
        assert_eq!(key(br#"[{"id": 1, "x": [], "id": 2}]"#, "/id"), "2");
        assert_eq!(key(br#"[{"i\u0064": 3}]"#, "/id"), "3");
        assert_eq!(key(br#"[[7, "x"]]"#, "/0"), "7");
        assert_eq!(key(br#"[{"a": [0, 1, {"b": "deep"}]}]"#, "/a/2/b"), "deep");
    }

    #[test]
    fn a_missing_records_path_is_not_an_empty_page() {
        let records = spec(r#"{"path": "/items", "key": "/id"}"#);
        let err = extract(br#"{"error": "oops"}"#, &records, &[]).unwrap_err();
        assert!(matches!(err, ExtractError::Shape(_)), "{err:?}");
        let err = extract(br#"{"items": {"a": 1}}"#, &records, &[]).unwrap_err();
        assert!(matches!(err, ExtractError::Shape(_)), "{err:?}");
    }

    #[test]
    fn truncated_and_html_bodies_are_not_json() {
        let records = spec(r#"{"path": "", "key": "/id"}"#);
        for body in [
            &b"[{\"id\": 1}, {\"id"[..],
            b"<html><body>502</body></html>",
        ] {
            let err = extract(body, &records, &[]).unwrap_err();
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
                extract(body, &records, &[]),
                Err(ExtractError::Shape(_))
            ));
        }
    }
}
