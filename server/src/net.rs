//! Connections and event loops (epoll through mio).
//!
//! One acceptor thread hands each new connection to one of N worker threads (round robin). Each
//! worker runs its own mio event loop over its own connections and calls the one shared engine.
//! A connection is a small state machine: read into the buffer, parse and run every complete
//! command, append the encoded replies, write what may be written. It never blocks:
//!
//! - **Backpressure.** While a connection has more than [`OUT_HIGH`] bytes of replies waiting,
//!   it stops running commands and stops reading, so neither a slow reader nor a flood of
//!   pipelined requests grows memory without bound; it resumes when the socket drains.
//! - **Durability.** Under `appendfsync always`, the reply of a write (and every later reply of
//!   that connection, to keep order) is held until the engine's durable address passes the log
//!   tail read after the write; the engine's `on_durable` callback wakes the workers. An error
//!   reply acknowledges nothing and is not held itself (a write refused by a failed log gets its
//!   `-MISCONF`); if the log fails while replies are held, the connection is closed instead.
//! - **Idle cost.** An idle connection keeps no read buffer (reads go through a per-worker
//!   scratch buffer) and no output buffer.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use segkv_engine::FsyncPolicy;

use crate::cmd::{Ctx, dispatch, paused_by};
use crate::reply::Reply;
use crate::resp::{Parsed, Parser};
use crate::server::{ClientInfo, ReplyMode, Session, Shared, Wake};

/// Pending reply bytes above which a connection stops running commands.
pub const OUT_HIGH: usize = 256 * 1024;
/// Size of one socket read (Redis's `PROTO_IOBUF_LEN`).
const READ_CHUNK: usize = 16 * 1024;
const WAKE: Token = Token(0);

struct MioWake(Waker);

impl Wake for MioWake {
    fn wake(&self) {
        let _ = self.0.wake();
    }
}

/// One connection's state machine. It only reads and writes `sock` (any non-blocking byte
/// stream), so it does not know which reactor drives it, and tests drive it with a fake.
struct Conn<S> {
    sock: S,
    session: Session,
    rbuf: Vec<u8>,
    parser: Parser,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    sent: usize,
    /// Start of the replies held for durability, and the log address they wait for.
    held: Option<(usize, u64)>,
    /// The socket may have more to read (edge-triggered readiness).
    readable: bool,
    /// Stop reading; close once `out` is written.
    closing: bool,
    /// Commands wait for a CLIENT PAUSE to end.
    paused: bool,
    /// Since when the output is above the soft limit.
    soft_since: Option<Instant>,
}

/// What a worker receives from the acceptor.
pub type NewConn = (TcpStream, Arc<ClientInfo>);

/// How the acceptor reaches a worker: its queue of new connections and its waker.
pub type WorkerHandle = (Sender<NewConn>, Arc<dyn Wake>);

struct Worker {
    srv: Arc<Shared>,
    poll: Poll,
    rx: Receiver<NewConn>,
    conns: HashMap<Token, Conn<TcpStream>>,
    next_token: usize,
    scratch: Vec<u8>,
    /// Connections with replies held for durability, or paused commands.
    waiting: HashSet<Token>,
    kill_seen: u64,
    last_cron: Instant,
}

/// Starts `n` workers; returns the senders the acceptor hands connections to.
pub fn start_workers(srv: &Arc<Shared>, n: usize) -> io::Result<Vec<WorkerHandle>> {
    let mut out = Vec::new();
    for i in 0..n {
        let poll = Poll::new()?;
        let waker: Arc<dyn Wake> = Arc::new(MioWake(Waker::new(poll.registry(), WAKE)?));
        let (tx, rx) = channel();
        let mut w = Worker {
            srv: srv.clone(),
            poll,
            rx,
            conns: HashMap::new(),
            next_token: 1,
            scratch: vec![0; READ_CHUNK],
            waiting: HashSet::new(),
            kill_seen: 0,
            last_cron: Instant::now(),
        };
        std::thread::Builder::new()
            .name(format!("segkv-worker-{i}"))
            .spawn(move || w.run())?;
        srv.wakers.write().unwrap().push(waker.clone());
        out.push((tx, waker));
    }
    Ok(out)
}

