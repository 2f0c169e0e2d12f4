//! A single request: the stream's whole listing in one reply. With a since filter, the
//! high-water of a completed run is kept as its cursor, so each run is an incremental read.

use serde_json::Value;

use super::extract::Page;
use super::since::{self, SinceRun};
use super::strategy::{Ask, Paginator, ReplyMeta, Step, StrategyError};
use super::template::Values;
use crate::spec::cursor::CursorWrite;
use crate::spec::pagination;

#[derive(Debug)]
pub struct Single {
    since: Option<SinceRun>,
}

impl Single {
    pub fn new(cfg: &pagination::Single, cursor: Option<&Value>) -> Result<Self, StrategyError> {
        Ok(Single {
            since: SinceRun::from_cursor(cfg.since.as_ref(), cursor)?,
        })
    }
}

impl Paginator for Single {
    fn ask(&self) -> Ask {
        Ask {
            query: self.since.iter().filter_map(SinceRun::query).collect(),
            values: Values {
                since: self.since.as_ref().and_then(|s| s.value().cloned()),
                ..Values::default()
            },
            ..Ask::default()
        }
    }

    fn advance(&mut self, page: &Page, reply: &ReplyMeta) -> Result<Step, StrategyError> {
        if let Some(since) = &mut self.since {
            since.observe(page, reply)?;
        }
        Ok(Step::done())
    }

    fn finish(&self) -> CursorWrite {
        since::finish(self.since.as_ref())
    }
}
