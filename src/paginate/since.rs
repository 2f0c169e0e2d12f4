//! A since filter within one run (docs/design.md §4a): the value the run sends (the
//! stored high-water, else `initial`) and the high-water it leaves for the next run, which
//! obeys "timestamps settle late" (§4): `min(newest record read, run start − lookback)`,
//! or `run start − lookback` with `from: sync_start`, where the run's start is the first
//! reply's `Date`. The lookback is subtracted from the run's start, never from a record's
//! own time.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use super::extract::{Item, Page};
use super::strategy::{ReplyMeta, StrategyError, cursor_of, field};
use super::time::{TimeStyle, write_since};
use crate::spec::cursor::CursorWrite;
use crate::spec::names::ParamName;
use crate::spec::pagination::{HighWaterFrom, Resume, Since, TimeFormat};

#[derive(Debug)]
pub struct SinceRun {
    cfg: Since,
    /// What this run sends, typed (a unix time is a number).
    value: Option<Value>,
    /// The first reply's `Date`.
    run_start: Option<DateTime<Utc>>,
    /// The newest record read: its time and its own value.
    newest: Option<(DateTime<Utc>, Value)>,
}

impl SinceRun {
    /// The filter `cfg`, if any, of a run that starts from `cursor`'s high-water.
    pub fn from_cursor(
        cfg: Option<&Since>,
        cursor: Option<&Value>,
    ) -> Result<Option<Self>, StrategyError> {
        let stored = field(cursor, "high_water")?;
        cfg.map(|cfg| SinceRun::new(cfg, stored)).transpose()
    }

    /// The filter of a run that starts from the stored high-water `stored`, if any.
    pub fn new(cfg: &Since, stored: Option<&Value>) -> Result<Self, StrategyError> {
        let value = match stored {
            Some(value @ (Value::String(_) | Value::Number(_))) => Some(value.clone()),
            Some(other) => {
                return Err(StrategyError::Shape(format!(
                    "the stored high-water {other} is neither text nor a number"
                )));
            }
            None => cfg.initial.clone().map(Value::String),
        };
        Ok(SinceRun {
            value: value.map(|v| typed(v, &cfg.format)),
            cfg: cfg.clone(),
            run_start: None,
            newest: None,
        })
    }

    /// The query parameter, when the filter is not sent only through a template.
    pub fn param(&self) -> Option<&ParamName> {
        self.cfg.param.as_ref()
    }

    /// The value this run sends, if it has one.
    pub fn value(&self) -> Option<&Value> {
        self.value.as_ref()
    }

    /// The query parameter and its text, when this run sends one.
    pub fn query(&self) -> Option<(String, String)> {
        Some((self.param()?.to_string(), self.query_text()?))
    }

