//! Opaque since/until tokens (POS style), by GET parameters or a POST body template. The
//! next token is read from the reply (or from the page's last record: Stripe's
//! `starting_after`); an empty string is no token (Slack). An optional since filter's
//! parameter is sent on a run's first request when there is no token (`{{since}}` has its
//! value on every request of such a run); `resume` says where the next run starts
//! (docs/design.md §4a).

use serde_json::Value;

use super::extract::Page;
use super::since::{Resumable, SeekQuery, SeekStep, SinceRun};
use super::strategy::{
    Ask, Paginator, ReplyMeta, Step, StrategyError, cursor_of, field, next_cursor, own_limit,
    reply_pointer, scalar_text,
};
use super::template::{Placed, Values};
use crate::spec::cursor::CursorWrite;
use crate::spec::names::JsonPointer;
use crate::spec::pagination::{self, NextCursor, Resume};
use crate::spec::template::Placeholder;

#[derive(Debug)]
pub struct Token {
    cfg: pagination::Token,
    resume: Resume,
    /// The request has a body template, which places the token itself.
    body: bool,
    placed: Placed,
    /// The token of the next request; `None` before the first token of a stream.
    token: Option<String>,
    since: Resumable,
    /// The next request is the run's first.
    first: bool,
    /// What the last page read names at the `resume` pointer.
    named: Option<String>,
    /// Seek mode (`since.order`): the current query.
    seek: Option<SeekQuery>,
}

impl Token {
    pub fn new(
        cfg: &pagination::Token,
        body: bool,
        placed: &Placed,
        cursor: Option<&Value>,
    ) -> Result<Self, StrategyError> {
        let token = field(cursor, "token")?
            .map(|value| {
                scalar_text(value).ok_or_else(|| {
                    StrategyError::Shape("the stored token cursor has an odd shape".into())
                })
            })
            .transpose()?
            .filter(|t| !t.is_empty());
        let resume = cfg.resume();
        let since = Resumable::new(cfg.since.as_ref(), &resume, token.is_some(), cursor)?;
        let seek = cfg
            .since
            .as_ref()
            .and_then(|s| s.order)
            .map(|_| SeekQuery::first(since.run()));
        Ok(Token {
            since,
            cfg: cfg.clone(),
            resume,
            body,
            placed: placed.clone(),
            token,
            first: true,
            named: None,
            seek,
        })
    }

    /// The since filter's parameter, sent on a run's first request while there is no
    /// token.
    fn since_param(&self) -> Option<(String, String)> {
        self.since
            .run()
            .filter(|_| self.first && self.token.is_none())
            .and_then(SinceRun::query)
    }
}

impl Token {
    /// Seek mode (docs/design.md §4, [`SeekQuery::advance`]): a page within one value (a
    /// tie) follows its token, a page past it starts a new query (no token, the since
    /// value of the new query); a page without a next token ends the run. Pages commit
    /// the high-water the run started from, never a token: an interrupted run starts again
    /// from there. This is also how a cap on one query's results (`max_results`: HubSpot's
    /// 10,000) is read past: no query reads more than a page past its value's tie.
    fn seek(&mut self, page: &Page, until: Option<String>) -> Result<Step, StrategyError> {
        let (Some(query), Some(since)) = (&mut self.seek, self.since.run()) else {
            return Ok(Step::done());
        };
        let step = Step {
            cursor: self.since.requery(),
            done: false,
        };
        match query.advance(since, page, until.is_some())? {
            SeekStep::Done => Ok(Step::done()),
            SeekStep::Follow => {
                let until = until.expect("a followed page names its next token");
                if self.token.as_deref() == Some(until.as_str()) {
                    return Err(StrategyError::Stuck(format!(
                        "the upstream answered records with the same token `{until}` it was given"
                    )));
                }
                self.token = Some(until);
                Ok(step)
            }
            SeekStep::From(value) => {
                tracing::debug!(%value, "seek mode: a new query from the since value");
                if let Some(since) = self.since.run_mut() {
                    since.seek_to(value);
                }
                self.token = None;
                self.first = true;
                Ok(step)
            }
        }
    }
}

