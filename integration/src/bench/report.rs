//! Figures, their statistics, and the two output formats (table and JSON lines).

/// All measured repetitions of one (bench, impl, method).
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    /// `start_join`, `start_100`, `idle_rss`, `idle_uss`, `fork_waitpid`, `fork_exec_self`,
    /// `fork_exec_true`, the `connection_*` benches and their `socketpair_*` floors, the queue benches,
    /// `actor_request_rtt`, the sync benches and their `pthread_mutex_*` / `futex_pingpong`
    /// floors, the manager benches and their `unix_rtt_*` floors, the supervision rows,
    /// the CLI rows and their `spawn_*` floors.
    pub(crate) bench: String,
    /// `procvisor`, `cpython` or `os`.
    pub(crate) imp: &'static str,
    /// `forkserver`, `spawn`, `fork`, or `-` for the OS floor.
    pub(crate) method: String,
    /// `ms`, `KiB`, `us`, `ns` (lower is better), or `msgs/s`, `items/s`, `GB/s` (higher is
    /// better).
    pub(crate) unit: String,
    /// One value per repetition.
    pub(crate) values: Vec<f64>,
}

/// Median, minimum and maximum of a figure's repetitions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Figure {
    /// The statistics of the repetitions; `None` when there are none.
    pub(crate) fn stats(&self) -> Option<Stats> {
        if self.values.is_empty() {
            return None;
        }
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stats {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// The figure of (bench, impl, method), if it was measured.
pub(crate) fn find<'a>(
    figs: &'a [Figure],
    bench: &str,
    imp: &str,
    method: &str,
) -> Option<&'a Figure> {
    figs.iter()
        .find(|f| f.bench == bench && f.imp == imp && f.method == method)
}

/// A number for JSON: at most 4 decimals, no trailing zeros.
fn json_num(v: f64) -> String {
    let r = (v * 1e4).round() / 1e4;
    format!("{r}")
}

/// One JSON object per line per figure.
pub(crate) fn print_json(figs: &[Figure]) {
    for f in figs {
        let Some(s) = f.stats() else { continue };
        println!(
            "{{\"bench\": \"{}\", \"impl\": \"{}\", \"method\": \"{}\", \"value\": {}, \
             \"min\": {}, \"max\": {}, \"unit\": \"{}\", \"reps\": {}}}",
            f.bench,
            f.imp,
            f.method,
            json_num(s.median),
            json_num(s.min),
            json_num(s.max),
            f.unit,
            f.values.len()
        );
    }
}

/// Whether a larger value of `unit` is the better one (a throughput).
fn higher_is_better(unit: &str) -> bool {
    matches!(unit, "msgs/s" | "items/s" | "GB/s")
}

/// `v` rounded to an integer, with a comma every three digits.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

