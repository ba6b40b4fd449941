//! Pipes: a child sends one message through a `Pipe` and closes its end; the parent
//! receives it, prints it, and joins the child.
//!
//! Mirrors the Pipe example in the seed `/work/shared/seeds/002_8a4243127c442c43.txt`,
//! section "管道：Pipes":
//!
//! ```python
//! def f(conn):
//!     conn.send([42, None, 'hello'])
//!     conn.close()
//!
//! parent_conn, child_conn = Pipe()
//! p = Process(target=f, args=(child_conn,))
//! p.start()
//! print(parent_conn.recv())   # prints "[42, None, 'hello']"
//! p.join()
//! ```
//!
//! Python's list mixes an int, `None` and a str; here it is a `Vec<Item>`, with `Item` a
//! small serde enum, and [`py_repr`] prints it the way Python's `repr` does.
//!
//! The example then shows the end-of-file rule. `Process::new(f, child_end)` takes the
//! parent's copy of the child end (so the parent holds no writer of its own, as after
//! Python's `child_conn.close()`), and the child closes its copy before it exits. With
//! every writer closed and every message read, the next `recv` is
//! `ConnectionError::Eof`: Python's `EOFError`.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p procvisor-examples --example pipe
//! ```
//!
//! Expected output:
//!
//! ```text
//! [42, None, 'hello']
//! recv after the child closed: EOFError
//! exitcode of the child: 0
//! ```

use procvisor::{Connection, ConnectionError, Process, pipe};
use serde::{Deserialize, Serialize};

/// One element of the Python list `[42, None, 'hello']`.
#[derive(Debug, Serialize, Deserialize)]
enum Item {
    Int(i64),
    None,
    Str(String),
}

/// Python's `repr` of a str: single quotes, unless the text holds a single quote and no
/// double quote; backslashes, the chosen quote and control characters escaped.
fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr` of a list of items: `[42, None, 'hello']`.
fn py_repr(items: &[Item]) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|item| match item {
            Item::Int(n) => n.to_string(),
            Item::None => "None".to_owned(),
            Item::Str(s) => py_str_repr(s),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// The child: sends the list and closes its end.
fn f(mut conn: Connection) {
    conn.send(&vec![
        Item::Int(42),
        Item::None,
        Item::Str("hello".to_owned()),
    ])
    .expect("the parent end is open");
    conn.close();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut parent_conn, child_conn) = pipe(true)?;
    // `child_conn` moves into the process: the parent keeps no copy of the child end.
    let mut p = Process::new(f, child_conn);
    p.start()?;
    let got: Vec<Item> = parent_conn.recv()?;
    println!("{}", py_repr(&got));
    p.join(None)?;

    // The child has exited and its end is closed; no other copy of it is open.
    match parent_conn.recv::<Vec<Item>>() {
        Err(ConnectionError::Eof) => println!("recv after the child closed: EOFError"),
        other => return Err(format!("expected EOFError, got {other:?}").into()),
    }
    let code = p.exitcode()?.expect("the child has been joined");
    println!("exitcode of the child: {code}");
    Ok(())
}
