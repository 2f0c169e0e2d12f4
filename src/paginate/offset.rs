//! Page/offset paging with an optional since filter (Reqon style). Rows shift under
//! offsets, so nothing but the since high-water is ever stored, and only when a run
//! completes: an interrupted run starts again from its first page.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};

use super::extract::Page;
use super::strategy::{Ask, Paginator, ReplyMeta, Step, StrategyError, field, scalar_text};
use super::time::{TimeStyle, write_since};
use crate::spec::cursor::CursorWrite;
use crate::spec::pagination::{self, HighWaterFrom};

#[derive(Debug)]
pub struct Offset {
    cfg: pagination::Offset,
    /// The since value sent with every page of this run.
    high_water: Option<String>,
    /// Records read so far in this run (the next offset).
    read: u64,
    /// Pages read so far in this run.
    pages: u32,
    run_start: Option<DateTime<Utc>>,
    max_updated: Option<DateTime<Utc>>,
    /// First and last key of the previous page, to catch an upstream that ignores the
    /// offset and repeats itself.
    previous: Option<(String, String)>,
}

impl Offset {
    pub fn new(cfg: &pagination::Offset, cursor: Option<&Value>) -> Result<Self, StrategyError> {
        let high_water = field(cursor, "high_water")?
            .map(|v| {
                scalar_text(v).ok_or_else(|| {
                    StrategyError::Shape("the stored offset cursor has an odd shape".into())
                })
            })
            .transpose()?;
        Ok(Offset {
            cfg: cfg.clone(),
            high_water: high_water.filter(|_| cfg.since.is_some()),
            read: 0,
            pages: 0,
            run_start: None,
            max_updated: None,
            previous: None,
        })
    }
}

impl Paginator for Offset {
    fn ask(&self) -> Ask {
        let mut query = Vec::new();
        if let (Some(since), Some(value)) = (&self.cfg.since, &self.high_water) {
            query.push((since.param.to_string(), value.clone()));
        }
        match &self.cfg.page_param {
            Some(param) => query.push((
                param.to_string(),
                (u64::from(self.cfg.start_page) + u64::from(self.pages)).to_string(),
            )),
            None => {
                let param = self
                    .cfg
                    .offset_param
                    .as_ref()
                    .map_or("offset", |p| p.as_str());
                query.push((param.to_owned(), self.read.to_string()));
            }
        }
        query.push((
            self.cfg.limit_param.to_string(),
            self.cfg.limit.get().to_string(),
        ));
        Ask {
            query,
            ..Ask::default()
        }
    }

    fn advance(&mut self, page: &Page, reply: &ReplyMeta) -> Result<Step, StrategyError> {
        self.run_start.get_or_insert(reply.upstream_now);
        let wants_max = self
            .cfg
            .since
            .as_ref()
            .is_some_and(|s| s.from == Some(HighWaterFrom::MaxRecord));
        if wants_max {
            for item in &page.records {
                let time = item
                    .updated
                    .as_ref()
                    .and_then(TimeStyle::detect)
                    .map(|(t, _)| t)
                    .ok_or_else(|| {
                        StrategyError::Shape(format!(
                            "record {} has no updated time that reads as a time",
                            item.key
                        ))
                    })?;
                self.max_updated = Some(self.max_updated.map_or(time, |m| m.max(time)));
            }
        }
        let count = page.records.len() as u64;
        let done = count < u64::from(self.cfg.limit.get());
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
        self.pages += 1;
        Ok(Step {
            cursor: CursorWrite::Keep,
            done,
        })
    }

    /// The high-water of a completed run: the run's start, or the smaller of it and the
    /// newest record seen, minus the lookback, written in the configured format.
    fn finish(&self) -> CursorWrite {
        let (Some(since), Some(start)) = (&self.cfg.since, self.run_start) else {
            return CursorWrite::Keep;
        };
        let mark = match since.from {
            Some(HighWaterFrom::MaxRecord) => match self.max_updated {
                Some(max) => max.min(start),
                None => return CursorWrite::Keep,
            },
            _ => start,
        };
        let mark = mark - TimeDelta::seconds(i64::from(since.lookback_seconds.get()));
        let mut cursor = Map::new();
        cursor.insert(
            "high_water".into(),
            Value::String(write_since(mark, since.format)),
        );
        CursorWrite::Set(Value::Object(cursor))
    }
}
