//! segkv-replicate: log-shipping replication.
//!
//! A replica connects to its primary, says which history (replication id) and which address
//! of it its log holds (`PSYNC replid offset`), and the primary streams its log from there
//! (partial resync) or, when it no longer holds that address or the history differs, every
//! segment it has (full resync), then tails it. The replica appends the same bytes at the
//! same addresses (`Log::mirror_*`, shifted by a fixed delta of its own) and applies each
//! record to its index; its replication offset is therefore a log address, and survives a
//! restart (the log is reopened where it ended). See `ARCHITECTURE.md`, "Replication".

mod primary;
pub mod proto;
mod replica;
pub mod state;

use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use segkv_engine::Engine;

pub use state::State;

/// How replication reaches the engine and the server: the engine is opened after the
/// replication state (the server loads in the background), and acknowledgements wake clients
/// blocked in WAIT.
pub trait Host: Send + Sync + 'static {
    /// The engine, once it is open.
    fn engine(&self) -> Option<&Engine>;
    /// A replica acknowledged an offset (wake WAIT).
    fn acked(&self);
}

/// Where this node's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica { host: String, port: u16 },
}

/// A replica as its primary sees it.
#[derive(Debug)]
pub struct Link {
    pub id: u64,
    pub ip: String,
    /// The port it listens on (REPLCONF listening-port).
    pub port: u16,
    /// History offset it acknowledged as durable.
    pub ack: AtomicU64,
    /// When it last acknowledged (unix ms).
    pub last_ack_ms: AtomicU64,
    /// Its full resync is done (Redis's state=online; before that, wait_bgsave / send_bulk).
    pub online: AtomicBool,
    stop: AtomicBool,
    /// Where its log is still read from (local address): the cleaner keeps it.
    hold: AtomicU64,
    sock: TcpStream,
}

/// Tunables, with Redis's names.
#[derive(Debug)]
pub struct Settings {
    /// `repl-backlog-size`: a replica more bytes than this behind the primary's log is
    /// dropped (it resyncs); until then the log it still needs is kept.
    pub backlog_size: AtomicU64,
    /// `repl-timeout` in seconds.
    pub timeout_s: AtomicU64,
}

