//! `Manager`: Python's `multiprocessing.Manager()` — a server process that owns shared
//! objects and serves typed proxies to them, from any process of the program and, with an
//! authkey over TCP, from other hosts.
//!
//! # Brief overview
//!
//! - [`Manager::start`] starts the server: a daemonic child [`Process`], on a Linux abstract
//!   socket with a random authkey. [`Manager::builder`] picks the address (a TCP one for
//!   remote clients), the authkey, and the custom types the server can hold.
//! - A `Manager` dereferences to a [`ManagerClient`], which makes the objects: [`dict`]
//!   ([`DictProxy<K, V>`]), [`list`] ([`ListProxy<T>`]), [`namespace`]
//!   ([`NamespaceProxy`]), [`queue`] ([`QueueProxy<T>`]), [`value`] ([`ValueProxy<T>`]),
//!   [`lock`] ([`LockProxy`]), [`event`] ([`EventProxy`]), and [`create`] for registered
//!   [`SharedObject`]s ([`Proxy<T>`]). [`ManagerClient::connect`] is the remote side.
//! - Every proxy is serde: pass it to a child inside a [`Process`]'s arguments, or store
//!   it inside another managed object (a nested proxy, see below).
//!
//! [`dict`]: ManagerClient::dict
//! [`list`]: ManagerClient::list
//! [`namespace`]: ManagerClient::namespace
//! [`queue`]: ManagerClient::queue
//! [`value`]: ManagerClient::value
//! [`lock`]: ManagerClient::lock
//! [`event`]: ManagerClient::event
//! [`create`]: ManagerClient::create
//!
//! ```no_run
//! use procvisor::manager::{DictProxy, ListProxy, Manager};
//! use procvisor::Process;
//!
//! fn fill((d, l, i): (DictProxy<u32, u32>, ListProxy<u32>, u32)) {
//!     d.set(&i, &(i * i)).unwrap();
//!     l.append(&i).unwrap();
//! }
//!
//! let manager = Manager::start()?;
//! let d = manager.dict::<u32, u32>()?;
//! let l = manager.list::<u32>([])?;
//! let mut ps: Vec<Process> = (0..3).map(|i| Process::new(fill, (d.clone(), l.clone(), i))).collect();
//! for p in &mut ps {
//!     p.start()?;
//! }
//! for p in &ps {
//!     p.join(None)?;
//! }
//! assert_eq!(d.len()?, 3);
//! assert_eq!(d.get(&2)?, Some(4));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Values are copies; proxies are shared
//!
//! As in Python, what a proxy returns is a *copy*: `d.get(&k)` decodes the stored bytes into
//! a new value, and changing that value changes nothing in the manager. A `Vec` stored in a
//! dict is a plain value too: to change it, read, change and store it back. For an object
//! that several processes change in place, store a *proxy* instead: a
//! `DictProxy<String, ListProxy<i32>>` holds references to lists that live in the manager,
//! and `d.get(&k)?.unwrap().append(&1)` changes the shared list.
//!
//! # The wire
//!
//! A proxy's process keeps one authenticated [`Connection`] per thread to the manager (the
//! [`Listener`]/[`client`] handshake, HMAC-SHA256 over the authkey) and sends one
//! request per call, msgpack-encoded, answered by one response. Keys and values
//! travel as their msgpack bytes: the server never decodes them, so two keys are the same
//! key when their encodings are equal (`1u8` and `1i64` are; `1` and `1.0` are not).
//!
//! # Failure
//!
//! - The server runs one thread per connection; a request that does not decode gets an
//!   error answer, a torn frame closes that connection only: the manager never crashes on
//!   input.
//! - A proxy whose manager died (killed, or shut down) gets [`ManagerError::Gone`] from its
//!   call in progress or its next one — never a hang: the socket closes with the process.
//! - A [`LockProxy`] held by a process whose connection closes (the process died) is
//!   released by the server, as a robust lock.
//!
//! # Caveats
//!
//! - Objects live until the manager shuts down: there is no reference counting of
//!   proxies (Python's `decref`); make long-lived objects, or name them
//!   ([`ManagerClient::named`]).
//! - The manager is a daemonic child: it is shut down by [`Manager::shutdown`], by dropping
//!   the `Manager`, and, like every child, when the program exits or is killed.

use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use procvisor_protocol::frame::decode_value;
use procvisor_protocol::{RemoteError, encode_value};
use procvisor_worker::entry::{self, EntryFn};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::connection::{Connection, ConnectionError};
use crate::listener::{Address, Listener, ListenerError, client};
use crate::process::Process;

/// The kinds of object a manager holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    Dict,
    List,
    Namespace,
    Queue { maxsize: u64 },
    Value,
    Lock,
    Event,
    Custom(String),
}

/// A call on one object. Keys and values are msgpack bytes the server does not decode.
#[derive(Debug, Serialize, Deserialize)]
enum Op {
    MapGet(Vec<u8>),
    MapSet(Vec<u8>, Vec<u8>),
    MapDel(Vec<u8>),
    MapContains(Vec<u8>),
    MapItems,
    MapClear,
    Len,
    ListGet(i64),
    ListSet(i64, Vec<u8>),
    ListAppend(Vec<u8>),
    ListExtend(Vec<Vec<u8>>),
    ListInsert(i64, Vec<u8>),
    ListPop(Option<i64>),
    ListItems,
    ListReverse,
    ListClear,
    QueuePut(Vec<u8>, Option<Duration>),
    QueueGet(Option<Duration>),
    ValueGet,
    ValueSet(Vec<u8>),
    LockAcquire(Option<Duration>),
    LockRelease,
    EventSet,
    EventClear,
    EventIsSet,
    EventWait(Option<Duration>),
    Custom(Vec<u8>),
}

/// One request on a manager connection.
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// Make an object; `init` is the initial content (a value, or list items).
    Create {
        kind: Kind,
        init: Vec<Vec<u8>>,
    },
    /// The object of this name, made (empty) if there is none yet.
    Named {
        name: String,
        kind: Kind,
    },
    Call {
        id: u64,
        op: Op,
    },
    Shutdown,
}

/// What the server answers.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Unit,
    Id(u64),
    Bool(bool),
    Len(u64),
    Maybe(Option<Vec<u8>>),
    Many(Vec<Vec<u8>>),
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
}

/// A failed request, as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Fault {
    NoSuchObject(u64),
    WrongKind,
    IndexOutOfRange(i64),
    Empty,
    Full,
    Unlocked,
    UnknownType(String),
    NameTaken(String),
    Malformed(String),
    Custom(String),
}

