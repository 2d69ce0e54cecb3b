//! State shared by every worker thread: the engine, the configuration, the client registry,
//! statistics, the pause state and the lock table for multi-key commands; and, while the
//! engine is still opening (replaying the log), how far loading got.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed,
};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use segkv_engine::{Engine, FsyncPolicy};
use segkv_replicate::{Host, Replication};

use crate::cmd::Table;
use crate::config::{Config, OutputLimits};

/// Wakes a worker's event loop (a `mio::Waker` in production; anything in tests).
pub trait Wake: Send + Sync {
    fn wake(&self);
}

/// Limits read on hot paths, mirrored from the config after every CONFIG SET.
#[derive(Debug, Default)]
pub struct Limits {
    pub maxclients: AtomicUsize,
    pub proto_max_bulk_len: AtomicU64,
    pub query_buffer_limit: AtomicU64,
    pub timeout: AtomicU64,
    pub output: Mutex<OutputLimits>,
    /// `maxmemory` in bytes (0: no limit), the policy's code (`memory::policy_code`),
    /// `maxmemory-samples`, `maxmemory-eviction-tenacity`.
    pub maxmemory: AtomicU64,
    pub evict_policy: AtomicU8,
    pub maxmemory_samples: AtomicU64,
    pub eviction_tenacity: AtomicU64,
    /// `checkpoint-interval` in seconds (0: only at shutdown).
    pub checkpoint_interval: AtomicU64,
    /// `replica-read-only`, `min-replicas-to-write`, `min-replicas-max-lag`.
    pub replica_read_only: AtomicBool,
    pub min_replicas_to_write: AtomicU64,
    pub min_replicas_max_lag: AtomicU64,
}

/// Counters for INFO stats.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_received: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub commands_processed: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    pub keyspace_hits: AtomicU64,
    pub keyspace_misses: AtomicU64,
    pub error_replies: AtomicU64,
    pub unexpected_error_replies: AtomicU64,
    pub client_qbuf_limit_disconnections: AtomicU64,
    pub client_outbuf_limit_disconnections: AtomicU64,
    /// Operations per second, averaged over the last 16 samples (100 ms apart).
    pub instantaneous_ops: AtomicU64,
    /// Network input and output in bytes per second (same sampling).
    pub instantaneous_input: AtomicU64,
    pub instantaneous_output: AtomicU64,
    /// Error code (first word of an error reply) to count, for INFO errorstats.
    pub errors: Mutex<HashMap<String, u64>>,
}

impl Stats {
    /// Samples the counters every 100 ms, as Redis's `trackInstantaneousMetric`, forever.
    pub fn sample_forever(&self) {
        const SAMPLES: usize = 16;
        let counters = [
            &self.commands_processed,
            &self.net_input_bytes,
            &self.net_output_bytes,
        ];
        let outputs = [
            &self.instantaneous_ops,
            &self.instantaneous_input,
            &self.instantaneous_output,
        ];
        let mut rings = [[0u64; SAMPLES]; 3];
        let mut last: Vec<u64> = counters.iter().map(|c| c.load(Relaxed)).collect();
        let mut t = Instant::now();
        let mut i = 0;
        loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let ms = t.elapsed().as_millis().max(1) as u64;
            t = Instant::now();
            for k in 0..3 {
                let now = counters[k].load(Relaxed);
                rings[k][i % SAMPLES] = now.saturating_sub(last[k]) * 1000 / ms;
                last[k] = now;
                outputs[k].store(rings[k].iter().sum::<u64>() / SAMPLES as u64, Relaxed);
            }
            i += 1;
        }
    }

    pub fn reset(&self) {
        for c in [
            &self.connections_received,
            &self.rejected_connections,
            &self.commands_processed,
            &self.net_input_bytes,
            &self.net_output_bytes,
            &self.keyspace_hits,
            &self.keyspace_misses,
            &self.error_replies,
            &self.unexpected_error_replies,
            &self.client_qbuf_limit_disconnections,
            &self.client_outbuf_limit_disconnections,
        ] {
            c.store(0, Relaxed);
        }
        self.errors.lock().unwrap().clear();
    }
}

