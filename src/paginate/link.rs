//! Next-URL paging: an RFC 8288 `Link: <...>; rel="next"` header or a URL in the body.
//! An optional since filter's parameter is sent on a run's first request (next URLs carry
//! it from there; `{{since}}` in a header or body has its value on every request of the
//! run); `resume` says where the next run starts (docs/design.md §4a).

use serde_json::Value;
use url::Url;

use super::extract::Page;
use super::since::{Resumable, SeekQuery, SeekStep, SinceRun};
use super::strategy::{
    Ask, Paginator, ReplyMeta, Step, StrategyError, cursor_of, field, own_limit,
};
use super::template::{Placed, Values};
use crate::spec::cursor::CursorWrite;
use crate::spec::names::JsonPointer;
use crate::spec::pagination::{self, Resume};

#[derive(Debug)]
pub struct Link {
    cfg: pagination::Link,
    resume: Resume,
    placed: Placed,
    /// The URL of the next request; `None`: the template's (the run's first request).
    next: Option<Url>,
    since: Resumable,
    /// Where the last page read would have gone on: the next URL it named, else its own.
    last_page: Option<Url>,
    /// What the last page read names at the `resume` pointer.
    named: Option<Url>,
    /// Seek mode (`since.order`): the current query.
    seek: Option<SeekQuery>,
}

impl Link {
    pub fn new(
        cfg: &pagination::Link,
        placed: &Placed,
        cursor: Option<&Value>,
    ) -> Result<Self, StrategyError> {
        let next = field(cursor, "next")?
            .map(|v| {
                v.as_str().and_then(|s| Url::parse(s).ok()).ok_or_else(|| {
                    StrategyError::Shape("the stored link cursor is not a URL".into())
                })
            })
            .transpose()?;
        let resume = cfg.resume();
        let since = Resumable::new(cfg.since.as_ref(), &resume, next.is_some(), cursor)?;
        let seek = cfg
            .since
            .as_ref()
            .and_then(|s| s.order)
            .map(|_| SeekQuery::first(since.run()));
        Ok(Link {
            since,
            seek,
            cfg: cfg.clone(),
            resume,
            placed: placed.clone(),
            next,
            last_page: None,
            named: None,
        })
    }
}

impl Link {
    /// Seek mode (docs/design.md §4, [`SeekQuery::advance`]): a page within one value (a
    /// tie) follows its next link, a page past it starts a new query; a page without a
    /// next link ends the run. Pages commit no URL: an interrupted run starts again from
    /// the last completed run's high-water.
    fn seek(&mut self, page: &Page, next: Option<Url>) -> Result<Step, StrategyError> {
        let (Some(query), Some(since)) = (&mut self.seek, self.since.run()) else {
            return Ok(Step::done());
        };
        let keep = Step {
            cursor: CursorWrite::Keep,
            done: false,
        };
        match query.advance(since, page, next.is_some())? {
            SeekStep::Done => Ok(Step::done()),
            SeekStep::Follow => {
                let next = next.expect("a followed page names its next one");
                if self.next.as_ref() == Some(&next) {
                    return Err(StrategyError::Stuck(format!(
                        "the next link points at the page just read: {next}"
                    )));
                }
                self.next = Some(next);
                Ok(keep)
            }
            SeekStep::From(value) => {
                if let Some(since) = self.since.run_mut() {
                    since.seek_to(value);
                }
                self.next = None;
                Ok(keep)
            }
        }
    }
}

impl Paginator for Link {
    fn ask(&self) -> Ask {
        let values = Values {
            since: self.since.run().and_then(|s| s.value().cloned()),
            limit: self.cfg.limit.map(|l| l.get()),
            ..Values::default()
        };
        if let Some(url) = &self.next {
            return Ask {
                url: Some(url.clone()),
                values,
                ..Ask::default()
            };
        }
        let mut query = Vec::new();
        if let Some(param) = self.since.run().and_then(SinceRun::query) {
            query.push(param);
        }
        if let (Some(param), Some(limit)) = (&self.cfg.limit_param, self.cfg.limit) {
            query.extend(own_limit(&self.placed, param, limit));
        }
        Ask {
            query,
            values,
            ..Ask::default()
        }
    }

    fn advance(&mut self, page: &Page, reply: &ReplyMeta) -> Result<Step, StrategyError> {
        self.since.observe(page, reply)?;
        if let Resume::Pointer(pointer) = &self.resume {
            self.named = url_at(page, pointer, reply)?;
        }
        let next = match &self.cfg.next {
            Some(pointer) => url_at(page, pointer, reply)?,
            None => reply.link_next.clone(),
        };
        self.last_page = Some(next.clone().unwrap_or_else(|| reply.request_url.clone()));
        // Seek mode needs the run's since value: a run that goes on from a stored URL
        // (`last_page`, a pointer) follows its next links as they are.
        if self.seek.is_some() && self.since.run().is_some() {
            return self.seek(page, next);
        }
        let Some(next) = next else {
            return Ok(Step::done());
        };
        if self.next.as_ref() == Some(&next) {
            return Err(StrategyError::Stuck(format!(
                "the next link points at the page just read: {next}"
            )));
        }
        let cursor = cursor_of(&[
            ("next", Some(Value::String(next.to_string()))),
            ("high_water", self.since.within_run()),
        ]);
        self.next = Some(next);
        Ok(Step {
            cursor: CursorWrite::Set(Value::Object(cursor)),
            done: false,
        })
    }

    /// `restart` (the default): each run starts from the first URL again, with the since
    /// high-water if there is a filter. `last_page`: where the last page would have gone
    /// on. A pointer: what the final page named there, else as `restart`.
    fn finish(&self) -> CursorWrite {
        let at = |url: &Url| {
            CursorWrite::Set(Value::Object(cursor_of(&[(
                "next",
                Some(Value::String(url.to_string())),
            )])))
        };
        match &self.resume {
            Resume::Restart => self.since.restart(),
            Resume::LastPage => self.last_page.as_ref().map_or(CursorWrite::Keep, at),
            Resume::Pointer(pointer) => match &self.named {
                Some(url) => at(url),
                None => {
                    tracing::warn!(%pointer, "the final page names no URL to resume from; the next run starts from the beginning");
                    self.since.restart()
                }
            },
        }
    }

    fn pointers(&self) -> Vec<JsonPointer> {
        let mut pointers: Vec<JsonPointer> = self.cfg.next.iter().cloned().collect();
        if let Resume::Pointer(pointer) = &self.resume {
            pointers.push(pointer.clone());
        }
        pointers
    }
}

/// The URL at `pointer` of the body, if there is one.
fn url_at(
    page: &Page,
    pointer: &JsonPointer,
    reply: &ReplyMeta,
) -> Result<Option<Url>, StrategyError> {
    match page.value(pointer) {
        Some(Value::String(s)) => resolve(reply, s)
            .map(Some)
            .ok_or_else(|| StrategyError::Shape(format!("`{pointer}` is not a URL: {s}"))),
        Some(other) => Err(StrategyError::Shape(format!(
            "`{pointer}` is not a URL: {other}"
        ))),
        None => Ok(None),
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
