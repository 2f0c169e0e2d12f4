//! Upstream timestamps, read and written in the upstream's own style. A resume point the
//! gateway computes (a run's start minus the lookback) must be sent the way the upstream
//! writes its records' times: same format, same UTC offset, same precision.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;

use crate::spec::pagination::TimeFormat;

/// Text formats tried in order; a style is accepted only if formatting the parsed time
/// gives back the exact text, so the style reproduces the upstream's spelling.
const TEXT_FORMATS: &[&str] = &[
    "%Y-%m-%d %H:%M:%S %:z",
    "%Y-%m-%d %H:%M:%S%.3f %:z",
    "%Y-%m-%d %H:%M:%S%.6f %:z",
    "%Y-%m-%d %H:%M:%S %z",
    "%Y-%m-%dT%H:%M:%S%:z",
    "%Y-%m-%dT%H:%M:%S%.3f%:z",
    "%Y-%m-%dT%H:%M:%S%.6f%:z",
    "%Y-%m-%dT%H:%M:%S%.9f%:z",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S%.3f%z",
];

/// Formats with a literal `Z` (UTC), parsed as naive times.
const UTC_FORMATS: &[&str] = &[
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%dT%H:%M:%S%.3fZ",
    "%Y-%m-%dT%H:%M:%S%.6fZ",
    "%Y-%m-%dT%H:%M:%S%.9fZ",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
];

/// How an upstream writes a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeStyle {
    /// Text with an explicit offset, e.g. `2017-09-04 00:00:00 +03:00`.
    Offset {
        format: &'static str,
        offset: FixedOffset,
    },
    /// Text in UTC without an offset, or with a literal `Z`.
    Utc { format: &'static str },
    /// A number of seconds since the epoch with `decimals` fraction digits.
    UnixSeconds { decimals: u8 },
    /// A whole number of milliseconds since the epoch.
    UnixMillis,
}

/// Numbers at or above this are milliseconds (year 5138 in seconds).
const MILLIS_FROM: f64 = 1e11;

impl TimeStyle {
    /// Reads a time value and the style it is written in; `None` when it is not a time
    /// this module understands.
    pub fn detect(value: &Value) -> Option<(DateTime<Utc>, TimeStyle)> {
        match value {
            Value::String(text) => detect_text(text),
            Value::Number(n) => detect_number(&n.to_string()),
            _ => None,
        }
    }

    /// Writes `time` in this style, as the JSON value the upstream would use.
    pub fn write(self, time: DateTime<Utc>) -> Value {
        match self {
            TimeStyle::Offset { format, offset } => {
                Value::String(time.with_timezone(&offset).format(format).to_string())
            }
            TimeStyle::Utc { format } => Value::String(time.format(format).to_string()),
            TimeStyle::UnixSeconds { decimals: 0 } => Value::from(time.timestamp()),
            TimeStyle::UnixSeconds { decimals } => {
                let micros = time.timestamp_micros();
                let text = format!(
                    "{}.{:06}",
                    micros.div_euclid(1_000_000),
                    micros.rem_euclid(1_000_000)
                );
                let keep = text.len() - 6 + usize::from(decimals.min(6));
                number(&text[..keep]).unwrap_or_else(|| Value::from(time.timestamp()))
            }
            TimeStyle::UnixMillis => Value::from(time.timestamp_millis()),
        }
    }
}

fn detect_text(text: &str) -> Option<(DateTime<Utc>, TimeStyle)> {
    for &format in TEXT_FORMATS {
        if let Ok(time) = DateTime::parse_from_str(text, format)
            && time.format(format).to_string() == text
        {
            let style = TimeStyle::Offset {
                format,
                offset: *time.offset(),
            };
            return Some((time.with_timezone(&Utc), style));
        }
    }
    for &format in UTC_FORMATS {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format)
            && naive.format(format).to_string() == text
        {
            return Some((Utc.from_utc_datetime(&naive), TimeStyle::Utc { format }));
        }
    }
    // A spelling none of the formats reproduces: still a time, written back as RFC 3339.
    let time = DateTime::parse_from_rfc3339(text).ok()?;
    let style = TimeStyle::Offset {
        format: "%Y-%m-%dT%H:%M:%S%.f%:z",
        offset: *time.offset(),
    };
    Some((time.with_timezone(&Utc), style))
}