/// What CLIENT LIST shows of a connection, and how other threads reach it (CLIENT KILL).
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    pub fd: i32,
    pub worker: usize,
    pub created: Instant,
    pub name: Mutex<Vec<u8>>,
    pub db: AtomicUsize,
    pub resp: AtomicU8,
    /// Index of the last command in the command table (`usize::MAX`: none yet).
    pub last_cmd: AtomicUsize,
    /// Milliseconds since `created` of the last command.
    pub last_interaction_ms: AtomicU64,
    pub kill: AtomicBool,
    pub no_evict: AtomicBool,
    pub qbuf: AtomicU64,
    pub obl: AtomicU64,
}

impl ClientInfo {
    pub fn new(id: u64, addr: String, laddr: String, fd: i32, worker: usize) -> Self {
        ClientInfo {
            id,
            addr,
            laddr,
            fd,
            worker,
            created: Instant::now(),
            name: Mutex::new(Vec::new()),
            db: AtomicUsize::new(0),
            resp: AtomicU8::new(2),
            last_cmd: AtomicUsize::new(usize::MAX),
            last_interaction_ms: AtomicU64::new(0),
            kill: AtomicBool::new(false),
            no_evict: AtomicBool::new(false),
            qbuf: AtomicU64::new(0),
            obl: AtomicU64::new(0),
        }
    }
}

/// CLIENT PAUSE state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseMode {
    Write,
    All,
}

/// A process-wide table of striped locks. Multi-key commands lock every stripe their keys hash
/// to, in ascending stripe order, so two multi-key commands never deadlock and never interleave
/// on a shared key. Single-key commands take no lock (the engine makes each of them atomic).
#[derive(Debug)]
pub struct LockTable {
    stripes: Vec<Mutex<()>>,
}

impl LockTable {
    pub fn new(n: usize) -> Self {
        LockTable {
            stripes: (0..n).map(|_| Mutex::new(())).collect(),
        }
    }

    fn stripe(&self, db: usize, key: &[u8]) -> usize {
        // FNV-1a: cheap and good enough to spread stripes.
        let mut h: u64 = 0xcbf29ce484222325 ^ db as u64;
        for &b in key {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        (h % self.stripes.len() as u64) as usize
    }

    /// Locks the stripes of every (db, key), in a fixed order.
    pub fn lock<'a>(&'a self, keys: &[(usize, &[u8])]) -> Vec<MutexGuard<'a, ()>> {
        let mut idx: Vec<usize> = keys.iter().map(|(db, k)| self.stripe(*db, k)).collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter()
            .map(|i| self.stripes[i].lock().unwrap_or_else(|e| e.into_inner()))
            .collect()
    }
}

/// The engine, once it is open. While the log is being replayed the server already answers
/// (`-LOADING` to every command without Redis's `loading` flag, which dispatch checks first),
/// so the slot is empty then; it is filled once and never emptied.
#[derive(Default)]
pub struct EngineSlot(OnceLock<Engine>);

impl EngineSlot {
    /// The engine, or `None` while loading.
    pub fn loaded(&self) -> Option<&Engine> {
        self.0.get()
    }
}

impl std::ops::Deref for EngineSlot {
    type Target = Engine;
    /// Handlers that dispatch lets run while loading must use [`EngineSlot::loaded`] instead.
    fn deref(&self) -> &Engine {
        self.0
            .get()
            .expect("engine used while loading: only commands with the `loading` flag run then")
    }
}

/// How far the replay of the log at startup got, for INFO's `loading_*` fields. Progress is
/// in bytes of segment files: the engine reports the address of each record it replays, and
/// the segment files listed before opening say how many bytes lie before that address. A
/// file's preallocated, never written tail (zeros: the active segment of a crashed or killed
/// server) does not count.
#[derive(Debug)]
pub struct Loading {
    /// Unix seconds when loading started.
    pub start_time: u64,
    /// (base address, file length, bytes in the files before this one), by base address.
    segments: Vec<(u64, u64, u64)>,
    total: u64,
    /// Address of the last record replayed (0: none yet).
    pos: AtomicU64,
    /// `key-load-delay` (test only, as in Redis): microseconds to sleep per record replayed;
    /// negative -n sleeps 1 us every n records.
    pub key_load_delay: AtomicI64,
    records: AtomicU64,
}

