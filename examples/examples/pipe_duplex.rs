//! A duplex `Pipe`: both ends send and receive over the same connection.
//!
//! Mirrors the Pipe example in the seed `/work/shared/seeds/003_3b9ef70041973d61.txt`,
//! section "Pipe类":
//!
//! ```python
//! def func(conn):
//!     print('send a list object ot other side...')
//!     conn.send(['33', 44, None])
//!     conn.close()
//!
//! parent_conn, child_conn = Pipe()
//! p = Process(target=func, args=(child_conn, ))
//! p.start()
//! print(parent_conn.recv())
//! p.join()
//! ```
//!
//! The list `['33', 44, None]` travels as the typed tuple `(String, i64, Option<i64>)`, and
//! [`py_repr`] prints it as Python would. (The seed's "ot" typo is kept.)
//!
//! Then it goes past the seed to show that `Pipe()` is duplex by default: instead of
//! closing its end, the child keeps serving on it, answering each number the parent sends
//! with its square. The parent prints each reply, then closes its end; the child's next
//! `recv` is `ConnectionError::Eof` (Python's `EOFError`), so it returns, and the parent
//! joins it and prints its exitcode.
//!
//! That EOF needs every copy of the parent's end closed. Under the default `forkserver`
//! start method (and `spawn`) the child holds none; under `fork` it would inherit one, and,
//! as in Python, its `recv` would then wait for ever.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p procvisor-examples --example pipe_duplex
//! ```
//!
//! Expected output:
//!
//! ```text
//! send a list object ot other side...
//! ['33', 44, None]
//! parent sent 2, child replied 4
//! parent sent 3, child replied 9
//! parent sent 7, child replied 49
//! parent sent 12, child replied 144
//! exitcode of the child: 0
//! ```

use procvisor::{Connection, ConnectionError, Process, pipe};

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

/// The child: sends the list, then squares every number it receives until the parent
/// closes its end.
fn func(mut conn: Connection) {
    println!("send a list object ot other side...");
    let message: Message = ("33".to_owned(), 44, None);
    conn.send(&message).expect("the parent end is open");
    loop {
        match conn.recv::<i64>() {
            Ok(n) => conn.send(&(n * n)).expect("the parent end is open"),
            Err(ConnectionError::Eof) => break,
            Err(e) => panic!("recv failed: {e}"),
        }
    }
    conn.close();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Duplex, as Python's `Pipe()` is by default.
    let (mut parent_conn, child_conn) = pipe(true)?;
    let mut p = Process::new(func, child_conn);
    p.start()?;
    let got: Message = parent_conn.recv()?;
    println!("{}", py_repr(&got));

    // The other direction, over the same connection.
    for n in [2_i64, 3, 7, 12] {
        parent_conn.send(&n)?;
        let square: i64 = parent_conn.recv()?;
        println!("parent sent {n}, child replied {square}");
    }

    // Closing our end is the child's EOFError: it leaves its loop and returns.
    parent_conn.close();
    p.join(None)?;
    let code = p.exitcode()?.expect("the child has been joined");
    println!("exitcode of the child: {code}");
    Ok(())
}