fn detect_number(text: &str) -> Option<(DateTime<Utc>, TimeStyle)> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (text, ""),
    };
    if text.contains(['e', 'E']) || whole.starts_with('-') {
        return None;
    }
    let seconds: i64 = whole.parse().ok()?;
    if seconds as f64 >= MILLIS_FROM && fraction.is_empty() {
        return Some((
            DateTime::from_timestamp_millis(seconds)?,
            TimeStyle::UnixMillis,
        ));
    }
    let digits: String = fraction.chars().take(9).collect();
    let nanos: u32 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    let time = DateTime::from_timestamp(seconds, nanos)?;
    let decimals = u8::try_from(fraction.len().min(6)).unwrap_or(6);
    Some((time, TimeStyle::UnixSeconds { decimals }))
}

fn number(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok()
}

/// Writes `time` as a since value in `format`, rounded down to what the format shows (so
/// an inclusive filter never excludes the record the time was taken from). A pattern that
/// writes an offset writes the time in `offset` (the records' own), UTC without one; the
/// other formats are in UTC. `verbatim` has no spelling of its own (it sends a record's
/// text): a computed time is written as RFC 3339 with every digit.
pub fn write_since(
    time: DateTime<Utc>,
    format: &TimeFormat,
    offset: Option<FixedOffset>,
) -> String {
    use chrono::SecondsFormat;
    match format {
        TimeFormat::Iso8601 => time.to_rfc3339_opts(SecondsFormat::Secs, true),
        TimeFormat::Iso8601Ms => time.to_rfc3339_opts(SecondsFormat::Millis, true),
        TimeFormat::Iso8601Us => time.to_rfc3339_opts(SecondsFormat::Micros, true),
        TimeFormat::Date => time.format("%Y-%m-%d").to_string(),
        TimeFormat::Unix => time.timestamp().to_string(),
        TimeFormat::UnixMs => time.timestamp_millis().to_string(),
        TimeFormat::Verbatim => time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        TimeFormat::Pattern(pattern) => match offset.filter(|_| pattern.writes_offset()) {
            Some(offset) => time
                .with_timezone(&offset)
                .format(pattern.as_str())
                .to_string(),
            None => time.format(pattern.as_str()).to_string(),
        },
    }
}

