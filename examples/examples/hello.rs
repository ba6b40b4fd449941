//! smoke
use procvisor::{Process, StartMethod};
fn square(x: u64) -> u64 {
    x * x
}
fn boom(_: ()) {
    panic!("boom")
}
fn main() {
    for m in [
        StartMethod::ForkServer,
        StartMethod::Spawn,
        StartMethod::Fork,
    ] {
        let t = std::time::Instant::now();
        let mut p = Process::new(square, 12).with_start_method(m);
        p.start().unwrap();
        p.join(None).unwrap();
        println!(
            "{m}: exit {:?} result {:?} in {:?}",
            p.exitcode().unwrap(),
            p.result().unwrap(),
            t.elapsed()
        );
        let mut p = Process::new(boom, ()).with_start_method(m);
        p.start().unwrap();
        p.join(None).unwrap();
        println!(
            "{m}: exit {:?} result {:?}",
            p.exitcode().unwrap(),
            p.result().map_err(|e| e.to_string())
        );
    }
    let x = String::from("captured");
    let mut p = Process::from_closure(move || x.len());
    p.start().unwrap();
    p.join(None).unwrap();
    println!("closure: {:?}", p.result().unwrap());
}
