//! A `JoinableQueue`: a generator puts ten tasks and waits with `join()` until three
//! workers have marked every one done with `task_done()`.
//!
//! Mirrors §2.5 ("JoinableQueue Case") of the Python seed
//! `/work/shared/seeds/000_97308c8aaf6075b9.txt`:
//!
//! ```python
//! def task_generator(queue):
//!     for i in range(10):
//!         print(f"Generator: generating task {i}")
//!         queue.put(i)
//!     queue.join()                          # Wait for all tasks to be completed
//!     print("Generator: all tasks completed.")
//!
//! def worker(queue):
//!     while True:
//!         task = queue.get()                # get and remove task from queue
//!         print(f"Worker {Process.current_process().name}: starting task {task}")
//!         time.sleep(random.randint(1, 3))  # Simulate time to complete the task
//!         print(f"Worker {Process.current_process().name}: finished task {task}")
//!         queue.task_done()
//!
//! queue = JoinableQueue()
//! generator = Process(target=task_generator, args=(queue,))
//! workers = [Process(target=worker, args=(queue,)) for _ in range(3)]
//! generator.start()
//! for worker in workers:
//!     worker.start()
//! generator.join()
//! for worker in workers:
//!     worker.terminate()
//! ```
//!
//! Differences from the Python:
//!
//! - The seed's `Process.current_process()` does not exist in Python (it would raise
//!   `AttributeError`); the port uses `current_process()`, which is what it means. The
//!   workers are named `Process-2` to `Process-4` (the generator is `Process-1`).
//! - Each task takes 10, 20 or 30 ms instead of 1 to 3 s. The choice is a deterministic
//!   pseudo-random function of the task number ([`task_millis`]), so no `rand` dependency
//!   is needed.
//! - The workers loop for ever, so, as in the Python, the main process terminates them
//!   once the generator has returned. It then also joins them (the Python leaves that to
//!   the interpreter's exit) and prints their exitcodes: -15, for SIGTERM. They are blocked
//!   in `get()` by then, since the generator's `join()` returned only after every task was
//!   done.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p procvisor-examples --example joinable_queue
//! ```
//!
//! Expected output, from one run. The four children run concurrently, so the order of
//! their lines, and which worker takes which task, change from run to run; but every
//! task's "finished" line comes before "Generator: all tasks completed.".
//!
//! ```text
//! Generator: generating task 0
//! Generator: generating task 1
//! ...
//! Generator: generating task 9
//! Worker Process-2: starting task 0
//! Worker Process-3: starting task 1
//! Worker Process-4: starting task 2
//! Worker Process-2: finished task 0
//! Worker Process-2: starting task 3
//! ...
//! Worker Process-4: finished task 9
//! Generator: all tasks completed.
//! exitcodes of the terminated workers: [-15, -15, -15]
//! ```

use std::time::Duration;

use procvisor::{JoinableQueue, Process, current_process};

/// How long task `task` takes: 10, 20 or 30 ms, picked by Knuth's multiplicative hash
/// of the task number (the Python sleeps `random.randint(1, 3)` seconds).
fn task_millis(task: u32) -> u64 {
    10 * (1 + ((u64::from(task) * 2_654_435_761) >> 16) % 3)
}

/// Puts ten tasks, then waits until every one has been marked done.
fn task_generator(queue: JoinableQueue<u32>) {
    for i in 0..10 {
        println!("Generator: generating task {i}");
        queue.put(i).expect("an unbounded queue takes a small item");
    }
    queue.join().expect("the queue's lock works"); // Wait for all tasks to be completed
    println!("Generator: all tasks completed.");
}

/// Takes tasks for ever, marking each one done once it is finished.
fn worker(queue: JoinableQueue<u32>) {
    let name = current_process().name;
    loop {
        let task = queue.get().expect("the queue's lock works"); // get and remove task from queue
        println!("Worker {name}: starting task {task}");
        std::thread::sleep(Duration::from_millis(task_millis(task))); // Simulate the work
        println!("Worker {name}: finished task {task}");
        queue
            .task_done()
            .expect("each task is marked done once, after its get");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Create a queue.
    let queue = JoinableQueue::new(0)?;

    // Create the task generator process.
    let mut generator = Process::new(task_generator, queue.clone());

    // Create worker processes.
    let mut workers: Vec<Process> = (0..3)
        .map(|_| Process::new(worker, queue.clone()))
        .collect();

    // Start the generator and workers.
    generator.start()?;
    for w in &mut workers {
        w.start()?;
    }

    // Wait for the generator, which returns once every task is done; a panic in it is an
    // error here.
    generator.join(None)?;
    generator.result()?;

    // The workers never return: stop them, and collect their exit.
    for w in &workers {
        w.terminate()?;
    }
    let mut exitcodes = Vec::new();
    for w in &workers {
        w.join(None)?;
        exitcodes.push(w.exitcode()?.expect("the worker has been joined"));
    }
    println!("exitcodes of the terminated workers: {exitcodes:?}");
    Ok(())
}