    /// The value this run sends, as text.
    pub fn query_text(&self) -> Option<String> {
        Some(match self.value()? {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// Seek mode (docs/design.md §4): the since value that asks for the listing from
    /// `item` on, inclusively: its own text with `verbatim`, else its time written in the
    /// format (rounded down). Returns the text (records of one text are one tie) and the
    /// value as sent.
    pub fn seek_value(&self, item: &Item) -> Result<(String, Value), StrategyError> {
        let unreadable = || {
            StrategyError::Shape(format!(
                "record {} has no updated time that reads as a time",
                item.key
            ))
        };
        let updated = item.updated.as_ref().ok_or_else(unreadable)?;
        let text = match &self.cfg.format {
            TimeFormat::Verbatim => match updated {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(unreadable()),
            },
            format => {
                let (time, style) = TimeStyle::detect(updated).ok_or_else(unreadable)?;
                write_since(time, format, style.offset())
            }
        };
        let value = match (&self.cfg.format, updated) {
            (TimeFormat::Verbatim, value) => value.clone(),
            (format, _) => typed(Value::String(text.clone()), format),
        };
        Ok((text, value))
    }

    /// Seek mode after a tie read over several pages (docs/design.md §4): the since value
    /// just after the tie of a record updated at `updated`, i.e. the start of the next
    /// unit the format writes (a second, a minute, a day), as text and as sent. A query
    /// from it lists what follows the tie afresh, none of the tie. `None` with `verbatim`
    /// (no unit) or a pattern coarser than a day.
    pub fn after_tie(&self, updated: &Value) -> Option<(String, Value)> {
        if self.cfg.format == TimeFormat::Verbatim {
            return None;
        }
        let (time, style) = TimeStyle::detect(updated)?;
        let offset = style.offset();
        let text = write_since(time, &self.cfg.format, offset);
        // The first step that changes the written text is at most one unit, so the text
        // after it is the next unit's start (texts are rounded down).
        [
            TimeDelta::microseconds(1),
            TimeDelta::milliseconds(1),
            TimeDelta::seconds(1),
            TimeDelta::minutes(1),
            TimeDelta::hours(1),
            TimeDelta::days(1),
        ]
        .into_iter()
        .map(|step| write_since(time + step, &self.cfg.format, offset))
        .find(|next| *next != text)
        .map(|next| (next.clone(), typed(Value::String(next), &self.cfg.format)))
    }

    /// Sends `value` from the next request on (seek mode's next query).
    pub fn seek_to(&mut self, value: Value) {
        self.value = Some(value);
    }

    /// The most results the upstream answers to one query, if it caps them.
    pub fn max_results(&self) -> Option<u64> {
        self.cfg.max_results.map(|m| u64::from(m.get()))
    }

    /// Takes in one reply: the run's start from the first, the newest record from each.
    pub fn observe(&mut self, page: &Page, reply: &ReplyMeta) -> Result<(), StrategyError> {
        self.run_start.get_or_insert(reply.upstream_now);
        if self.cfg.from() != HighWaterFrom::MaxRecord {
            return Ok(());
        }
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
            if self
                .newest
                .as_ref()
                .is_none_or(|(newest, _)| time > *newest)
                && let Some(value) = &item.updated
            {
                self.newest = Some((time, value.clone()));
            }
        }
        Ok(())
    }

    /// What the next run sends, as the cursor keeps it; `None` when this run learnt
    /// nothing new (no reply, or `from: max_record` and no record).
    pub fn high_water(&self) -> Option<Value> {
        let start = self.run_start?;
        let horizon = start - TimeDelta::seconds(i64::from(self.cfg.lookback_seconds.get()));
        let newest = match self.cfg.from() {
            HighWaterFrom::SyncStart => {
                return Some(Value::String(write_since(horizon, &self.cfg.format, None)));
            }
            HighWaterFrom::MaxRecord => self.newest.as_ref()?,
        };
        let (time, value) = newest;
        let style = TimeStyle::detect(value).map(|(_, style)| style);
        if self.cfg.format == TimeFormat::Verbatim {
            // The record's own text, unless the upstream's clock was behind its records:
            // then the run's start, in the records' own style.
            return Some(match (*time <= horizon, style) {
                (false, Some(style)) => style.write(horizon),
                _ => value.clone(),
            });
        }
        let mark = (*time).min(horizon);
        let offset = style.and_then(TimeStyle::offset);
        Some(Value::String(write_since(mark, &self.cfg.format, offset)))
    }
}

/// Passes over one tie read over several pages before a run goes on past it, when each
/// pass finds other records in it than the pass before.
pub const MAX_TIE_PASSES: u32 = 4;

/// One query of a seek-mode link or token run (docs/design.md §4): the listing from one
/// since value, and what the run knows of that value's tie.
#[derive(Debug, Default)]
pub struct SeekQuery {
    /// The since value it was asked from, as text and as sent (`None`: the run's first
    /// query, from no value).
    text: Option<String>,
    value: Option<Value>,
    /// Records read in it.
    read: u64,
    /// It went on past a page within the tie of its value: the updated time of one of the
    /// tie's records.
    tie: Option<Value>,
    /// The keys of the tie read in this pass, in the pass before, and the passes made.
    keys: BTreeSet<String>,
    previous: Option<BTreeSet<String>>,
    passes: u32,
}

/// Where a seek-mode run goes on after a page.
#[derive(Debug, PartialEq)]
pub enum SeekStep {
    /// The page ends within its query's value (a tie longer than a page): its next link
    /// or token.
    Follow,
    /// A new query from this value, as sent.
    From(Value),
    /// The listing ends.
    Done,
}

impl SeekQuery {
    /// The run's first query, from `since`'s value.
    pub fn first(since: Option<&SinceRun>) -> Self {
        SeekQuery {
            text: since.and_then(SinceRun::query_text),
            value: since.and_then(|s| s.value().cloned()),
            ..SeekQuery::default()
        }
    }

    fn from(text: String, value: Value, read: u64) -> Self {
        SeekQuery {
            text: Some(text),
            value: Some(value),
            read,
            ..SeekQuery::default()
        }
    }

    /// Takes in `page`, which names a next page or not (`next`). A page that ends within
    /// the query's value follows the next one. A page that ends past it starts a new query
    /// at its last record's value, whose records of that value come first in it — unless
    /// the query read a tie over several pages: records that left the tie while it was
    /// read (updated, so listed later) shift the rows behind them onto pages already read.
    /// Such a tie is read again from its value until a pass finds the same records in it
    /// as the pass before (at most [`MAX_TIE_PASSES`]), and then the listing is asked for
    /// afresh from just after it.
    pub fn advance(
        &mut self,
        since: &SinceRun,
        page: &Page,
        next: bool,
    ) -> Result<SeekStep, StrategyError> {
        let Some(last) = page.records.last() else {
            return Ok(SeekStep::Done);
        };
        self.read += page.records.len() as u64;
        if let Some(text) = &self.text {
            for item in &page.records {
                if since.seek_value(item)?.0 == *text {
                    self.keys.insert(item.key.clone());
                }
            }
        }
        let (text, value) = since.seek_value(last)?;
        if self.text.as_deref() == Some(text.as_str()) {
            if !next {
                return Ok(SeekStep::Done);
            }
            if let Some(max) = since.max_results()
                && self.read >= max
            {
                return Err(StrategyError::Stuck(format!(
                    "more records share the since value {text} than the upstream answers to one query ({max})"
                )));
            }
            self.tie = last.updated.clone();
            return Ok(SeekStep::Follow);
        }
        if let (Some(updated), Some(tie_text), Some(tie_value)) =
            (self.tie.take(), self.text.clone(), self.value.clone())
        {
            let stable = self.previous.as_ref() == Some(&self.keys);
            if !stable && self.passes < MAX_TIE_PASSES {
                let passes = self.passes + 1;
                let previous = std::mem::take(&mut self.keys);
                *self = SeekQuery {
                    previous: Some(previous),
                    passes,
                    ..SeekQuery::from(tie_text, tie_value.clone(), 0)
                };
                return Ok(SeekStep::From(tie_value));
            }
            if !stable {
                tracing::warn!(tie = %tie_text, passes = self.passes, "records kept leaving a tie while it was read; the run goes on past it");
            }
            if let Some((after, sent)) = since.after_tie(&updated) {
                *self = SeekQuery::from(after, sent.clone(), 0);
                return Ok(SeekStep::From(sent));
            }
        }
        if !next {
            return Ok(SeekStep::Done);
        }
        let mut tie = 0;
        for item in page.records.iter().rev() {
            if since.seek_value(item)?.0 != text {
                break;
            }
            tie += 1;
        }
        *self = SeekQuery::from(text, value.clone(), tie);
        Ok(SeekStep::From(value))
    }
}

/// The since filter of a link or token stream, whose runs may go on from a stored URL or
/// token. Such a run has no since value (the URL or token carries it), except one that
/// goes on from an interrupted `restart` run: it keeps that run's value, and stores it
/// again at its end, since it cannot know when that run began.
#[derive(Debug)]
pub struct Resumable {
    since: Option<SinceRun>,
    resume: Resume,
    /// The high-water the run started from.
    started_from: Option<Value>,
    /// The run goes on from an interrupted `restart` run.
    resumed: bool,
}

impl Resumable {
    /// The filter of a run that starts from `cursor`, which holds a URL or token (`stored`)
    /// or not.
    pub fn new(
        cfg: Option<&Since>,
        resume: &Resume,
        stored: bool,
        cursor: Option<&Value>,
    ) -> Result<Self, StrategyError> {
        let started_from = field(cursor, "high_water")?.cloned();
        let resumed = stored && *resume == Resume::Restart;
        let since = match cfg {
            Some(cfg) if !stored || resumed => Some(SinceRun::new(cfg, started_from.as_ref())?),
            _ => None,
        };
        Ok(Resumable {
            since,
            resume: resume.clone(),
            started_from,
            resumed,
        })
    }

    /// The filter of this run, if it has one.
    pub fn run(&self) -> Option<&SinceRun> {
        self.since.as_ref()
    }

    /// The filter of this run, to seek with.
    pub fn run_mut(&mut self) -> Option<&mut SinceRun> {
        self.since.as_mut()
    }

    /// What a page that starts a new query within the run commits: the high-water the
    /// run started from (an interrupted run goes on from there), or nothing.
    pub fn requery(&self) -> CursorWrite {
        match &self.started_from {
            Some(high_water) => CursorWrite::Set(Value::Object(cursor_of(&[(
                "high_water",
                Some(high_water.clone()),
            )]))),
            None => CursorWrite::Clear,
        }
    }

    /// Takes in one reply, when this run will compute a high-water.
    pub fn observe(&mut self, page: &Page, reply: &ReplyMeta) -> Result<(), StrategyError> {
        match &mut self.since {
            Some(since) if self.resume != Resume::LastPage && !self.resumed => {
                since.observe(page, reply)
            }
            _ => Ok(()),
        }
    }

    /// What a `restart` stream keeps beside its next URL or token within a run.
    pub fn within_run(&self) -> Option<Value> {
        match self.resume {
            Resume::Restart => self.started_from.clone(),
            _ => None,
        }
    }

    /// The cursor a completed run leaves to be restarted from: the new high-water (the one
    /// it started from, if it went on from an interrupted run or learnt nothing new), or
    /// nothing.
    pub fn restart(&self) -> CursorWrite {
        let computed = match self.resumed {
            true => None,
            false => self.since.as_ref().and_then(SinceRun::high_water),
        };
        match computed.or_else(|| self.started_from.clone()) {
            Some(high_water) => CursorWrite::Set(Value::Object(cursor_of(&[(
                "high_water",
                Some(high_water),
            )]))),
            None => CursorWrite::Clear,
        }
    }
}

/// The cursor a completed run of a strategy that keeps only the high-water leaves: the
/// new high-water, or the old one (`Keep`) when the run learnt nothing new.
pub fn finish(since: Option<&SinceRun>) -> CursorWrite {
    match since.and_then(SinceRun::high_water) {
        Some(high_water) => CursorWrite::Set(Value::Object(cursor_of(&[(
            "high_water",
            Some(high_water),
        )]))),
        None => CursorWrite::Keep,
    }
}

/// A since value as a JSON body takes it: unix times are numbers (the cursor keeps them as
/// text, as it always has); everything else as it is.
fn typed(value: Value, format: &TimeFormat) -> Value {
    match (&value, format) {
        (Value::String(s), TimeFormat::Unix | TimeFormat::UnixMs)
            if !s.is_empty()
                && s.trim_start_matches('-')
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
        {
            serde_json::from_str(s).unwrap_or(value)
        }
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use url::Url;

    fn since(json: Value) -> Since {
        let mut since: Since = serde_json::from_value(json).unwrap();
        since.from.get_or_insert(HighWaterFrom::MaxRecord);
        since
    }

    fn page(times: &[Value]) -> Page {
        Page {
            records: times
                .iter()
                .enumerate()
                .map(|(i, t)| Item {
                    key: i.to_string(),
                    key_value: json!(i),
                    text: "{}".into(),
                    updated: Some(t.clone()),
                    deleted: false,
                })
                .collect(),
            ..Page::default()
        }
    }

    /// A reply at 2024-01-20T10:30:00Z.
    fn reply() -> ReplyMeta {
        ReplyMeta {
            upstream_now: DateTime::from_timestamp(1_705_746_600, 0).unwrap(),
            link_next: None,
            request_url: Url::parse("http://127.0.0.1:9/x").unwrap(),
        }
    }

    fn run(cfg: Value, times: &[Value]) -> Option<Value> {
        let mut run = SinceRun::new(&since(cfg), None).unwrap();
        run.observe(&page(times), &reply()).unwrap();
        run.high_water()
    }

    #[test]
    fn the_lookback_comes_off_the_run_start_never_off_a_record() {
        // The newest record is older than the start minus the lookback: its own time.
        assert_eq!(
            run(
                json!({"lookback_seconds": 5}),
                &[json!("2024-01-20T10:00:00Z")]
            ),
            Some(json!("2024-01-20T10:00:00Z"))
        );
        // Newer (or the upstream stamps ahead of its Date): the start minus the lookback.
        assert_eq!(
            run(
                json!({"lookback_seconds": 5}),
                &[json!("2024-01-20T10:29:58Z"), json!("2024-01-20T10:29:59Z")]
            ),
            Some(json!("2024-01-20T10:29:55Z"))
        );
        assert_eq!(
            run(
                json!({"from": "sync_start", "lookback_seconds": 60}),
                &[json!("2024-01-20T10:00:00Z")]
            ),
            Some(json!("2024-01-20T10:29:00Z"))
        );
        // No record read: nothing new to store.
        assert_eq!(run(json!({}), &[]), None);
    }

    #[test]
    fn formats_round_the_mark_down_in_the_records_offset() {
        let t = [json!("2024-01-20 12:10:59.987654 +03:00")];
        let cases = [
            (json!("iso8601"), json!("2024-01-20T09:10:59Z")),
            (json!("iso8601_ms"), json!("2024-01-20T09:10:59.987Z")),
            (json!("iso8601_us"), json!("2024-01-20T09:10:59.987654Z")),
            (json!("date"), json!("2024-01-20")),
            (json!("unix"), json!("1705741859")),
            (json!("unix_ms"), json!("1705741859987")),
            (
                json!({"pattern": "%Y/%m/%d %H:%M"}),
                json!("2024/01/20 09:10"),
            ),
            (
                json!({"pattern": "%Y-%m-%d %H:%M %:z"}),
                json!("2024-01-20 12:10 +03:00"),
            ),
        ];
        for (format, expected) in cases {
            assert_eq!(
                run(json!({ "format": format, "lookback_seconds": 0 }), &t),
                Some(expected),
                "{format}"
            );
        }
    }

    #[test]
    fn verbatim_sends_the_newest_records_own_text() {
        let cfg = json!({"format": "verbatim", "lookback_seconds": 0});
        let times = [
            json!("2017-09-03 23:00:00 +03:00"),
            json!("2017-09-04 01:00:00 +03:00"),
            json!("2017-09-04 00:30:00 +03:00"),
        ];
        assert_eq!(run(cfg.clone(), &times), Some(times[1].clone()));
        let float: Value = serde_json::from_str("1684739969.358085").unwrap();
        assert_eq!(run(cfg.clone(), std::slice::from_ref(&float)), Some(float));
        // A record stamped after the upstream's own clock: the run's start, in its style.
        assert_eq!(
            run(cfg, &[json!("2024-01-20 13:31:00 +03:00")]),
            Some(json!("2024-01-20 13:30:00 +03:00"))
        );
    }

    #[test]
    fn stored_and_initial_values_are_sent_typed() {
        let cfg = since(json!({"format": "unix", "initial": "0"}));
        assert_eq!(SinceRun::new(&cfg, None).unwrap().value(), Some(&json!(0)));
        let stored = json!("1705746600");
        let run = SinceRun::new(&cfg, Some(&stored)).unwrap();
        assert_eq!(run.value(), Some(&json!(1705746600)));
        let cfg = since(json!({"param": "since", "initial": "2024-01-01"}));
        let run = SinceRun::new(&cfg, None).unwrap();
        assert_eq!(run.query(), Some(("since".into(), "2024-01-01".into())));
        let cfg = since(json!({"param": "since"}));
        assert_eq!(SinceRun::new(&cfg, None).unwrap().query(), None);
    }
}
