//! `SharedMemory`: Python's `multiprocessing.shared_memory.SharedMemory`, a block of
//! memory that processes find by name, which the kernel frees when its last user is gone.
//!
//! # Examples
//!
//! ```
//! use procvisor::shared_memory::SharedMemory;
//!
//! let shm = SharedMemory::create(None, 16)?; // a generated name, such as "psm_3f0c…"
//! shm.write_at(0, b"hello")?;
//! // Any process of the same user attaches by name and sees the same bytes.
//! let other = SharedMemory::attach(shm.name())?;
//! let mut got = [0u8; 5];
//! other.read_at(0, &mut got)?;
//! assert_eq!(&got, b"hello");
//! assert_eq!(other.size(), 16);
//! other.close();
//! shm.unlink()?; // the name is gone; the memory goes with its last user
//! assert!(SharedMemory::attach(shm.name()).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A `SharedMemory` also travels to a child inside its target's arguments, like a
//! [`Value`](crate::Value), without any name lookup.
//!
//! # How names work, and why nothing leaks
//!
//! CPython's segments are POSIX `shm_open` files in `/dev/shm`: the memory lives until
//! somebody `unlink`s the name, so a program killed before it unlinks leaks it until
//! reboot, and CPython runs a separate *resource tracker* process to unlink what its
//! programs forget (and warns, and sometimes unlinks segments other programs still use).
//!
//! procvisor keeps no file at all. The memory is a `memfd` (anonymous memory with a
//! descriptor), which the kernel frees when the last descriptor and mapping are gone —
//! whoever holds them, however they end. The *name* is a Unix socket in Linux's abstract
//! namespace, `procvisor-shm/<uid>/<name>`, bound by a small thread of the creating
//! process; attaching connects to it and receives the memfd (`SCM_RIGHTS`). An abstract
//! socket is no file either: it vanishes when its socket closes. Both sides check the
//! other's uid (`SO_PEERCRED`), so only processes of the same user attach, and nobody can
//! squat a name to hand out memory of their own.
//!
//! So, compared with Python:
//!
//! - [`unlink`](SharedMemory::unlink), from any process, removes the name: later attaches
//!   fail with [`SharedMemoryError::NotFound`]; users already attached keep the memory.
//! - The name also goes when the creating process ends (it serves the name): attach by
//!   name while the creator lives, or pass the segment in a child's arguments.
//! - [`close`](SharedMemory::close) (or dropping) unmaps this handle; it does not remove
//!   the name, as in Python.
//!
//! # Caveats
//!
//! - [`buf`](SharedMemory::buf) is a slice of `AtomicU8`: any process may write any byte
//!   at any time, so plain `&[u8]` access would be unsound. Coordinate writers with a
//!   [`Lock`](crate::Lock) as in Python.
//! - A child made with the `fork` start method inherits the naming socket; the name then
//!   lives until that child ends too.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, getsockopt, sendmsg, sockopt};
use procvisor_worker::handles;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sys::shm::{Region, euid, recv_with_fd};

/// The longest name accepted (the abstract socket name adds a prefix to it, and the whole
/// must fit in 107 bytes).
pub const MAX_NAME_LEN: usize = 64;

/// How long an attach or unlink waits for the creator's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Request bytes on the naming socket.
const ATTACH: u8 = b'a';
const UNLINK: u8 = b'u';

/// Why a `SharedMemory` call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SharedMemoryError {
    /// No segment has this name (never created, unlinked, or its creator ended): Python's
    /// `FileNotFoundError`.
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// A segment of this name exists already: Python's `FileExistsError`.
    Exists {
        /// The name asked for.
        name: String,
    },
    /// A segment of zero bytes was asked for: Python's `ValueError`.
    ZeroSize,
    /// The name is empty, longer than [`MAX_NAME_LEN`], or has a character other than
    /// ASCII letters, digits, `_`, `-` and `.` (after one optional leading `/`).
    InvalidName {
        /// The name given.
        name: String,
    },
    /// A read or write reaches past the end of the segment; nothing was touched.
    OutOfBounds {
        /// Where the access starts.
        offset: usize,
        /// How many bytes it covers.
        len: usize,
        /// The segment's size.
        size: usize,
    },
    /// The process serving the name belongs to another user, or answered nonsense.
    Refused {
        /// The name asked for.
        name: String,
    },
    /// The system call failed.
    Os(io::Error),
}

impl fmt::Display for SharedMemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SharedMemoryError::NotFound { name } => write!(f, "no shared memory named {name:?}"),
            SharedMemoryError::Exists { name } => {
                write!(f, "shared memory named {name:?} exists already")
            }
            SharedMemoryError::ZeroSize => f.write_str("shared memory of zero bytes"),
            SharedMemoryError::InvalidName { name } => {
                write!(f, "invalid shared memory name {name:?}")
            }
            SharedMemoryError::OutOfBounds { offset, len, size } => write!(
                f,
                "{len} bytes at offset {offset} reach past the end of {size} bytes"
            ),
            SharedMemoryError::Refused { name } => {
                write!(f, "the server of shared memory {name:?} was refused")
            }
            SharedMemoryError::Os(_) => f.write_str("shared memory system call failed"),
        }
    }
}