/// Why a manager call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ManagerError {
    /// The server process could not be started, or did not come up.
    Start(crate::Error),
    /// Binding the server's address failed, in the server (reported back).
    Bind(String),
    /// No connection to the manager could be made: nobody listens at its address, or the
    /// authkey was refused ([`ListenerError::is_authentication`]).
    Connect(ListenerError),
    /// The manager went away during or before the call: killed, crashed, or shut down.
    Gone(ConnectionError),
    /// An index outside the list (Python's `IndexError`).
    IndexOutOfRange(i64),
    /// A queue stayed empty (on `get`) or full (on `put`) past the timeout (Python's
    /// `queue.Empty` / `queue.Full`).
    Empty,
    /// See [`ManagerError::Empty`].
    Full,
    /// `release` of a manager lock that is not held.
    Unlocked,
    /// A custom type the server was not started with
    /// ([`ManagerBuilder::register`]).
    UnknownType(String),
    /// [`ManagerClient::named`] found an object of another kind under that name.
    NameTaken(String),
    /// A value did not encode, or the stored bytes did not decode as the proxy's type.
    Codec(String),
    /// The server refused the request as malformed, or lost the object (a proxy from
    /// another manager).
    Protocol(String),
    /// A custom object's handler failed (it panicked, or its request did not decode).
    Remote(String),
}

impl fmt::Display for ManagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagerError::Start(_) => f.write_str("the manager process did not start"),
            ManagerError::Bind(why) => write!(f, "the manager could not bind: {why}"),
            ManagerError::Connect(_) => f.write_str("cannot connect to the manager"),
            ManagerError::Gone(_) => f.write_str("the manager is gone"),
            ManagerError::IndexOutOfRange(i) => write!(f, "list index {i} out of range"),
            ManagerError::Empty => f.write_str("the queue is empty"),
            ManagerError::Full => f.write_str("the queue is full"),
            ManagerError::Unlocked => f.write_str("release of an unheld lock"),
            ManagerError::UnknownType(t) => write!(f, "the manager has no type {t:?}"),
            ManagerError::NameTaken(n) => {
                write!(f, "the name {n:?} holds an object of another kind")
            }
            ManagerError::Codec(why) => write!(f, "value encoding failed: {why}"),
            ManagerError::Protocol(why) => write!(f, "the manager refused the request: {why}"),
            ManagerError::Remote(why) => write!(f, "the shared object failed: {why}"),
        }
    }
}

