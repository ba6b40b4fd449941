//! Queues: children put items on a `Queue` that the main process gets from. First one child
//! and one item, then three children and three items.
//!
//! The first part mirrors the Queue example in the seed
//! `/work/shared/seeds/003_3b9ef70041973d61.txt`, section "Queue类" ("简单示例：使用队列Queue
//! 进行进程间通信"):
//!
//! ```python
//! def func(q):
//!     print('put a list object to queue...')
//!     q.put(['33', 44, None])
//!
//! q = Queue()
//! p = Process(target=func, args=(q, ))
//! p.start()
//! print(q.get())
//! p.join()
//! ```
//!
//! The list `['33', 44, None]` travels as the typed tuple `(String, i64, Option<i64>)`, and
//! [`py_repr`] prints it as Python would. The seed warns that with a large item (`'X' *
//! 1000000`) `join()` before `get()` hangs, because the child's feeder thread waits for the
//! pipe to drain; here `put` writes the item into shared memory before it returns, so the
//! child can exit, and be joined, with its item still in the queue.
//!
//! The second part (after a blank line) is the "three processes put, main gets three"
//! example of the seed `/work/shared/seeds/001_39d6c5e4a59ba50e.txt`, section "进程的通信 /
//! Queue":
//!
//! ```python
//! def fun1(q,i):
//!     print('子进程%s 开始put数据' %i)
//!     q.put('我是%s 通过Queue通信' %i)
//!
//! q = Queue()
//! process_list = []
//! for i in range(3):
//!     p = Process(target=fun1,args=(q,i,))
//!     p.start()
//!     process_list.append(p)
//! for i in process_list:
//!     p.join()
//! print('主进程获取Queue数据')
//! print(q.get())
//! print(q.get())
//! print(q.get())
//! print('结束测试')
//! ```
//!
//! The Python joins the last `p` three times (`for i in ...: p.join()`); the port joins each
//! child once, which is what it means. Each child gets the queue as a clone of the main
//! process's handle, inside its arguments: `Process::new(fun1, (q.clone(), i))`.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p procvisor-examples --example queue
//! ```
//!
//! Expected output (the three children run concurrently, so the order of their lines, and
//! of the items the main process gets, changes from run to run):
//!
//! ```text
//! put a list object to queue...
//! ['33', 44, None]
//!
//! 子进程0 开始put数据
//! 子进程1 开始put数据
//! 子进程2 开始put数据
//! 主进程获取Queue数据
//! 我是0 通过Queue通信
//! 我是1 通过Queue通信
//! 我是2 通过Queue通信
//! 结束测试
//! ```

use procvisor::{Process, Queue};

/// The Python list `['33', 44, None]` as a typed value.
type Message = (String, i64, Option<i64>);

/// Python's `repr` of the list: `['33', 44, None]`. The string is a plain ASCII word
/// here, so quoting it in single quotes is all Python's `repr` would do.
fn py_repr((s, n, opt): &Message) -> String {
    let opt = match opt {
        Some(v) => v.to_string(),
        None => "None".to_owned(),
    };
    format!("['{s}', {n}, {opt}]")
}

/// The child of the first part: puts one list on the queue.
fn func(q: Queue<Message>) {
    println!("put a list object to queue...");
    q.put(("33".to_owned(), 44, None))
        .expect("an unbounded queue takes a small item");
}

/// A child of the second part: puts one string saying which child it is.
fn fun1((q, i): (Queue<String>, u32)) {
    println!("子进程{i} 开始put数据");
    q.put(format!("我是{i} 通过Queue通信"))
        .expect("an unbounded queue takes a small item");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Seed 003: one child, one item.
    let q = Queue::new(0)?;
    let mut p = Process::new(func, q.clone());
    p.start()?;
    println!("{}", py_repr(&q.get()?));
    p.join(None)?;
    p.result()?; // A panic in the child is an error here

    println!();

    // Seed 001: three children put, the main process gets three.
    let q = Queue::new(0)?;
    let mut process_list = Vec::new();
    for i in 0..3 {
        let mut p = Process::new(fun1, (q.clone(), i));
        p.start()?;
        process_list.push(p);
    }
    for p in &process_list {
        p.join(None)?;
        p.result()?;
    }
    println!("主进程获取Queue数据");
    println!("{}", q.get()?);
    println!("{}", q.get()?);
    println!("{}", q.get()?);
    println!("结束测试");
    Ok(())
}