impl Loading {
    /// Lists the segment files in `dir` (none if it does not exist yet).
    pub fn scan(dir: &Path) -> Loading {
        let mut segments = Vec::new();
        let mut total = 0;
        for (base, path) in segkv_log::list_segments(dir).unwrap_or_default() {
            let len = len_without_zero_tail(&path);
            segments.push((base, len, total));
            total += len;
        }
        Loading {
            start_time: unix_ms() / 1000,
            segments,
            total,
            pos: AtomicU64::new(0),
            key_load_delay: AtomicI64::new(0),
            records: AtomicU64::new(0),
        }
    }

    /// The engine's `on_replay` hook: one record at `addr` was replayed.
    pub fn replayed(&self, addr: u64) {
        self.pos.store(addr, Relaxed);
        let delay = self.key_load_delay.load(Relaxed);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_micros(delay as u64));
        } else if delay < 0
            && self
                .records
                .fetch_add(1, Relaxed)
                .is_multiple_of(delay.unsigned_abs())
        {
            std::thread::sleep(std::time::Duration::from_micros(1));
        }
    }

    /// Bytes of segment files before the last record replayed.
    pub fn loaded_bytes(&self) -> u64 {
        let pos = self.pos.load(Relaxed);
        let i = self.segments.partition_point(|&(base, ..)| base <= pos);
        match i.checked_sub(1).map(|i| self.segments[i]) {
            Some((base, len, before)) => before + (pos - base).min(len),
            None => 0,
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.total
    }
}