impl std::error::Error for ManagerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ManagerError::Start(e) => Some(e),
            ManagerError::Connect(e) => Some(e),
            ManagerError::Gone(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Fault> for ManagerError {
    fn from(f: Fault) -> Self {
        match f {
            Fault::NoSuchObject(id) => ManagerError::Protocol(format!("no object {id}")),
            Fault::WrongKind => ManagerError::Protocol("operation on the wrong kind".into()),
            Fault::IndexOutOfRange(i) => ManagerError::IndexOutOfRange(i),
            Fault::Empty => ManagerError::Empty,
            Fault::Full => ManagerError::Full,
            Fault::Unlocked => ManagerError::Unlocked,
            Fault::UnknownType(t) => ManagerError::UnknownType(t),
            Fault::NameTaken(n) => ManagerError::NameTaken(n),
            Fault::Malformed(why) => ManagerError::Protocol(why),
            Fault::Custom(why) => ManagerError::Remote(why),
        }
    }
}

fn enc<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ManagerError> {
    encode_value(value).map_err(|e| ManagerError::Codec(e.to_string()))
}

fn dec<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ManagerError> {
    decode_value(bytes).map_err(|e| ManagerError::Codec(e.to_string()))
}

// ---------------------------------------------------------------------------------------
// The client side.

thread_local! {
    /// This thread's connections, by manager (address and key), with the pid that made them: a
    /// `fork` child inherits the list but must not share its parent's sockets. A list, not a
    /// map: a thread talks to one manager or a few, and finding one by comparing beats hashing
    /// the address and the key on every call, which the dict round-trip bench measured (the
    /// lookup used to remove, clone and re-insert the key, about a tenth of a call).
    static CONNECTIONS: RefCell<Vec<CachedConnection>> = const { RefCell::new(Vec::new()) };
}

/// One entry of [`CONNECTIONS`].
struct CachedConnection {
    manager: ManagerClient,
    /// The process that connected.
    pid: u32,
    /// `None` while a call uses it (taken out, so that no borrow is held during the call).
    conn: Option<Connection>,
}

/// The way to a manager: its address and authkey. Makes objects and proxies; what a
/// [`Manager`] dereferences to, and what a remote process gets from
/// [`ManagerClient::connect`].
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ManagerClient {
    address: Address,
    authkey: Vec<u8>,
}

impl fmt::Debug for ManagerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("ManagerClient")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl ManagerClient {
    /// Connects to a manager started elsewhere (another process of this program, or
    /// another program or host) at `address`, with its authkey; checks the key at once.
    ///
    /// ```no_run
    /// use procvisor::manager::ManagerClient;
    /// let remote = ManagerClient::connect(&"10.0.0.5:50000".parse()?, b"secret")?;
    /// let jobs = remote.named::<procvisor::manager::QueueProxy<String>>("jobs")?;
    /// jobs.put(&"hello".to_owned(), None)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(address: &Address, authkey: &[u8]) -> Result<ManagerClient, ManagerError> {
        let c = ManagerClient {
            address: address.clone(),
            authkey: authkey.to_vec(),
        };
        c.with_connection(|_| Ok(()))?;
        Ok(c)
    }

    /// The manager's address.
    pub fn address(&self) -> &Address {
        &self.address
    }

    fn with_connection<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, ManagerError>,
    ) -> Result<R, ManagerError> {
        let me = crate::sys::current_pid();
        let cached = CONNECTIONS.with(|m| {
            let mut m = m.borrow_mut();
            // A `fork` child's inherited entries are its parent's: dropped (this closes
            // only the child's copies of the sockets).
            m.retain(|e| e.pid == me);
            m.iter_mut()
                .find(|e| e.manager == *self)
                .and_then(|e| e.conn.take())
        });
        let mut c = match cached {
            Some(c) => c,
            None => client(&self.address, Some(&self.authkey)).map_err(ManagerError::Connect)?,
        };
        let r = f(&mut c);
        // A connection that failed is dropped: the next call reconnects (or reports that
        // the manager is gone).
        let keep = !matches!(r, Err(ManagerError::Gone(_)));
        CONNECTIONS.with(|m| {
            let mut m = m.borrow_mut();
            match m.iter_mut().find(|e| e.manager == *self) {
                Some(e) if keep => e.conn = Some(c),
                Some(_) => m.retain(|e| e.manager != *self),
                None if keep => m.push(CachedConnection {
                    manager: self.clone(),
                    pid: me,
                    conn: Some(c),
                }),
                None => {}
            }
        });
        r
    }

    fn request(&self, req: &Request) -> Result<Reply, ManagerError> {
        self.with_connection(|c| {
            c.send(req).map_err(ManagerError::Gone)?;
            match c.recv::<Result<Reply, Fault>>() {
                Ok(r) => r.map_err(ManagerError::from),
                Err(e @ ConnectionError::Decode { .. }) => {
                    Err(ManagerError::Protocol(e.to_string()))
                }
                Err(e) => Err(ManagerError::Gone(e)),
            }
        })
    }

    fn call(&self, id: u64, op: Op) -> Result<Reply, ManagerError> {
        self.request(&Request::Call { id, op })
    }

    fn create_raw(&self, kind: Kind, init: Vec<Vec<u8>>) -> Result<ObjectRef, ManagerError> {
        match self.request(&Request::Create { kind, init })? {
            Reply::Id(id) => Ok(ObjectRef {
                manager: self.clone(),
                id,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// A new, empty dict: Python's `manager.dict()`.
    ///
    /// ```no_run
    /// let m = procvisor::manager::Manager::start()?;
    /// let d = m.dict::<String, f64>()?;
    /// d.set(&"pi".to_owned(), &3.14)?;
    /// assert_eq!(d.get(&"pi".to_owned())?, Some(3.14));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>, ManagerError>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        Ok(DictProxy::wrap(self.create_raw(Kind::Dict, vec![])?))
    }

    /// A new list holding `items`: Python's `manager.list(items)`.
    ///
    /// ```no_run
    /// let m = procvisor::manager::Manager::start()?;
    /// let l = m.list(0..3)?;
    /// l.reverse()?;
    /// assert_eq!(l.to_vec()?, [2, 1, 0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn list<T>(&self, items: impl IntoIterator<Item = T>) -> Result<ListProxy<T>, ManagerError>
    where
        T: Serialize + DeserializeOwned,
    {
        let init = items
            .into_iter()
            .map(|v| enc(&v))
            .collect::<Result<_, _>>()?;
        Ok(ListProxy::wrap(self.create_raw(Kind::List, init)?))
    }

    /// A new, empty namespace: Python's `manager.Namespace()`.
    ///
    /// ```no_run
    /// let m = procvisor::manager::Manager::start()?;
    /// let ns = m.namespace()?;
    /// ns.set("x", &10)?;
    /// assert_eq!(ns.get::<i32>("x")?, Some(10));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn namespace(&self) -> Result<NamespaceProxy, ManagerError> {
        Ok(NamespaceProxy::wrap(
            self.create_raw(Kind::Namespace, vec![])?,
        ))
    }

    /// A new queue of at most `maxsize` items (0: no limit): Python's `manager.Queue()`.
    ///
    /// ```no_run
    /// let m = procvisor::manager::Manager::start()?;
    /// let q = m.queue::<u8>(0)?;
    /// q.put(&1, None)?;
    /// assert_eq!(q.get(None)?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue<T>(&self, maxsize: usize) -> Result<QueueProxy<T>, ManagerError>
    where
        T: Serialize + DeserializeOwned,
    {
        let kind = Kind::Queue {
            maxsize: maxsize as u64,
        };
        Ok(QueueProxy::wrap(self.create_raw(kind, vec![])?))
    }

    /// A new value holding `value`: Python's `manager.Value(typecode, value)`, any serde
    /// type.
    ///
    /// ```no_run
    /// let m = procvisor::manager::Manager::start()?;
    /// let v = m.value(vec![1, 2])?;
    /// v.set(&vec![3])?;
    /// assert_eq!(v.get()?, [3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn value<T>(&self, value: T) -> Result<ValueProxy<T>, ManagerError>
    where
        T: Serialize + DeserializeOwned,
    {
        let init = vec![enc(&value)?];
        Ok(ValueProxy::wrap(self.create_raw(Kind::Value, init)?))
    }

    /// A new lock in the manager: Python's `manager.Lock()`.
    ///
    /// ```no_run
    /// let m = procvisor::manager::Manager::start()?;
    /// let lock = m.lock()?;
    /// assert!(lock.acquire(None)?);
    /// lock.release()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self) -> Result<LockProxy, ManagerError> {
        Ok(LockProxy::wrap(self.create_raw(Kind::Lock, vec![])?))
    }

    /// A new event in the manager: Python's `manager.Event()`.
    ///
    /// ```no_run
    /// let m = procvisor::manager::Manager::start()?;
    /// let e = m.event()?;
    /// e.set()?;
    /// assert!(e.wait(None)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn event(&self) -> Result<EventProxy, ManagerError> {
        Ok(EventProxy::wrap(self.create_raw(Kind::Event, vec![])?))
    }

    /// A new object of a registered custom type (Python's `BaseManager.register`).
    ///
    /// ```no_run
    /// use procvisor::manager::{Manager, SharedObject};
    ///
    /// #[derive(Default)]
    /// struct Counter(i64);
    /// impl SharedObject for Counter {
    ///     const TYPEID: &'static str = "Counter";
    ///     type Request = i64;
    ///     type Response = i64;
    ///     fn handle(&mut self, add: i64) -> i64 {
    ///         self.0 += add;
    ///         self.0
    ///     }
    /// }
    ///
    /// let m = Manager::builder().register::<Counter>().start()?;
    /// let c = m.create::<Counter>()?;
    /// assert_eq!(c.call(&5)?, 5);
    /// assert_eq!(c.call(&2)?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create<T: SharedObject>(&self) -> Result<Proxy<T>, ManagerError> {
        let kind = Kind::Custom(T::TYPEID.to_owned());
        Ok(Proxy::wrap(self.create_raw(kind, vec![])?))
    }

    /// The object registered under `name`, made empty by the first caller: how unrelated
    /// (remote) processes find the same object.
    ///
    /// ```no_run
    /// use procvisor::manager::{DictProxy, Manager};
    /// let m = Manager::start()?;
    /// let a = m.named::<DictProxy<String, i32>>("config")?;
    /// a.set(&"retries".to_owned(), &3)?;
    /// let b = m.named::<DictProxy<String, i32>>("config")?; // the same dict
    /// assert_eq!(b.get(&"retries".to_owned())?, Some(3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn named<P: ManagedProxy>(&self, name: &str) -> Result<P, ManagerError> {
        let req = Request::Named {
            name: name.to_owned(),
            kind: P::kind().0,
        };
        match self.request(&req)? {
            Reply::Id(id) => Ok(P::from_ref(ObjectRefOpaque(ObjectRef {
                manager: self.clone(),
                id,
            }))),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(reply: Reply) -> ManagerError {
    ManagerError::Protocol(format!("unexpected answer {reply:?}"))
}

/// A reference to one object of a manager: what every proxy holds and what travels.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ObjectRef {
    manager: ManagerClient,
    id: u64,
}

impl ObjectRef {
    fn call(&self, op: Op) -> Result<Reply, ManagerError> {
        self.manager.call(self.id, op)
    }