fn fmt_value(v: f64, unit: &str) -> String {
    if unit == "msgs/s" || unit == "items/s" {
        thousands(v)
    } else if unit == "KiB" {
        format!("{v:.0}")
    } else if v < 10.0 {
        format!("{v:.3}")
    } else if v < 100.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// The floor figure a (bench, method) row is compared with, if any, as (bench, impl,
/// method): an OS figure, or for `actor_request_rtt` procvisor's own Connection round trip.
fn floor_of(bench: &str, method: &str) -> Option<(&'static str, &'static str, &'static str)> {
    let os = |name| Some((name, "os", "-"));
    match (bench, method) {
        ("start_join", "forkserver" | "fork") => os("fork_waitpid"),
        ("start_join", "spawn") => os("fork_exec_self"),
        ("connection_rtt_small", _) => os("socketpair_rtt"),
        ("connection_oneway_small", _) => os("socketpair_write_small"),
        ("connection_oneway_1mib", _) => os("socketpair_write_1mib"),
        ("connection_oneway_small_buffered", _) => os("socketpair_write_batched"),
        ("actor_request_rtt" | "actor_request_rtt_worker", _) => {
            Some(("connection_rtt_small", "procvisor", "forkserver"))
        }
        ("lock_uncontended", _) => os("pthread_mutex_pair"),
        ("value_contended_2x200k", _) => os("pthread_mutex_2x200k"),
        ("event_pingpong", _) => os("futex_pingpong"),
        ("manager_dict_set", _) => os("unix_rtt_dict_set"),
        ("manager_dict_get", _) => os("unix_rtt_dict_get"),
        ("pool_apply_rtt", _) => os("pool_pipe_rtt"),
        _ => None,
    }
}

/// Whether `bench` is one of the sync rows (`integration/src/bench/sync.rs` and
/// `manager.rs`), read against targets such as 1.3× and 1.5× the floor.
fn sync_row(bench: &str) -> bool {
    matches!(
        bench,
        "lock_uncontended"
            | "value_contended_2x200k"
            | "event_pingpong"
            | "manager_dict_set"
            | "manager_dict_get"
    )
}

/// Rows of the table, in bench order then method order.
pub(crate) const TABLE_BENCHES: [&str; 23] = [
    "start_join",
    "start_100",
    "idle_rss",
    "idle_uss",
    "connection_rtt_small",
    "connection_oneway_small",
    "connection_oneway_small_buffered",
    "connection_oneway_1mib",
    "actor_request_rtt",
    "actor_request_rtt_worker",
    "queue_1p1c_small",
    "queue_2p2c_small",
    "joinable_put_taskdone_join",
    "lock_uncontended",
    "value_contended_2x200k",
    "event_pingpong",
    "manager_dict_set",
    "manager_dict_get",
    "pool_map_1M_default_chunksize",
    "pool_map_chunksize1",
    "pool_imap_unordered_chunksize1",
    "pool_apply_rtt",
    "pool_create_close_join",
];
/// The start methods, in table order.
pub(crate) const METHODS: [&str; 3] = ["forkserver", "spawn", "fork"];

/// The comparison table, as Markdown (readable in a terminal too); empty when none of its
/// rows ran.
pub(crate) fn table(figs: &[Figure]) -> String {
    let header = [
        "bench",
        "method",
        "procvisor (median [min–max])",
        "cpython (median)",
        "os floor",
        "procvisor/cpython",
        "procvisor/floor",
    ];
    let mut rows: Vec<[String; 7]> = Vec::new();
    for bench in TABLE_BENCHES {
        for method in METHODS {
            let pv = find(figs, bench, "procvisor", method);
            let cp = find(figs, bench, "cpython", method);
            if pv.is_none() && cp.is_none() {
                continue;
            }
            let unit = pv.or(cp).map(|f| f.unit.as_str()).unwrap_or("ms");
            let pvs = pv.and_then(Figure::stats);
            let cps = cp.and_then(Figure::stats);
            let floor = floor_of(bench, method)
                .and_then(|(name, imp, m)| find(figs, name, imp, m))
                .and_then(|f| f.stats().map(|s| (f.bench.as_str(), s)));

            let pv_cell = match pvs {
                Some(s) => format!(
                    "{} {unit} [{}–{}]",
                    fmt_value(s.median, unit),
                    fmt_value(s.min, unit),
                    fmt_value(s.max, unit)
                ),
                None => "-".to_owned(),
            };
            let cp_cell = match cps {
                Some(s) => format!("{} {unit}", fmt_value(s.median, unit)),
                None => "-".to_owned(),
            };
            let floor_cell = match floor {
                Some((name, s)) => format!("{} {unit} ({name})", fmt_value(s.median, unit)),
                None => "-".to_owned(),
            };
            // Ratios: "N× faster" is how many times procvisor's figure is the better one
            // (cpython/procvisor for a time or a size, procvisor/cpython for a
            // throughput); procvisor/floor is the plain ratio of the medians either way.
            let vs_cp = match (pvs, cps) {
                (Some(p), Some(c)) if p.median > 0.0 && c.median > 0.0 => {
                    let r = if higher_is_better(unit) {
                        p.median / c.median
                    } else {
                        c.median / p.median
                    };
                    let (better, worse) = if unit == "KiB" {
                        ("smaller", "larger")
                    } else {
                        ("faster", "slower")
                    };
                    if r >= 1.0 {
                        format!("{r:.1}× {better}")
                    } else {
                        format!("{:.1}× {worse}", 1.0 / r)
                    }
                }
                _ => "-".to_owned(),
            };
            let vs_floor = match (pvs, floor) {
                // The connection, actor and sync rows are read against targets such as
                // 1.3×, 0.8× and 2×.
                (Some(p), Some((_, f)))
                    if f.median > 0.0
                        && (bench.starts_with("connection_")
                            || bench.starts_with("actor_")
                            || bench == "pool_apply_rtt"
                            || sync_row(bench)) =>
                {
                    format!("{:.2}×", p.median / f.median)
                }
                (Some(p), Some((_, f))) if f.median > 0.0 => {
                    format!("{:.1}×", p.median / f.median)
                }
                _ => "-".to_owned(),
            };
            rows.push([
                bench.to_owned(),
                method.to_owned(),
                pv_cell,
                cp_cell,
                floor_cell,
                vs_cp,
                vs_floor,
            ]);
        }
    }

    if rows.is_empty() {
        return String::new();
    }
    markdown(&header, &rows)
}

/// A Markdown table of `N` columns, each as wide as its widest cell.
fn markdown<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut s = String::from("|");
        for (cell, w) in cells.iter().zip(widths) {
            let pad = w - cell.chars().count();
            s.push(' ');
            s.push_str(cell);
            s.push_str(&" ".repeat(pad));
            s.push_str(" |");
        }
        s.push('\n');
        s
    };
    let mut out = line(&header.map(str::to_owned));
    out.push_str(&line(&widths.map(|w| "-".repeat(w))));
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// A row of a table read against targets rather than CPython (the supervision and CLI
/// rows): the bench, the OS floor beside it, and its target.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TargetRow {
    /// The procvisor figure of the row.
    pub(crate) bench: &'static str,
    /// The OS figure it is read against, if any.
    pub(crate) floor: Option<&'static str>,
    /// The target, as the issue states it (`-` for none).
    pub(crate) target: &'static str,
}

