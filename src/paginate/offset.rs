//! Page/offset paging with an optional since filter (Reqon style), anchored (docs/design.md
//! §4, "Offset paging never skips a row"; the walk is [`super::anchor`]). Rows shift under
//! offsets, so nothing but the since high-water is ever stored, and only when a run
//! completes without a shift it could not repair: an interrupted run starts again from
//! its first page. A page-number API that names the next page (`next_page`) ends the run
//! where it says. With `since.order: "since"` (seek mode) each page asks for the listing
//! from the last record's since value, the offset or page counting only the records of
//! that value already read.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Value;

use super::anchor::{Next, Shifts, Walk};
use super::extract::{Item, Page};
use super::since::{self, SinceRun};
use super::strategy::{Ask, Paginator, ReplyMeta, Step, StrategyError, own_limit};
use super::template::{Placed, Values};
use crate::spec::cursor::CursorWrite;
use crate::spec::names::JsonPointer;
use crate::spec::pagination;
use crate::spec::template::Placeholder;

#[derive(Debug)]
pub struct Offset {
    cfg: pagination::Offset,
    placed: Placed,
    /// The since filter, sent with every page of this run.
    since: Option<SinceRun>,
    /// Where the next request is, and what shifted under the run.
    walk: Walk,
    /// Seek mode: the text of the since value the current query was asked from.
    seek: Option<Option<String>>,
    /// Seek mode: where the last page read on to (not a check or a step back) would start
    /// the next query: its position and its seek point.
    forward: Option<(u64, SeekPoint)>,
    /// The page a reply read on to named next, and the position of that reply.
    named: Option<(u64, u64)>,
}

impl Offset {
    pub fn new(
        cfg: &pagination::Offset,
        placed: &Placed,
        cursor: Option<&Value>,
    ) -> Result<Self, StrategyError> {
        Self::with_walk(
            cfg,
            placed,
            cursor,
            Walk::new(cfg.limit.get(), cfg.page_param.is_some()),
        )
    }

    /// An offset stream whose pages are not anchored: only for the test that shows what
    /// anchoring prevents.
    #[cfg(test)]
    pub fn unanchored(
        cfg: &pagination::Offset,
        placed: &Placed,
        cursor: Option<&Value>,
    ) -> Result<Self, StrategyError> {
        Self::with_walk(
            cfg,
            placed,
            cursor,
            Walk::unanchored(cfg.limit.get(), cfg.page_param.is_some()),
        )
    }

    fn with_walk(
        cfg: &pagination::Offset,
        placed: &Placed,
        cursor: Option<&Value>,
        walk: Walk,
    ) -> Result<Self, StrategyError> {
        let since = SinceRun::from_cursor(cfg.since.as_ref(), cursor)?;
        // The first query is asked from the run's since value.
        let seek = cfg
            .since
            .as_ref()
            .and_then(|s| s.order)
            .map(|_| since.as_ref().and_then(SinceRun::query_text));
        Ok(Offset {
            since,
            cfg: cfg.clone(),
            placed: placed.clone(),
            walk,
            seek,
            forward: None,
            named: None,
        })
    }

    fn limit(&self) -> u64 {
        u64::from(self.cfg.limit.get())
    }

    /// The number of the page at the walk's position.
    fn page(&self) -> u64 {
        self.walk.position() / self.limit() + u64::from(self.cfg.start_page)
    }

    /// The page number the reply names next; `None` ends the run.
    fn named_page(&self, page: &Page, pointer: &JsonPointer) -> Result<Option<u64>, StrategyError> {
        let Some(value) = page.value(pointer) else {
            return Ok(None);
        };
        let number = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        let next = number.ok_or_else(|| {
            StrategyError::Shape(format!("`{pointer}` is not a page number: {value}"))
        })?;
        if next <= self.page() && !page.records.is_empty() {
            return Err(StrategyError::Stuck(format!(
                "the reply to page {} names page {next} as the next one",
                self.page()
            )));
        }
        Ok(Some(next))
    }

    /// Seek mode: where `page` would start the next query, if it ends past the current
    /// query's value.
    fn seek_point(&self, page: &Page) -> Result<Option<SeekPoint>, StrategyError> {
        let (Some(query), Some(since), Some(last)) = (&self.seek, &self.since, page.records.last())
        else {
            return Ok(None);
        };
        let (text, value) = since.seek_value(last)?;
        if query.as_deref() == Some(text.as_str()) {
            return Ok(None);
        }
        let mut tie = 0;
        for item in page.records.iter().rev() {
            if since.seek_value(item)?.0 != text {
                break;
            }
            tie += 1;
        }
        Ok(Some(SeekPoint { text, value, tie }))
    }