    fn unit(&self, op: Op) -> Result<(), ManagerError> {
        match self.call(op)? {
            Reply::Unit => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn boolean(&self, op: Op) -> Result<bool, ManagerError> {
        match self.call(op)? {
            Reply::Bool(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    fn len(&self) -> Result<usize, ManagerError> {
        match self.call(Op::Len)? {
            Reply::Len(n) => Ok(n as usize),
            other => Err(unexpected(other)),
        }
    }

    fn maybe<T: DeserializeOwned>(&self, op: Op) -> Result<Option<T>, ManagerError> {
        match self.call(op)? {
            Reply::Maybe(b) => b.map(|b| dec(&b)).transpose(),
            other => Err(unexpected(other)),
        }
    }

    fn many<T: DeserializeOwned>(&self, op: Op) -> Result<Vec<T>, ManagerError> {
        match self.call(op)? {
            Reply::Many(items) => items.iter().map(|b| dec(b)).collect(),
            other => Err(unexpected(other)),
        }
    }
}

/// A proxy type that [`ManagerClient::named`] can make.
pub trait ManagedProxy: Sized {
    /// What kind of object the proxy stands for.
    #[doc(hidden)]
    fn kind() -> ProxyKind;
    /// Wraps a reference.
    #[doc(hidden)]
    fn from_ref(r: ObjectRefOpaque) -> Self;
}

/// The kind of a proxy's object (opaque).
#[doc(hidden)]
#[derive(Debug)]
pub struct ProxyKind(Kind);

/// A reference to a manager's object (opaque).
#[doc(hidden)]
#[derive(Debug)]
pub struct ObjectRefOpaque(ObjectRef);

impl fmt::Debug for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.id, self.manager.address)
    }
}

macro_rules! proxy_type {
    ($(#[$doc:meta])* $name:ident <$($t:ident),*>, $kind:expr) => {
        $(#[$doc])*
        pub struct $name<$($t),*> {
            r: ObjectRef,
            _t: PhantomData<fn() -> ($($t,)*)>,
        }

        impl<$($t),*> Clone for $name<$($t),*> {
            fn clone(&self) -> Self {
                Self { r: self.r.clone(), _t: PhantomData }
            }
        }

        impl<$($t),*> fmt::Debug for $name<$($t),*> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.r).finish()
            }
        }

        impl<$($t),*> PartialEq for $name<$($t),*> {
            fn eq(&self, other: &Self) -> bool {
                self.r == other.r
            }
        }

        impl<$($t),*> Serialize for $name<$($t),*> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.r.serialize(s)
            }
        }

        impl<'de, $($t),*> Deserialize<'de> for $name<$($t),*> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(Self { r: ObjectRef::deserialize(d)?, _t: PhantomData })
            }
        }

        impl<$($t),*> $name<$($t),*> {
            fn wrap(r: ObjectRef) -> Self {
                Self { r, _t: PhantomData }
            }
        }
    };
}

macro_rules! managed {
    ($name:ident; $($t:ident),*; $kind:expr) => {
        impl<$($t),*> ManagedProxy for $name<$($t),*> {
            fn kind() -> ProxyKind {
                ProxyKind($kind)
            }
            fn from_ref(r: ObjectRefOpaque) -> Self {
                Self::wrap(r.0)
            }
        }
    };
}

proxy_type!(
    /// A dict in a manager: Python's `DictProxy`, typed. Insertion-ordered, as Python's.
    DictProxy<K, V>, Kind::Dict
);
managed!(DictProxy; K, V; Kind::Dict);
proxy_type!(
    /// A list in a manager: Python's `ListProxy`, typed.
    ListProxy<T>, Kind::List
);
managed!(ListProxy; T; Kind::List);
proxy_type!(
    /// A namespace in a manager: Python's `Namespace`, with attributes of any serde type.
    NamespaceProxy<>, Kind::Namespace
);
managed!(NamespaceProxy;; Kind::Namespace);
proxy_type!(
    /// A queue in a manager: Python's `manager.Queue()`.
    QueueProxy<T>, Kind::Queue { maxsize: 0 }
);
managed!(QueueProxy; T; Kind::Queue { maxsize: 0 });
proxy_type!(
    /// A value in a manager: Python's `manager.Value`.
    ValueProxy<T>, Kind::Value
);
managed!(ValueProxy; T; Kind::Value);
proxy_type!(
    /// A lock in a manager: Python's `manager.Lock()`. Released by the manager when the
    /// connection of the process holding it closes (the holder died).
    LockProxy<>, Kind::Lock
);
managed!(LockProxy;; Kind::Lock);
proxy_type!(
    /// An event in a manager: Python's `manager.Event()`.
    EventProxy<>, Kind::Event
);
managed!(EventProxy;; Kind::Event);
proxy_type!(
    /// An object of a registered [`SharedObject`] type in a manager.
    Proxy<T>, Kind::Custom(String::new())
);

impl<T: SharedObject> ManagedProxy for Proxy<T> {
    fn kind() -> ProxyKind {
        ProxyKind(Kind::Custom(T::TYPEID.to_owned()))
    }
    fn from_ref(r: ObjectRefOpaque) -> Self {
        Self::wrap(r.0)
    }
}

impl<K, V> DictProxy<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// A copy of the value of `key`, if present (Python's `d.get(key)`).
    pub fn get(&self, key: &K) -> Result<Option<V>, ManagerError> {
        self.r.maybe(Op::MapGet(enc(key)?))
    }

    /// Sets `key` to `value` (Python's `d[key] = value`).
    pub fn set(&self, key: &K, value: &V) -> Result<(), ManagerError> {
        self.r.unit(Op::MapSet(enc(key)?, enc(value)?))
    }

    /// Removes `key`, returning its value if it was present (Python's `d.pop(key, None)`).
    pub fn remove(&self, key: &K) -> Result<Option<V>, ManagerError> {
        self.r.maybe(Op::MapDel(enc(key)?))
    }

    /// Whether `key` is present (Python's `key in d`).
    pub fn contains_key(&self, key: &K) -> Result<bool, ManagerError> {
        self.r.boolean(Op::MapContains(enc(key)?))
    }

    /// The number of entries.
    pub fn len(&self) -> Result<usize, ManagerError> {
        self.r.len()
    }

    /// Whether the dict is empty.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// A copy of every entry, in insertion order (Python's `d.items()`).
    pub fn items(&self) -> Result<Vec<(K, V)>, ManagerError> {
        match self.r.call(Op::MapItems)? {
            Reply::Pairs(pairs) => pairs.iter().map(|(k, v)| Ok((dec(k)?, dec(v)?))).collect(),
            other => Err(unexpected(other)),
        }
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.r.unit(Op::MapClear)
    }
}

