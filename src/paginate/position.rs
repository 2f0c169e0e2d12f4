//! JSON cursor positions (Carrot quest v2 style): the next position is read from the
//! reply and sent back as compact JSON, numbers with their exact digits.

use serde_json::{Map, Value};

use super::extract::Page;
use super::strategy::{Ask, Paginator, ReplyMeta, Step, StrategyError, field};
use crate::spec::cursor::CursorWrite;
use crate::spec::names::JsonPointer;
use crate::spec::pagination;

#[derive(Debug)]
pub struct Position {
    cfg: pagination::Position,
    position: Option<Value>,
}

impl Position {
    pub fn new(cfg: &pagination::Position, cursor: Option<&Value>) -> Result<Self, StrategyError> {
        let position = field(cursor, "position")?
            .cloned()
            .or_else(|| cfg.initial_position.clone());
        Ok(Position {
            cfg: cfg.clone(),
            position,
        })
    }
}

impl Paginator for Position {
    fn ask(&self) -> Ask {
        let mut query = Vec::new();
        if let Some(position) = &self.position {
            query.push((self.cfg.position_param.to_string(), position.to_string()));
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

    fn advance(&mut self, page: &Page, _reply: &ReplyMeta) -> Result<Step, StrategyError> {
        let (Some(next), false) = (&page.next, page.records.is_empty()) else {
            return Ok(Step {
                cursor: CursorWrite::Keep,
                done: true,
            });
        };
        if self.position.as_ref() == Some(next) {
            if page.records.len() < self.cfg.limit.get() as usize {
                return Ok(Step {
                    cursor: CursorWrite::Keep,
                    done: true,
                });
            }
            return Err(StrategyError::Stuck(format!(
                "the upstream answered records with the same next position {next} it was given"
            )));
        }
        let mut cursor = Map::new();
        cursor.insert("position".into(), next.clone());
        self.position = Some(next.clone());
        Ok(Step {
            cursor: CursorWrite::Set(Value::Object(cursor)),
            done: false,
        })
    }

    fn next_pointer(&self) -> Option<&JsonPointer> {
        Some(&self.cfg.next)
    }
}