impl Worker {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.waiting.iter().any(|t| {
                self.conns
                    .get(t)
                    .is_some_and(|c| c.paused || c.session.wait.is_some())
            }) {
                Duration::from_millis(10)
            } else {
                Duration::from_millis(1000)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("segkv: worker poll failed: {e}");
                return;
            }
            let mut woken = false;
            for ev in events.iter() {
                let t = ev.token();
                if t == WAKE {
                    woken = true;
                    continue;
                }
                if let Some(c) = self.conns.get_mut(&t) {
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        c.readable = true;
                    }
                    self.drive(t);
                }
            }
            if woken {
                self.accept_new();
                self.check_kills();
            }
            // Durability releases and pause ends arrive as wakes or timeouts.
            let waiting: Vec<Token> = self.waiting.iter().copied().collect();
            for t in waiting {
                self.drive(t);
            }
            if self.last_cron.elapsed() >= Duration::from_secs(1) {
                self.cron();
            }
        }
    }

    fn accept_new(&mut self) {
        while let Ok((mut sock, info)) = self.rx.try_recv() {
            let t = Token(self.next_token);
            self.next_token += 1;
            if self
                .poll
                .registry()
                .register(&mut sock, t, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                self.srv.clients.lock().unwrap().remove(&info.id);
                self.srv.connected.fetch_sub(1, Relaxed);
                continue;
            }
            let local = sock
                .peer_addr()
                .map(|a| a.ip().is_loopback())
                .unwrap_or(false);
            self.conns
                .insert(t, Conn::new(sock, Session::new(info, local)));
            self.drive(t);
        }
    }

    fn check_kills(&mut self) {
        // Only after a CLIENT KILL somewhere, not on every (durability) wake.
        let epoch = self
            .srv
            .kill_epoch
            .load(std::sync::atomic::Ordering::Acquire);
        if epoch == self.kill_seen {
            return;
        }
        self.kill_seen = epoch;
        let tokens: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.session.info.kill.load(Relaxed))
            .map(|(t, _)| *t)
            .collect();
        for t in tokens {
            self.close(t);
        }
    }

    /// Once a second: idle timeouts.
    fn cron(&mut self) {
        self.last_cron = Instant::now();
        let timeout = self.srv.limits.timeout.load(Relaxed);
        if timeout == 0 {
            return;
        }
        let idle: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                let i = &c.session.info;
                let now = i.created.elapsed().as_millis() as u64;
                now.saturating_sub(i.last_interaction_ms.load(Relaxed)) / 1000 > timeout
            })
            .map(|(t, _)| *t)
            .collect();
        for t in idle {
            self.close(t);
        }
    }

    fn close(&mut self, t: Token) {
        if let Some(mut c) = self.conns.remove(&t) {
            let _ = self.poll.registry().deregister(&mut c.sock);
            self.srv.clients.lock().unwrap().remove(&c.session.info.id);
            self.srv.connected.fetch_sub(1, Relaxed);
        }
        self.waiting.remove(&t);
    }

    /// PSYNC: the connection leaves the event loop and becomes a replication link, served by
    /// threads of its own (blocking I/O on its socket only).
    fn hand_off(&mut self, t: Token) {
        let Some(mut c) = self.conns.remove(&t) else {
            return;
        };
        self.waiting.remove(&t);
        let _ = self.poll.registry().deregister(&mut c.sock);
        self.srv.clients.lock().unwrap().remove(&c.session.info.id);
        self.srv.connected.fetch_sub(1, Relaxed);
        let (id, offset) = c.session.handoff.take().unwrap_or_default();
        let mut sock: std::net::TcpStream = c.sock.into();
        // Blocking from here, but never for long on this worker's thread.
        if sock.set_nonblocking(false).is_err()
            || sock
                .set_write_timeout(Some(Duration::from_secs(1)))
                .is_err()
        {
            return;
        }
        // Replies queued before PSYNC (the handshake's) go first.
        if c.sent < c.out.len() && io::Write::write_all(&mut sock, &c.out[c.sent..]).is_err() {
            return;
        }
        if let Some(host) = self.srv.host() {
            self.srv
                .repl
                .serve(host, sock, id, offset, c.session.repl_port);
        }
    }

    /// Makes all the progress possible on one connection.
    fn drive(&mut self, t: Token) {
        let srv = self.srv.clone();
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = match self.conns.get_mut(&t) {
            Some(c) => step(&srv, c, &mut scratch),
            None => Ok(false),
        };
        self.scratch = scratch;
        if self
            .conns
            .get(&t)
            .is_some_and(|c| c.session.handoff.is_some())
        {
            self.hand_off(t);
            return;
        }
        match result {
            Err(()) => self.close(t),
            Ok(waiting) => {
                if waiting {
                    self.waiting.insert(t);
                } else {
                    self.waiting.remove(&t);
                }
            }
        }
    }
}

