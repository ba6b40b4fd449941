//! The fleet file: what `procvisor run` supervises, read from TOML.
//!
//! ```toml
//! [fleet]                       # every key optional
//! name = "demo"                 # the root supervisor's name
//! socket = "/tmp/demo.sock"     # the control socket
//! log_dir = "logs"              # default home of programs' log files
//! strategy = "one_for_one"      # of the root supervisor
//! max_restarts = 5              # restart intensity: at most 5 restarts...
//! period = "10s"                # ...in 10 s
//!
//! [[group]]                     # a nested supervisor
//! name = "web"
//! strategy = "rest_for_one"
//!
//! [[program]]
//! name = "api"
//! command = "/usr/bin/api"      # "$PROCVISOR" is this procvisor binary
//! args = ["--port", "8080"]
//! group = "web"                 # default: the root
//! ```
//!
//! Every error names the file, the line and the column, and the key or value at fault.
//! Unknown keys are errors (a typo must not silently mean "default").

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use procvisor::restart::{Backoff, Intensity, RestartType, Strategy};
use procvisor::tree::{ChildSpec, Command, LogFile, Output, Readiness, Shutdown, Spec};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;

/// A fleet file that could not be used: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    pub(crate) file: PathBuf,
    /// 1-based line and column, when the error has a place.
    pub(crate) at: Option<(usize, usize)>,
    pub(crate) message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A duration: `"250ms"`, `"5s"`, `"2m"`, `"1h"`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dur(pub(crate) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Float(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(s) => Ok(Dur(Duration::from_secs(s))),
            Raw::Float(s) if (0.0..1e12).contains(&s) => {
                Ok(Dur(Duration::from_secs_f64(s)))
            }
            Raw::Float(s) => Err(de::Error::custom(format!("invalid duration {s}"))),
            Raw::Text(t) => parse_duration(&t).map(Dur).ok_or_else(|| {
                de::Error::custom(format!(
                    "invalid duration {t:?}: expected a number with a unit (ms, s, m, h), as \"500ms\" or \"5s\""
                ))
            }),
        }
    }
}

fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs < 1e12).then(|| Duration::from_secs_f64(secs))
}

/// Looks `text` up in `table`; an unknown one is an error listing what is known.
fn by_name<T: Copy>(what: &str, text: &str, table: &[(&str, T)]) -> Result<T, String> {
    if let Some((_, v)) = table.iter().find(|(name, _)| *name == text) {
        return Ok(*v);
    }
    let names: Vec<String> = table.iter().map(|(n, _)| format!("{n:?}")).collect();
    Err(format!(
        "unknown {what} {text:?}: expected {}",
        names.join(", ")
    ))
}

/// A strategy by its OTP name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StrategyName(pub(crate) Strategy);

impl<'de> Deserialize<'de> for StrategyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const TABLE: [(&str, Strategy); 3] = [
            ("one_for_one", Strategy::OneForOne),
            ("one_for_all", Strategy::OneForAll),
            ("rest_for_one", Strategy::RestForOne),
        ];
        let s = String::deserialize(d)?;
        by_name("strategy", &s, &TABLE)
            .map(StrategyName)
            .map_err(de::Error::custom)
    }
}

/// A restart type by its OTP name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RestartName(pub(crate) RestartType);

impl<'de> Deserialize<'de> for RestartName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const TABLE: [(&str, RestartType); 3] = [
            ("permanent", RestartType::Permanent),
            ("transient", RestartType::Transient),
            ("temporary", RestartType::Temporary),
        ];
        let s = String::deserialize(d)?;
        by_name("restart type", &s, &TABLE)
            .map(RestartName)
            .map_err(de::Error::custom)
    }
}

/// A signal by name, with or without `SIG`: `"TERM"`, `"SIGINT"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SignalName(pub(crate) Signal);

impl<'de> Deserialize<'de> for SignalName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let full = if s.starts_with("SIG") {
            s.clone()
        } else {
            format!("SIG{s}")
        };
        full.parse::<Signal>()
            .map(SignalName)
            .map_err(|_| de::Error::custom(format!("unknown signal {s:?}")))
    }
}

