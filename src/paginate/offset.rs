//! Page/offset paging with an optional since filter (Reqon style). Rows shift under
//! offsets, so nothing but the since high-water is ever stored, and only when a run
//! completes: an interrupted run starts again from its first page. A page-number API
//! that names the next page (`next_page`) ends the run where it says, which is what makes
//! an API that answers every page past the end with the last one end cleanly.

use serde_json::Value;

use super::extract::Page;
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
    /// Records read so far in this run (the next offset).
    read: u64,
    /// The number of the next page.
    page: u64,
    /// First and last key of the previous page, to catch an upstream that ignores the
    /// offset and repeats itself.
    previous: Option<(String, String)>,
}

impl Offset {
    pub fn new(
        cfg: &pagination::Offset,
        placed: &Placed,
        cursor: Option<&Value>,
    ) -> Result<Self, StrategyError> {
        Ok(Offset {
            since: SinceRun::from_cursor(cfg.since.as_ref(), cursor)?,
            cfg: cfg.clone(),
            placed: placed.clone(),
            read: 0,
            page: u64::from(cfg.start_page),
            previous: None,
        })
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
        if next <= self.page && !page.records.is_empty() {
            return Err(StrategyError::Stuck(format!(
                "the reply to page {} names page {next} as the next one",
                self.page
            )));
        }
        Ok(Some(next))
    }
}

impl Paginator for Offset {
    fn ask(&self) -> Ask {
        let values = Values {
            since: self.since.as_ref().and_then(|s| s.value().cloned()),
            limit: Some(self.cfg.limit.get()),
            offset: Some(self.read),
            page: Some(self.page),
            ..Values::default()
        };
        let mut query = Vec::new();
        if let Some(param) = self.since.as_ref().and_then(SinceRun::query) {
            query.push(param);
        }
        match &self.cfg.page_param {
            Some(param) if !self.placed.has(&Placeholder::Page) => {
                query.push((param.to_string(), self.page.to_string()));
            }
            None if !self.placed.has(&Placeholder::Offset) => {
                let param = self
                    .cfg
                    .offset_param
                    .as_ref()
                    .map_or("offset", |p| p.as_str());
                query.push((param.to_owned(), self.read.to_string()));
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
        let (done, next_page) = match &self.cfg.next_page {
            Some(pointer) => {
                let next = self.named_page(page, pointer)?;
                (next.is_none() || count == 0, next)
            }
            None => (count < u64::from(self.cfg.limit.get()), None),
        };
        if let (Some(first), Some(last)) = (page.records.first(), page.records.last()) {
            let ends = (first.key.clone(), last.key.clone());
            if !done && self.previous.as_ref() == Some(&ends) {
                return Err(StrategyError::Stuck(format!(
                    "two pages in a row were the same records ({} .. {}): the upstream ignores the page parameter",
                    ends.0, ends.1
                )));
            }
            self.previous = Some(ends);
        }
        self.read += count;
        self.page = next_page.unwrap_or(self.page + 1);
        Ok(Step {
            cursor: CursorWrite::Keep,
            done,
        })
    }

    /// The high-water of a completed run (docs/design.md §4): `min(newest record read,
    /// run start − lookback)`, or `run start − lookback`, in the configured format.
    fn finish(&self) -> CursorWrite {
        since::finish(self.since.as_ref())
    }

    fn pointers(&self) -> Vec<JsonPointer> {
        self.cfg.next_page.iter().cloned().collect()
    }
}
