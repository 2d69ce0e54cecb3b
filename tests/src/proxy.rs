//! A TCP proxy for fault injection between a replica and its primary: it forwards every
//! connection it accepts to a target port that can change at runtime (a primary restarted on
//! a new port), can cut every open connection at once (a link cut mid-stream), and can throttle
//! the target -> client direction to a number of bytes per second (a slow replica).
//!
//! ```no_run
//! let primary = segkv_e2e::Server::start(&[]);
//! let proxy = segkv_e2e::Proxy::start(primary.port);
//! let port = proxy.port.to_string();
//! let replica = segkv_e2e::Server::start(&["--replicaof", "127.0.0.1", &port]);
//! proxy.throttle(1 << 20);
//! proxy.cut();
//! ```

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes moved per read when not throttled.
const BUF: usize = 64 << 10;

struct Inner {
    target: AtomicU16,
    /// Bytes per second from the target to the client; 0: no limit.
    rate: AtomicU64,
    stop: AtomicBool,
    next_id: AtomicU64,
    /// Both ends of every open connection, to cut them.
    conns: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
    accepted: AtomicU64,
    /// Bytes forwarded from targets to clients.
    down: AtomicU64,
}

/// A running proxy on 127.0.0.1; it stops (and closes its connections) on drop.
pub struct Proxy {
    pub port: u16,
    inner: Arc<Inner>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free port and forwards to 127.0.0.1:`target`.
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Inner {
            target: AtomicU16::new(target),
            rate: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            accepted: AtomicU64::new(0),
            down: AtomicU64::new(0),
        });
        let i = inner.clone();
        let acceptor = std::thread::Builder::new()
            .name("e2e-proxy-accept".into())
            .spawn(move || accept_loop(listener, i))
            .expect("spawn proxy thread");
        Proxy {
            port,
            inner,
            acceptor: Some(acceptor),
        }
    }

    /// New connections go to 127.0.0.1:`port` (open ones keep their target).
    pub fn set_target(&self, port: u16) {
        self.inner.target.store(port, Ordering::Release);
    }

    /// Closes every open connection, both ends, at once.
    pub fn cut(&self) {
        let conns: Vec<_> = self.inner.conns.lock().unwrap().drain().collect();
        for (_, (a, b)) in conns {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    /// Limits the target -> client direction of every connection (open ones too) to
    /// `bytes_per_s`; 0 lifts the limit.
    pub fn throttle(&self, bytes_per_s: u64) {
        self.inner.rate.store(bytes_per_s, Ordering::Release);
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.inner.conns.lock().unwrap().len()
    }

    /// Connections accepted (and forwarded) so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::Acquire)
    }

    /// Bytes forwarded so far from targets to clients (all connections).
    pub fn forwarded(&self) -> u64 {
        self.inner.down.load(Ordering::Acquire)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        // Wake the acceptor.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        self.cut();
    }
}

fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    for client in listener.incoming() {
        if inner.stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(client) = client else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let target = inner.target.load(Ordering::Acquire);
        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
            // Nobody there: the client sees the connection closed, as if refused.
            continue;
        };
        inner.accepted.fetch_add(1, Ordering::AcqRel);
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let ends = (|| {
            Some((
                client.try_clone().ok()?,
                server.try_clone().ok()?,
                client.try_clone().ok()?,
                server.try_clone().ok()?,
            ))
        })();
        let Some((c2, s2, c3, s3)) = ends else {
            continue;
        };
        inner.conns.lock().unwrap().insert(id, (c3, s3));
        for (from, to, throttled) in [(client, s2, false), (server, c2, true)] {
            let i = inner.clone();
            let spawned = std::thread::Builder::new()
                .name("e2e-proxy-pump".into())
                .spawn(move || {
                    if throttled {
                        pump(from, to, Some((&i.rate, &i.down)));
                    } else {
                        pump(from, to, None);
                    }
                    // One direction ended: the connection is over.
                    if let Some((a, b)) = i.conns.lock().unwrap().remove(&id) {
                        let _ = a.shutdown(Shutdown::Both);
                        let _ = b.shutdown(Shutdown::Both);
                    }
                });
            if spawned.is_err() {
                if let Some((a, b)) = inner.conns.lock().unwrap().remove(&id) {
                    let _ = a.shutdown(Shutdown::Both);
                    let _ = b.shutdown(Shutdown::Both);
                }
                break;
            }
        }
    }
}

/// Copies `from` to `to` until either end closes; with `limited`, at most its rate (bytes per
/// second, re-read before every chunk so that a new limit applies at once; 0: no limit), and
/// counts the bytes copied in its counter.
fn pump(mut from: TcpStream, mut to: TcpStream, limited: Option<(&AtomicU64, &AtomicU64)>) {
    let rate = limited.map(|l| l.0);
    let mut buf = vec![0u8; BUF];
    // Bytes sent and when the current throttled stretch began.
    let mut window = (Instant::now(), 0u64);
    loop {
        let limit = rate.map_or(0, |r| r.load(Ordering::Acquire));
        let want = if limit == 0 {
            window = (Instant::now(), 0);
            BUF
        } else {
            // Twenty chunks a second at most: smooth enough, and few wake-ups.
            (limit / 20).clamp(1, BUF as u64) as usize
        };
        let n = match from.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some((_, count)) = limited {
            count.fetch_add(n as u64, Ordering::AcqRel);
        }
        if limit > 0 {
            // Idle time earns at most a tenth of a second of credit.
            let due = Duration::from_secs_f64(window.1 as f64 / limit as f64);
            if window.0.elapsed() > due + Duration::from_millis(100) {
                window = (Instant::now(), 0);
            }
            window.1 += n as u64;
            // Sleep until the bytes sent fit the rate, in short naps so that lifting (or
            // changing) the limit takes effect quickly.
            loop {
                let now = rate.map_or(0, |r| r.load(Ordering::Acquire));
                if now != limit {
                    window = (Instant::now(), 0);
                    break;
                }
                let due = Duration::from_secs_f64(window.1 as f64 / limit as f64);
                let spent = window.0.elapsed();
                if spent >= due {
                    break;
                }
                std::thread::sleep((due - spent).min(Duration::from_millis(20)));
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
