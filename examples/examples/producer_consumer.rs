//! Producer and consumer: one process fills a `Queue` and ends, then another drains it
//! with `while not queue.empty()`.
//!
//! Mirrors §2.4 ("Queue Case") of the Python seed
//! `/work/shared/seeds/000_97308c8aaf6075b9.txt`:
//!
//! ```python
//! def producer(queue):
//!     for i in range(5):
//!         print('Producer putting data')
//!         queue.put(i)
//!         print('Producer done')
//!
//! def consumer(queue):
//!     while not queue.empty():
//!         data = queue.get()
//!         print('Consumer got data', data)
//!
//! queue = Queue()
//! producer_process = Process(target=producer, args=(queue,))
//! consumer_process = Process(target=consumer, args=(queue,))
//! producer_process.start()
//! producer_process.join()  # Wait for the producer to finish
//! consumer_process.start()
//! consumer_process.join()  # Wait for the consumer to finish
//! ```
//!
//! The producer ends before the consumer starts, and its items outlive it: `put` writes
//! each one into the queue's shared memory before it returns. In CPython `empty()` can
//! briefly say `True` just after a `put` (the item is still with the feeder thread); here
//! it is exact, so the consumer's `while !queue.empty()` loop sees all five items.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p procvisor-examples --example producer_consumer
//! ```
//!
//! Expected output (always in this order):
//!
//! ```text
//! Producer putting data
//! Producer done
//! Producer putting data
//! Producer done
//! Producer putting data
//! Producer done
//! Producer putting data
//! Producer done
//! Producer putting data
//! Producer done
//! Consumer got data 0
//! Consumer got data 1
//! Consumer got data 2
//! Consumer got data 3
//! Consumer got data 4
//! ```

use procvisor::{Process, Queue};

/// Puts 0 to 4 on the queue.
fn producer(queue: Queue<u32>) {
    for i in 0..5 {
        println!("Producer putting data");
        queue.put(i).expect("an unbounded queue takes a small item");
        println!("Producer done");
    }
}

/// Takes items until the queue is empty. This is the only consumer, so an item that
/// `empty()` saw is still there for `get()`.
fn consumer(queue: Queue<u32>) {
    while !queue.empty() {
        let data = queue.get().expect("the queue is not empty");
        println!("Consumer got data {data}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Create a shared queue.
    let queue = Queue::new(0)?;

    // Create the producer and consumer processes.
    let mut producer_process = Process::new(producer, queue.clone());
    let mut consumer_process = Process::new(consumer, queue.clone());

    // Start the processes.
    producer_process.start()?;
    producer_process.join(None)?; // Wait for the producer to finish
    producer_process.result()?; // A panic in the child is an error here

    consumer_process.start()?;
    consumer_process.join(None)?; // Wait for the consumer to finish
    consumer_process.result()?;
    Ok(())
}
