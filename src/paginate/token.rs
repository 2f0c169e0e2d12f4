//! Opaque since/until tokens (POS style), by GET parameters or a POST body template.

use serde_json::{Map, Value};

use super::extract::Page;
use super::strategy::{Ask, Paginator, ReplyMeta, Step, StrategyError, field, scalar_text};
use crate::spec::cursor::CursorWrite;
use crate::spec::names::JsonPointer;
use crate::spec::pagination;

#[derive(Debug)]
pub struct Token {
    cfg: pagination::Token,
    template: Option<Value>,
    /// The token of the next request; blank on the first call of a stream.
    token: String,
}

impl Token {
    pub fn new(
        cfg: &pagination::Token,
        template: Option<&Value>,
        cursor: Option<&Value>,
    ) -> Result<Self, StrategyError> {
        let token = match field(cursor, "token")? {
            Some(value) => scalar_text(value).ok_or_else(|| {
                StrategyError::Shape("the stored token cursor has an odd shape".into())
            })?,
            None => String::new(),
        };
        Ok(Token {
            cfg: cfg.clone(),
            template: template.cloned(),
            token,
        })
    }
}

impl Paginator for Token {
    fn ask(&self) -> Ask {
        match &self.template {
            Some(template) => Ask {
                body: Some(fill(template, &self.token, self.cfg.limit.get())),
                ..Ask::default()
            },
            None => Ask {
                query: vec![
                    (self.cfg.since_param.to_string(), self.token.clone()),
                    (
                        self.cfg.limit_param.to_string(),
                        self.cfg.limit.get().to_string(),
                    ),
                ],
                ..Ask::default()
            },
        }
    }

    fn advance(&mut self, page: &Page, _reply: &ReplyMeta) -> Result<Step, StrategyError> {
        let done = Step {
            cursor: CursorWrite::Keep,
            done: true,
        };
        if page.records.is_empty() {
            return Ok(done);
        }
        // A null `until` ends the run; the cursor keeps the last non-null token.
        let Some(until) = &page.next else {
            return Ok(done);
        };
        let until = scalar_text(until).ok_or_else(|| {
            StrategyError::Shape(format!("`{}` is not a token: {until}", self.cfg.until))
        })?;
        if until == self.token {
            if page.records.len() < self.cfg.limit.get() as usize {
                return Ok(done);
            }
            return Err(StrategyError::Stuck(format!(
                "the upstream answered records with the same token `{until}` it was given"
            )));
        }
        let mut cursor = Map::new();
        cursor.insert("token".into(), Value::String(until.clone()));
        self.token = until;
        Ok(Step {
            cursor: CursorWrite::Set(Value::Object(cursor)),
            done: false,
        })
    }

    fn next_pointer(&self) -> Option<&JsonPointer> {
        Some(&self.cfg.until)
    }
}

/// The body template with `"{{since}}"` and `"{{limit}}"` replaced by typed values.
fn fill(template: &Value, token: &str, limit: u32) -> Value {
    match template {
        Value::String(s) if s == "{{since}}" => Value::String(token.to_owned()),
        Value::String(s) if s == "{{limit}}" => Value::from(limit),
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, token, limit)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill(v, token, limit)))
                .collect(),
        ),
        other => other.clone(),
    }
}