/// Where a stream goes: `"inherit"`, `"null"`, a path, or `{ path, max_bytes, keep }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OutputSpec {
    Inherit,
    Null,
    File {
        path: PathBuf,
        max_bytes: Option<u64>,
        keep: Option<u32>,
    },
}

impl<'de> Deserialize<'de> for OutputSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            path: PathBuf,
            max_bytes: Option<u64>,
            keep: Option<u32>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Table(Table),
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            de::Error::custom(
                "expected \"inherit\", \"null\", a file path, or { path = ..., max_bytes = ..., keep = ... }",
            )
        })?;
        Ok(match raw {
            Raw::Text(t) if t == "inherit" => OutputSpec::Inherit,
            Raw::Text(t) if t == "null" => OutputSpec::Null,
            Raw::Text(t) if t.is_empty() => return Err(de::Error::custom("empty log path")),
            Raw::Text(t) => OutputSpec::File {
                path: t.into(),
                max_bytes: None,
                keep: None,
            },
            Raw::Table(t) => OutputSpec::File {
                path: t.path,
                max_bytes: t.max_bytes,
                keep: t.keep,
            },
        })
    }
}

/// How a program tells it is ready: `"started"`, `"notify"`, or `{ tcp = "host:port" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadySpec(pub(crate) Readiness);

