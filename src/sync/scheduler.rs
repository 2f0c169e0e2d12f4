//! Queues incremental jobs for streams with a schedule, backing off exponentially while a
//! stream's jobs keep failing, and reconciles on the clock of `schedule.reconcile`. Several
//! instances may run it at once: queueing is a compare-and-set on the stream's
//! `scheduled_at` (`reconcile_scheduled_at`), so each tick queues at most one job of each.
//! A reconcile that falls due while the stream has a job is stored as waiting and queued
//! when the stream is free (by the job's end, or the next tick): it is never skipped.
//! A child stream whose queue of parents holds rows while it has no job (its parents
//! changed after its last job had looked at the queue, or that job failed) gets one,
//! backing off in the same way while its jobs fail.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::MissedTickBehavior;

use super::{Engine, POLL};
use crate::spec::source::Clock;
use crate::store::{KnownSchedules, Scheduled, WaitingChild};

/// The longest a failing stream waits between attempts (unless its own interval is longer).
const MAX_BACKOFF: TimeDelta = TimeDelta::hours(1);

/// Due streams queued between two wakes of the idle workers.
const WAKE_EVERY: usize = 16;

pub(super) async fn schedule(engine: Arc<Engine>) {
    let mut known = KnownSchedules::default();
    // Ticks every second from the last tick's start, not its end: a tick's own work does
    // not delay the next (a due stream waits for at most one tick).
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while !engine.stopping() {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = engine.stopped() => break,
        }
        match engine.store.scheduled_streams(&mut known).await {
            Ok(streams) => {
                let now = Utc::now();
                // Reconciles first: one waiting for a free stream gets it before the
                // next incremental job does.
                for stream in &streams {
                    let Some(clock) = &stream.schedule.reconcile else {
                        continue;
                    };
                    let fell_due = stream
                        .reconcile_scheduled_at
                        .is_some_and(|last| next_slot(clock, last) <= now);
                    if !(fell_due || stream.reconcile_waiting)
                        && stream.reconcile_scheduled_at.is_some()
                    {
                        continue;
                    }
                    match engine
                        .store
                        .schedule_reconcile(
                            stream.stream_id,
                            stream.reconcile_scheduled_at,
                            now,
                            fell_due,
                        )
                        .await
                    {
                        Ok(true) => engine.wake.notify_waiters(),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "scheduling a reconcile failed"),
                    }
                }
                let due: Vec<_> = streams
                    .iter()
                    .filter(|s| due(s) <= now)
                    .map(|s| (s.stream_id, s.scheduled_at))
                    .collect();
                // Idle workers are woken as the first jobs are queued, not after the last.
                for due in due.chunks(WAKE_EVERY) {
                    match engine.store.enqueue_scheduled(due, now).await {
                        Ok(0) => {}
                        Ok(_) => engine.wake.notify_waiters(),
                        Err(e) => tracing::warn!(error = %e, "scheduling jobs failed"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading schedules failed"),
        }
        queue_waiting_children(&engine).await;
    }
}

/// Queues a job for each child stream whose queue holds parents and that has no job.
async fn queue_waiting_children(engine: &Engine) {
    let waiting = match engine.store.waiting_children().await {
        Ok(waiting) => waiting,
        Err(e) => {
            tracing::warn!(error = %e, "reading child streams' queues failed");
            return;
        }
    };
    let now = Utc::now();
    for child in waiting.iter().filter(|c| child_due(c) <= now) {
        match engine.store.queue_child_job(child.stream_id).await {
            Ok(true) => engine.wake.notify_waiters(),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "queueing a child stream's job failed"),
        }
    }
}

/// When a child stream with queued parents gets its next job: at once, or while its jobs
/// keep failing, 2^failures seconds (at most an hour) after the last one ended.
fn child_due(child: &WaitingChild) -> DateTime<Utc> {
    match (child.failures, child.finished_at) {
        (0, _) | (_, None) => DateTime::<Utc>::MIN_UTC,
        (failures, Some(at)) => {
            at + (TimeDelta::seconds(1) * 2i32.saturating_pow(failures.min(20))).min(MAX_BACKOFF)
        }
    }
}

/// When a stream is next due: at once if it was never scheduled; else its next slot,
/// pushed back exponentially by consecutive failures.
fn due(stream: &Scheduled) -> DateTime<Utc> {
    let Some(last) = stream.scheduled_at else {
        return DateTime::<Utc>::MIN_UTC;
    };
    let doubling = 2i32.saturating_pow(stream.failures.min(20));
    match &stream.schedule.clock {
        Clock::EverySeconds(every) => {
            let every = TimeDelta::seconds(i64::from(every.get()));
            let delay = (every * doubling).min(MAX_BACKOFF.max(every));
            last + delay
        }
        Clock::Cron(expr) => {
            let backoff = if stream.failures == 0 {
                TimeDelta::zero()
            } else {
                (TimeDelta::seconds(30) * doubling).min(MAX_BACKOFF)
            };
            expr.schedule()
                .and_then(|s| s.after(&(last + backoff)).next())
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        }
    }
}

/// When a reconcile falls due after the one that fell due at `last` (its clock starts
/// when the scheduler first sees it, so a new stream's first reconcile comes one period
/// after its first incremental job, not beside it). Failures do not push reconciles back:
/// they are what repairs a stream.
fn next_slot(clock: &Clock, last: DateTime<Utc>) -> DateTime<Utc> {
    match clock {
        Clock::EverySeconds(every) => last + TimeDelta::seconds(i64::from(every.get())),
        Clock::Cron(expr) => expr
            .schedule()
            .and_then(|s| s.after(&last).next())
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(schedule: &str, at: Option<DateTime<Utc>>, failures: u32) -> Scheduled {
        Scheduled {
            stream_id: 1,
            schedule: Arc::new(serde_json::from_str(schedule).unwrap()),
            scheduled_at: at,
            failures,
            reconcile_scheduled_at: None,
            reconcile_waiting: false,
        }
    }

    #[test]
    fn intervals_back_off_while_failing() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let every = r#"{"every_seconds": 60}"#;
        assert!(due(&stream(every, None, 0)) < t);
        assert_eq!(due(&stream(every, Some(t), 0)), t + TimeDelta::seconds(60));
        assert_eq!(due(&stream(every, Some(t), 3)), t + TimeDelta::seconds(480));
        assert_eq!(due(&stream(every, Some(t), 30)), t + MAX_BACKOFF);
        let daily = r#"{"every_seconds": 86400}"#;
        assert_eq!(due(&stream(daily, Some(t), 5)), t + TimeDelta::days(1));
    }

    #[test]
    fn cron_slots_follow_the_expression() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap(); // 08:00:00 UTC
        let cron = r#"{"cron": "0 */15 * * * *"}"#;
        assert_eq!(due(&stream(cron, Some(t), 0)), t + TimeDelta::minutes(15));
        // Failing: at least 30 s · 2^f later, then the next slot.
        assert_eq!(due(&stream(cron, Some(t), 6)), t + TimeDelta::minutes(45));
    }

    #[test]
    fn failing_child_streams_back_off() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let child = |failures, finished_at| WaitingChild {
            stream_id: 1,
            failures,
            finished_at,
        };
        assert!(child_due(&child(0, Some(t))) < t);
        assert_eq!(child_due(&child(3, Some(t))), t + TimeDelta::seconds(8));
        assert_eq!(child_due(&child(30, Some(t))), t + MAX_BACKOFF);
    }

    #[test]
    fn reconciles_keep_their_own_clock() {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap(); // 08:00:00 UTC
        let every: Clock = serde_json::from_str(r#"{"every_seconds": 3600}"#).unwrap();
        assert_eq!(next_slot(&every, t), t + TimeDelta::hours(1));
        let nightly: Clock = serde_json::from_str(r#"{"cron": "0 30 2 * * *"}"#).unwrap();
        assert_eq!(
            next_slot(&nightly, t),
            t + TimeDelta::hours(18) + TimeDelta::minutes(30)
        );
        // The incremental clock of the same schedule is untouched by it.
        let both = r#"{"every_seconds": 60, "reconcile": {"every_seconds": 3600}}"#;
        assert_eq!(due(&stream(both, Some(t), 0)), t + TimeDelta::seconds(60));
    }
}
