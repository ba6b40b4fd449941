//! The programs of the demo fleet (`examples/fleet.toml`), built into the binary so the demo
//! needs nothing but the repository: `procvisor demo steady | crashy | pool`.

use std::io::Write;
use std::time::Duration;

/// Which demo program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Demo {
    /// Says it is ready (sd_notify), then works forever, a line every 2 s.
    Steady,
    /// Works for a few seconds, then crashes with exit code 3.
    Crashy,
    /// A procvisor Pool of two workers squaring numbers, a batch every 3 s.
    Pool,
}

pub(crate) fn run(which: Demo, every: Duration) -> Result<(), String> {
    let pid = std::process::id();
    match which {
        Demo::Steady => {
            println!("steady worker up (pid {pid})");
            crate::notify::sd_notify("READY=1");
            for tick in 1u64.. {
                std::thread::sleep(every);
                println!("steady worker: tick {tick}");
                let _ = std::io::stdout().flush();
            }
            Ok(())
        }
        Demo::Crashy => {
            println!("crashy worker up (pid {pid}); it will crash in {every:?}");
            let _ = std::io::stdout().flush();
            std::thread::sleep(every);
            eprintln!("crashy worker: crashing on purpose");
            std::process::exit(3);
        }
        Demo::Pool => {
            let pool = procvisor::Pool::new(2).map_err(|e| e.to_string())?;
            println!("pool of 2 workers up (pid {pid})");
            for batch in 0u64.. {
                let inputs: Vec<u64> = (batch * 4..batch * 4 + 4).collect();
                let squares = pool
                    .map(square, inputs.clone(), None)
                    .map_err(|e| e.to_string())?;
                println!("pool: squares of {inputs:?} = {squares:?}");
                let _ = std::io::stdout().flush();
                std::thread::sleep(every);
            }
            Ok(())
        }
    }
}

fn square(x: u64) -> u64 {
    x * x
}
