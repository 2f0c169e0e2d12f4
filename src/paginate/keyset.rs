//! `updated_since` + `from_id` keyset paging (InSales style).

use chrono::TimeDelta;
use serde_json::{Map, Value};

use super::extract::Page;
use super::strategy::{Ask, Paginator, ReplyMeta, Step, StrategyError, field, scalar_text};
use super::time::TimeStyle;
use crate::spec::cursor::CursorWrite;
use crate::spec::pagination;

#[derive(Debug)]
pub struct Keyset {
    cfg: pagination::Keyset,
    /// The since value of the next request, verbatim.
    since: String,
    /// The id of the next request, verbatim; none on a resume from a time alone.
    from_id: Option<String>,
    /// The upstream's clock at the run's first reply, minus the lookback: no resume
    /// point stored by this run is later.
    horizon: Option<chrono::DateTime<chrono::Utc>>,
}

impl Keyset {
    pub fn new(cfg: &pagination::Keyset, cursor: Option<&Value>) -> Result<Self, StrategyError> {
        let since = field(cursor, "updated_since")?.map(scalar_text);
        let from_id = field(cursor, "from_id")?.map(scalar_text);
        let bad = || StrategyError::Shape("the stored keyset cursor has an odd shape".into());
        Ok(Keyset {
            cfg: cfg.clone(),
            since: match since {
                Some(s) => s.ok_or_else(bad)?,
                None => cfg.initial_since.clone(),
            },
            from_id: from_id.map(|id| id.ok_or_else(bad)).transpose()?,
            horizon: None,
        })
    }
}

impl Paginator for Keyset {
    fn ask(&self) -> Ask {
        let mut query = vec![(self.cfg.since_param.to_string(), self.since.clone())];
        if let Some(id) = &self.from_id {
            query.push((self.cfg.id_param.to_string(), id.clone()));
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
        let lookback = TimeDelta::seconds(i64::from(self.cfg.lookback_seconds.get()));
        let horizon = *self.horizon.get_or_insert(reply.upstream_now - lookback);
        let Some(last) = page.records.last() else {
            return Ok(Step {
                cursor: CursorWrite::Keep,
                done: true,
            });
        };
        let updated = last.updated.as_ref().ok_or_else(|| {
            StrategyError::Shape("a keyset record needs `records.updated_at`".into())
        })?;
        let since = scalar_text(updated).ok_or_else(|| {
            StrategyError::Shape(format!(
                "record {} has an updated time that is neither text nor a number: {updated}",
                last.key
            ))
        })?;
        if since == self.since && self.from_id.as_deref() == Some(last.key.as_str()) {
            // No progress: the natural end of an upstream whose since is inclusive when
            // the page is short, a loop when it is full.
            if page.records.len() < self.cfg.limit.get() as usize {
                return Ok(Step {
                    cursor: CursorWrite::Keep,
                    done: true,
                });
            }
            return Err(StrategyError::Stuck(format!(
                "a full page ended at ({since}, {}) again: more records share one time than a page holds and the upstream ignores `{}`",
                last.key, self.cfg.id_param
            )));
        }
        let mut cursor = Map::new();
        match TimeStyle::detect(updated) {
            // The record is older than the horizon: resume exactly after it.
            Some((time, _)) if time < horizon => {
                cursor.insert("updated_since".into(), updated.clone());
                cursor.insert("from_id".into(), last.key_value.clone());
            }
            // Newer: resume at the horizon, inclusively, in the upstream's own spelling.
            Some((_, style)) => {
                cursor.insert("updated_since".into(), style.write(horizon));
            }
            None => {
                tracing::warn!(updated = %updated, "updated time not understood; resuming exactly after the last record");
                cursor.insert("updated_since".into(), updated.clone());
                cursor.insert("from_id".into(), last.key_value.clone());
            }
        }
        self.since = since;
        self.from_id = Some(last.key.clone());
        Ok(Step {
            cursor: CursorWrite::Set(Value::Object(cursor)),
            done: false,
        })
    }
}