/// The rows of `rows` that ran, as a Markdown table beside their floors and targets, the
/// first column headed `title`; empty when none ran.
pub(crate) fn target_table(title: &str, figs: &[Figure], rows: &[TargetRow]) -> String {
    let stats = |bench: &str, imp: &str| {
        figs.iter()
            .find(|f| f.bench == bench && f.imp == imp)
            .and_then(|f| f.stats().map(|s| (f, s)))
    };
    let header = [
        title,
        "method",
        "procvisor (median [min–max])",
        "os floor",
        "procvisor/floor",
        "target",
    ];
    let mut cells = Vec::new();
    for row in rows {
        let Some((f, s)) = stats(row.bench, "procvisor") else {
            continue;
        };
        let u = &f.unit;
        let floor = row
            .floor
            .and_then(|b| stats(b, "os").map(|(_, fs)| (b, fs)));
        cells.push([
            row.bench.to_owned(),
            f.method.clone(),
            format!(
                "{} {u} [{}–{}]",
                fmt_value(s.median, u),
                fmt_value(s.min, u),
                fmt_value(s.max, u)
            ),
            floor.map_or("-".to_owned(), |(b, fs)| {
                format!("{} {u} ({b})", fmt_value(fs.median, u))
            }),
            floor
                .filter(|(_, fs)| fs.median > 0.0)
                .map_or("-".to_owned(), |(_, fs)| {
                    format!("{:.1}×", s.median / fs.median)
                }),
            row.target.to_owned(),
        ]);
    }
    if cells.is_empty() {
        return String::new();
    }
    markdown(&header, &cells)
}

/// The OS floor figures, one line each.
pub(crate) fn floors(figs: &[Figure]) -> String {
    let mut out = String::new();
    for f in figs.iter().filter(|f| f.imp == "os") {
        if let Some(s) = f.stats() {
            out.push_str(&format!(
                "  {:<22} {} {}{} [{}–{}], {} reps\n",
                f.bench,
                fmt_value(s.median, &f.unit),
                f.unit,
                match f.unit.as_str() {
                    "ms" => " per op",
                    "us" => " per round trip",
                    "ns" => " per op",
                    _ => "",
                },
                fmt_value(s.min, &f.unit),
                fmt_value(s.max, &f.unit),
                f.values.len()
            ));
        }
    }
    out
}