impl<'de> Deserialize<'de> for ReadySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Tcp {
            tcp: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Tcp(Tcp),
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            de::Error::custom("expected \"started\", \"notify\", or { tcp = \"127.0.0.1:8080\" }")
        })?;
        match raw {
            Raw::Text(t) => by_name(
                "readiness",
                &t,
                &[
                    ("started", Readiness::Started),
                    ("notify", Readiness::Notify),
                ],
            )
            .map(ReadySpec)
            .map_err(|e| de::Error::custom(format!("{e}, or {{ tcp = \"host:port\" }}"))),
            Raw::Tcp(t) => t
                .tcp
                .parse::<SocketAddr>()
                .map(|a| ReadySpec(Readiness::Tcp(a)))
                .map_err(|_| {
                    de::Error::custom(format!("invalid TCP address {:?}: expected ip:port", t.tcp))
                }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffSpec {
    initial: Option<Dur>,
    factor: Option<f64>,
    cap: Option<Dur>,
    jitter: Option<f64>,
    reset_after: Option<Dur>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetSection {
    name: Option<Spanned<String>>,
    socket: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    strategy: Option<StrategyName>,
    max_restarts: Option<u32>,
    period: Option<Dur>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSection {
    name: Spanned<String>,
    strategy: Option<StrategyName>,
    max_restarts: Option<u32>,
    period: Option<Dur>,
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgramSection {
    name: Spanned<String>,
    command: Spanned<String>,
    #[serde(default)]
    args: Vec<String>,
    group: Option<Spanned<String>>,
    numprocs: Option<Spanned<usize>>,
    restart: Option<RestartName>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    start_window: Option<Dur>,
    backoff: Option<BackoffSpec>,
    stop_signal: Option<SignalName>,
    stop_grace: Option<Dur>,
    stdout: Option<OutputSpec>,
    stderr: Option<OutputSpec>,
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
    ready: Option<ReadySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    #[serde(default)]
    fleet: FleetSection,
    #[serde(default)]
    group: Vec<GroupSection>,
    #[serde(default)]
    program: Vec<ProgramSection>,
}

/// A program as it will run: everything resolved, comparable for reloads.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Program {
    pub(crate) name: String,
    /// The nested supervisor it runs under; `None`: the root.
    pub(crate) group: Option<String>,
    /// `Some(n)`: a group of replicas `name.0 .. name.{n-1}`.
    pub(crate) numprocs: Option<usize>,
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) restart: RestartType,
    pub(crate) backoff: Backoff,
    pub(crate) shutdown: Shutdown,
    pub(crate) stdout: Output,
    pub(crate) stderr: Output,
    pub(crate) ready: Readiness,
}

impl Program {
    /// The child spec the tree runs.
    pub(crate) fn child_spec(&self) -> ChildSpec {
        let mut cmd = Command::new(&self.program)
            .args(&self.args)
            .stdout(self.stdout.clone())
            .stderr(self.stderr.clone());
        for (k, v) in &self.env {
            cmd = cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd = cmd.cwd(dir);
        }
        let mut spec = ChildSpec::command(self.name.clone(), cmd)
            .restart(self.restart)
            .backoff(self.backoff)
            .shutdown(self.shutdown)
            .ready(self.ready);
        if let Some(n) = self.numprocs {
            spec = spec.replicas(n);
        }
        spec
    }

    /// The path of its supervisor from the root: `""` or the group's name.
    pub(crate) fn supervisor_path(&self) -> &str {
        self.group.as_deref().unwrap_or("")
    }

    /// Its path in the tree: `name` or `group/name`.
    pub(crate) fn path(&self) -> String {
        match &self.group {
            Some(g) => format!("{g}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// Its log file for `stream` ("stdout" or "stderr"), if it has one.
    pub(crate) fn log_file(&self, stream: &str) -> Option<&LogFile> {
        match (stream, &self.stdout, &self.stderr) {
            ("stdout", Output::File(f), _) | ("stderr", _, Output::File(f)) => Some(f),
            _ => None,
        }
    }
}

/// A nested supervisor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) strategy: Strategy,
    pub(crate) intensity: Intensity,
}

/// One child of the root, in start order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RootChild {
    Program(String),
    Group(String),
}

/// A checked fleet file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fleet {
    pub(crate) file: PathBuf,
    pub(crate) name: String,
    pub(crate) socket: Option<PathBuf>,
    pub(crate) strategy: Strategy,
    pub(crate) intensity: Intensity,
    pub(crate) groups: Vec<Group>,
    /// Every program, in start order within its supervisor.
    pub(crate) programs: Vec<Program>,
    /// The root's children in start order.
    pub(crate) root: Vec<RootChild>,
}

impl Fleet {
    /// Reads and checks a fleet file.
    pub(crate) fn load(file: &Path) -> Result<Fleet, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_owned(),
            at: None,
            message: format!("cannot read: {e}"),
        })?;
        Fleet::parse(file, &text)
    }

    /// Checks the text of a fleet file; `file` names it in errors and anchors relative paths.
    pub(crate) fn parse(file: &Path, text: &str) -> Result<Fleet, ConfigError> {
        let err = |span: Option<Range<usize>>, message: String| ConfigError {
            file: file.to_owned(),
            at: span.map(|s| line_col(text, s.start)),
            message,
        };
        let raw: FleetFile =
            toml::from_str(text).map_err(|e| err(e.span(), e.message().to_owned()))?;
        let base = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let anchor = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };

        let fleet_name = match &raw.fleet.name {
            Some(n) => {
                check_name(n).map_err(|m| err(Some(n.span()), m))?;
                n.get_ref().clone()
            }
            None => "fleet".to_owned(),
        };
        let intensity = |max: Option<u32>, period: Option<Dur>| {
            let d = Intensity::default();
            Intensity {
                max_restarts: max.unwrap_or(d.max_restarts),
                period: period.map_or(d.period, |p| p.0),
            }
        };
        let root_intensity = intensity(raw.fleet.max_restarts, raw.fleet.period);
        root_intensity
            .validate()
            .map_err(|e| err(None, format!("[fleet]: {e}")))?;

        // Names: programs and groups share one namespace, since both can be targets.
        let mut seen: HashSet<&str> = HashSet::new();
        for n in raw
            .group
            .iter()
            .map(|g| &g.name)
            .chain(raw.program.iter().map(|p| &p.name))
        {
            check_name(n).map_err(|m| err(Some(n.span()), m))?;
            if n.get_ref() == "all" {
                return Err(err(
                    Some(n.span()),
                    "\"all\" is reserved (it names every program)".into(),
                ));
            }
            if !seen.insert(n.get_ref()) {
                return Err(err(
                    Some(n.span()),
                    format!("the name {:?} is used twice", n.get_ref()),
                ));
            }
        }
        let group_names: HashSet<&str> = raw
            .group
            .iter()
            .map(|g| g.name.get_ref().as_str())
            .collect();

        let mut groups = Vec::new();
        for g in &raw.group {
            let i = intensity(g.max_restarts, g.period);
            i.validate().map_err(|e| {
                err(
                    Some(g.name.span()),
                    format!("group {:?}: {e}", g.name.get_ref()),
                )
            })?;
            groups.push(Group {
                name: g.name.get_ref().clone(),
                strategy: g.strategy.map_or(Strategy::OneForOne, |s| s.0),
                intensity: i,
            });
        }

        let log_dir = raw.fleet.log_dir.as_deref().map(anchor);
        let mut programs = Vec::new();
        for p in &raw.program {
            let name = p.name.get_ref().clone();
            let group = match &p.group {
                Some(g) if group_names.contains(g.get_ref().as_str()) => Some(g.get_ref().clone()),
                Some(g) => {
                    return Err(err(
                        Some(g.span()),
                        format!("no group named {:?}", g.get_ref()),
                    ));
                }
                None => None,
            };
            if let Some(n) = &p.numprocs
                && *n.get_ref() == 0
            {
                return Err(err(Some(n.span()), "numprocs must be at least 1".into()));
            }
            if p.command.get_ref().is_empty() {
                return Err(err(Some(p.command.span()), "empty command".into()));
            }
            let program = if p.command.get_ref() == "$PROCVISOR" {
                std::env::current_exe().map_err(|e| {
                    err(
                        Some(p.command.span()),
                        format!("cannot find this procvisor binary: {e}"),
                    )
                })?
            } else {
                PathBuf::from(p.command.get_ref())
            };
            let mut backoff = Backoff::default();
            if let Some(b) = &p.backoff {
                backoff.initial = b.initial.map_or(backoff.initial, |d| d.0);
                backoff.factor = b.factor.unwrap_or(backoff.factor);
                backoff.cap = b.cap.map_or(backoff.cap, |d| d.0);
                backoff.jitter = b.jitter.unwrap_or(backoff.jitter);
                backoff.reset_after = b.reset_after.map_or(backoff.reset_after, |d| d.0);
            }
            if let Some(w) = p.start_window {
                backoff.start_success = w.0;
            }
            backoff
                .validate()
                .map_err(|e| err(Some(p.name.span()), format!("program {name:?}: {e}")))?;
            let shutdown = match (p.stop_signal, p.stop_grace) {
                (_, Some(Dur(g))) if g.is_zero() => Shutdown::Kill,
                (signal, grace) => {
                    let Shutdown::Graceful {
                        signal: dsig,
                        grace: dgrace,
                    } = Shutdown::default()
                    else {
                        unreachable!("the default shutdown is graceful")
                    };
                    Shutdown::Graceful {
                        signal: signal.map_or(dsig, |s| s.0),
                        grace: grace.map_or(dgrace, |g| g.0),
                    }
                }
            };
            let output = |spec: &Option<OutputSpec>, stream: &str| match spec {
                Some(OutputSpec::Inherit) => Output::Inherit,
                Some(OutputSpec::Null) => Output::Null,
                Some(OutputSpec::File {
                    path,
                    max_bytes,
                    keep,
                }) => {
                    let path = match &log_dir {
                        Some(dir) if path.is_relative() => dir.join(path),
                        _ => anchor(path),
                    };
                    let mut log = LogFile::new(path);
                    if let Some(m) = max_bytes {
                        log = log.max_bytes(*m);
                    }
                    if let Some(k) = keep {
                        log = log.keep(*k);
                    }
                    Output::File(log)
                }
                None => match &log_dir {
                    Some(dir) => {
                        Output::File(LogFile::new(dir.join(format!("{name}.{stream}.log"))))
                    }
                    None => Output::Inherit,
                },
            };
            programs.push(Program {
                name: name.clone(),
                group,
                numprocs: p.numprocs.as_ref().map(|n| *n.get_ref()),
                program,
                args: p.args.clone(),
                env: p.env.clone(),
                cwd: p.cwd.as_deref().map(anchor),
                restart: p.restart.map_or(RestartType::Permanent, |r| r.0),
                backoff,
                shutdown,
                stdout: output(&p.stdout, "stdout"),
                stderr: output(&p.stderr, "stderr"),
                ready: p.ready.map_or(Readiness::Started, |r| r.0),
            });
        }

        // Start order: dependencies first, file order otherwise, within each supervisor.
        let supervisor_of: HashMap<&str, Option<&str>> = raw
            .program
            .iter()
            .map(|p| {
                (
                    p.name.get_ref().as_str(),
                    p.group.as_ref().map(|g| g.get_ref().as_str()),
                )
            })
            .chain(raw.group.iter().map(|g| (g.name.get_ref().as_str(), None)))
            .collect();
        let deps_of = |name: &str, deps: &[Spanned<String>]| -> Result<Vec<String>, ConfigError> {
            let own = supervisor_of[name];
            deps.iter()
                .map(|d| match supervisor_of.get(d.get_ref().as_str()) {
                    None => Err(err(Some(d.span()), format!("depends_on: nothing is named {:?}", d.get_ref()))),
                    Some(s) if *s != own => Err(err(
                        Some(d.span()),
                        format!(
                            "depends_on: {:?} runs under another supervisor than {name:?}; a dependency must be a sibling (make the groups depend on each other instead)",
                            d.get_ref()
                        ),
                    )),
                    Some(_) if d.get_ref() == name => {
                        Err(err(Some(d.span()), format!("{name:?} depends on itself")))
                    }
                    Some(_) => Ok(d.get_ref().clone()),
                })
                .collect()
        };
        let mut nodes = Vec::new();
        for g in &raw.group {
            let n = g.name.get_ref();
            nodes.push(DepNode {
                name: n.clone(),
                deps: deps_of(n, &g.depends_on)?,
                span: g.name.span(),
            });
        }
        for p in &raw.program {
            let n = p.name.get_ref();
            nodes.push(DepNode {
                name: n.clone(),
                deps: deps_of(n, &p.depends_on)?,
                span: p.name.span(),
            });
        }
        // File order: groups and programs as they appear in the file.
        nodes.sort_by_key(|n| n.span.start);
        let order = topo_order(&nodes).map_err(|(name, span)| {
            err(
                Some(span),
                format!("depends_on forms a cycle through {name:?}"),
            )
        })?;
        let mut root = Vec::new();
        let mut ordered_programs = Vec::new();
        for name in &order {
            if group_names.contains(name.as_str()) {
                root.push(RootChild::Group(name.clone()));
            } else if let Some(p) = programs.iter().find(|p| &p.name == name) {
                if p.group.is_none() {
                    root.push(RootChild::Program(name.clone()));
                }
                ordered_programs.push(p.clone());
            }
        }

        Ok(Fleet {
            file: file.to_owned(),
            name: fleet_name,
            socket: raw.fleet.socket.as_deref().map(anchor),
            strategy: raw.fleet.strategy.map_or(Strategy::OneForOne, |s| s.0),
            intensity: root_intensity,
            groups,
            programs: ordered_programs,
            root,
        })
    }

    /// The programs of a supervisor (`None`: the root), in start order.
    pub(crate) fn programs_under<'a>(
        &'a self,
        group: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Program> + 'a {
        self.programs
            .iter()
            .filter(move |p| p.group.as_deref() == group)
    }

    /// The spec of a nested supervisor with its programs.
    pub(crate) fn group_spec(&self, group: &Group) -> Spec {
        let mut spec = Spec::new(group.name.clone())
            .strategy(group.strategy)
            .intensity(group.intensity);
        for p in self.programs_under(Some(&group.name)) {
            spec = spec.child(p.child_spec());
        }
        spec
    }

    /// The whole tree.
    pub(crate) fn spec(&self) -> Spec {
        let mut spec = Spec::new(self.name.clone())
            .strategy(self.strategy)
            .intensity(self.intensity);
        for child in &self.root {
            spec = spec.child(match child {
                RootChild::Program(name) => self.program(name).expect("listed").child_spec(),
                RootChild::Group(name) => {
                    ChildSpec::supervisor(self.group_spec(self.group(name).expect("listed")))
                }
            });
        }
        spec
    }

    /// Creates the directories the log files go in (`check` does not; `run` does).
    pub(crate) fn create_log_dirs(&self) -> Result<(), String> {
        for p in &self.programs {
            for log in ["stdout", "stderr"].iter().filter_map(|s| p.log_file(s)) {
                if let Some(dir) = log.path().parent() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        format!(
                            "program {:?}: cannot create the log directory {}: {e}",
                            p.name,
                            dir.display()
                        )
                    })?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.name == name)
    }

    pub(crate) fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// A program or group with what it depends on, for ordering.