impl Paginator for Token {
    fn ask(&self) -> Ask {
        let token = self.token.clone().map(Value::String);
        let values = Values {
            // Without a since filter, `{{since}}` is the token (blank on the first call), as
            // it was before templates.
            since: match &self.cfg.since {
                Some(_) => self.since.run().and_then(|s| s.value().cloned()),
                None => Some(
                    token
                        .clone()
                        .unwrap_or_else(|| Value::String(String::new())),
                ),
            },
            cursor: token,
            limit: Some(self.cfg.limit.get()),
            ..Values::default()
        };
        let mut query = Vec::new();
        // A body template places everything itself, as it always has.
        if !self.body {
            if let Some(param) = self.since_param() {
                query.push(param);
            }
            let token_placed = self.placed.has(&Placeholder::Cursor)
                || (self.cfg.since.is_none() && self.placed.has(&Placeholder::Since));
            if !token_placed {
                match (&self.token, &self.cfg.since) {
                    (Some(token), _) => {
                        query.push((self.cfg.since_param.to_string(), token.clone()))
                    }
                    // The blank token of a stream's first call, as before since filters;
                    // with one, the filter takes its place.
                    (None, None) => query.push((self.cfg.since_param.to_string(), String::new())),
                    (None, Some(_)) => {}
                }
            }
            query.extend(own_limit(
                &self.placed,
                &self.cfg.limit_param,
                self.cfg.limit,
            ));
        }
        Ask {
            query,
            values,
            ..Ask::default()
        }
    }

    fn advance(&mut self, page: &Page, reply: &ReplyMeta) -> Result<Step, StrategyError> {
        self.first = false;
        self.since.observe(page, reply)?;
        if let Resume::Pointer(pointer) = &self.resume {
            self.named = page
                .value(pointer)
                .and_then(scalar_text)
                .filter(|t| !t.is_empty());
        }
        if page.records.is_empty() {
            return Ok(Step::done());
        }
        // A null, absent or empty `until` ends the run; the cursor keeps the last token.
        let until = match next_cursor(&self.cfg.until, page)? {
            Some(until) => scalar_text(&until).ok_or_else(|| {
                StrategyError::Shape(format!(
                    "{} is not a token: {until}",
                    describe(&self.cfg.until)
                ))
            })?,
            None => String::new(),
        };
        let until = Some(until).filter(|t| !t.is_empty());
        // Seek mode needs the run's since value: a run that goes on from a stored token
        // follows its tokens as they are.
        if self.seek.is_some() && self.since.run().is_some() {
            return self.seek(page, until);
        }
        let Some(until) = until else {
            return Ok(Step::done());
        };
        if self.token.as_deref() == Some(until.as_str()) {
            if page.records.len() < self.cfg.limit.get() as usize {
                return Ok(Step::done());
            }
            return Err(StrategyError::Stuck(format!(
                "the upstream answered records with the same token `{until}` it was given"
            )));
        }
        let cursor = cursor_of(&[
            ("token", Some(Value::String(until.clone()))),
            ("high_water", self.since.within_run()),
        ]);
        self.token = Some(until);
        Ok(Step {
            cursor: CursorWrite::Set(Value::Object(cursor)),
            done: false,
        })
    }

    /// `last_page`: the last token read, already committed with its page. `restart`: the
    /// since high-water, or nothing. A pointer: what the final page named there, else as
    /// `restart`.
    fn finish(&self) -> CursorWrite {
        match &self.resume {
            Resume::LastPage => CursorWrite::Keep,
            Resume::Restart => self.since.restart(),
            Resume::Pointer(pointer) => match &self.named {
                Some(token) => CursorWrite::Set(Value::Object(cursor_of(&[(
                    "token",
                    Some(Value::String(token.clone())),
                )]))),
                None => {
                    tracing::warn!(%pointer, "the final page names no token to resume from; the next run starts from the beginning");
                    self.since.restart()
                }
            },
        }
    }

    fn pointers(&self) -> Vec<JsonPointer> {
        let mut pointers: Vec<JsonPointer> = reply_pointer(&self.cfg.until).into_iter().collect();
        if let Resume::Pointer(pointer) = &self.resume {
            pointers.push(pointer.clone());
        }
        pointers
    }
}

/// Where a next cursor is read, for messages.
fn describe(next: &NextCursor) -> String {
    match next {
        NextCursor::Pointer(pointer) => format!("`{pointer}`"),
        NextCursor::LastRecord(pointer) => format!("the last record's `{pointer}`"),
    }
}