/// Drives one connection until it would block. `Ok(true)`: it waits on durability or a pause.
impl<S> Conn<S> {
    fn new(sock: S, session: Session) -> Self {
        Conn {
            sock,
            session,
            rbuf: Vec::new(),
            parser: Parser::default(),
            out: Vec::new(),
            sent: 0,
            held: None,
            readable: true,
            closing: false,
            paused: false,
            soft_since: None,
        }
    }
}

fn step<S: Read + Write>(srv: &Shared, c: &mut Conn<S>, scratch: &mut [u8]) -> Result<bool, ()> {
    loop {
        let mut progress = false;
        if let Some(w) = c.session.wait
            && let Some(r) = crate::cmd::replication::wait_done(srv, &w)
        {
            c.session.wait = None;
            r.encode(c.session.proto, &mut c.out);
            progress = true;
        }
        if c.session.handoff.is_some() {
            return Ok(false);
        }
        if let Some((_, need)) = c.held
            && srv.engine.durable_addr() >= need
        {
            c.held = None;
        }
        if c.held.is_some() && srv.engine.failed().is_some() {
            // The log failed: the held replies will never be durable. Never acknowledge them.
            return Err(());
        }
        let limit = c.held.map(|(from, _)| from).unwrap_or(c.out.len());
        if c.sent < limit {
            match c.sock.write(&c.out[c.sent..limit]) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    c.sent += n;
                    srv.stats.net_output_bytes.fetch_add(n as u64, Relaxed);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                Err(_) => return Err(()),
            }
        }
        if c.sent == c.out.len() {
            c.out.clear();
            c.sent = 0;
            if c.out.capacity() > OUT_HIGH * 2 {
                c.out = Vec::new();
            }
            if c.closing {
                return Err(());
            }
        } else if c.sent > OUT_HIGH {
            c.out.drain(..c.sent);
            if let Some((from, _)) = &mut c.held {
                *from -= c.sent;
            }
            c.sent = 0;
        }
        check_output_limits(srv, c)?;
        if !c.closing && c.out.len() - c.sent <= OUT_HIGH {
            if c.paused && (!srv.pause_active.load(Relaxed) || srv.paused().is_none()) {
                c.paused = false;
            }
            // Run what is buffered, then read more.
            if !c.paused && c.session.wait.is_none() && !c.rbuf.is_empty() {
                let mut rbuf = std::mem::take(&mut c.rbuf);
                let (in_before, out_before) = (rbuf.len(), c.out.len());
                run_commands(srv, c, &rbuf)?;
                c.parser.compact(&mut rbuf);
                // Progress only if a command ran (input consumed or output queued): a partial
                // request behind held replies must not spin this loop.
                progress |= rbuf.len() != in_before || c.out.len() != out_before || c.closing;
                c.rbuf = rbuf;
            }
            if !c.paused && c.readable && c.out.len() - c.sent <= OUT_HIGH && !c.closing {
                match c.sock.read(scratch) {
                    Ok(0) => return Err(()),
                    Ok(n) => {
                        srv.stats.net_input_bytes.fetch_add(n as u64, Relaxed);
                        progress = true;
                        // A short read drained the socket: with edge-triggered epoll, any later
                        // data raises a new event, so skip the read that would say WouldBlock.
                        if n < scratch.len() {
                            c.readable = false;
                        }
                        if c.rbuf.is_empty() {
                            // Fast path: parse straight from the scratch buffer, keep the rest.
                            run_commands(srv, c, &scratch[..n])?;
                            let rest = &scratch[c.parser.start()..n];
                            c.rbuf.extend_from_slice(rest);
                            c.parser.rebase(c.parser.start());
                        } else {
                            c.rbuf.extend_from_slice(&scratch[..n]);
                        }
                        let qlimit = srv.limits.query_buffer_limit.load(Relaxed) as usize;
                        if c.rbuf.len() > qlimit {
                            eprintln!(
                                "segkv: closing client {} ({}) that reached the max query buffer length ({} bytes)",
                                c.session.info.id,
                                c.session.info.addr,
                                c.rbuf.len()
                            );
                            srv.stats
                                .client_qbuf_limit_disconnections
                                .fetch_add(1, Relaxed);
                            return Err(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(_) => return Err(()),
                }
            }
        }
        if c.rbuf.is_empty() && c.rbuf.capacity() > 0 {
            c.rbuf = Vec::new();
        }
        c.session.info.qbuf.store(c.rbuf.len() as u64, Relaxed);
        c.session
            .info
            .obl
            .store((c.out.len() - c.sent) as u64, Relaxed);
        if !progress {
            return Ok(c.held.is_some() || c.paused || c.session.wait.is_some());
        }
    }
}

fn check_output_limits<S>(srv: &Shared, c: &mut Conn<S>) -> Result<(), ()> {
    let (hard, soft, secs) = srv.limits.output.lock().unwrap()[0];
    let pending = (c.out.len() - c.sent) as i64;
    let over_hard = hard > 0 && pending > hard;
    let over_soft = soft > 0 && pending > soft;
    if over_soft {
        let since = *c.soft_since.get_or_insert_with(Instant::now);
        if since.elapsed().as_secs() as i64 >= secs && secs > 0 || (secs == 0 && over_soft) {
            return limit_close(srv, c);
        }
    } else {
        c.soft_since = None;
    }
    if over_hard {
        return limit_close(srv, c);
    }
    Ok(())
}

fn limit_close<S>(srv: &Shared, c: &Conn<S>) -> Result<(), ()> {
    eprintln!(
        "segkv: client {} ({}) scheduled to be closed for overcoming of output buffer limits",
        c.session.info.id, c.session.info.addr
    );
    srv.stats
        .client_outbuf_limit_disconnections
        .fetch_add(1, Relaxed);
    Err(())
}

/// Parses and runs every complete command in `buf` (positions per `c.parser`), appending replies.
fn run_commands<S>(srv: &Shared, c: &mut Conn<S>, buf: &[u8]) -> Result<(), ()> {
    let max_bulk = srv.limits.proto_max_bulk_len.load(Relaxed);
    let always = srv.appendfsync == FsyncPolicy::Always;
    let mut touched = false;
    // One shared-counter update per batch instead of per command.
    let mut ran = Ran(0, srv, false);
    loop {
        if c.out.len() - c.sent > OUT_HIGH
            || c.closing
            || c.session.wait.is_some()
            || c.session.handoff.is_some()
        {
            return Ok(());
        }
        match c.parser.next(buf, max_bulk) {
            Ok(Parsed::Incomplete) => return Ok(()),
            Ok(Parsed::Empty) => c.parser.consume(),
            Err(e) => {
                let text = format!("ERR {}", e.0);
                srv.count_error(&text);
                eprintln!(
                    "segkv: protocol error from client {} ({}): {}",
                    c.session.info.id, c.session.info.addr, e.0
                );
                Reply::error(text).encode(c.session.proto, &mut c.out);
                c.closing = true;
                return Ok(());
            }
            Ok(Parsed::Command) => {
                let args = c.parser.args(buf);
                if srv.pause_active.load(Relaxed)
                    && let Some((mode, _)) = srv.paused()
                    && paused_by(srv, &args, mode)
                {
                    c.paused = true;
                    return Ok(());
                }
                if !touched {
                    // Once per batch: idle time has second resolution anyway.
                    let info = &c.session.info;
                    info.last_interaction_ms
                        .store(info.created.elapsed().as_millis() as u64, Relaxed);
                    touched = true;
                }
                let mode_before = c.session.reply;
                let mut ctx = Ctx {
                    srv,
                    s: &mut c.session,
                    shutdown: false,
                };
                let (reply, outcome) = dispatch(&mut ctx, &args);
                let shutdown = ctx.shutdown;
                drop(args);
                c.parser.consume();
                ran.0 += 1;
                ran.2 |= outcome.wrote;
                if outcome.drop_connection {
                    eprintln!(
                        "segkv: possible SECURITY ATTACK detected (HTTP request to the RESP port); connection dropped"
                    );
                    return Err(());
                }
                if shutdown {
                    shutdown_now(srv);
                }
                if let Reply::Error(t) = &reply {
                    srv.count_error(t);
                }
                let send = match mode_before {
                    ReplyMode::Skip => {
                        if c.session.reply == ReplyMode::Skip {
                            c.session.reply = ReplyMode::On;
                        }
                        false
                    }
                    ReplyMode::Off => c.session.reply != ReplyMode::Off,
                    _ => true,
                };
                if c.session.reply == ReplyMode::SkipNext {
                    c.session.reply = ReplyMode::Skip;
                }
                let start = c.out.len();
                if send {
                    reply.encode(c.session.proto, &mut c.out);
                    // As Redis: limits are checked when a reply is queued, before any write.
                    check_output_limits(srv, c)?;
                }
                if always && outcome.wrote && !reply.is_error() {
                    let need = srv.engine.tail_addr();
                    c.held = Some((c.held.map(|(f, _)| f).unwrap_or(start), need));
                }
                if c.session.close_after_reply {
                    c.closing = true;
                }
            }
        }
    }
}

/// Adds the commands run in a batch to the shared counter when the batch ends, however it ends.
/// Also tells replication senders once per batch that a write committed records.
struct Ran<'a>(u64, &'a Shared, bool);

impl Drop for Ran<'_> {
    fn drop(&mut self) {
        if self.0 > 0 {
            self.1.stats.commands_processed.fetch_add(self.0, Relaxed);
        }
        if self.2
            && let Some(e) = self.1.engine.loaded()
        {
            e.log().notify_readers();
        }
    }
}