struct DepNode {
    name: String,
    deps: Vec<String>,
    span: Range<usize>,
}

/// Orders nodes so that each comes after its dependencies, keeping the given order
/// otherwise; a cycle names one of its members.
fn topo_order(nodes: &[DepNode]) -> Result<Vec<String>, (String, Range<usize>)> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    fn visit(
        i: usize,
        nodes: &[DepNode],
        by_name: &HashMap<&str, usize>,
        marks: &mut [Mark],
        order: &mut Vec<String>,
    ) -> Result<(), (String, Range<usize>)> {
        let n = &nodes[i];
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Visiting => return Err((n.name.clone(), n.span.clone())),
            Mark::New => {}
        }
        marks[i] = Mark::Visiting;
        for d in &n.deps {
            visit(by_name[d.as_str()], nodes, by_name, marks, order)?;
        }
        marks[i] = Mark::Done;
        order.push(n.name.clone());
        Ok(())
    }
    let by_name: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut marks = vec![Mark::New; nodes.len()];
    let mut order = Vec::new();
    for i in 0..nodes.len() {
        visit(i, nodes, &by_name, &mut marks, &mut order)?;
    }
    Ok(order)
}

fn check_name(name: &Spanned<String>) -> Result<(), String> {
    let n = name.get_ref();
    let ok = !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name {n:?}: use letters, digits, '-' and '_' (a '.' is kept for replicas, '/' for paths)"
        ))
    }
}

