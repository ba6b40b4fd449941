//! (module of the `tests` binary)
use std::time::Duration;

use procvisor::shared_memory::{SharedMemory, SharedMemoryError};
use procvisor::{Connection, Process, pipe};

use crate::lifecycle::METHODS;

fn attach_and_write(name: String) -> Result<usize, String> {
    let shm = SharedMemory::attach(&name).map_err(|e| e.to_string())?;
    shm.write_at(0, b"from the child")
        .map_err(|e| e.to_string())?;
    Ok(shm.size())
}

#[test]
fn a_child_attaches_by_name_and_writes_what_the_parent_reads() {
    for m in METHODS {
        let shm = SharedMemory::create(None, 64).unwrap();
        assert!(shm.name().starts_with("psm_"), "{}", shm.name());
        let mut p = Process::new(attach_and_write, shm.name().to_owned()).with_start_method(m);
        p.start().unwrap();
        p.join(Some(Duration::from_secs(20))).unwrap();
        assert_eq!(p.result().unwrap(), Ok(64), "{m}");
        let mut got = [0u8; 14];
        shm.read_at(0, &mut got).unwrap();
        assert_eq!(&got, b"from the child", "{m}");
        shm.unlink().unwrap();
    }
}

fn write_through_argument(shm: SharedMemory) {
    shm.write_at(8, &[1, 2, 3]).unwrap();
}

#[test]
fn a_segment_passed_in_arguments_is_the_same_memory() {
    let shm = SharedMemory::create(Some("itest_argument"), 16).unwrap();
    let mut p = Process::new(
        write_through_argument,
        SharedMemory::attach("itest_argument").unwrap(),
    );
    p.start().unwrap();
    p.join(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(p.exitcode().unwrap(), Some(0));
    let mut got = [0u8; 3];
    shm.read_at(8, &mut got).unwrap();
    assert_eq!(got, [1, 2, 3]);
    shm.unlink().unwrap();
}

fn unlink_by_name(name: String) -> Result<(), String> {
    let shm = SharedMemory::attach(&name).map_err(|e| e.to_string())?;
    shm.unlink().map_err(|e| e.to_string())
}

#[test]
fn unlink_from_another_process_removes_the_name_not_the_memory() {
    let shm = SharedMemory::create(Some("itest_unlink"), 8).unwrap();
    shm.write_at(0, b"kept").unwrap();
    let mut p = Process::new(unlink_by_name, "itest_unlink".to_owned());
    p.start().unwrap();
    p.join(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(p.result().unwrap(), Ok(()));
    assert!(matches!(
        SharedMemory::attach("itest_unlink"),
        Err(SharedMemoryError::NotFound { .. })
    ));
    assert!(matches!(
        shm.unlink(),
        Err(SharedMemoryError::NotFound { .. })
    ));
    // Our handle still maps the memory.
    let mut got = [0u8; 4];
    shm.read_at(0, &mut got).unwrap();
    assert_eq!(&got, b"kept");
    // And the name is free again.
    SharedMemory::create(Some("itest_unlink"), 8)
        .unwrap()
        .unlink()
        .unwrap();
}

fn create_and_hang((name, mut ready): (String, Connection)) {
    let shm = SharedMemory::create(Some(&name), 4096).unwrap();
    ready.send(&()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
    drop(shm);
}

#[test]
fn a_creator_killed_without_unlink_leaves_nothing_behind() {
    // CPython leaves /dev/shm/<name> behind here until reboot (or its resource tracker).
    let name = format!("itest_killed_{}", std::process::id());
    let (mut ready, theirs) = pipe(true).unwrap();
    let mut p = Process::new(create_and_hang, (name.clone(), theirs));
    p.start().unwrap();
    ready.recv::<()>().unwrap();
    let attached = SharedMemory::attach(&name).unwrap();
    attached.write_at(0, b"x").unwrap();
    p.kill().unwrap();
    p.join(None).unwrap();
    assert!(matches!(
        SharedMemory::attach(&name),
        Err(SharedMemoryError::NotFound { .. })
    ));
    // No file anywhere: nothing in /dev/shm names it.
    let files: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(!files.iter().any(|f| f.contains(&name)), "{files:?}");
    // The attached handle keeps the memory it mapped.
    let mut got = [0u8; 1];
    attached.read_at(0, &mut got).unwrap();
    assert_eq!(&got, b"x");
}

#[test]
fn bad_input_gives_typed_errors() {
    assert!(matches!(
        SharedMemory::create(None, 0),
        Err(SharedMemoryError::ZeroSize)
    ));
    assert!(matches!(
        SharedMemory::attach("itest_never_created"),
        Err(SharedMemoryError::NotFound { .. })
    ));
    for bad in ["", "/", "a/b", "sp ace", &"x".repeat(65)] {
        assert!(
            matches!(
                SharedMemory::create(Some(bad), 8),
                Err(SharedMemoryError::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
    let shm = SharedMemory::create(Some("itest_bounds"), 8).unwrap();
    assert!(matches!(
        shm.write_at(usize::MAX, b"x"),
        Err(SharedMemoryError::OutOfBounds { .. })
    ));
    assert!(matches!(
        shm.read_at(7, &mut [0u8; 2]),
        Err(SharedMemoryError::OutOfBounds { .. })
    ));
    assert!(matches!(
        SharedMemory::create(Some("itest_bounds"), 8),
        Err(SharedMemoryError::Exists { .. })
    ));
    shm.unlink().unwrap();
}