impl TimeStyle {
    /// The UTC offset this style writes, if it writes one.
    pub fn offset(self) -> Option<FixedOffset> {
        match self {
            TimeStyle::Offset { offset, .. } => Some(offset),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(value: Value) {
        let (time, style) = TimeStyle::detect(&value).expect("a time");
        assert_eq!(style.write(time), value, "{style:?}");
    }

    #[test]
    fn styles_write_back_what_they_read() {
        round_trip(Value::String("2017-09-04 00:00:00 +03:00".into()));
        round_trip(Value::String("2024-01-20T10:30:00Z".into()));
        round_trip(Value::String("2024-01-20T10:30:00.123Z".into()));
        round_trip(Value::String("2024-01-20T10:30:00.123456+05:30".into()));
        round_trip(Value::String("2024-01-20 10:30:00".into()));
        round_trip(serde_json::from_str("1684739969.358085").unwrap());
        round_trip(serde_json::from_str("1684739969").unwrap());
        round_trip(serde_json::from_str("1684739969123").unwrap());
    }

    #[test]
    fn a_computed_time_keeps_the_upstream_offset() {
        let (time, style) =
            TimeStyle::detect(&Value::String("2017-09-04 00:00:00 +03:00".into())).unwrap();
        let earlier = time - chrono::TimeDelta::seconds(2);
        assert_eq!(
            style.write(earlier),
            Value::String("2017-09-03 23:59:58 +03:00".into())
        );
        assert_eq!(time.timestamp(), 1_504_472_400);
    }

    #[test]
    fn microsecond_floats_are_exact() {
        let value: Value = serde_json::from_str("1684739969.358085").unwrap();
        let (time, _) = TimeStyle::detect(&value).unwrap();
        assert_eq!(time.timestamp_subsec_micros(), 358_085);
    }

    #[test]
    fn non_times_are_not_detected() {
        for bad in [
            Value::String("yesterday".into()),
            Value::Bool(true),
            Value::Null,
        ] {
            assert!(TimeStyle::detect(&bad).is_none(), "{bad}");
        }
    }

    fn pattern(p: &str) -> TimeFormat {
        TimeFormat::Pattern(p.to_owned().try_into().unwrap())
    }

    #[test]
    fn since_formats() {
        let t = DateTime::from_timestamp(1_705_746_600, 0).unwrap();
        let w = |f: TimeFormat| write_since(t, &f, None);
        assert_eq!(w(TimeFormat::Iso8601), "2024-01-20T10:30:00Z");
        assert_eq!(w(TimeFormat::Iso8601Ms), "2024-01-20T10:30:00.000Z");
        assert_eq!(w(TimeFormat::Iso8601Us), "2024-01-20T10:30:00.000000Z");
        assert_eq!(w(TimeFormat::Date), "2024-01-20");
        assert_eq!(w(TimeFormat::Unix), "1705746600");
        assert_eq!(w(TimeFormat::UnixMs), "1705746600000");
        assert_eq!(w(pattern("%Y/%m/%d %H:%M")), "2024/01/20 10:30");
    }

    /// A time just before a boundary of every format is written as the boundary below it,
    /// never the one above, and never coarser than the format shows.
    #[test]
    fn every_format_rounds_down() {
        // 2024-01-20T23:59:59.999999999Z
        let t = DateTime::from_timestamp(1_705_795_199, 999_999_999).unwrap();
        let w = |f: TimeFormat| write_since(t, &f, None);
        assert_eq!(w(TimeFormat::Iso8601), "2024-01-20T23:59:59Z");
        assert_eq!(w(TimeFormat::Iso8601Ms), "2024-01-20T23:59:59.999Z");
        assert_eq!(w(TimeFormat::Iso8601Us), "2024-01-20T23:59:59.999999Z");
        assert_eq!(w(TimeFormat::Date), "2024-01-20");
        assert_eq!(w(TimeFormat::Unix), "1705795199");
        assert_eq!(w(TimeFormat::UnixMs), "1705795199999");
        assert_eq!(w(TimeFormat::Verbatim), "2024-01-20T23:59:59.999999999Z");
        assert_eq!(w(pattern("%Y/%m/%d %H:%M")), "2024/01/20 23:59");
        assert_eq!(w(pattern("%Y-%m-%d")), "2024-01-20");
        // Before the epoch too: down is towards the past.
        let before = DateTime::from_timestamp(-2, 500_000_000).unwrap();
        assert_eq!(write_since(before, &TimeFormat::Unix, None), "-2");
        assert_eq!(write_since(before, &TimeFormat::UnixMs, None), "-1500");
    }

    #[test]
    fn patterns_are_in_utc_unless_they_write_an_offset() {
        let t = DateTime::from_timestamp(1_705_746_600, 0).unwrap();
        let moscow = FixedOffset::east_opt(3 * 3600);
        assert_eq!(
            write_since(t, &pattern("%Y/%m/%d %H:%M"), moscow),
            "2024/01/20 10:30"
        );
        assert_eq!(
            write_since(t, &pattern("%Y-%m-%d %H:%M:%S %:z"), moscow),
            "2024-01-20 13:30:00 +03:00"
        );
        assert_eq!(
            write_since(t, &pattern("%Y-%m-%d %H:%M:%S %z"), None),
            "2024-01-20 10:30:00 +0000"
        );
    }
}