/// The 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Fleet, ConfigError> {
        Fleet::parse(Path::new("/etc/fleet.toml"), text)
    }

    #[test]
    fn a_full_file_resolves_every_key() {
        let f = parse(
            r#"
[fleet]
name = "demo"
socket = "run/ctl.sock"
log_dir = "logs"
strategy = "one_for_all"
max_restarts = 3
period = "30s"

[[group]]
name = "web"
strategy = "rest_for_one"
depends_on = ["db"]

[[program]]
name = "api"
group = "web"
command = "/bin/api"
args = ["-p", "80"]
numprocs = 2
restart = "transient"
env = { A = "1" }
cwd = "/srv"
start_window = "2s"
backoff = { initial = "50ms", factor = 3.0, cap = "1m", jitter = 0.0, reset_after = 20 }
stop_signal = "INT"
stop_grace = "1500ms"
stdout = { path = "api.log", max_bytes = 1024, keep = 2 }
stderr = "null"
ready = { tcp = "127.0.0.1:8080" }

[[program]]
name = "db"
command = "/bin/db"
ready = "notify"
"#,
        )
        .unwrap();
        assert_eq!(f.name, "demo");
        assert_eq!(f.socket.as_deref(), Some(Path::new("/etc/run/ctl.sock")));
        assert_eq!(f.strategy, Strategy::OneForAll);
        assert_eq!(f.intensity.max_restarts, 3);
        // db comes first: the group web depends on it.
        assert_eq!(
            f.root,
            vec![
                RootChild::Program("db".into()),
                RootChild::Group("web".into())
            ]
        );
        let api = f.program("api").unwrap();
        assert_eq!(api.path(), "web/api");
        assert_eq!(api.numprocs, Some(2));
        assert_eq!(api.restart, RestartType::Transient);
        assert_eq!(api.backoff.initial, Duration::from_millis(50));
        assert_eq!(api.backoff.reset_after, Duration::from_secs(20));
        assert_eq!(api.backoff.start_success, Duration::from_secs(2));
        assert_eq!(
            api.shutdown,
            Shutdown::Graceful {
                signal: Signal::SIGINT,
                grace: Duration::from_millis(1500)
            }
        );
        assert_eq!(
            api.log_file("stdout").unwrap().path(),
            Path::new("/etc/logs/api.log")
        );
        assert_eq!(api.stderr, Output::Null);
        assert_eq!(api.cwd.as_deref(), Some(Path::new("/srv")));
        let db = f.program("db").unwrap();
        assert_eq!(db.ready, Readiness::Notify);
        assert_eq!(
            db.log_file("stderr").unwrap().path(),
            Path::new("/etc/logs/db.stderr.log")
        );
    }

    #[track_caller]
    fn fails_at(text: &str, line: usize, col: usize, needle: &str) {
        let e = parse(text).unwrap_err();
        assert_eq!(e.at, Some((line, col)), "{e}");
        assert!(e.message.contains(needle), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("/etc/fleet.toml:{line}:{col}: ")),
            "{e}"
        );
    }

    #[test]
    fn errors_name_line_column_and_culprit() {
        fails_at(
            "[[program]]\nname = \"a\"\ncomand = \"x\"\n",
            3,
            1,
            "comand",
        );
        fails_at(
            "[[program]]\nname = \"a\"\ncommand = \"x\"\nrestart = \"sometimes\"\n",
            4,
            11,
            "sometimes",
        );
        fails_at(
            "[[program]]\nname = \"a\"\ncommand = \"x\"\nstop_grace = \"5 parsecs\"\n",
            4,
            14,
            "parsecs",
        );
        fails_at(
            "[[program]]\nname = \"a\"\ncommand = \"x\"\nstop_signal = \"SIGNOPE\"\n",
            4,
            15,
            "SIGNOPE",
        );
        fails_at(
            "[[program]]\nname = \"a\"\ncommand = \"x\"\ngroup = \"nope\"\n",
            4,
            9,
            "nope",
        );
        fails_at(
            "[[program]]\nname = \"a\"\ncommand = \"x\"\n[[program]]\nname = \"a\"\ncommand = \"y\"\n",
            5,
            8,
            "twice",
        );
        fails_at(
            "[[program]]\nname = \"a b\"\ncommand = \"x\"\n",
            2,
            8,
            "invalid name",
        );
        fails_at(
            "[[program]]\nname = \"a\"\ncommand = \"x\"\ndepends_on = [\"b\"]\n",
            4,
            15,
            "\"b\"",
        );
        fails_at(
            "[[program]]\nname = \"a\"\ncommand = \"x\"\nnumprocs = 0\n",
            4,
            12,
            "numprocs",
        );
        fails_at(
            "[[program]]\nname = \"a\"\ncommand = \"x\"\nready = { tcp = \"nowhere\" }\n",
            4,
            9,
            "nowhere",
        );
        fails_at(
            "[fleet]\nstrategy = \"all_for_one\"\n",
            2,
            12,
            "all_for_one",
        );
        fails_at(
            "[[program]]\nname = \"a\"\ncommand = \"x\"\nargs = \"-v\"\n",
            4,
            8,
            "",
        );
        fails_at("[[program]]\nname = \"a\"\n", 1, 1, "command");
        fails_at("this is not toml", 1, 6, "");
    }

    #[test]
    fn dependency_cycles_and_cross_supervisor_dependencies_are_refused() {
        let e = parse(
            "[[program]]\nname = \"a\"\ncommand = \"x\"\ndepends_on = [\"b\"]\n[[program]]\nname = \"b\"\ncommand = \"x\"\ndepends_on = [\"a\"]\n",
        )
        .unwrap_err();
        assert!(e.message.contains("cycle"), "{e}");
        let e = parse(
            "[[group]]\nname = \"g\"\n[[program]]\nname = \"a\"\ncommand = \"x\"\ngroup = \"g\"\n[[program]]\nname = \"b\"\ncommand = \"x\"\ndepends_on = [\"a\"]\n",
        )
        .unwrap_err();
        assert!(e.message.contains("another supervisor"), "{e}");
        assert_eq!(e.at, Some((10, 15)));
    }

    #[test]
    fn start_order_follows_dependencies_then_the_file() {
        let f = parse(
            "[[program]]\nname = \"c\"\ncommand = \"x\"\ndepends_on = [\"b\"]\n[[program]]\nname = \"a\"\ncommand = \"x\"\n[[program]]\nname = \"b\"\ncommand = \"x\"\n",
        )
        .unwrap();
        let names: Vec<&str> = f.programs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["b", "c", "a"]);
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
