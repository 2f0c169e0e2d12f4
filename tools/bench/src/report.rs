//! The one table the benchmark prints, and the JSON it writes.

use std::fmt::Write;

use serde::Serialize;

use crate::RunArgs;
use crate::phases::Results;

#[derive(Serialize)]
pub struct Report {
    pub date: String,
    pub machine: Machine,
    pub command: String,
    pub records: usize,
    /// By database name.
    pub results: Vec<Named>,
}

#[derive(Serialize)]
pub struct Named {
    pub database: &'static str,
    #[serde(flatten)]
    pub results: Results,
}

#[derive(Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_gb: f64,
    /// `/proc/loadavg` when the run started and when it ended: other work on the machine
    /// shows here.
    pub load_start: String,
    pub load_end: String,
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Machine {
    fn this(load_start: String) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kb: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            memory_gb: (memory_kb / 1024.0 / 1024.0).round(),
            load_start,
            load_end: load_average(),
        }
    }
}

impl Report {
    pub fn new(args: &RunArgs, load_start: String, results: Vec<(&'static str, Results)>) -> Self {
        let mut command = String::from("cargo run --release -p tidemark-bench --");
        for arg in std::env::args().skip(1) {
            command.push(' ');
            command.push_str(&arg);
        }
        Report {
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            machine: Machine::this(load_start),
            command,
            records: args.records,
            results: results
                .into_iter()
                .map(|(database, results)| Named { database, results })
                .collect(),
        }
    }

    /// The table: one row per figure, one column per database, then the target.
    pub fn table(&self) -> String {
        type Cell = fn(&Results) -> String;
        let rows: &[(&str, Cell, &str)] = &[
            (
                "full sync: records/s",
                |r| rate(r.full.records_per_second),
                "≥ 100,000 (sqlite)",
            ),
            (
                "full sync: seconds",
                |r| format!("{:.1}", r.full.seconds),
                "",
            ),
            (
                "full sync: upstream requests",
                |r| r.full.requests.to_string(),
                "",
            ),
            (
                "full sync: gateway CPU seconds",
                |r| format!("{:.1}", r.full.gateway_cpu_seconds),
                "",
            ),
            (
                "full sync: gateway peak RSS MB",
                |r| format!("{:.0}", r.full.gateway_peak_rss_mb),
                "≤ 200, flat in N",
            ),
            (
                "full sync: commits (records per commit)",
                |r| format!("{} ({:.0})", r.full.commits, r.full.records_per_commit),
                "",
            ),
            (
                "reconcile (all seen): seconds",
                |r| format!("{:.1}", r.reconcile.seconds),
                "",
            ),
            (
                "reconcile: gateway CPU seconds",
                |r| format!("{:.1}", r.reconcile.gateway_cpu_seconds),
                "",
            ),
            (
                "reconcile: gateway peak RSS MB (before)",
                |r| {
                    format!(
                        "{:.0} ({:.0})",
                        r.reconcile.gateway_peak_rss_mb, r.reconcile.gateway_start_rss_mb
                    )
                },
                "flat in N",
            ),
            (
                "limit: sandbox raw serve, records/s",
                |r| rate(r.serve_limit.records_per_second),
                "",
            ),
            (
                "limit: raw insert, 1 page per tx, records/s",
                |r| rate(r.insert_limit.records_per_second),
                "",
            ),
            (
                "limit: raw insert, sync's pages per tx, records/s",
                |r| {
                    format!(
                        "{} ({} pages)",
                        rate(r.insert_limit_grouped.records_per_second),
                        r.insert_limit_grouped.pages_per_transaction
                    )
                },
                "",
            ),
            (
                "full sync / raw serve",
                |r| ratio(r.full.records_per_second, r.serve_limit.records_per_second),
                "",
            ),
            (
                "full sync / raw insert (1 page per tx)",
                |r| ratio(r.full.records_per_second, r.insert_limit.records_per_second),
                "",
            ),
            (
                "full sync / raw insert (same tx sizes)",
                |r| {
                    ratio(
                        r.full.records_per_second,
                        r.insert_limit_grouped.records_per_second,
                    )
                },
                "≥ 85% sqlite, ≥ 80% pg",
            ),
            (
                "incremental (1% changed): seconds",
                |r| {
                    format!(
                        "{:.2} (job {:.2})",
                        r.incremental.wall_seconds, r.incremental.job_seconds
                    )
                },
                "≤ 1",
            ),
            (
                "incremental: requests (records read)",
                |r| {
                    format!(
                        "{} ({})",
                        r.incremental.requests, r.incremental.records_seen
                    )
                },
                "",
            ),
            (
                "incremental: target requests",
                |r| r.incremental.target_requests.to_string(),
                "ceil(changed/1000)+1",
            ),
            (
                "feed read (limit=1000): changes/s",
                |r| rate(r.feed.changes_per_second),
                "≥ 300,000",
            ),
            (
                "long-poll wake p50 / p99 ms",
                |r| format!("{:.1} / {:.1}", r.wake.commit_p50_ms, r.wake.commit_p99_ms),
                "p99 ≤ 10",
            ),
            (
                "  (sync request → response p50 / p99 ms)",
                |r| {
                    format!(
                        "{:.1} / {:.1}",
                        r.wake.trigger_p50_ms, r.wake.trigger_p99_ms
                    )
                },
                "",
            ),
            (
                "idle long-pollers: count",
                |r| r.idle.pollers.to_string(),
                "1,000",
            ),
            (
                "idle long-pollers: gateway CPU s per 10 s",
                |r| {
                    format!(
                        "{:.2}",
                        r.idle.gateway_cpu_seconds * 10.0 / r.idle.watched_seconds
                    )
                },
                "",
            ),
            (
                "idle long-pollers: gateway RSS MB (before)",
                |r| {
                    format!(
                        "{:.0} ({:.0})",
                        r.idle.gateway_rss_mb, r.idle.gateway_rss_before_mb
                    )
                },
                "",
            ),
            (
                "fan-out: consumers woken by one commit",
                |r| {
                    optional(&r.fanout, |f| {
                        format!("{} × {} commits", f.consumers, f.commits)
                    })
                },
                "1,000",
            ),
            (
                "fan-out: commit → last answer p50 / p99 ms",
                |r| {
                    optional(&r.fanout, |f| {
                        format!("{:.1} / {:.1}", f.last_p50_ms, f.last_p99_ms)
                    })
                },
                "≤ 100",
            ),
            (
                "  (each consumer p50 / p99 ms)",
                |r| {
                    optional(&r.fanout, |f| {
                        format!("{:.1} / {:.1}", f.each_p50_ms, f.each_p99_ms)
                    })
                },
                "",
            ),
            (
                "kill → takeover p50 / max ms (kills)",
                |r| {
                    optional(&r.takeover, |t| {
                        format!(
                            "{:.0} / {:.0} ({}{})",
                            t.p50_ms,
                            t.max_ms,
                            t.kills,
                            if t.standby {
                                ", standby up"
                            } else {
                                ", restart"
                            }
                        )
                    })
                },
                "",
            ),
            (
                "scheduled: sources (every s), watched s",
                |r| {
                    optional(&r.scheduled, |s| {
                        format!(
                            "{} ({}), {:.0}",
                            s.sources, s.every_seconds, s.watched_seconds
                        )
                    })
                },
                "10,000",
            ),
            (
                "scheduled: jobs started per second",
                |r| optional(&r.scheduled, |s| format!("{:.1}", s.jobs_per_second)),
                "",
            ),
            (
                "scheduled: gateway CPU, % of one core",
                |r| {
                    optional(&r.scheduled, |s| {
                        format!("{:.0}%", s.gateway_cpu_share * 100.0)
                    })
                },
                "≤ 10%",
            ),
            (
                "scheduled: due → start p50 / p99 ms",
                |r| {
                    optional(&r.scheduled, |s| {
                        format!("{:.0} / {:.0}", s.delay_p50_ms, s.delay_p99_ms)
                    })
                },
                "p99 ≤ 2000",
            ),
            (
                "scheduled: gateway RSS / peak MB",
                |r| {
                    optional(&r.scheduled, |s| {
                        format!("{:.0} / {:.0}", s.gateway_rss_mb, s.gateway_peak_rss_mb)
                    })
                },
                "≤ 200",
            ),
        ];
        let mut header = vec!["figure".to_owned()];
        header.extend(self.results.iter().map(|r| r.database.to_owned()));
        header.push("target".to_owned());
        let mut lines = vec![header];
        for (name, cell, target) in rows {
            let mut line = vec![(*name).to_owned()];
            line.extend(self.results.iter().map(|r| cell(&r.results)));
            line.push((*target).to_owned());
            lines.push(line);
        }
        let columns = lines[0].len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = format!(
            "tidemark benchmark, {} records, {} ({} cores, {}; load average {} at the start, {} at the end)\n{}\n\n",
            self.records,
            self.date,
            self.machine.cores,
            self.machine.cpu,
            self.machine.load_start,
            self.machine.load_end,
            self.command
        );
        for (i, line) in lines.iter().enumerate() {
            let cells: Vec<String> = line
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
            if i == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
            }
        }
        out
    }
}

/// A rate with thousands separators.
fn rate(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A phase's cell, or "—" when the phase did not run.
fn optional<T>(phase: &Option<T>, cell: impl Fn(&T) -> String) -> String {
    phase.as_ref().map_or_else(|| "—".to_owned(), cell)
}

fn ratio(value: f64, of: f64) -> String {
    format!("{:.0}%", value / of * 100.0)
}
