//! JSON cursor positions (Carrot quest v2 style): the next position is read from the
//! reply (or from the page's last record) and sent back as compact JSON, numbers with
//! their exact digits. An optional since filter's parameter is sent on a run's first
//! request when there is no stored position (`{{since}}` has its value on every request of
//! such a run).

use serde_json::{Map, Value};

use super::extract::Page;
use super::since::SinceRun;
use super::strategy::{
    Ask, Paginator, ReplyMeta, Step, StrategyError, field, next_cursor, own_limit, reply_pointer,
};
use super::template::{Placed, Values};
use crate::spec::cursor::CursorWrite;
use crate::spec::names::JsonPointer;
use crate::spec::pagination;
use crate::spec::template::Placeholder;

#[derive(Debug)]
pub struct Position {
    cfg: pagination::Position,
    placed: Placed,
    position: Option<Value>,
    /// The since filter of a run without a stored position (a stored position carries
    /// the state).
    since: Option<SinceRun>,
    /// The next request is the run's first: the only one the filter's parameter goes on.
    first: bool,
}

impl Position {
    pub fn new(
        cfg: &pagination::Position,
        placed: &Placed,
        cursor: Option<&Value>,
    ) -> Result<Self, StrategyError> {
        let stored = field(cursor, "position")?.cloned();
        let since = match (&cfg.since, &stored) {
            (Some(since), None) => Some(SinceRun::new(since, None)?),
            _ => None,
        };
        Ok(Position {
            cfg: cfg.clone(),
            placed: placed.clone(),
            position: stored.or_else(|| cfg.initial_position.clone()),
            since,
            first: true,
        })
    }
}

impl Paginator for Position {
    fn ask(&self) -> Ask {
        let values = Values {
            since: self.since.as_ref().and_then(|s| s.value().cloned()),
            cursor: self.position.clone(),
            limit: Some(self.cfg.limit.get()),
            ..Values::default()
        };
        let mut query = Vec::new();
        if let Some(param) = self
            .since
            .as_ref()
            .filter(|_| self.first)
            .and_then(SinceRun::query)
        {
            query.push(param);
        }
        if let Some(position) = &self.position
            && !self.placed.has(&Placeholder::Cursor)
        {
            query.push((self.cfg.position_param.to_string(), position.to_string()));
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

    fn advance(&mut self, page: &Page, _reply: &ReplyMeta) -> Result<Step, StrategyError> {
        self.first = false;
        let next = next_cursor(&self.cfg.next, page)?;
        let (Some(next), false) = (next, page.records.is_empty()) else {
            return Ok(Step::done());
        };
        if self.position.as_ref() == Some(&next) {
            if page.records.len() < self.cfg.limit.get() as usize {
                return Ok(Step::done());
            }
            return Err(StrategyError::Stuck(format!(
                "the upstream answered records with the same next position {next} it was given"
            )));
        }
        let mut cursor = Map::new();
        cursor.insert("position".into(), next.clone());
        self.position = Some(next);
        Ok(Step {
            cursor: CursorWrite::Set(Value::Object(cursor)),
            done: false,
        })
    }

    fn pointers(&self) -> Vec<JsonPointer> {
        reply_pointer(&self.cfg.next).into_iter().collect()
    }
}
