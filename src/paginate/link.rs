//! Next-URL paging: an RFC 8288 `Link: <...>; rel="next"` header or a URL in the body.

use serde_json::{Map, Value};
use url::Url;

use super::extract::Page;
use super::strategy::{Ask, Paginator, ReplyMeta, Step, StrategyError, field};
use crate::spec::cursor::CursorWrite;
use crate::spec::names::JsonPointer;
use crate::spec::pagination;

#[derive(Debug)]
pub struct Link {
    cfg: pagination::Link,
    next: Option<Url>,
}

impl Link {
    pub fn new(cfg: &pagination::Link, cursor: Option<&Value>) -> Result<Self, StrategyError> {
        let next = field(cursor, "next")?
            .map(|v| {
                v.as_str().and_then(|s| Url::parse(s).ok()).ok_or_else(|| {
                    StrategyError::Shape("the stored link cursor is not a URL".into())
                })
            })
            .transpose()?;
        Ok(Link {
            cfg: cfg.clone(),
            next,
        })
    }
}

impl Paginator for Link {
    fn ask(&self) -> Ask {
        match &self.next {
            Some(url) => Ask {
                url: Some(url.clone()),
                ..Ask::default()
            },
            None => Ask {
                query: match (&self.cfg.limit_param, self.cfg.limit) {
                    (Some(param), Some(limit)) => {
                        vec![(param.to_string(), limit.get().to_string())]
                    }
                    _ => Vec::new(),
                },
                ..Ask::default()
            },
        }
    }

    fn advance(&mut self, page: &Page, reply: &ReplyMeta) -> Result<Step, StrategyError> {
        let next = match &self.cfg.next {
            Some(pointer) => match &page.next {
                Some(Value::String(s)) => Some(resolve(reply, s).ok_or_else(|| {
                    StrategyError::Shape(format!("`{pointer}` is not a URL: {s}"))
                })?),
                Some(other) => {
                    return Err(StrategyError::Shape(format!(
                        "`{pointer}` is not a URL: {other}"
                    )));
                }
                None => None,
            },
            None => reply.link_next.clone(),
        };
        let Some(next) = next else {
            return Ok(Step {
                cursor: CursorWrite::Keep,
                done: true,
            });
        };
        if self.next.as_ref() == Some(&next) {
            return Err(StrategyError::Stuck(format!(
                "the next link points at the page just read: {next}"
            )));
        }
        let mut cursor = Map::new();
        cursor.insert("next".into(), Value::String(next.to_string()));
        self.next = Some(next);
        Ok(Step {
            cursor: CursorWrite::Set(Value::Object(cursor)),
            done: false,
        })
    }

    /// Each run starts from the first URL again.
    fn finish(&self) -> CursorWrite {
        CursorWrite::Clear
    }

    fn next_pointer(&self) -> Option<&JsonPointer> {
        self.cfg.next.as_ref()
    }
}

/// A next URL from the body; relative ones resolve against the URL just read.
fn resolve(reply: &ReplyMeta, text: &str) -> Option<Url> {
    Url::parse(text)
        .ok()
        .or_else(|| reply.request_url.join(text).ok())
}

/// The `rel="next"` target of `Link` header values (RFC 8288), resolved against `base`.
pub fn next_from_header<'a>(values: impl Iterator<Item = &'a str>, base: &Url) -> Option<Url> {
    for value in values {
        for part in split_links(value) {
            let part = part.trim();
            let Some(rest) = part.strip_prefix('<') else {
                continue;
            };
            let Some((target, params)) = rest.split_once('>') else {
                continue;
            };
            let is_next = params.split(';').any(|p| {
                let p = p.trim();
                p.strip_prefix("rel=").is_some_and(|rel| {
                    rel.trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
                })
            });
            if is_next {
                return base.join(target.trim()).ok();
            }
        }
    }
    None
}

/// Splits a header value into links at commas outside `<...>` and quotes.
fn split_links(value: &str) -> Vec<&str> {
    let (mut parts, mut start, mut in_url, mut in_quote) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            '<' if !in_quote => in_url = true,
            '>' if !in_quote => in_url = false,
            '"' if !in_url => in_quote = !in_quote,
            ',' if !in_url && !in_quote => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_found_among_others() {
        let base = Url::parse("http://127.0.0.1:9000/link/orders?per_page=2").unwrap();
        let header = r#"<http://127.0.0.1:9000/link/orders?page=1>; rel="first", </link/orders?per_page=2&after=5>; rel="next""#;
        let next = next_from_header([header].into_iter(), &base).unwrap();
        assert_eq!(
            next.as_str(),
            "http://127.0.0.1:9000/link/orders?per_page=2&after=5"
        );
        assert!(next_from_header([r#"<x>; rel="prev""#].into_iter(), &base).is_none());
    }
}
