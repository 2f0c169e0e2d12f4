//! A single request: the stream's whole listing in one reply, no cursor.

use super::extract::Page;
use super::strategy::{Ask, Paginator, ReplyMeta, Step, StrategyError};
use crate::spec::cursor::CursorWrite;

#[derive(Debug)]
pub struct Single;

impl Paginator for Single {
    fn ask(&self) -> Ask {
        Ask::default()
    }

    fn advance(&mut self, _page: &Page, _reply: &ReplyMeta) -> Result<Step, StrategyError> {
        Ok(Step {
            cursor: CursorWrite::Keep,
            done: true,
        })
    }
}
