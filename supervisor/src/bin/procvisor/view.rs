//! What people see: the live event view of `procvisor run`, the `status` table.

use std::io::{IsTerminal, Write};
use std::time::UNIX_EPOCH;

use procvisor::tree::{Event, EventKind};
use serde_json::Value;

/// Prints a fleet's events: compact coloured lines on an interactive terminal, structured
/// log records (tracing) otherwise.
pub(crate) struct EventPrinter {
    tty: bool,
}

impl EventPrinter {
    pub(crate) fn new() -> EventPrinter {
        EventPrinter {
            tty: std::io::stdout().is_terminal(),
        }
    }

    pub(crate) fn print(&mut self, e: &Event) {
        let path = match &e.child {
            Some(c) => format!("{}/{c}", e.supervisor),
            None => e.supervisor.clone(),
        };
        if self.tty {
            let secs = e
                .time
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
            let colour = match &e.kind {
                EventKind::Started { .. } | EventKind::Ready { .. } => "32", // green
                EventKind::Exited { exit, .. } if exit.requested => "2",     // dim
                EventKind::Exited { .. } | EventKind::StartFailed { .. } => "31", // red
                EventKind::Restarting { .. } => "33",                        // yellow
                EventKind::GaveUp { .. } | EventKind::StopStuck { .. } => "1;31",
                _ => "0",
            };
            let text = e.to_string();
            let what = text.strip_prefix(&path).unwrap_or(&text).trim_start();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{h:02}:{m:02}:{s:02} UTC  \x1b[1m{path:<24}\x1b[0m \x1b[{colour}m{what}\x1b[0m"
            );
        } else {
            match &e.kind {
                EventKind::Exited { exit, .. } if !exit.requested => {
                    tracing::warn!(target: "procvisor::event", path = %path, "{e}")
                }
                EventKind::StartFailed { .. }
                | EventKind::GaveUp { .. }
                | EventKind::StopStuck { .. }
                | EventKind::LogFailed { .. } => {
                    tracing::error!(target: "procvisor::event", path = %path, "{e}")
                }
                _ => tracing::info!(target: "procvisor::event", path = %path, "{e}"),
            }
        }
    }
}

/// The `status` table from a status reply.
pub(crate) fn status_table(reply: &Value) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "STATE".to_owned(),
        "PID".to_owned(),
        "UPTIME".to_owned(),
        "RESTARTS".to_owned(),
        "LAST EXIT".to_owned(),
    ]];
    for p in reply["programs"].as_array().into_iter().flatten() {
        rows.push([
            p["name"].as_str().unwrap_or("?").to_owned(),
            p["state"].as_str().unwrap_or("?").to_owned(),
            p["pid"].as_i64().map_or("-".into(), |v| v.to_string()),
            p["uptime_secs"].as_f64().map_or("-".into(), human_duration),
            p["restarts"].as_u64().map_or("-".into(), |v| v.to_string()),
            p["last_exit"].as_str().unwrap_or("-").to_owned(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        for (i, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", r[i]));
        }
        out.push_str(&r[5]);
        out.push('\n');
    }
    out
}

/// `3s`, `4m12s`, `2h05m`, `3d04h`.
fn human_duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
        _ => format!("{}d{:02}h", s / 86400, (s / 3600) % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_table_aligns_its_columns() {
        let reply = serde_json::json!({"ok": true, "programs": [
            {"name": "web/api.0", "state": "running", "pid": 42, "uptime_secs": 75.2, "restarts": 1, "last_exit": "exit code 1"},
            {"name": "db", "state": "backoff", "pid": null, "uptime_secs": null, "restarts": 12, "last_exit": null},
        ]});
        let t = status_table(&reply);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("NAME       STATE    PID  UPTIME  RESTARTS  LAST EXIT"),
            "{t}"
        );
        assert!(
            lines[1].starts_with("web/api.0  running  42   1m15s   1         exit code 1"),
            "{t}"
        );
        assert!(
            lines[2].starts_with("db         backoff  -    -       12        -"),
            "{t}"
        );
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(human_duration(5.9), "5s");
        assert_eq!(human_duration(3600.0 * 2.0 + 300.0), "2h05m");
        assert_eq!(human_duration(86400.0 * 3.0 + 3600.0 * 4.0), "3d04h");
    }
}