impl<T> ListProxy<T>
where
    T: Serialize + DeserializeOwned,
{
    /// A copy of item `index`; negative indices count from the end, as in Python.
    pub fn get(&self, index: i64) -> Result<T, ManagerError> {
        self.r
            .maybe(Op::ListGet(index))?
            .ok_or(ManagerError::IndexOutOfRange(index))
    }

    /// Sets item `index` (Python's `l[index] = value`).
    pub fn set(&self, index: i64, value: &T) -> Result<(), ManagerError> {
        self.r.unit(Op::ListSet(index, enc(value)?))
    }

    /// Appends an item.
    pub fn append(&self, value: &T) -> Result<(), ManagerError> {
        self.r.unit(Op::ListAppend(enc(value)?))
    }

    /// Appends every item, in one request.
    pub fn extend<'a>(&self, items: impl IntoIterator<Item = &'a T>) -> Result<(), ManagerError>
    where
        T: 'a,
    {
        let items = items.into_iter().map(enc).collect::<Result<_, _>>()?;
        self.r.unit(Op::ListExtend(items))
    }

    /// Inserts an item before `index` (Python's `l.insert`).
    pub fn insert(&self, index: i64, value: &T) -> Result<(), ManagerError> {
        self.r.unit(Op::ListInsert(index, enc(value)?))
    }

    /// Removes and returns item `index`, the last one for `None` (Python's `l.pop()`).
    pub fn pop(&self, index: Option<i64>) -> Result<T, ManagerError> {
        self.r
            .maybe(Op::ListPop(index))?
            .ok_or(ManagerError::IndexOutOfRange(index.unwrap_or(-1)))
    }

    /// The number of items.
    pub fn len(&self) -> Result<usize, ManagerError> {
        self.r.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// A copy of every item (Python's `l[:]`).
    pub fn to_vec(&self) -> Result<Vec<T>, ManagerError> {
        self.r.many(Op::ListItems)
    }

    /// Reverses the list in place.
    pub fn reverse(&self) -> Result<(), ManagerError> {
        self.r.unit(Op::ListReverse)
    }

    /// Removes every item.
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.r.unit(Op::ListClear)
    }
}

impl NamespaceProxy {
    /// A copy of attribute `name`, if set (Python's `ns.name`).
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ManagerError> {
        self.r.maybe(Op::MapGet(enc(name)?))
    }

    /// Sets attribute `name` (Python's `ns.name = value`).
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<(), ManagerError> {
        self.r.unit(Op::MapSet(enc(name)?, enc(value)?))
    }

    /// Deletes attribute `name`; whether it was set.
    pub fn remove(&self, name: &str) -> Result<bool, ManagerError> {
        Ok(self
            .r
            .maybe::<serde::de::IgnoredAny>(Op::MapDel(enc(name)?))?
            .is_some())
    }

    /// The names of the attributes, in the order they were first set.
    pub fn names(&self) -> Result<Vec<String>, ManagerError> {
        match self.r.call(Op::MapItems)? {
            Reply::Pairs(pairs) => pairs.iter().map(|(k, _)| dec(k)).collect(),
            other => Err(unexpected(other)),
        }
    }
}

impl<T> QueueProxy<T>
where
    T: Serialize + DeserializeOwned,
{
    /// Puts an item, waiting at most `timeout` for room (`None`: for ever);
    /// [`ManagerError::Full`] when it stayed full.
    pub fn put(&self, value: &T, timeout: Option<Duration>) -> Result<(), ManagerError> {
        self.r.unit(Op::QueuePut(enc(value)?, timeout))
    }

    /// Takes the oldest item, waiting at most `timeout` (`None`: for ever);
    /// [`ManagerError::Empty`] when none came.
    pub fn get(&self, timeout: Option<Duration>) -> Result<T, ManagerError> {
        self.r
            .maybe(Op::QueueGet(timeout))?
            .ok_or(ManagerError::Empty)
    }

    /// The number of items now.
    pub fn qsize(&self) -> Result<usize, ManagerError> {
        self.r.len()
    }
}

impl<T> ValueProxy<T>
where
    T: Serialize + DeserializeOwned,
{
    /// A copy of the value (Python's `v.value`).
    pub fn get(&self) -> Result<T, ManagerError> {
        self.r
            .maybe(Op::ValueGet)?
            .ok_or_else(|| ManagerError::Protocol("the value is unset".into()))
    }

    /// Replaces the value (Python's `v.value = x`).
    pub fn set(&self, value: &T) -> Result<(), ManagerError> {
        self.r.unit(Op::ValueSet(enc(value)?))
    }
}

impl LockProxy {
    /// Takes the lock, waiting at most `timeout` (`None`: for ever); whether it got it.
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<bool, ManagerError> {
        self.r.boolean(Op::LockAcquire(timeout))
    }

    /// Releases the lock; [`ManagerError::Unlocked`] when it is not held.
    pub fn release(&self) -> Result<(), ManagerError> {
        self.r.unit(Op::LockRelease)
    }
}

impl EventProxy {
    /// Sets the flag and wakes every waiter.
    pub fn set(&self) -> Result<(), ManagerError> {
        self.r.unit(Op::EventSet)
    }

    /// Clears the flag.
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.r.unit(Op::EventClear)
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> Result<bool, ManagerError> {
        self.r.boolean(Op::EventIsSet)
    }

    /// Waits until the flag is set or `timeout` passes; whether it is set.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool, ManagerError> {
        self.r.boolean(Op::EventWait(timeout))
    }
}

/// A type whose objects a manager can hold, registered with
/// [`ManagerBuilder::register`]: Python's `BaseManager.register(typeid, callable)`.
///
/// The manager makes each object with `Default` and passes it every [`Proxy::call`]'s
/// request; calls on one object never run at once.
pub trait SharedObject: Default + Send + 'static {
    /// The name clients use for the type; unique among a manager's registered types.
    const TYPEID: &'static str;
    /// What a call sends.
    type Request: Serialize + DeserializeOwned;
    /// What a call answers.
    type Response: Serialize + DeserializeOwned;
    /// Handles one call.
    fn handle(&mut self, request: Self::Request) -> Self::Response;
}

impl<T: SharedObject> Proxy<T> {
    /// Sends `request` to the object and returns its response.
    pub fn call(&self, request: &T::Request) -> Result<T::Response, ManagerError> {
        self.r
            .maybe(Op::Custom(enc(request)?))?
            .ok_or_else(|| ManagerError::Protocol("no response".into()))
    }
}

// ---------------------------------------------------------------------------------------
// Custom types, in the server process.

/// A call on a custom object, as its type's entry point receives it.
#[derive(Serialize, Deserialize)]
struct CustomCall {
    object: u64,
    /// `None`: make the object.
    request: Option<Vec<u8>>,
}

/// Custom objects of the server process, by id. One map for every type: ids are unique
/// in a manager.
static CUSTOM: Mutex<Option<HashMap<u64, Box<dyn Any + Send>>>> = Mutex::new(None);

