//! procvisor's integration tests: real processes, real signals, real exit codes.
//!
//! One test binary (the tests run on parallel threads, which procvisor must survive);
//! tests that need the whole process to themselves — `fork` from a quiet parent, counting
//! descriptors — live in their own binaries beside this one.

// Process lifecycle under every start method: start, join, exit codes, signals, results.
mod lifecycle;
// Python's rules about names, identities, daemons and the process tree.
mod identity;
// Children that misbehave: garbage on the control socket, dying before reporting.
mod faults;
// No zombies, no orphans: reaping without join, and SIGKILL of the parent.
mod containment;
// Pipe and Connection between processes, and wait().
mod connection;
// Queue, SimpleQueue, JoinableQueue across processes, and kills under load.
mod queues;
// Lock, Event, Value and Array across processes, and locks and permits whose holder died.
mod synchronize;
// SharedMemory by name across processes: attach, unlink, a creator killed, bad input.
mod shared_memory;
// Manager: proxies from children and over TCP, nested proxies, a killed manager, bad input.
mod manager;
// The actor layer: join_async, Worker and Supervisor addresses.
mod actors;
// Listener and Client: authenticated connections over Unix paths, abstract names, TCP.
mod listener;
// Pool: apply, map, imap, starmap; close, terminate, join; workers killed under load.
mod pool;
