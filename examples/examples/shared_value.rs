//! Shared memory: a child writes a `Value<f64>` and negates every element of an
//! `Array<i32>`; once it is joined, the main process reads both and sees the child's
//! changes.
//!
//! Mirrors the Value/Array example in the seed `/work/shared/seeds/003_3b9ef70041973d61.txt`,
//! section "进程间共享数据 / 共享内存" ("简单示例：使用共享内存的方式，共享值Value对象和数据
//! Array对象"):
//!
//! ```python
//! def func(n, a):
//!     n.value = 3.333
//!     for i in range(len(a)):
//!         a[i] = -a[i]
//!
//! num = Value('d', 0.0)       # 'd': a C double
//! arr = Array('i', range(6))  # 'i': a C int
//! p = Process(target=func, args=(num, arr))
//! p.start()
//! p.join()
//! print(num.value)
//! print(arr[:])
//! ```
//!
//! Python's documentation has the same example with `3.1415927` and `range(10)`; this port
//! follows the seed's numbers, `3.333` and `range(6)`. (The seed `001_39d6c5e4a59ba50e.txt`
//! has no Value/Array example; its "Managers" section shares a dict and a list through a
//! manager process instead.)
//!
//! `Value('d', ..)` is a `Value<f64>` and `Array('i', ..)` an `Array<i32>`; both travel to
//! the child inside its arguments, and both handles name the same memory. `n.value = x` is
//! `n.set(x)`, and `num.value` is `num.get()`. Python's `a[i] = -a[i]` takes the array's
//! lock once for the read and once for the write; the port takes it once, with
//! `a.get_lock()`, for the whole loop, and reads and writes through the guard.
//!
//! The main process prints the float with [`py_float_repr`] (Python's `repr`: `0.0`, not
//! Rust's `0`) and the list with `{:?}`, which for integers is what Python prints.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p procvisor-examples --example shared_value
//! ```
//!
//! Expected output:
//!
//! ```text
//! 3.333
//! [0, -1, -2, -3, -4, -5]
//! ```

use procvisor::{Array, Process, Value};

/// Python's `repr` of a float: the shortest text that reads back as the same number (as
/// Rust's `{}`), with `.0` on whole numbers, and an exponent (`1e+16`, `1.5e-05`) below
/// 1e-4 and from 1e16 up.
fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let abs = x.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Rust's `{:e}` is also the shortest round-trip digits: `1.5e-5`, `1e16`.
        let s = format!("{x:e}");
        let (mantissa, exp) = s.split_once('e').expect("`{:e}` has an exponent");
        let exp: i32 = exp.parse().expect("the exponent is a number");
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let s = x.to_string();
    if s.contains('.') { s } else { s + ".0" }
}

/// The child: `n.value = 3.333`, then `a[i] = -a[i]` for every element.
fn func((n, a): (Value<f64>, Array<i32>)) {
    n.set(3.333).unwrap();
    let mut a = a.get_lock().unwrap();
    for i in 0..a.len() {
        let x = a.get(i).expect("i < len");
        a.set(i, -x).expect("i < len");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let num = Value::new(0.0f64)?;
    let initial: Vec<i32> = (0..6).collect();
    let arr = Array::new(&initial)?;
    let mut p = Process::new(func, (num.clone(), arr.clone()));
    p.start()?;
    p.join(None)?;
    if p.exitcode()? != Some(0) {
        return Err(format!("the child ended with exitcode {:?}", p.exitcode()?).into());
    }
    println!("{}", py_float_repr(num.get()?));
    println!("{:?}", arr.to_vec()?);
    Ok(())
}