impl std::error::Error for SharedMemoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SharedMemoryError::Os(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Errno> for SharedMemoryError {
    fn from(e: Errno) -> Self {
        SharedMemoryError::Os(e.into())
    }
}

impl From<io::Error> for SharedMemoryError {
    fn from(e: io::Error) -> Self {
        SharedMemoryError::Os(e)
    }
}

/// A named block of shared memory: Python's `multiprocessing.shared_memory.SharedMemory`.
pub struct SharedMemory {
    name: String,
    region: Region,
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name)
            .field("size", &self.region.len())
            .finish()
    }
}

fn check_name(name: &str) -> Result<(), SharedMemoryError> {
    let body = name.strip_prefix('/').unwrap_or(name);
    let ok = !body.is_empty()
        && name.len() <= MAX_NAME_LEN
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(SharedMemoryError::InvalidName {
            name: name.to_owned(),
        })
    }
}

fn socket_addr(name: &str) -> io::Result<SocketAddr> {
    let uid = euid();
    SocketAddr::from_abstract_name(format!("procvisor-shm/{uid}/{name}"))
}

/// Whether the peer of `sock` runs as our user.
fn same_user(sock: &UnixStream) -> bool {
    getsockopt(sock, sockopt::PeerCredentials).is_ok_and(|c| c.uid() == euid())
}

fn generated_name() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("psm_{:016x}", h.finish())
}

/// Serves the name: hands a duplicate of the memfd to every attaching process of our
/// user, until an unlink request comes. Runs on a thread of the creating process.
fn serve(listener: UnixListener, memfd: OwnedFd) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if !same_user(&stream) {
            continue;
        }
        // A silent client may not stall the name for others for long.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut request = [0u8; 1];
        if stream.read_exact(&mut request).is_err() {
            continue;
        }
        match request[0] {
            ATTACH => {
                let fds = [std::os::fd::AsRawFd::as_raw_fd(&memfd)];
                let _ = sendmsg::<()>(
                    std::os::fd::AsRawFd::as_raw_fd(&stream),
                    &[io::IoSlice::new(&[ATTACH])],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                );
            }
            UNLINK => {
                // Close the name before answering, so that an attach that follows the
                // answer finds nothing.
                drop(listener);
                drop(memfd);
                let _ = stream.write_all(&[UNLINK]);
                return;
            }
            _ => {}
        }
    }
}

/// Connects to the name's server and sends `request`.
fn ask(name: &str, request: u8) -> Result<UnixStream, SharedMemoryError> {
    let not_found = || SharedMemoryError::NotFound {
        name: name.to_owned(),
    };
    let mut stream = match UnixStream::connect_addr(&socket_addr(name)?) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    if !same_user(&stream) {
        return Err(SharedMemoryError::Refused {
            name: name.to_owned(),
        });
    }
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.write_all(&[request]).map_err(|_| not_found())?;
    Ok(stream)
}