/// Replication state shared by the server's threads.
pub struct Replication {
    dir: PathBuf,
    state: Mutex<State>,
    role: Mutex<Role>,
    is_replica: AtomicBool,
    pub settings: Settings,
    links: Mutex<Vec<Arc<Link>>>,
    nlinks: AtomicUsize,
    next_link_id: AtomicU64,
    /// WAIT asked replicas for an acknowledgement: senders send GETACK when it changes.
    getack: AtomicU64,
    /// Bumped by every REPLICAOF: a replica thread of an older generation stops.
    generation: AtomicU64,
    /// The replica thread's connection (cut on REPLICAOF).
    replica_sock: Mutex<Option<TcpStream>>,
    /// The replica thread (joined before the next REPLICAOF takes effect).
    replica_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The replica thread's acknowledgement sender waits here.
    ack_mx: Mutex<bool>,
    ack_cv: Condvar,
    /// A replica attached once: the log keeps `repl-backlog-size` of its tail.
    pub backlog_active: AtomicBool,
    pub link_up: AtomicBool,
    pub sync_in_progress: AtomicBool,
    /// Unix ms of the last bytes from the primary.
    pub last_io_ms: AtomicU64,
    /// Full and partial resyncs this node served as a primary (INFO stats `sync_*`).
    pub full_syncs: AtomicU64,
    pub partial_syncs_ok: AtomicU64,
    pub partial_syncs_err: AtomicU64,
    listening_port: u16,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("role", &*self.role.lock().unwrap())
            .finish()
    }
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Replication {
    /// The replication state of the data directory `dir` (a new history id when it has none).
    /// `listening_port` is what this node tells a primary (REPLCONF listening-port).
    pub fn open(dir: impl Into<PathBuf>, listening_port: u16) -> Arc<Replication> {
        let dir = dir.into();
        let state = State::load(&dir);
        Arc::new(Replication {
            dir,
            state: Mutex::new(state),
            role: Mutex::new(Role::Primary),
            is_replica: AtomicBool::new(false),
            settings: Settings {
                backlog_size: AtomicU64::new(64 << 20),
                timeout_s: AtomicU64::new(60),
            },
            links: Mutex::new(Vec::new()),
            nlinks: AtomicUsize::new(0),
            next_link_id: AtomicU64::new(0),
            getack: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            replica_sock: Mutex::new(None),
            replica_thread: Mutex::new(None),
            ack_mx: Mutex::new(false),
            ack_cv: Condvar::new(),
            backlog_active: AtomicBool::new(false),
            link_up: AtomicBool::new(false),
            sync_in_progress: AtomicBool::new(false),
            last_io_ms: AtomicU64::new(0),
            full_syncs: AtomicU64::new(0),
            partial_syncs_ok: AtomicU64::new(0),
            partial_syncs_err: AtomicU64::new(0),
            listening_port,
        })
    }

    /// Hooks the engine's log up (call once, when the engine is open): a replica acknowledges
    /// when its log syncs.
    pub fn attach(self: &Arc<Self>, engine: &Engine) {
        let me = self.clone();
        engine.log().on_durable(Box::new(move |_| {
            if me.is_replica() {
                me.ack_soon(false);
            }
        }));
        engine.log().set_history_delta(self.delta());
        if !self.dir.join(state::FILE).exists() {
            // The history id must outlive a restart: replicas continue from it.
            self.save_state(self.state());
        }
        if self.is_replica() {
            engine.set_mirroring(true);
        }
    }

    pub fn role(&self) -> Role {
        self.role.lock().unwrap().clone()
    }

    pub fn is_replica(&self) -> bool {
        self.is_replica.load(Ordering::Acquire)
    }

    pub fn state(&self) -> State {
        self.state.lock().unwrap().clone()
    }

    pub(crate) fn save_state(&self, s: State) {
        // (REPLICAOF from the config comes before the engine has created the directory.)
        let saved = std::fs::create_dir_all(&self.dir).and_then(|()| s.save(&self.dir));
        if let Err(e) = saved {
            eprintln!("segkv: cannot save the replication state: {e}");
        }
        *self.state.lock().unwrap() = s;
    }

    pub fn delta(&self) -> u64 {
        self.state.lock().unwrap().delta
    }

    /// This node's replication offset: its log's tail, as a history address.
    pub fn offset(&self, engine: &Engine) -> u64 {
        engine.tail_addr().saturating_sub(self.delta())
    }

    /// The replicas attached now.
    pub fn links(&self) -> Vec<Arc<Link>> {
        self.links.lock().unwrap().clone()
    }

    /// How many replicas acknowledged (durably) every byte below history offset `target`.
    pub fn acked(&self, target: u64) -> usize {
        self.links
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.online.load(Ordering::Relaxed) && l.ack.load(Ordering::Acquire) >= target)
            .count()
    }

    /// Replicas whose last acknowledgement is at most `max_lag_s` seconds old
    /// (min-replicas-max-lag).
    pub fn healthy(&self, max_lag_s: u64) -> usize {
        let now = unix_ms();
        self.links
            .lock()
            .unwrap()
            .iter()
            .filter(|l| {
                l.online.load(Ordering::Relaxed)
                    && now.saturating_sub(l.last_ack_ms.load(Ordering::Relaxed)) / 1000 <= max_lag_s
            })
            .count()
    }

    /// Asks every replica for an acknowledgement now (WAIT).
    pub fn request_acks(&self, engine: &Engine) {
        self.getack.fetch_add(1, Ordering::AcqRel);
        engine.log().wake_readers();
    }

    /// Replica side: send an acknowledgement soon (after a sync when `sync`).
    pub(crate) fn ack_soon(&self, sync: bool) {
        let mut g = self.ack_mx.lock().unwrap();
        *g |= sync;
        self.ack_cv.notify_all();
    }

    /// The primary's retire hold: the oldest local address an attached replica still reads.
    fn update_hold(&self, engine: &Engine) {
        let hold = self
            .links
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.hold.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX);
        engine.log().set_retire_hold(hold);
    }

    /// REPLICAOF host port: from now on this node copies `host:port`'s log. Writes are refused
    /// at once; the copy starts in the background (a partial resync when the histories agree).
    pub fn replicaof(self: &Arc<Self>, host: Arc<dyn Host>, h: String, port: u16) {
        let mut role = self.role.lock().unwrap();
        let want = Role::Replica {
            host: h.clone(),
            port,
        };
        if *role == want {
            return;
        }
        *role = want;
        self.is_replica.store(true, Ordering::Release);
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.cut_link();
        // The previous primary's thread is gone before anything of the new one happens.
        self.join_replica_thread();
        if let Some(e) = host.engine() {
            e.set_mirroring(true);
        }
        let mut s = self.state();
        if !s.replica {
            s.replica = true;
            self.save_state(s);
        }
        // Replicas of this node lose their primary (no chained replication): they retry.
        for l in self.links() {
            l.stop();
        }
        drop(role);
        let me = self.clone();
        let t = std::thread::Builder::new()
            .name("segkv-replica".into())
            .spawn(move || replica::run(me, host, h, port, generation))
            .expect("spawn replica thread");
        *self.replica_thread.lock().unwrap() = Some(t);
    }

    /// Ends the replica's link and waits for its thread (shutdown: nothing writes the log
    /// once this returns). The role stays: a restart continues the same way.
    pub fn halt(&self) {
        let _role = self.role.lock().unwrap();
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cut_link();
        self.join_replica_thread();
    }

    fn join_replica_thread(&self) {
        let t = self.replica_thread.lock().unwrap().take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }

    /// Called once the engine is open on a node that starts as a primary. If its log may not
    /// be what its history id promises past some point (it was a replica, or it stopped
    /// without closing its log: records replicas received may be gone), it forks a new
    /// history from where its log ends, as a promotion does, so replicas that hold no more
    /// than that continue with a partial resync and the others resync fully.
    pub fn start_as_primary(&self, engine: &Engine) {
        let mut s = self.state();
        let r = &engine.recovery().report;
        if !(s.replica || r.unclean || r.truncated.is_some() || !s.synced) {
            return;
        }
        let end = engine
            .log()
            .segments()
            .iter()
            .filter(|g| !g.active && g.data_bytes > 0 && g.base >= s.delta)
            .map(|g| g.base + segkv_log::segment::SEGMENT_HEADER_LEN + g.data_bytes)
            .max();
        let old = std::mem::replace(&mut s.replid, state::new_id());
        match end {
            Some(end) if s.synced => {
                s.replid2 = old;
                s.second_offset = (end - s.delta) as i64;
            }
            _ => {
                s.replid2 = state::NO_ID.into();
                s.second_offset = -1;
            }
        }
        s.synced = true;
        s.replica = false;
        eprintln!(
            "segkv: new replication id {} (the log was {}); replicas continue up to offset {}",
            s.replid,
            if r.unclean {
                "not closed cleanly"
            } else {
                "a replica's copy"
            },
            s.second_offset
        );
        self.save_state(s);
    }

    /// REPLICAOF NO ONE: stop copying and take writes. The history gets a new id; the old
    /// one is remembered with the offset where they part, so the other replicas of the old
    /// primary can continue from this node with a partial resync.
    pub fn promote(&self, engine: Option<&Engine>) {
        let mut role = self.role.lock().unwrap();
        if *role == Role::Primary {
            return;
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cut_link();
        // The replica thread finishes what it is applying, sees the new generation and ends.
        self.join_replica_thread();
        *role = Role::Primary;
        self.link_up.store(false, Ordering::Release);
        self.sync_in_progress.store(false, Ordering::Release);
        let mut s = self.state();
        if let Some(e) = engine {
            if s.synced {
                s.replid2 = std::mem::replace(&mut s.replid, state::new_id());
                s.second_offset = self.offset(e) as i64;
            } else {
                // A copy cut short is no history anyone can continue.
                s.replid = state::new_id();
                s.replid2 = state::NO_ID.into();
                s.second_offset = -1;
            }
            s.synced = true;
            s.replica = false;
            e.set_mirroring(false);
        }
        self.save_state(s);
        self.is_replica.store(false, Ordering::Release);
    }

    fn cut_link(&self) {
        if let Some(s) = self.replica_sock.lock().unwrap().take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.link_up.store(false, Ordering::Release);
        self.ack_soon(false);
    }

    /// PSYNC from a replica on `sock` (the connection is handed over): answers with
    /// +CONTINUE or +FULLRESYNC and streams the log on a thread of its own.
    pub fn serve(
        self: &Arc<Self>,
        host: Arc<dyn Host>,
        sock: TcpStream,
        replid: String,
        offset: i64,
        port: u16,
    ) {
        let me = self.clone();
        let _ = std::thread::Builder::new()
            .name("segkv-repl-send".into())
            .spawn(move || primary::serve(me, host, sock, replid, offset, port));
    }

    /// Time to wait for a blocked read or write before giving a link up.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.settings.timeout_s.load(Ordering::Relaxed).max(1))
    }
}

impl Link {
    /// Drops the link: its sender stops and the connection closes.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}
