//! `procvisor`: supervise a fleet of programs from a TOML file, and talk to a running one.
//!
//! ```sh
//! procvisor run examples/fleet.toml      # the fleet, in the foreground
//! procvisor check examples/fleet.toml    # validate the file, start nothing
//! procvisor status [--json]              # name, state, pid, uptime, restarts, last exit
//! procvisor stop web                     # a program, a group, a replica (name.i), or all
//! procvisor scale workers 4
//! procvisor logs steady -f
//! procvisor events -f
//! procvisor reload                       # as SIGHUP: apply the file's differences
//! procvisor shutdown                     # as SIGTERM: stop in reverse order
//! ```
//!
//! Exit codes: 0 when it worked; 1 with a one-line reason on stderr when it did not; 2 for
//! a command line that does not parse.

mod config;
mod control;
mod demo;
mod fleet;
mod notify;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;

use control::{ClientError, Exchange, Request, Stream};

#[derive(Debug, Parser)]
#[command(
    name = "procvisor",
    version,
    about = "Supervise a fleet of programs with OTP's semantics"
)]
struct Cli {
    /// The control socket (default: the fleet file's `socket`, then $PROCVISOR_SOCKET, then
    /// $XDG_RUNTIME_DIR/procvisor.sock or /tmp/procvisor-<uid>/procvisor.sock).
    #[arg(long, short = 's', global = true, env = "PROCVISOR_SOCKET")]
    socket: Option<PathBuf>,
    /// Read the control socket's path from this fleet file.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a fleet in the foreground until SIGTERM or SIGINT (SIGHUP reloads its file).
    Run { file: PathBuf },
    /// Check a fleet file without starting anything.
    Check { file: PathBuf },
    /// Every program with its state.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Start a stopped program, group, replica, or all.
    Start { target: String },
    /// Stop a program, group, replica, or all (it stays stopped until `start`).
    Stop { target: String },
    /// Stop then start a program, group, replica, or all.
    Restart { target: String },
    /// Grow or shrink a program that has `numprocs` to N replicas.
    Scale { name: String, n: usize },
    /// A program's log (a replica's, for a program with numprocs: NAME.i).
    Logs {
        name: String,
        /// Keep printing what it writes.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Which stream.
        #[arg(long, value_enum, default_value = "stdout")]
        stream: Stream,
        /// How many of the last lines to print first.
        #[arg(long, short = 'n', default_value_t = 20)]
        lines: usize,
        #[arg(long)]
        json: bool,
    },
    /// The fleet's recent events.
    Events {
        /// Keep printing new events.
        #[arg(long, short = 'f')]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Re-read the fleet file and apply only its differences.
    Reload {
        #[arg(long)]
        json: bool,
    },
    /// Stop the fleet gracefully, in reverse start order.
    Shutdown,
    /// A program of the demo fleet (examples/fleet.toml).
    #[command(hide = true)]
    Demo {
        #[arg(value_enum)]
        which: demo::Demo,
        /// Its period, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        every_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("procvisor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn dispatch(cli: Cli) -> Result<(), String> {
    let socket = || -> Result<PathBuf, String> {
        if let Some(s) = &cli.socket {
            return Ok(s.clone());
        }
        if let Some(file) = &cli.config {
            let f = config::Fleet::load(file).map_err(|e| e.to_string())?;
            return Ok(f.socket.unwrap_or_else(control::default_socket));
        }
        Ok(control::default_socket())
    };
    let ask = |req: Request| -> Result<Value, String> {
        Exchange::open(&socket()?, &req)
            .and_then(Exchange::reply)
            .map_err(|e| e.to_string())
    };
    match &cli.command {
        Command::Run { file } => fleet::run(file, cli.socket.clone()),
        Command::Check { file } => {
            let f = config::Fleet::load(file).map_err(|e| e.to_string())?;
            println!(
                "{}: ok: fleet {:?}, {} program(s) in {} group(s)",
                file.display(),
                f.name,
                f.programs.len(),
                f.groups.len()
            );
            Ok(())
        }
        Command::Status { json } => {
            let reply = ask(Request::Status {})?;
            if *json {
                println!("{}", reply["programs"]);
            } else {
                print!("{}", view::status_table(&reply));
            }
            Ok(())
        }
        Command::Start { target } => done(
            ask(Request::Start {
                target: target.clone(),
            })?,
            "started",
        ),
        Command::Stop { target } => done(
            ask(Request::Stop {
                target: target.clone(),
            })?,
            "stopped",
        ),
        Command::Restart { target } => done(
            ask(Request::Restart {
                target: target.clone(),
            })?,
            "restarted",
        ),
        Command::Scale { name, n } => {
            ask(Request::Scale {
                name: name.clone(),
                n: *n,
            })?;
            println!("{name}: {n} replica(s)");
            Ok(())
        }
        Command::Reload { json } => {
            let r = ask(Request::Reload {})?;
            if *json {
                println!("{r}");
            } else {
                println!(
                    "reloaded: added {}, removed {}, changed {}, {} unchanged",
                    r["added"], r["removed"], r["changed"], r["unchanged"]
                );
                if r["needs_restart"].as_array().is_some_and(|a| !a.is_empty()) {
                    println!(
                        "not applied until procvisor restarts: {}",
                        r["needs_restart"]
                    );
                }
            }
            Ok(())
        }
        Command::Shutdown => {
            ask(Request::Shutdown {})?;
            println!("shutting down");
            Ok(())
        }
        Command::Events { follow, json } => {
            stream(&socket()?, &Request::Events { follow: *follow }, |v| {
                if *json {
                    v.to_string()
                } else {
                    v["text"].as_str().unwrap_or_default().to_owned()
                }
            })
        }
        Command::Logs {
            name,
            follow,
            stream: which,
            lines,
            json,
        } => stream(
            &socket()?,
            &Request::Logs {
                name: name.clone(),
                stream: *which,
                lines: *lines,
                follow: *follow,
            },
            |v| {
                if *json {
                    v.to_string()
                } else {
                    v["line"].as_str().unwrap_or_default().to_owned()
                }
            },
        ),
        Command::Demo { which, every_ms } => demo::run(*which, Duration::from_millis(*every_ms)),
    }
}

fn done(reply: Value, verb: &str) -> Result<(), String> {
    for p in reply["done"].as_array().into_iter().flatten() {
        println!("{}: {verb}", p.as_str().unwrap_or("?"));
    }
    Ok(())
}

/// Prints a streamed reply, one line per message, until the fleet ends it.
fn stream(
    socket: &std::path::Path,
    req: &Request,
    line: impl Fn(&Value) -> String,
) -> Result<(), String> {
    let mut ex = Exchange::open(socket, req).map_err(|e| e.to_string())?;
    let first = ex
        .next()
        .unwrap_or_else(|| Err(ClientError("the fleet hung up without a reply".into())))
        .and_then(control::check)
        .map_err(|e| e.to_string())?;
    let _ = first;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    while let Some(v) = ex.next() {
        let v = v.map_err(|e| e.to_string())?;
        if v.get("ok") == Some(&Value::Bool(false)) {
            return Err(control::check(v).unwrap_err().to_string());
        }
        if writeln!(out, "{}", line(&v))
            .and_then(|()| out.flush())
            .is_err()
        {
            // The reader went away (`| head`): not an error of ours.
            return Ok(());
        }
    }
    Ok(())
}
