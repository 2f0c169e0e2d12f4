//! `updated_since` + `from_id` keyset paging (InSales style).

use chrono::TimeDelta;
use serde_json::{Map, Value};

use super::extract::Page;
use super::strategy::{
    Ask, Paginator, ReplyMeta, Step, StrategyError, field, own_limit, scalar_text,
};
use super::template::{self, Placed, Values};
use super::time::TimeStyle;
use crate::spec::cursor::CursorWrite;
use crate::spec::pagination;
use crate::spec::template::Placeholder;

#[derive(Debug)]
pub struct Keyset {
    cfg: pagination::Keyset,
    placed: Placed,
    /// The since value of the next request, verbatim.
    since: Value,
    /// The id of the next request, verbatim; none on a resume from a time alone.
    from_id: Option<Value>,
    /// The upstream's clock at the run's first reply, minus the lookback: no resume
    /// point stored by this run is later.
    horizon: Option<chrono::DateTime<chrono::Utc>>,
    /// The run resumed from a stored cursor (an incremental): it may end on a short page,
    /// since whatever it did not read the next run reads from the cursor. A run from the
    /// beginning (full, reconcile) reads on to the empty page: an upstream that filters
    /// after its limit can answer short pages before the end, and a reconcile that ended
    /// there would tombstone what it did not see.
    resumed: bool,
    /// A page of `limit` records arrived in this run: the upstream honours the limit, so
    /// a shorter page after it is the end of the listing (an upstream that caps the page
    /// below `limit` never sends a full one, and such a run ends on the empty page).
    full_page: bool,
}

impl Keyset {
    pub fn new(
        cfg: &pagination::Keyset,
        placed: &Placed,
        cursor: Option<&Value>,
    ) -> Result<Self, StrategyError> {
        let bad = || StrategyError::Shape("the stored keyset cursor has an odd shape".into());
        let scalar = |value: &Value| scalar_text(value).map(|_| value.clone()).ok_or_else(bad);
        let since = field(cursor, "updated_since")?.map(scalar).transpose()?;
        let from_id = field(cursor, "from_id")?.map(scalar).transpose()?;
        Ok(Keyset {
            cfg: cfg.clone(),
            placed: placed.clone(),
            since: since.unwrap_or_else(|| Value::String(cfg.initial_since.clone())),
            from_id,
            horizon: None,
            resumed: cursor.is_some(),
            full_page: false,
        })
    }

    fn since_text(&self) -> String {
        scalar_text(&self.since).unwrap_or_default()
    }
}

impl Paginator for Keyset {
    fn ask(&self) -> Ask {
        let values = Values {
            since: Some(self.since.clone()),
            from_id: self.from_id.clone(),
            limit: Some(self.cfg.limit.get()),
            ..Values::default()
        };
        let mut query = Vec::new();
        match &self.cfg.query {
            // Filter expressions: the `after` map once there is an id to go after.
            Some(maps) => {
                let map = match self.from_id {
                    Some(_) => &maps.after,
                    None => &maps.since,
                };
                for (name, value) in map {
                    if let Some(value) = template::text(value, &values) {
                        query.push((name.clone(), value));
                    }
                }
            }
            None => {
                if let Some(param) = &self.cfg.since_param
                    && !self.placed.has(&Placeholder::Since)
                {
                    query.push((param.to_string(), self.since_text()));
                }
                if let (Some(param), Some(id)) = (&self.cfg.id_param, &self.from_id)
                    && !self.placed.has(&Placeholder::FromId)
                {
                    query.push((param.to_string(), scalar_text(id).unwrap_or_default()));
                }
            }
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
        let same_id =
            self.from_id.as_ref().and_then(scalar_text).as_deref() == Some(last.key.as_str());
        if since == self.since_text() && same_id {
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
                last.key,
                self.cfg
                    .id_param
                    .as_ref()
                    .map_or("the id filter", |p| p.as_str())
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
        self.since = updated.clone();
        self.from_id = Some(last.key_value.clone());
        let short = page.records.len() < self.cfg.limit.get() as usize;
        let done = short && self.resumed && self.full_page;
        self.full_page |= !short;
        Ok(Step {
            cursor: CursorWrite::Set(Value::Object(cursor)),
            done,
        })
    }
}