/// SHUTDOWN and signals: make the log durable, then exit 0.
pub fn shutdown_now(srv: &Shared) -> ! {
    srv.shutting_down.store(true, Relaxed);
    let Some(engine) = srv.engine.loaded() else {
        eprintln!("segkv: shutting down while loading: nothing was written, nothing to sync");
        std::process::exit(0);
    };
    // A replica's link stops first: nothing may copy into the log while it closes.
    srv.repl.halt();
    eprintln!("segkv: shutting down: syncing the log");
    if let Err(e) = engine.sync() {
        eprintln!("segkv: sync at shutdown failed: {e}");
        std::process::exit(1);
    }
    // The next start loads the index instead of replaying the log (a replica's replays it:
    // it continues the segment it was copying).
    if !srv.repl.is_replica() {
        crate::memory::write_checkpoint(engine, "at shutdown");
    }
    // A clean close: the active segment's file ends at its data, which tells the next start
    // that nothing acknowledged to a replica can be missing (its replication id holds).
    if let Err(e) = engine.log().close() {
        eprintln!("segkv: closing the log at shutdown failed: {e}");
    }
    eprintln!("segkv: bye");
    std::process::exit(0);
}

/// Binds every `bind` address. A leading `-` marks an address that may be unavailable.
pub fn bind_all(addrs: &[String], port: u16) -> io::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        let (optional, a) = match a.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, a.as_str()),
        };
        let host = match a {
            "*" => "0.0.0.0",
            "::*" => "::",
            h => h,
        };
        // An IP literal, or a host name resolved as getaddrinfo would (first address).
        let resolved = format!("{host}:{port}")
            .parse::<SocketAddr>()
            .or_else(|_| format!("[{host}]:{port}").parse::<SocketAddr>())
            .ok()
            .or_else(|| {
                std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
                    .ok()
                    .and_then(|mut it| it.next())
            });
        let Some(sa) = resolved else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid bind address '{a}'"),
            ));
        };
        match std::net::TcpListener::bind(sa) {
            Ok(l) => {
                l.set_nonblocking(true)?;
                out.push(TcpListener::from_std(l));
            }
            Err(e) if optional => eprintln!("segkv: skipping optional bind address {a}: {e}"),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("could not bind {sa}: {e}"),
                ));
            }
        }
    }
    Ok(out)
}

