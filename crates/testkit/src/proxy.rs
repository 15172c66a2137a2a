//! A TCP proxy on a loopback port that a test can cut, to play a network partition.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// A TCP forwarder from a free loopback port ([`addr`](Self::addr)) to a target address,
/// with two threads per connection.
///
/// [`cut`](Self::cut) plays a network partition that leaves sockets half alive: open
/// connections stay open but no byte moves in either direction, and new connections are
/// accepted but not forwarded. [`heal`](Self::heal) lets the held bytes through again;
/// [`drop_connections`](Self::drop_connections) closes every connection, as a reset would.
/// Dropping the proxy closes its port and every connection.
///
/// # Examples
///
/// ```
/// use latchkey_testkit::{EtcdCluster, Proxy};
///
/// let cluster = EtcdCluster::start(1);
/// let proxy = Proxy::start(cluster.endpoint(0)).unwrap();
/// let url = format!("etcd://{}/locks", proxy.addr()); // a client of `url`...
/// proxy.cut(); // ...hangs from here
/// proxy.heal(); // to here, and goes on
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// What the proxy's threads share.
#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    state: Mutex<State>,
    /// Signalled when `cut` goes off, when a connection is dropped, and at close.
    changed: Condvar,
    bytes: AtomicU64,
    accepted: AtomicU64,
}

/// The mutable part of [`Shared`].
#[derive(Debug, Default)]
struct State {
    cut: bool,
    closed: bool,
    next_id: u64,
    /// The sockets of each open connection (the client's, then the target's once connected).
    connections: HashMap<u64, Vec<TcpStream>>,
}

impl Proxy {
    /// Starts a proxy to `target` (its first address, if it names several).
    ///
    /// # Errors
    ///
    /// If `target` does not resolve, or no loopback port can be bound.
    pub fn start(target: impl ToSocketAddrs) -> io::Result<Proxy> {
        let target = target
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the proxy's target has no address"))?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            bytes: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{}", addr.port()))
                .spawn(move || accept(&shared, listener))?
        };
        Ok(Proxy { addr, shared, acceptor: Some(acceptor) })
    }

    /// The address clients connect to, `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Stops forwarding: bytes already read are held, connections stay open, new ones are
    /// accepted but not forwarded (not even connected to the target) until [`heal`](Self::heal).
    pub fn cut(&self) {
        self.shared.state.lock().cut = true;
    }

    /// Forwards again, held bytes first.
    pub fn heal(&self) {
        self.shared.state.lock().cut = false;
        self.shared.changed.notify_all();
    }

    /// Whether the proxy is cut.
    pub fn is_cut(&self) -> bool {
        self.shared.state.lock().cut
    }

    /// Closes every open connection (both sides), cut or not; held bytes are lost.
    pub fn drop_connections(&self) {
        let connections = std::mem::take(&mut self.shared.state.lock().connections);
        for socket in connections.values().flatten() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        self.shared.changed.notify_all();
    }

    /// The bytes forwarded so far, both directions together.
    pub fn bytes_forwarded(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// The connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// The connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.state.lock().connections.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.drop_connections();
        // Wake the acceptor, which sees `closed` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// The acceptor thread: one thread per connection.
fn accept(shared: &Arc<Shared>, listener: TcpListener) {
    for client in listener.incoming() {
        let mut state = shared.state.lock();
        if state.closed {
            return;
        }
        let Ok(client) = client else {
            drop(state);
            std::thread::sleep(Duration::from_millis(10)); // out of descriptors, say
            continue;
        };
        let Ok(copy) = client.try_clone() else { continue };
        let id = state.next_id;
        state.next_id += 1;
        state.connections.insert(id, vec![copy]);
        drop(state);
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let spawned = std::thread::Builder::new().name("proxy-connection".into()).spawn({
            let shared = shared.clone();
            move || forward(&shared, id, client)
        });
        if spawned.is_err() {
            shared.close(id);
        }
    }
}

/// A connection's thread: connects to the target once the proxy is not cut, then forwards
/// client to target on a second thread and target to client on this one.
fn forward(shared: &Arc<Shared>, id: u64, client: TcpStream) {
    if !shared.wait_open(id) {
        return;
    }
    let connected = TcpStream::connect_timeout(&shared.target, Duration::from_secs(1))
        .and_then(|target| Ok((target.try_clone()?, target.try_clone()?, client.try_clone()?, target)));
    let Ok((registered, target_reader, client_reader, target)) = connected else {
        return shared.close(id);
    };
    match shared.state.lock().connections.get_mut(&id) {
        Some(sockets) => sockets.push(registered),
        None => {
            let _ = target.shutdown(Shutdown::Both); // dropped meanwhile
            return;
        }
    }
    let _ = (client.set_nodelay(true), target.set_nodelay(true));
    let upstream = std::thread::Builder::new().name("proxy-upstream".into()).spawn({
        let shared = shared.clone();
        move || pump(&shared, id, client_reader, target)
    });
    if upstream.is_err() {
        return shared.close(id);
    }
    pump(shared, id, target_reader, client);
}

/// Copies `from` to `to`, holding what it read while the proxy is cut; closes the
/// connection at the end of either direction.
fn pump(shared: &Shared, id: u64, mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !shared.wait_open(id) || to.write_all(&buffer[..n]).is_err() {
            break;
        }
        shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    shared.close(id);
}

impl Shared {
    /// Waits while the proxy is cut; false if connection `id` was closed meanwhile.
    fn wait_open(&self, id: u64) -> bool {
        let mut state = self.state.lock();
        loop {
            if state.closed || !state.connections.contains_key(&id) {
                return false;
            }
            if !state.cut {
                return true;
            }
            self.changed.wait(&mut state);
        }
    }

    /// Closes both sockets of connection `id`, if still open.
    fn close(&self, id: u64) {
        if let Some(sockets) = self.state.lock().connections.remove(&id) {
            for socket in sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        self.changed.notify_all();
    }
}