/// Length of the file at `path` without the zeros at its end (0 if it cannot be read): a
/// segment is written from the front, so its preallocated, never written tail is found by a
/// binary search over 4 KiB pages, reading a dozen pages rather than the whole tail (reading
/// never written blocks still costs the kernel zero-filling them). A whole page of zeros
/// inside the data can make the estimate short; it only steers INFO's progress figures.
fn len_without_zero_tail(path: &Path) -> u64 {
    use std::os::unix::fs::FileExt;
    const PAGE: u64 = 4096;
    let Ok(f) = std::fs::File::open(path) else {
        return 0;
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let mut buf = vec![0u8; PAGE as usize];
    // Offset just past the last nonzero byte of page `p` (0 if it is all zeros).
    let mut data_end = |p: u64| -> u64 {
        let n = (len - p * PAGE).min(PAGE) as usize;
        match f.read_exact_at(&mut buf[..n], p * PAGE) {
            Ok(()) => buf[..n]
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |i| p * PAGE + i as u64 + 1),
            Err(_) => 0,
        }
    };
    let pages = len.div_ceil(PAGE);
    if pages == 0 {
        return 0;
    }
    let last = data_end(pages - 1);
    if last > 0 {
        return last;
    }
    // The first all-zero page: pages before `lo` hold data, page `hi` is zeros.
    let (mut lo, mut hi) = (0, pages - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if data_end(mid) > 0 {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == 0 { 0 } else { data_end(lo - 1) }
}

/// Everything the workers share.
pub struct Shared {
    pub engine: EngineSlot,
    /// How loading went (present when the server started loading in the background).
    pub loading: Option<Arc<Loading>>,
    pub config: RwLock<Config>,
    pub limits: Limits,
    pub stats: Stats,
    pub table: Table,
    pub clients: Mutex<HashMap<u64, Arc<ClientInfo>>>,
    pub connected: AtomicUsize,
    pub next_client_id: AtomicU64,
    /// (mode, deadline in unix ms) while clients are paused.
    pub pause: Mutex<Option<(PauseMode, u64)>>,
    /// Whether `pause` may be set (checked without the lock on every command).
    pub pause_active: AtomicBool,
    /// Bumped by CLIENT KILL, so workers look for killed clients only when there are some.
    pub kill_epoch: AtomicU64,
    pub locks: LockTable,
    pub started: Instant,
    pub run_id: String,
    pub lastsave: AtomicU64,
    pub wakers: RwLock<Vec<Arc<dyn Wake>>>,
    /// Set by SHUTDOWN or a signal; the process exits once the log is synced.
    pub shutting_down: AtomicBool,
    pub appendfsync: FsyncPolicy,
    pub tcp_port: u16,
    pub executable: String,
    pub config_file: String,
    /// Largest `used_memory` seen (INFO's used_memory_peak).
    pub used_memory_peak: AtomicU64,
    /// Replication: role, attached replicas, the link to the primary.
    pub repl: Arc<Replication>,
    /// This `Shared` itself, for threads that replication starts (set by `Shared::arc`).
    me: OnceLock<Weak<Shared>>,
}

impl Host for Shared {
    fn engine(&self) -> Option<&Engine> {
        self.engine.loaded()
    }

    fn acked(&self) {
        self.wake_all();
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("engine", &self.engine.loaded())
            .finish()
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn run_id() -> String {
    // 40 hex characters, as Redis's run_id; unique enough from time, pid and a stack address.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        ^ ((std::process::id() as u128) << 64);
    let mut x = seed as u64 ^ (seed >> 64) as u64;
    let mut s = String::new();
    for _ in 0..5 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("{x:016x}"));
    }
    s.truncate(40);
    s
}

impl Shared {
    /// Shared state over an open engine.
    pub fn new(engine: Engine, config: Config) -> Shared {
        let s = Shared::loading(config, None);
        s.set_engine(engine);
        s
    }

    /// Shared state with no engine yet: commands get `-LOADING` until [`Shared::set_engine`].
    pub fn loading(config: Config, loading: Option<Arc<Loading>>) -> Shared {
        let limits = Limits::default();
        let appendfsync = config.appendfsync();
        let tcp_port = config.port();
        let repl = Replication::open(config.dir(), config.port());
        let config_file = config
            .file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let s = Shared {
            engine: EngineSlot::default(),
            loading,
            config: RwLock::new(config),
            limits,
            stats: Stats::default(),
            table: Table::build(),
            clients: Mutex::new(HashMap::new()),
            connected: AtomicUsize::new(0),
            next_client_id: AtomicU64::new(1),
            pause: Mutex::new(None),
            pause_active: AtomicBool::new(false),
            kill_epoch: AtomicU64::new(0),
            locks: LockTable::new(1024),
            started: Instant::now(),
            run_id: run_id(),
            lastsave: AtomicU64::new(unix_ms() / 1000),
            wakers: RwLock::new(Vec::new()),
            shutting_down: AtomicBool::new(false),
            appendfsync,
            tcp_port,
            executable: std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            config_file,
            used_memory_peak: AtomicU64::new(0),
            repl,
            me: OnceLock::new(),
        };
        s.refresh_limits();
        s
    }

    /// Shares it, so that replication threads can reach it.
    pub fn arc(self) -> Arc<Shared> {
        let a = Arc::new(self);
        let _ = a.me.set(Arc::downgrade(&a));
        a
    }

    /// This server as replication's host (None for a `Shared` not made by `arc`).
    pub fn host(&self) -> Option<Arc<dyn Host>> {
        let me = self.me.get()?.upgrade()?;
        Some(me)
    }

    /// Ends loading: from now on every command runs.
    pub fn set_engine(&self, engine: Engine) {
        if self.engine.0.set(engine).is_err() {
            panic!("the engine is set once");
        }
        crate::memory::apply(self, &self.engine);
    }

    /// Records a `used_memory` reading for the peak; returns the peak.
    pub fn note_used_memory(&self, used: u64) -> u64 {
        self.used_memory_peak.fetch_max(used, Relaxed).max(used)
    }

    /// The databases a client may SELECT (known before the engine is open).
    pub fn databases(&self) -> usize {
        match self.engine.loaded() {
            Some(e) => e.databases(),
            None => self.config.read().unwrap().databases(),
        }
    }

    /// Copies hot-path limits out of the config.
    pub fn refresh_limits(&self) {
        let c = self.config.read().unwrap();
        self.limits.maxclients.store(c.maxclients(), Relaxed);
        self.limits
            .proto_max_bulk_len
            .store(c.proto_max_bulk_len(), Relaxed);
        self.limits
            .query_buffer_limit
            .store(c.query_buffer_limit(), Relaxed);
        self.limits.timeout.store(c.timeout(), Relaxed);
        *self.limits.output.lock().unwrap() = c.output_limits();
        let num = |n: &str| c.get(n).parse::<u64>().unwrap_or(0);
        self.limits.maxmemory.store(num("maxmemory"), Relaxed);
        self.limits.evict_policy.store(
            crate::memory::policy_code(c.get("maxmemory-policy")),
            Relaxed,
        );
        self.limits
            .maxmemory_samples
            .store(num("maxmemory-samples"), Relaxed);
        self.limits
            .eviction_tenacity
            .store(num("maxmemory-eviction-tenacity"), Relaxed);
        self.limits
            .checkpoint_interval
            .store(num("checkpoint-interval"), Relaxed);
        self.limits
            .replica_read_only
            .store(c.get("replica-read-only") == "yes", Relaxed);
        self.limits
            .min_replicas_to_write
            .store(num("min-replicas-to-write"), Relaxed);
        self.limits
            .min_replicas_max_lag
            .store(num("min-replicas-max-lag"), Relaxed);
        let rs = &self.repl.settings;
        rs.backlog_size.store(num("repl-backlog-size"), Relaxed);
        if self.repl.backlog_active.load(Relaxed)
            && let Some(e) = self.engine.loaded()
        {
            e.log().set_backlog(num("repl-backlog-size"));
        }
        rs.timeout_s.store(num("repl-timeout"), Relaxed);
        drop(c);
        if let Some(e) = self.engine.loaded() {
            crate::memory::apply(self, e);
        }
        let c = self.config.read().unwrap();
        if let Some(l) = &self.loading {
            l.key_load_delay
                .store(c.get("key-load-delay").parse().unwrap_or(0), Relaxed);
        }
    }

    pub fn wake_all(&self) {
        for w in self.wakers.read().unwrap().iter() {
            w.wake();
        }
    }

    /// The current pause, if one is in force (an expired pause is cleared).
    pub fn paused(&self) -> Option<(PauseMode, u64)> {
        let mut p = self.pause.lock().unwrap();
        if let Some((_, until)) = *p
            && unix_ms() >= until
        {
            *p = None;
            self.pause_active.store(false, Relaxed);
        }
        *p
    }

    pub fn count_error(&self, text: &str) {
        self.stats.error_replies.fetch_add(1, Relaxed);
        let code = text.split(' ').next().unwrap_or("ERR").to_string();
        *self.stats.errors.lock().unwrap().entry(code).or_insert(0) += 1;
    }

    pub fn hit(&self, hit: bool) {
        if hit {
            self.stats.keyspace_hits.fetch_add(1, Relaxed);
        } else {
            self.stats.keyspace_misses.fetch_add(1, Relaxed);
        }
    }
}

/// Per-connection state that commands read and change.
#[derive(Debug)]
pub struct Session {
    pub info: Arc<ClientInfo>,
    pub db: usize,
    pub proto: u8,
    pub reply: ReplyMode,
    /// Close the connection once the pending replies are written (QUIT, protocol errors).
    pub close_after_reply: bool,
    /// Whether the connection comes from a loopback address (DEBUG is allowed locally).
    pub local: bool,
    /// CLIENT NO-TOUCH: commands do not count as accesses (no effect until access times exist).
    pub no_touch: bool,
    /// REPLCONF listening-port: the port a replica on this connection listens on.
    pub repl_port: u16,
    /// PSYNC: the connection is handed to replication (replication id, offset).
    pub handoff: Option<(String, i64)>,
    /// WAIT: blocked until enough replicas acknowledge.
    pub wait: Option<WaitFor>,
}

/// A client blocked in WAIT.
#[derive(Debug, Clone, Copy)]
pub struct WaitFor {
    pub replicas: usize,
    /// History offset every counted replica must have acknowledged.
    pub offset: u64,
    pub deadline: Option<Instant>,
}

/// CLIENT REPLY state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    On,
    Off,
    /// Set by CLIENT REPLY SKIP: the next command's reply is dropped.
    SkipNext,
    /// The current command's reply is dropped.
    Skip,
}

impl Session {
    pub fn new(info: Arc<ClientInfo>, local: bool) -> Self {
        Session {
            no_touch: false,
            info,
            db: 0,
            proto: 2,
            reply: ReplyMode::On,
            close_after_reply: false,
            local,
            repl_port: 0,
            handoff: None,
            wait: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::len_without_zero_tail;

    #[test]
    fn a_segment_is_measured_without_its_preallocated_zero_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        for (data, zeros) in [
            (0, 0),
            (0, 8192),
            (1, 0),
            (5000, 1 << 20),
            (8192, 4096),
            (4097, 3),
        ] {
            let mut bytes = vec![7u8; data];
            bytes.resize(data + zeros, 0);
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(
                len_without_zero_tail(&path),
                data as u64,
                "{data} + {zeros}"
            );
        }
        assert_eq!(len_without_zero_tail(&dir.path().join("missing")), 0);
    }
}