/// The acceptor loop: never returns unless polling fails.
pub fn accept_loop(
    srv: Arc<Shared>,
    mut listeners: Vec<TcpListener>,
    workers: Vec<(Sender<NewConn>, Arc<dyn Wake>)>,
) {
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("segkv: cannot create poll: {e}");
            std::process::exit(1);
        }
    };
    for (i, l) in listeners.iter_mut().enumerate() {
        if let Err(e) = poll.registry().register(l, Token(i), Interest::READABLE) {
            eprintln!("segkv: cannot register listener: {e}");
            std::process::exit(1);
        }
    }
    let rr = Mutex::new(0usize);
    let mut events = Events::with_capacity(128);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("segkv: accept poll failed: {e}");
            return;
        }
        for ev in events.iter() {
            let l = &listeners[ev.token().0];
            loop {
                match l.accept() {
                    Ok((mut sock, peer)) => {
                        srv.stats.connections_received.fetch_add(1, Relaxed);
                        let max = srv.limits.maxclients.load(Relaxed);
                        if srv.connected.load(Relaxed) >= max {
                            srv.stats.rejected_connections.fetch_add(1, Relaxed);
                            let _ = sock.write(b"-ERR max number of clients reached\r\n");
                            continue;
                        }
                        let _ = sock.set_nodelay(true);
                        let id = srv.next_client_id.fetch_add(1, Relaxed);
                        let mut i = rr.lock().unwrap();
                        let w = *i % workers.len();
                        *i += 1;
                        let laddr = sock.local_addr().map(|a| a.to_string()).unwrap_or_default();
                        let fd = {
                            use std::os::fd::AsRawFd;
                            sock.as_raw_fd()
                        };
                        let info = Arc::new(ClientInfo::new(id, peer.to_string(), laddr, fd, w));
                        srv.clients.lock().unwrap().insert(id, info.clone());
                        srv.connected.fetch_add(1, Relaxed);
                        let _ = workers[w].0.send((sock, info));
                        workers[w].1.wake();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // EMFILE and friends: back off briefly rather than spin.
                        eprintln!("segkv: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The connection state machine driven through a fake socket: no TCP, no reactor.
    use std::collections::VecDeque;

    use super::*;
    use crate::config::Config;

    /// A non-blocking byte stream: reads drain `input` (WouldBlock when empty), writes accept
    /// at most `room` bytes (WouldBlock when full).
    struct Fake {
        input: VecDeque<u8>,
        output: Vec<u8>,
        room: usize,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.input.len());
            for b in buf.iter_mut().take(n) {
                *b = self.input.pop_front().unwrap();
            }
            Ok(n)
        }
    }

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.output.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn setup() -> (Shared, Conn<Fake>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let engine =
            segkv_engine::Engine::open(segkv_engine::Config::new(dir.path().join("d"))).unwrap();
        let srv = Shared::new(engine, Config::default());
        let info = Arc::new(ClientInfo::new(1, "a".into(), "b".into(), 0, 0));
        let fake = Fake {
            input: VecDeque::new(),
            output: Vec::new(),
            room: usize::MAX,
        };
        (srv, Conn::new(fake, Session::new(info, true)), dir)
    }

    fn feed(c: &mut Conn<Fake>, bytes: &[u8]) {
        c.sock.input.extend(bytes);
        c.readable = true;
    }

    #[test]
    fn pipelined_requests_get_replies_in_order() {
        let (srv, mut c, _d) = setup();
        let mut scratch = vec![0; READ_CHUNK];
        feed(
            &mut c,
            b"SET a 1\r\n*2\r\n$4\r\nINCR\r\n$1\r\na\r\nGET a\r\nPING\r\n",
        );
        assert_eq!(step(&srv, &mut c, &mut scratch), Ok(false));
        assert_eq!(c.sock.output, b"+OK\r\n:2\r\n$1\r\n2\r\n+PONG\r\n");
    }

    #[test]
    fn a_full_socket_stops_command_processing_until_it_drains() {
        let (srv, mut c, _d) = setup();
        let mut scratch = vec![0; READ_CHUNK];
        let value = vec![b'v'; 10_000];
        let mut set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10000\r\n".to_vec();
        set.extend_from_slice(&value);
        set.extend_from_slice(b"\r\n");
        feed(&mut c, &set);
        step(&srv, &mut c, &mut scratch).unwrap();
        c.sock.output.clear();
        // The client stops reading; 1000 GETs of 10 KB would be 10 MB of replies.
        c.sock.room = 0;
        feed(&mut c, &b"GET k\r\n".repeat(1000));
        step(&srv, &mut c, &mut scratch).unwrap();
        let pending = c.out.len() - c.sent;
        assert!(
            pending <= OUT_HIGH + 10_100,
            "{pending} bytes queued despite backpressure"
        );
        assert!(
            !c.rbuf.is_empty() || !c.sock.input.is_empty(),
            "unrun requests stay unread or buffered"
        );
        // Once the client reads again, every reply arrives, in order.
        c.sock.room = usize::MAX;
        while c.sock.output.len() < 1000 * 10_010 {
            step(&srv, &mut c, &mut scratch).unwrap();
        }
        assert_eq!(c.sock.output.len(), 1000 * 10_010);
        assert!(c.sock.output.starts_with(b"$10000\r\nvvvv"));
    }

    #[test]
    fn a_protocol_error_replies_then_closes() {
        let (srv, mut c, _d) = setup();
        let mut scratch = vec![0; READ_CHUNK];
        feed(&mut c, b"PING\r\n*x\r\nPING\r\n");
        assert_eq!(step(&srv, &mut c, &mut scratch), Err(()));
        assert_eq!(
            c.sock.output,
            b"+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n"
        );
    }

    #[test]
    fn client_reply_off_and_skip_drop_replies() {
        let (srv, mut c, _d) = setup();
        let mut scratch = vec![0; READ_CHUNK];
        feed(&mut c, b"CLIENT REPLY SKIP\r\nPING\r\nPING a\r\nCLIENT REPLY OFF\r\nPING\r\nCLIENT REPLY ON\r\n");
        step(&srv, &mut c, &mut scratch).unwrap();
        assert_eq!(c.sock.output, b"$1\r\na\r\n+OK\r\n");
    }
}