impl SharedMemory {
    /// Creates a segment of `size` zero bytes named `name` (`None`: a generated name, read
    /// it back with [`name`](SharedMemory::name)). Python's
    /// `SharedMemory(name, create=True, size=size)`.
    ///
    /// ```
    /// use procvisor::shared_memory::{SharedMemory, SharedMemoryError};
    /// assert!(matches!(SharedMemory::create(None, 0), Err(SharedMemoryError::ZeroSize)));
    /// assert!(matches!(
    ///     SharedMemory::create(Some("no/slash"), 8),
    ///     Err(SharedMemoryError::InvalidName { .. })
    /// ));
    /// let a = SharedMemory::create(Some("doc_create_twice"), 8)?;
    /// assert!(matches!(
    ///     SharedMemory::create(Some("doc_create_twice"), 8),
    ///     Err(SharedMemoryError::Exists { .. })
    /// ));
    /// a.unlink()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create(name: Option<&str>, size: usize) -> Result<SharedMemory, SharedMemoryError> {
        if size == 0 {
            return Err(SharedMemoryError::ZeroSize);
        }
        let name = match name {
            Some(n) => {
                check_name(n)?;
                n.to_owned()
            }
            None => generated_name(),
        };
        // Bind the name first: taken, it fails before any memory is made.
        let listener = match UnixListener::bind_addr(&socket_addr(&name)?) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(SharedMemoryError::Exists { name });
            }
            Err(e) => return Err(e.into()),
        };
        let region = Region::create(c"procvisor-shm", size)?;
        let memfd = region.fd().try_clone_to_owned()?;
        std::thread::Builder::new()
            .name("procvisor-shm".into())
            .spawn(move || serve(listener, memfd))?;
        Ok(SharedMemory { name, region })
    }

    /// Attaches to the segment named `name`, created by a process of the same user that
    /// still runs. Python's `SharedMemory(name)`.
    ///
    /// ```
    /// use procvisor::shared_memory::{SharedMemory, SharedMemoryError};
    /// assert!(matches!(
    ///     SharedMemory::attach("doc_nobody_made_this"),
    ///     Err(SharedMemoryError::NotFound { .. })
    /// ));
    /// ```
    pub fn attach(name: &str) -> Result<SharedMemory, SharedMemoryError> {
        check_name(name)?;
        let stream = ask(name, ATTACH)?;
        let mut answer = [0u8; 1];
        let (n, fd) = recv_with_fd(stream.as_fd(), &mut answer)?;
        match (n, answer[0], fd) {
            (1, ATTACH, Some(fd)) => Ok(SharedMemory {
                name: name.to_owned(),
                region: Region::open(fd)?,
            }),
            // The server closed without an answer: unlinked meanwhile.
            (0, _, _) => Err(SharedMemoryError::NotFound {
                name: name.to_owned(),
            }),
            _ => Err(SharedMemoryError::Refused {
                name: name.to_owned(),
            }),
        }
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment's size in bytes (Python rounds it up to a page; this is the size asked
    /// for).
    pub fn size(&self) -> usize {
        self.region.len()
    }

    /// The segment's bytes: Python's `buf`. Atomic, because other processes may change any
    /// byte at any time.
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let shm = procvisor::shared_memory::SharedMemory::create(None, 4)?;
    /// shm.buf()[3].store(7, Ordering::Relaxed);
    /// assert_eq!(shm.buf()[3].load(Ordering::Relaxed), 7);
    /// shm.unlink()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn buf(&self) -> &[AtomicU8] {
        self.region.bytes()
    }

    fn range(&self, offset: usize, len: usize) -> Result<&[AtomicU8], SharedMemoryError> {
        let size = self.size();
        offset
            .checked_add(len)
            .filter(|&end| end <= size)
            .map(|end| &self.buf()[offset..end])
            .ok_or(SharedMemoryError::OutOfBounds { offset, len, size })
    }

    /// Copies `src` into the segment at `offset`; an error, with nothing written, when it
    /// does not fit.
    ///
    /// ```
    /// let shm = procvisor::shared_memory::SharedMemory::create(None, 4)?;
    /// assert!(shm.write_at(2, b"abc").is_err());
    /// shm.unlink()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_at(&self, offset: usize, src: &[u8]) -> Result<(), SharedMemoryError> {
        for (cell, &b) in self.range(offset, src.len())?.iter().zip(src) {
            cell.store(b, Ordering::Relaxed);
        }
        std::sync::atomic::fence(Ordering::Release);
        Ok(())
    }

    /// Copies from the segment at `offset` into `dst`; an error, with nothing read, when it
    /// reaches past the end.
    ///
    /// ```
    /// let shm = procvisor::shared_memory::SharedMemory::create(None, 4)?;
    /// let mut two = [1u8; 2];
    /// shm.read_at(2, &mut two)?;
    /// assert_eq!(two, [0, 0]);
    /// shm.unlink()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<(), SharedMemoryError> {
        let cells = self.range(offset, dst.len())?;
        std::sync::atomic::fence(Ordering::Acquire);
        for (b, cell) in dst.iter_mut().zip(cells) {
            *b = cell.load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// Unmaps this handle (Python's `close()`); the name and the other handles stay.
    /// Dropping the handle does the same.
    pub fn close(self) {
        drop(self);
    }

    /// Removes the name, from any process of the same user (Python's `unlink()`): later
    /// attaches fail; handles already open keep the memory, which the kernel frees with the
    /// last of them.
    pub fn unlink(&self) -> Result<(), SharedMemoryError> {
        let mut stream = ask(&self.name, UNLINK)?;
        let mut answer = [0u8; 1];
        match stream.read(&mut answer) {
            Ok(1) if answer[0] == UNLINK => Ok(()),
            // Closed without an answer: somebody else unlinked it at the same time.
            Ok(_) => Err(SharedMemoryError::NotFound {
                name: self.name.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// How a segment travels inside a process's arguments.
#[derive(Serialize, Deserialize)]
struct Wire {
    name: String,
    memfd: u32,
}

impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let memfd = handles::push(self.region.fd()).map_err(serde::ser::Error::custom)?;
        Wire {
            name: self.name.clone(),
            memfd,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        let fd = handles::take(wire.memfd).map_err(serde::de::Error::custom)?;
        let region = Region::open(fd).map_err(serde::de::Error::custom)?;
        Ok(SharedMemory {
            name: wire.name,
            region,
        })
    }
}