    /// Seek mode, after the walk accepted a page to read on from: a page that ends past
    /// the current query's value starts the next query at the value of its last record,
    /// whose records of that value (the tie) are its first rows.
    fn seek(&mut self, point: SeekPoint) {
        self.walk.rebase(point.tie);
        self.seek = Some(Some(point.text));
        if let Some(since) = &mut self.since {
            since.seek_to(point.value);
        }
    }
}

/// Where a page would start seek mode's next query: its last record's since value (as
/// text and as sent) and how many of its last records share it.
#[derive(Debug, Clone)]
struct SeekPoint {
    text: String,
    value: Value,
    tie: usize,
}

/// A row as anchoring knows it: its key and a digest of its content. A row that changed
/// may have moved (to the end of a listing sorted by update time): found further on, it
/// would look like rows inserted before it, and the rows it passed would be skipped. A
/// row that changed in place (a listing in id order) costs a step back at most.
fn identity(item: &Item) -> String {
    let mut hasher = DefaultHasher::new();
    item.text.hash(&mut hasher);
    format!("{}\u{0}{:016x}", item.key, hasher.finish())
}

impl Paginator for Offset {
    fn ask(&self) -> Ask {
        let offset = self.walk.position();
        let page = self.page();
        let values = Values {
            since: self.since.as_ref().and_then(|s| s.value().cloned()),
            limit: Some(self.cfg.limit.get()),
            offset: Some(offset),
            page: Some(page),
            ..Values::default()
        };
        let mut query = Vec::new();
        if let Some(param) = self.since.as_ref().and_then(SinceRun::query) {
            query.push(param);
        }
        match &self.cfg.page_param {
            Some(param) if !self.placed.has(&Placeholder::Page) => {
                query.push((param.to_string(), page.to_string()));
            }
            None if !self.placed.has(&Placeholder::Offset) => {
                let param = self
                    .cfg
                    .offset_param
                    .as_ref()
                    .map_or("offset", |p| p.as_str());
                query.push((param.to_owned(), offset.to_string()));
            }
            _ => {}
        }
        query.extend(own_limit(
            &self.placed,
            &self.cfg.limit_param,
            self.cfg.limit,
        ));
        Ask {
            query,
            values,
            ..Ask::default()
        }
    }

    fn advance(&mut self, page: &Page, reply: &ReplyMeta) -> Result<Step, StrategyError> {
        if let Some(since) = &mut self.since {
            since.observe(page, reply)?;
        }
        let count = page.records.len() as u64;
        let (ends, named) = match &self.cfg.next_page {
            Some(pointer) => {
                let next = self.named_page(page, pointer)?;
                (next.is_none() || count == 0, next)
            }
            None => (count < self.limit(), None),
        };
        let point = self.seek_point(page)?;
        if self.walk.reads_on() {
            self.named = named.map(|next| (self.walk.position(), next));
            self.forward = point.clone().map(|point| (self.walk.position(), point));
        }
        let keys: Vec<String> = page.records.iter().map(identity).collect();
        let done = self.walk.advance(keys.clone(), ends) == Next::Done;
        let accepted = self.walk.accepted().map(|w| (w.start, w.keys == keys));
        if let (false, Some((start_at, is_reply))) = (done, accepted) {
            // A page read on to (directly, or once its check held) goes on where it said.
            if let Some((at, next)) = self.named
                && at == start_at
            {
                let start = u64::from(self.cfg.start_page);
                self.walk.jump(next.saturating_sub(start) * self.limit());
            }
            // The next query starts where the accepted page says: this reply, or the page
            // read on to before the check that held.
            let point = match is_reply {
                true => point,
                false => self
                    .forward
                    .take()
                    .filter(|(at, _)| *at == start_at)
                    .map(|(_, point)| point),
            };
            if let Some(point) = point {
                self.seek(point);
            }
        }
        if let (false, Some(max)) = (done, self.since.as_ref().and_then(SinceRun::max_results))
            && self.walk.position() >= max
        {
            return Err(StrategyError::Stuck(format!(
                "more records share one since value than the upstream answers to one query ({max}): the listing cannot be read past them"
            )));
        }
        Ok(Step {
            cursor: CursorWrite::Keep,
            done,
        })
    }

    /// The high-water of a completed run (docs/design.md §4): `min(newest record read,
    /// run start − lookback)`, or `run start − lookback`, in the configured format; the
    /// old one when rows shifted under the run and it could not find its place again.
    fn finish(&self) -> CursorWrite {
        if self.walk.shifts().shifted > 0 {
            return CursorWrite::Keep;
        }
        since::finish(self.since.as_ref())
    }

    fn pointers(&self) -> Vec<JsonPointer> {
        self.cfg.next_page.iter().cloned().collect()
    }

    fn shifts(&self) -> Shifts {
        self.walk.shifts()
    }
}