/// The entry point of custom type `T` in the server: makes an object or runs a call. The
/// server resolves it from the offset its parent sent (never from a client's request).
fn custom_entry<T: SharedObject>(bytes: &[u8]) -> Result<Vec<u8>, RemoteError> {
    let fault = |message: String| RemoteError {
        message,
        location: None,
        thread: None,
        backtrace: None,
    };
    let call: CustomCall = decode_value(bytes).map_err(|e| fault(e.to_string()))?;
    let mut objects = CUSTOM.lock().unwrap_or_else(|p| p.into_inner());
    let objects = objects.get_or_insert_with(HashMap::new);
    match call.request {
        None => {
            objects.insert(call.object, Box::new(T::default()));
            Ok(Vec::new())
        }
        Some(request) => {
            let object = objects
                .get_mut(&call.object)
                .and_then(|o| o.downcast_mut::<T>())
                .ok_or_else(|| fault(format!("no {} object {}", T::TYPEID, call.object)))?;
            let request: T::Request = decode_value(&request)
                .map_err(|e| fault(format!("request did not decode as {}: {e}", T::TYPEID)))?;
            encode_value(&object.handle(request)).map_err(|e| fault(e.to_string()))
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server process.

/// Keys in insertion order.
#[derive(Default)]
struct OrderedMap {
    entries: HashMap<Vec<u8>, (u64, Vec<u8>)>,
    order: BTreeMap<u64, Vec<u8>>,
    next: u64,
}

impl OrderedMap {
    fn set(&mut self, k: Vec<u8>, v: Vec<u8>) {
        if let Some(e) = self.entries.get_mut(&k) {
            e.1 = v;
            return;
        }
        self.next += 1;
        self.order.insert(self.next, k.clone());
        self.entries.insert(k, (self.next, v));
    }

    fn remove(&mut self, k: &[u8]) -> Option<Vec<u8>> {
        let (seq, v) = self.entries.remove(k)?;
        self.order.remove(&seq);
        Some(v)
    }

    fn items(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.order
            .values()
            .map(|k| (k.clone(), self.entries[k].1.clone()))
            .collect()
    }
}

enum Data {
    Map(OrderedMap),
    List(Vec<Vec<u8>>),
    Queue(VecDeque<Vec<u8>>, u64),
    Value(Vec<u8>),
    /// The connection holding it.
    Lock(Option<u64>),
    Event(bool),
    Custom(EntryFn),
}

struct Object {
    kind: Kind,
    data: Data,
}

#[derive(Default)]
struct Store {
    objects: HashMap<u64, Object>,
    names: HashMap<String, u64>,
    next: u64,
}

struct Server {
    store: Mutex<Store>,
    /// Notified after every change a blocked call may wait for.
    changed: Condvar,
    types: HashMap<String, EntryFn>,
    stop: AtomicBool,
}

/// How often a blocked call checks that its client is still there.
const CLIENT_CHECK: Duration = Duration::from_millis(200);

/// What the parent tells the server process.
#[derive(Serialize, Deserialize)]
struct ServerArgs {
    address: Address,
    authkey: Vec<u8>,
    /// Custom types: (typeid, entry point offset from `entry::offset_of`).
    types: Vec<(String, i64)>,
    /// Where to report the bound address (or why binding failed).
    report: Connection,
}

/// Python's list index: negative from the end; `None` when out of range.
fn index(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { len as i64 + i } else { i };
    (0..len as i64).contains(&i).then_some(i as usize)
}

fn call_custom(entry: EntryFn, object: u64, request: Option<Vec<u8>>) -> Result<Vec<u8>, Fault> {
    let bytes = encode_value(&CustomCall { object, request })
        .map_err(|e| Fault::Malformed(e.to_string()))?;
    entry(&bytes).map_err(|e| Fault::Custom(e.message))
}

impl Server {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn make(&self, kind: &Kind, init: Vec<Vec<u8>>) -> Result<Data, Fault> {
        Ok(match kind {
            Kind::Dict | Kind::Namespace => Data::Map(OrderedMap::default()),
            Kind::List => Data::List(init),
            Kind::Queue { maxsize } => Data::Queue(VecDeque::new(), *maxsize),
            Kind::Value => Data::Value(init.into_iter().next().unwrap_or_default()),
            Kind::Lock => Data::Lock(None),
            Kind::Event => Data::Event(false),
            Kind::Custom(t) => Data::Custom(
                *self
                    .types
                    .get(t)
                    .ok_or_else(|| Fault::UnknownType(t.clone()))?,
            ),
        })
    }

    fn insert(&self, kind: Kind, data: Data) -> Result<u64, Fault> {
        let (id, custom) = {
            let mut g = self.store();
            g.next += 1;
            let id = g.next;
            let custom = match &data {
                Data::Custom(e) => Some(*e),
                _ => None,
            };
            g.objects.insert(id, Object { kind, data });
            (id, custom)
        };
        if let Some(entry) = custom {
            call_custom(entry, id, None)?;
        }
        Ok(id)
    }

    fn handle(&self, conn: &mut Connection, conn_id: u64, req: Request) -> Result<Reply, Fault> {
        match req {
            Request::Create { kind, init } => {
                let data = self.make(&kind, init)?;
                self.insert(kind, data).map(Reply::Id)
            }
            Request::Named { name, kind } => {
                let same = |a: &Kind, b: &Kind| {
                    std::mem::discriminant(a) == std::mem::discriminant(b)
                        && (!matches!(a, Kind::Custom(_)) || a == b)
                };
                let named = self.store().names.get(&name).copied();
                if let Some(id) = named {
                    let g = self.store();
                    return match g.objects.get(&id) {
                        Some(o) if same(&o.kind, &kind) => Ok(Reply::Id(id)),
                        _ => Err(Fault::NameTaken(name)),
                    };
                }
                let data = self.make(&kind, vec![])?;
                let id = self.insert(kind, data)?;
                // Two first callers at once: the first name wins, the other object is
                // simply unnamed.
                let mut g = self.store();
                let id = *g.names.entry(name).or_insert(id);
                Ok(Reply::Id(id))
            }
            Request::Shutdown => {
                self.stop.store(true, Ordering::SeqCst);
                Ok(Reply::Unit)
            }
            Request::Call { id, op } => self.call(conn, conn_id, id, op),
        }
    }

    fn call(&self, conn: &mut Connection, conn_id: u64, id: u64, op: Op) -> Result<Reply, Fault> {
        let deadline = match &op {
            Op::QueuePut(_, t) | Op::QueueGet(t) | Op::LockAcquire(t) | Op::EventWait(t) => {
                t.map(|t| Instant::now() + t)
            }
            _ => None,
        };
        let mut op = Some(op);
        let mut g = self.store();
        loop {
            let obj = g.objects.get_mut(&id).ok_or(Fault::NoSuchObject(id))?;
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            let current = op.take().ok_or(Fault::WrongKind)?;
            match apply(&mut obj.data, conn_id, current, expired)? {
                Step::Done(reply, changed) => {
                    if changed {
                        self.changed.notify_all();
                    }
                    return Ok(reply);
                }
                Step::Custom(entry, request) => {
                    drop(g);
                    return call_custom(entry, id, Some(request)).map(|b| Reply::Maybe(Some(b)));
                }
                Step::Wait(back) => op = Some(back),
            }
            // Blocked: wait for a change, the deadline, or the client going away.
            let slice = deadline.map_or(CLIENT_CHECK, |d| {
                d.saturating_duration_since(Instant::now())
                    .min(CLIENT_CHECK)
            });
            g = self
                .changed
                .wait_timeout(g, slice)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            // A client sends nothing while it waits for an answer: anything readable is
            // its end of file.
            if conn.poll(Some(Duration::ZERO)).unwrap_or(true) {
                return Err(Fault::Malformed("the client left".into()));
            }
        }
    }

    /// Releases the locks a closed connection held.
    fn forget_connection(&self, conn_id: u64) {
        let mut g = self.store();
        let mut any = false;
        for o in g.objects.values_mut() {
            if let Data::Lock(holder) = &mut o.data {
                if *holder == Some(conn_id) {
                    *holder = None;
                    any = true;
                }
            }
        }
        if any {
            self.changed.notify_all();
        }
    }
}

enum Step {
    /// The answer, and whether waiters should look again.
    Done(Reply, bool),
    /// Not possible yet: wait, then try the operation again.
    Wait(Op),
    /// A custom call, run outside the store's lock.
    Custom(EntryFn, Vec<u8>),
}

fn apply(data: &mut Data, conn_id: u64, op: Op, expired: bool) -> Result<Step, Fault> {
    use Step::Done;
    Ok(match (data, op) {
        (Data::Map(m), Op::MapGet(k)) => {
            Done(Reply::Maybe(m.entries.get(&k).map(|e| e.1.clone())), false)
        }
        (Data::Map(m), Op::MapSet(k, v)) => {
            m.set(k, v);
            Done(Reply::Unit, false)
        }
        (Data::Map(m), Op::MapDel(k)) => Done(Reply::Maybe(m.remove(&k)), false),
        (Data::Map(m), Op::MapContains(k)) => Done(Reply::Bool(m.entries.contains_key(&k)), false),
        (Data::Map(m), Op::MapItems) => Done(Reply::Pairs(m.items()), false),
        (Data::Map(m), Op::MapClear) => {
            *m = OrderedMap::default();
            Done(Reply::Unit, false)
        }
        (Data::Map(m), Op::Len) => Done(Reply::Len(m.entries.len() as u64), false),
        (Data::List(l), Op::Len) => Done(Reply::Len(l.len() as u64), false),
        (Data::Queue(q, _), Op::Len) => Done(Reply::Len(q.len() as u64), false),
        (Data::List(l), Op::ListGet(i)) => {
            Done(Reply::Maybe(index(i, l.len()).map(|i| l[i].clone())), false)
        }
        (Data::List(l), Op::ListSet(i, v)) => {
            let i = index(i, l.len()).ok_or(Fault::IndexOutOfRange(i))?;
            l[i] = v;
            Done(Reply::Unit, false)
        }
        (Data::List(l), Op::ListAppend(v)) => {
            l.push(v);
            Done(Reply::Unit, false)
        }
        (Data::List(l), Op::ListExtend(vs)) => {
            l.extend(vs);
            Done(Reply::Unit, false)
        }
        (Data::List(l), Op::ListInsert(i, v)) => {
            // Python clamps an insert position into the list.
            let len = l.len() as i64;
            let at = if i < 0 { (len + i).max(0) } else { i.min(len) };
            l.insert(at as usize, v);
            Done(Reply::Unit, false)
        }
        (Data::List(l), Op::ListPop(i)) => {
            let at = index(i.unwrap_or(-1), l.len());
            Done(Reply::Maybe(at.map(|at| l.remove(at))), false)
        }
        (Data::List(l), Op::ListItems) => Done(Reply::Many(l.clone()), false),
        (Data::List(l), Op::ListReverse) => {
            l.reverse();
            Done(Reply::Unit, false)
        }
        (Data::List(l), Op::ListClear) => {
            l.clear();
            Done(Reply::Unit, false)
        }
        (Data::Queue(q, max), Op::QueuePut(v, t)) => {
            if *max == 0 || (q.len() as u64) < *max {
                q.push_back(v);
                Done(Reply::Unit, true)
            } else if expired {
                return Err(Fault::Full);
            } else {
                Step::Wait(Op::QueuePut(v, t))
            }
        }
        (Data::Queue(q, _), Op::QueueGet(t)) => match q.pop_front() {
            Some(v) => Done(Reply::Maybe(Some(v)), true),
            None if expired => Done(Reply::Maybe(None), false),
            None => Step::Wait(Op::QueueGet(t)),
        },
        (Data::Value(v), Op::ValueGet) => Done(Reply::Maybe(Some(v.clone())), false),
        (Data::Value(v), Op::ValueSet(new)) => {
            *v = new;
            Done(Reply::Unit, false)
        }
        (Data::Lock(holder), Op::LockAcquire(t)) => match holder {
            None => {
                *holder = Some(conn_id);
                Done(Reply::Bool(true), false)
            }
            Some(_) if expired => Done(Reply::Bool(false), false),
            Some(_) => Step::Wait(Op::LockAcquire(t)),
        },
        (Data::Lock(holder), Op::LockRelease) => {
            // Python's manager Lock is a threading.Lock: any client may release it.
            holder.take().ok_or(Fault::Unlocked)?;
            Done(Reply::Unit, true)
        }
        (Data::Event(flag), Op::EventSet) => {
            *flag = true;
            Done(Reply::Unit, true)
        }
        (Data::Event(flag), Op::EventClear) => {
            *flag = false;
            Done(Reply::Unit, false)
        }
        (Data::Event(flag), Op::EventIsSet) => Done(Reply::Bool(*flag), false),
        (Data::Event(flag), Op::EventWait(t)) => {
            if *flag || expired {
                Done(Reply::Bool(*flag), false)
            } else {
                Step::Wait(Op::EventWait(t))
            }
        }
        (Data::Custom(entry), Op::Custom(request)) => Step::Custom(*entry, request),
        _ => return Err(Fault::WrongKind),
    })
}

/// Serves one client until it leaves.
fn serve_connection(server: Arc<Server>, mut conn: Connection, conn_id: u64) {
    loop {
        let req = match conn.recv::<Request>() {
            Ok(req) => req,
            Err(ConnectionError::Decode { source, .. }) => {
                // The frame was whole: answer, and keep the connection.
                let fault: Result<Reply, Fault> = Err(Fault::Malformed(source.to_string()));
                if conn.send(&fault).is_err() {
                    break;
                }
                continue;
            }
            // End of file, a torn frame, an error: this client is done.
            Err(_) => break,
        };
        let stop = matches!(req, Request::Shutdown);
        let answer = server.handle(&mut conn, conn_id, req);
        if conn.send(&answer).is_err() || stop {
            break;
        }
    }
    server.forget_connection(conn_id);
}

/// The manager server's target.
fn serve(args: ServerArgs) {
    let ServerArgs {
        address,
        authkey,
        types,
        mut report,
    } = args;
    let listener = match Listener::bind(address, Some(authkey)) {
        Ok(l) => l,
        Err(e) => {
            let _ = report.send(&Err::<Address, String>(e.to_string()));
            return;
        }
    };
    let types = types
        .into_iter()
        .map(|(name, offset)| (name, entry::resolve(offset)))
        .collect();
    let server = Arc::new(Server {
        store: Mutex::new(Store::default()),
        changed: Condvar::new(),
        types,
        stop: AtomicBool::new(false),
    });
    if report
        .send(&Ok::<Address, String>(listener.address().clone()))
        .is_err()
    {
        return;
    }
    drop(report);
    let mut next_conn = 0u64;
    while !server.stop.load(Ordering::SeqCst) {
        match listener.accept_timeout(Duration::from_millis(100)) {
            Ok(conn) => {
                next_conn += 1;
                let (server, id) = (server.clone(), next_conn);
                let spawned = std::thread::Builder::new()
                    .name("procvisor-manager-conn".into())
                    .spawn(move || serve_connection(server, conn, id));
                // Out of threads: that client is turned away, the others served.
                drop(spawned);
            }
            Err(ListenerError::Closed) => break,
            // Timeouts, failed handshakes (a wrong key), a failed accept: serve on.
            Err(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// The owner's side.

/// A running manager: its server process, and the [`ManagerClient`] it dereferences to.
pub struct Manager {
    client: ManagerClient,
    process: Option<Process>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.client.address)
            .field("pid", &self.pid())
            .finish()
    }
}

impl Deref for Manager {
    type Target = ManagerClient;

    fn deref(&self) -> &ManagerClient {
        &self.client
    }
}

/// How to start a [`Manager`]: Python's `BaseManager(address, authkey)` and `register`.
#[derive(Debug, Default)]
pub struct ManagerBuilder {
    address: Option<Address>,
    authkey: Option<Vec<u8>>,
    types: Vec<(String, i64)>,
}

fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read as _;
    let mut buf = vec![0u8; n];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if read.is_err() {
        // No /dev/urandom (a bare chroot): fall back on the hasher's random keys.
        use std::hash::{BuildHasher, Hasher};
        for chunk in buf.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    buf
}

impl ManagerBuilder {
    /// Where the server listens: a TCP address (port 0 picks a free port) for remote
    /// clients, a Unix path, or an abstract name. Default: a private abstract name.
    ///
    /// ```no_run
    /// let m = procvisor::manager::Manager::builder()
    ///     .address("127.0.0.1:0".parse()?)
    ///     .authkey(b"secret")
    ///     .start()?;
    /// println!("remote clients connect to {}", m.address());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn address(mut self, address: Address) -> Self {
        self.address = Some(address);
        self
    }

    /// The key clients must prove they hold. Default: 32 random bytes, which only this
    /// program's processes learn (inside the proxies they are given).
    pub fn authkey(mut self, key: impl AsRef<[u8]>) -> Self {
        self.authkey = Some(key.as_ref().to_vec());
        self
    }

    /// Lets the server hold objects of type `T` ([`ManagerClient::create`]).
    pub fn register<T: SharedObject>(mut self) -> Self {
        let entry: EntryFn = custom_entry::<T>;
        self.types.retain(|(name, _)| name != T::TYPEID);
        self.types
            .push((T::TYPEID.to_owned(), entry::offset_of(entry)));
        self
    }

    /// Starts the server process and waits until it listens.
    pub fn start(self) -> Result<Manager, ManagerError> {
        let address = self.address.unwrap_or_else(|| {
            let tag: String = random_bytes(8).iter().map(|b| format!("{b:02x}")).collect();
            Address::Abstract(
                format!("procvisor-manager/{}/{tag}", std::process::id()).into_bytes(),
            )
        });
        let authkey = self.authkey.unwrap_or_else(|| random_bytes(32));
        let (mut report, theirs) = crate::pipe(true).map_err(ManagerError::Gone)?;
        let args = ServerArgs {
            address,
            authkey: authkey.clone(),
            types: self.types,
            report: theirs,
        };
        let mut process = Process::new(serve, args)
            .with_name("SyncManager")
            .with_daemon(true);
        process
            .start_in(crate::worker::Home::Runtime)
            .map_err(ManagerError::Start)?;
        let reported = match report.poll(Some(Duration::from_secs(30))) {
            Ok(true) => report.recv::<Result<Address, String>>(),
            Ok(false) => Err(ConnectionError::Eof),
            Err(e) => Err(e),
        };
        let stop = |process: &Process| {
            let _ = process.kill();
            let _ = process.join(Some(Duration::from_secs(5)));
        };
        let address = match reported {
            Ok(Ok(a)) => a,
            Ok(Err(why)) => {
                stop(&process);
                return Err(ManagerError::Bind(why));
            }
            Err(e) => {
                stop(&process);
                return Err(ManagerError::Gone(e));
            }
        };
        Ok(Manager {
            client: ManagerClient { address, authkey },
            process: Some(process),
        })
    }
}

impl Manager {
    /// Starts a manager with the defaults: Python's `multiprocessing.Manager()`.
    ///
    /// ```no_run
    /// let mut m = procvisor::manager::Manager::start()?;
    /// let d = m.dict::<u8, u8>()?;
    /// d.set(&1, &2)?;
    /// m.shutdown()?;
    /// assert!(d.get(&1).is_err()); // the manager is gone
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start() -> Result<Manager, ManagerError> {
        ManagerBuilder::default().start()
    }

    /// A builder for a manager with an address, an authkey or custom types.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// The [`ManagerClient`] of this manager, to pass to other processes.
    pub fn client(&self) -> &ManagerClient {
        &self.client
    }

    /// The server's pid, until it is shut down.
    pub fn pid(&self) -> Option<i32> {
        self.process.as_ref().and_then(|p| p.pid().ok().flatten())
    }

    /// Stops the server (Python's `shutdown()`): asks it to stop, waits a little, kills it
    /// if it has not; the objects are gone, and proxies get [`ManagerError::Gone`]. Calling
    /// it again does nothing.
    pub fn shutdown(&mut self) -> Result<(), ManagerError> {
        let Some(process) = self.process.take() else {
            return Ok(());
        };
        let _ = self.client.request(&Request::Shutdown);
        CONNECTIONS.with(|m| m.borrow_mut().retain(|e| e.manager != self.client));
        let _ = process.join(Some(Duration::from_secs(2)));
        if process.is_alive().unwrap_or(false) {
            let _ = process.kill();
        }
        process.join(None).map_err(ManagerError::Start)
    }
}

impl Drop for Manager {
    /// Shuts the server down, as leaving Python's `with Manager() as m:` does.
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
