//! The hash index: key → address of the key's newest record in the log.
//!
//! A table is an array of 64-byte buckets of eight 8-byte slots, probed linearly from the key's
//! home bucket (`hash * buckets >> 64`, so any table size works and growth is by ~1.5x, not 2x).
//! A slot is one `AtomicU64`:
//!
//! ```text
//! bits 63..53  tag: 11 low bits of the key's hash (skips most foreign slots without a log read)
//! bit  52      TOMB: the key is deleted (the address is its tombstone or expired record)
//! bits 51..0   record address / 4
//! 0            EMPTY;  u64::MAX  MOVED (the table is being migrated; look in the next one);
//!              u64::MAX-1  MOVED_EMPTY (was empty when migrated: still ends a probe run);
//!              u64::MAX-2  DELETED (the key's record was reclaimed by the cleaner: the slot
//!              belongs to no key any more, continues probe runs, and is dropped by a resize)
//! ```
//! A slot, once claimed by a key, belongs to that key until the table is replaced, so two
//! inserters of one key always meet on the same slot. Per key, index addresses only grow: a
//! writer reads the slot *before* reserving its record, so its record is newer than what it
//! replaces; recovery's "newest address wins" therefore agrees with the index.
//!
//! Growth: a resize is started with the writer gate closed for an instant (so no insert is in
//! flight in the old table), then every write migrates a chunk of slots: copy the slot's
//! entry into the new table keeping the newer of the two, then CAS the old slot to MOVED (a
//! failed CAS means a writer changed it: copy again). Lookups consult the old table first;
//! a key found live there is current, otherwise they look in the new table. When every slot is
//! MOVED the new table replaces the old, which is freed when no reader can hold it.

use std::sync::{Arc, OnceLock};

use segkv_log::Log;
use segkv_log::epoch::{EpochCell, EpochGuard};

use std::sync::atomic::AtomicU16;

use crate::sync::{AtomicI64, AtomicU64, AtomicUsize, Ordering, model_point};

pub(crate) const EMPTY: u64 = 0;
pub(crate) const MOVED: u64 = u64::MAX;
/// A slot that was empty when migrated: it still ends probe runs (a key is never found past
/// it), so a lookup late in a migration does not walk the whole old table.
pub(crate) const MOVED_EMPTY: u64 = u64::MAX - 1;
/// A slot whose entry the cleaner removed (its record's segment is gone). A CAS from the old
/// value fails, so a writer that found the key there looks again and inserts elsewhere.
pub(crate) const DELETED: u64 = u64::MAX - 2;
const ADDR_MASK: u64 = (1 << 52) - 1;
const TOMB: u64 = 1 << 52;
const TAG_SHIFT: u32 = 53;
const TAG_MASK: u64 = 0x7ff;
const SLOTS_PER_BUCKET: usize = 8;
/// Slots migrated per write (or read) while a resize is under way. Each costs a read of its
/// key from the log: 32 add some 10 us to a request, where 256 added a few hundred, enough to
/// stall a replica applying one record after another. The background (`help_migrate_bulk`)
/// does the bulk of a migration; writers' chunks bound it (a new table has room for over
/// 0.4 inserts per old slot, and 32 slots per insert finish the old table well before).
#[cfg(not(shuttle))]
const CHUNK: usize = 32;
/// Slots per chunk migrated by the background.
#[cfg(not(shuttle))]
const BULK_CHUNK: usize = 4096;
/// Under the model checker, small chunks so that several writers migrate one tiny table at once.
#[cfg(shuttle)]
const CHUNK: usize = 4;
#[cfg(shuttle)]
const BULK_CHUNK: usize = 4;

/// Where the index reads the key of a record: the log (the only implementation in the
/// engine), or a stand-in in the model-checking tests.
pub trait KeySource {
    /// The key of the record at `addr`, if there is one.
    fn key_at<'g>(&'g self, addr: u64, g: &'g EpochGuard) -> Option<&'g [u8]>;
}

impl KeySource for Log {
    #[inline]
    fn key_at<'g>(&'g self, addr: u64, g: &'g EpochGuard) -> Option<&'g [u8]> {
        self.read(addr, g).map(|r| r.key)
    }
}

pub(crate) fn hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

#[inline]
pub(crate) fn make_slot(addr: u64, h: u64, tomb: bool) -> u64 {
    debug_assert!(addr.is_multiple_of(4) && addr >> 54 == 0 && addr != 0);
    ((h & TAG_MASK) << TAG_SHIFT) | if tomb { TOMB } else { 0 } | (addr >> 2)
}

#[inline]
pub(crate) fn slot_addr(v: u64) -> u64 {
    (v & ADDR_MASK) << 2
}

#[inline]
pub(crate) fn is_tomb(v: u64) -> bool {
    v & TOMB != 0
}

/// The same entry marked deleted (lazy expiry of the record it points to).
#[inline]
pub(crate) fn tombed(v: u64) -> u64 {
    v | TOMB
}

#[inline]
fn tag_matches(v: u64, h: u64) -> bool {
    (v >> TAG_SHIFT) == (h & TAG_MASK)
}

/// Whether a slot value is a key's entry (live or tomb), not one of the markers.
#[inline]
pub(crate) fn is_entry(v: u64) -> bool {
    v != EMPTY && v < DELETED
}

/// Order of two entries of the same key: newer address first, and at one address a tomb
/// (lazy expiry of that very record) after the live entry.
#[inline]
fn newer(a: u64, b: u64) -> bool {
    (slot_addr(a), is_tomb(a)) > (slot_addr(b), is_tomb(b))
}

#[repr(align(64))]
#[derive(Default)]
struct Bucket([AtomicU64; SLOTS_PER_BUCKET]);

pub(crate) struct Table {
    buckets: Box<[Bucket]>,
    /// Per-slot access metadata for eviction and OBJECT IDLETIME/FREQ (LRU clock or LFU
    /// counter; see `Engine::touch`). Best effort: not part of the index's protocol.
    meta: Box<[AtomicU16]>,
    /// Slots claimed (live or tomb) or reserved: an insert reserves before it claims, and a
    /// table being migrated into starts with room reserved for every live key of the old one.
    /// Inserts never take the last empty slot, so every probe run ends and every copy fits.
    used: AtomicUsize,
    next: OnceLock<Arc<Table>>,
    cursor: AtomicUsize,
    migrated: AtomicUsize,
}

impl Table {
    pub(crate) fn with_buckets(n: usize) -> Table {
        let n = n.max(1);
        Table {
            buckets: (0..n).map(|_| Bucket::default()).collect(),
            meta: std::iter::repeat_with(|| AtomicU16::new(0))
                .take(n * SLOTS_PER_BUCKET)
                .collect(),
            used: AtomicUsize::new(0),
            next: OnceLock::new(),
            cursor: AtomicUsize::new(0),
            migrated: AtomicUsize::new(0),
        }
    }

    /// A table holding exactly these slot values (from a checkpoint; `slots.len()` is a
    /// multiple of 8).
    pub(crate) fn from_slots(slots: &[u64]) -> Table {
        let t = Table::with_buckets(slots.len() / SLOTS_PER_BUCKET);
        let mut used = 0;
        for (i, &v) in slots.iter().enumerate() {
            let v = if v == MOVED || v == MOVED_EMPTY {
                EMPTY
            } else {
                v
            };
            if v != EMPTY {
                used += 1;
            }
            t.slot(i).store(v, Ordering::Relaxed);
        }
        t.used.store(used, Ordering::Relaxed);
        t
    }

    /// Whether `more` inserts fit before the load limit.
    pub(crate) fn has_room_for(&self, more: usize) -> bool {
        self.used.load(Ordering::Relaxed) + more < self.max_used()
    }

    /// A table sized for `keys` keys at about 60% load.
    pub(crate) fn for_keys(keys: usize) -> Table {
        Table::with_buckets((keys * 5 / 3).div_ceil(SLOTS_PER_BUCKET).max(16))
    }

    pub(crate) fn nslots(&self) -> usize {
        self.buckets.len() * SLOTS_PER_BUCKET
    }

    /// At or past the load limit.
    fn over_limit(&self) -> bool {
        self.used.load(Ordering::Relaxed) >= self.max_used()
    }

    fn max_used(&self) -> usize {
        self.nslots() / 8 * 7
    }

    #[inline]
    fn home(&self, h: u64) -> usize {
        (((h as u128) * (self.buckets.len() as u128)) >> 64) as usize * SLOTS_PER_BUCKET
    }

    #[inline]
    fn slot(&self, i: usize) -> &AtomicU64 {
        &self.buckets[i / SLOTS_PER_BUCKET].0[i % SLOTS_PER_BUCKET]
    }

    pub(crate) fn bytes(&self) -> usize {
        self.buckets.len() * (std::mem::size_of::<Bucket>() + 2 * SLOTS_PER_BUCKET)
    }

    /// The position of `slot`, if the slot is in this table.
    #[inline]
    fn index_of(&self, slot: &AtomicU64) -> Option<usize> {
        let base = self.buckets.as_ptr() as usize;
        let p = slot as *const AtomicU64 as usize;
        let i = p.checked_sub(base)? / std::mem::size_of::<AtomicU64>();
        (i < self.nslots()).then_some(i)
    }

    /// The metadata of `slot`, if the slot is in this table.
    #[inline]
    fn meta_of(&self, slot: &AtomicU64) -> Option<&AtomicU16> {
        self.meta.get(self.index_of(slot)?)
    }

    /// The table being migrated into, if a resize is under way.
    #[inline]
    fn next(&self) -> Option<&Arc<Table>> {
        model_point();
        self.next.get()
    }
}

/// What a probe of one table found.
enum Probe<'g> {
    Hit(&'g AtomicU64, u64),
    /// Not here; the first empty slot of the probe run (None only in a fully migrated table).
    Absent(Option<&'g AtomicU64>),
}

/// Probes `t` for `key` without following `next`.
fn probe<'g, K: KeySource + ?Sized>(
    t: &'g Table,
    log: &K,
    key: &[u8],
    h: u64,
    g: &EpochGuard,
) -> Probe<'g> {
    probe_with(t, h, |v| {
        log.key_at(slot_addr(v), g).is_some_and(|k| k == key)
    })
}

/// Probes `t`, without following `next`, for the entry with hash `h` that `is_it` accepts
/// (asked only of entries whose tag matches).
#[inline]
fn probe_with<'g>(t: &'g Table, h: u64, mut is_it: impl FnMut(u64) -> bool) -> Probe<'g> {
    let n = t.nslots();
    let mut i = t.home(h);
    for _ in 0..n {
        let s = t.slot(i);
        let v = s.load(Ordering::Acquire);
        if v == EMPTY {
            return Probe::Absent(Some(s));
        }
        if v == MOVED_EMPTY {
            return Probe::Absent(None);
        }
        if v != MOVED && v != DELETED && tag_matches(v, h) && is_it(v) {
            return Probe::Hit(s, v);
        }
        i += 1;
        if i == n {
            i = 0;
        }
    }
    Probe::Absent(None)
}

/// Where a key stands in the index.
pub(crate) enum Found<'g> {
    /// The key's slot (its value may be a tomb).
    Hit { slot: &'g AtomicU64, v: u64 },
    /// The key has no slot; it may be inserted by CAS into this empty slot of the newest table.
    Miss {
        table: &'g Table,
        slot: &'g AtomicU64,
    },
}

/// One keyspace's index.
pub(crate) struct Index {
    table: EpochCell<Arc<Table>>,
    /// Keys with a live entry (expired-but-not-yet-removed keys count, as in Redis's DBSIZE).
    pub(crate) live: AtomicI64,
    /// Live keys with an expiry.
    pub(crate) expires: AtomicI64,
}

impl Index {
    pub(crate) fn new(table: Table) -> Index {
        Index {
            table: EpochCell::new(Arc::new(table)),
            live: AtomicI64::new(0),
            expires: AtomicI64::new(0),
        }
    }

    pub(crate) fn current<'g>(&'g self, g: &'g EpochGuard) -> &'g Arc<Table> {
        model_point();
        self.table.load(g)
    }

    pub(crate) fn len(&self) -> u64 {
        self.live.load(Ordering::Relaxed).max(0) as u64
    }

    pub(crate) fn bytes(&self, g: &EpochGuard) -> usize {
        let t = self.current(g);
        t.bytes() + t.next().map_or(0, |n| n.bytes())
    }

    /// Finds `key`: consults the current table, then the one being migrated into.
    pub(crate) fn find<'g, K: KeySource + ?Sized>(
        &'g self,
        log: &K,
        key: &[u8],
        h: u64,
        g: &'g EpochGuard,
    ) -> Found<'g> {
        let mut t: &'g Table = self.current(g);
        loop {
            match probe(t, log, key, h, g) {
                Probe::Hit(slot, v) => return Found::Hit { slot, v },
                Probe::Absent(empty) => match t.next() {
                    Some(n) => t = n,
                    None => {
                        let slot = empty.expect("index table full without a resize under way");
                        return Found::Miss { table: t, slot };
                    }
                },
            }
        }
    }

    /// The slot whose entry (live or tomb) is the record at `addr`, whose key hashes to `h`: the
    /// key's slot if that record is still its newest, else None. No key is read (an address
    /// is one record's, so it names the key too), which is what makes the cleaner's liveness
    /// check cheap: a dead record's key would otherwise be compared against its newer record,
    /// a random read into the log. Only with no resize under way (the cleaner finishes one
    /// first): mid-migration the old table may hold a newer entry of the key under another
    /// address while the new one still holds this record's, and without reading keys the
    /// probe cannot tell the two belong together.
    pub(crate) fn find_record<'g>(
        &'g self,
        addr: u64,
        h: u64,
        g: &'g EpochGuard,
    ) -> Option<(&'g AtomicU64, u64)> {
        let mut t: &'g Table = self.current(g);
        debug_assert!(t.next().is_none(), "find_record during a resize");
        loop {
            match probe_with(t, h, |v| slot_addr(v) == addr) {
                Probe::Hit(slot, v) => return Some((slot, v)),
                Probe::Absent(_) => t = t.next()?,
            }
        }
    }

    /// The live slot value for `key`, if any (tombs are misses).
    pub(crate) fn get<'g, K: KeySource + ?Sized>(
        &'g self,
        log: &K,
        key: &[u8],
        h: u64,
        g: &'g EpochGuard,
    ) -> Option<(u64, &'g AtomicU64)> {
        match self.find(log, key, h, g) {
            Found::Hit { slot, v, .. } if !is_tomb(v) => Some((v, slot)),
            _ => None,
        }
    }

    /// CAS for a found position. On success adjusts the used count for claimed empty slots.
    pub(crate) fn install(&self, found: &Found<'_>, new: u64) -> bool {
        match *found {
            Found::Hit { slot, v, .. } => slot
                .compare_exchange(v, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
            Found::Miss { table, slot } => {
                if table.used.fetch_add(1, Ordering::AcqRel) + 1 >= table.nslots() {
                    // Never the last empty slot: the caller grows the table and retries.
                    table.used.fetch_sub(1, Ordering::AcqRel);
                    return false;
                }
                let ok = slot
                    .compare_exchange(EMPTY, new, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if !ok {
                    table.used.fetch_sub(1, Ordering::AcqRel);
                }
                ok
            }
        }
    }

    /// Whether an insert at `found` must wait: it would go into the table being migrated into
    /// while that table is already over its load limit (it cannot grow before it is current).
    /// The caller helps the migration finish, so it becomes current and can grow, and retries.
    pub(crate) fn must_help_first(&self, found: &Found<'_>, g: &EpochGuard) -> bool {
        match found {
            Found::Miss { table, .. } => {
                !std::ptr::eq(*table, &**self.current(g)) && table.over_limit()
            }
            Found::Hit { .. } => false,
        }
    }

    /// Whether a write at `found` would revive a tomb in the table being migrated: the new
    /// table reserved room only for the keys live when the resize started, so a revived key
    /// would be copied in unreserved (and a shrink's table can then fill up). The slot is
    /// migrated first (its tomb is dropped or kept in the new table) and the caller looks
    /// again, so the write becomes a reserved insert there.
    pub(crate) fn must_migrate_first<K: KeySource + ?Sized>(
        &self,
        found: &Found<'_>,
        log: &K,
        g: &EpochGuard,
    ) -> bool {
        let Found::Hit { slot, v } = *found else {
            return false;
        };
        if !is_tomb(v) {
            return false;
        }
        let cur = self.current(g);
        let (Some(next), Some(i)) = (cur.next(), cur.index_of(slot)) else {
            return false;
        };
        migrate_slot(slot, cur.meta[i].load(Ordering::Relaxed), next, log, g);
        true
    }

    /// Whether an insert at `found` must not claim its slot: it would go into the current
    /// table while that table is over its load limit and no resize is under way (writers that
    /// raced past the limit together could otherwise fill it). The caller leaves the writer
    /// gate, starts the resize and retries.
    pub(crate) fn must_grow_first(&self, found: &Found<'_>, g: &EpochGuard) -> bool {
        match found {
            Found::Miss { table, .. } => {
                table.next().is_none()
                    && std::ptr::eq(*table, &**self.current(g))
                    && table.over_limit()
            }
            Found::Hit { .. } => false,
        }
    }

    /// Whether the current table is over its load limit and no resize is under way.
    pub(crate) fn needs_resize(&self, g: &EpochGuard) -> bool {
        let t = self.current(g);
        t.next().is_none() && t.over_limit()
    }

    /// Starts a resize. Call only with the writer gate closed (no insert in flight).
    pub(crate) fn start_resize(&self, g: &EpochGuard) {
        let t = self.current(g);
        if t.next().is_some() || !t.over_limit() {
            return;
        }
        let live = self.len() as usize;
        let next = Table::for_keys(live.max(t.nslots() / 2));
        // Room for every live entry of this table: copies never need to find space.
        next.used.store(live, Ordering::Relaxed);
        model_point();
        let _ = t.next.set(Arc::new(next));
    }

    /// Whether the table is mostly empty (under 1/4 live) and big enough to be worth shrinking.
    pub(crate) fn wants_shrink(&self, g: &EpochGuard) -> bool {
        let t = self.current(g);
        t.next().is_none() && t.nslots() > 8192 && (self.len() as usize) * 4 < t.nslots()
    }

    /// Starts a resize into a table for the live keys and a quarter more, about half full (a
    /// shrink after mass deletion or expiry; it also drops tombs and DELETED slots). Call only
    /// with the writer gate closed.
    pub(crate) fn start_shrink(&self, g: &EpochGuard) {
        if !self.wants_shrink(g) {
            return;
        }
        let t = self.current(g);
        let live = self.len() as usize;
        let next = Table::for_keys((live + live / 4).max(1024));
        next.used.store(live, Ordering::Relaxed);
        model_point();
        let _ = t.next.set(Arc::new(next));
    }

    pub(crate) fn resizing(&self, g: &EpochGuard) -> bool {
        self.current(g).next().is_some()
    }

    /// Migrates one chunk of a resize under way, if any. Returns whether work remains.
    pub(crate) fn help_migrate<K: KeySource + ?Sized>(&self, log: &K, g: &EpochGuard) -> bool {
        self.migrate_chunk(log, g, CHUNK)
    }

    /// Like `help_migrate`, with the larger chunks of background work.
    pub(crate) fn help_migrate_bulk<K: KeySource + ?Sized>(&self, log: &K, g: &EpochGuard) -> bool {
        self.migrate_chunk(log, g, BULK_CHUNK)
    }

    fn migrate_chunk<K: KeySource + ?Sized>(&self, log: &K, g: &EpochGuard, most: usize) -> bool {
        let cur = self.current(g);
        let Some(next) = cur.next() else { return false };
        let n = cur.nslots();
        // Small tables get small chunks, so several writers can finish them together.
        #[allow(
            clippy::manual_clamp,
            reason = "CHUNK may be below 16 (model checking)"
        )]
        let chunk = (n / 64).max(16).min(most);
        let start = cur.cursor.fetch_add(chunk, Ordering::AcqRel);
        if start >= n {
            return false;
        }
        let end = (start + chunk).min(n);
        for i in start..end {
            migrate_slot(
                cur.slot(i),
                cur.meta[i].load(Ordering::Relaxed),
                next,
                log,
                g,
            );
        }
        if cur.migrated.fetch_add(end - start, Ordering::AcqRel) + (end - start) == n {
            model_point();
            let _ = self.table.compare_replace(cur, next.clone(), g);
            // The old table is freed once no reader holds it, not when this thread's bag fills.
            #[cfg(not(shuttle))]
            segkv_log::epoch::flush();
            return false;
        }
        true
    }

    /// Calls `f(slot value)` for every live or tomb entry whose key hash lies in `[lo, hi)`
    /// (hi = None: to the end of the hash space), in every table of the index.
    pub(crate) fn for_range<K: KeySource + ?Sized>(
        &self,
        log: &K,
        lo: u64,
        hi: Option<u64>,
        g: &EpochGuard,
        f: &mut dyn FnMut(u64),
    ) {
        let mut t: &Table = self.current(g);
        loop {
            scan_range(t, log, lo, hi, g, f);
            match t.next() {
                Some(n) => t = n,
                None => return,
            }
        }
    }

    /// Calls `f(slot, value, access metadata)` for the entries (live or tomb) among slots
    /// `[from, from + n)` of the current table; returns the position after them, or None past
    /// the end.
    pub(crate) fn walk_slots(
        &self,
        from: usize,
        n: usize,
        g: &EpochGuard,
        f: &mut dyn FnMut(&AtomicU64, u64, u16),
    ) -> Option<usize> {
        let t = self.current(g);
        let end = (from + n).min(t.nslots());
        for i in from..end {
            let s = t.slot(i);
            let v = s.load(Ordering::Acquire);
            if is_entry(v) {
                f(s, v, t.meta[i].load(Ordering::Relaxed));
            }
        }
        (end < t.nslots()).then_some(end)
    }

    /// Sets every slot's access metadata to `m` (the tracking mode changed: what is there
    /// means something else now), in the table being migrated into too.
    pub(crate) fn reset_meta(&self, m: u16, g: &EpochGuard) {
        let mut t: &Table = self.current(g);
        loop {
            for a in t.meta.iter() {
                a.store(m, Ordering::Relaxed);
            }
            match t.next() {
                Some(n) => t = n,
                None => return,
            }
        }
    }

    /// A copy of the current table's slot values (for a checkpoint; call with no resize
    /// under way).
    pub(crate) fn snapshot(&self, g: &EpochGuard) -> Vec<u64> {
        let t = self.current(g);
        (0..t.nslots())
            .map(|i| t.slot(i).load(Ordering::Acquire))
            .collect()
    }

    /// Makes room for `more` new keys before a single-threaded replay: if the table lacks it,
    /// migrates everything into one sized for the live keys and `more` (reading each entry's
    /// key from the log).
    pub(crate) fn reserve<K: KeySource + ?Sized>(&self, more: usize, log: &K, g: &EpochGuard) {
        let t = self.current(g);
        if t.has_room_for(more) {
            return;
        }
        let live = self.len() as usize;
        let next = Table::for_keys(live + more);
        next.used.store(live, Ordering::Relaxed);
        let _ = t.next.set(Arc::new(next));
        self.finish_resize(log, g);
    }

    /// Finishes a resize under way, helping to migrate (the caller holds the writer gate
    /// open-entered, so no new resize starts until it leaves).
    pub(crate) fn finish_resize<K: KeySource + ?Sized>(&self, log: &K, g: &EpochGuard) {
        while self.resizing(g) {
            if !self.help_migrate_bulk(log, g) {
                std::thread::yield_now();
            }
        }
    }

    /// Number of slots in the current table (for sizing a SCAN step).
    pub(crate) fn nslots(&self, g: &EpochGuard) -> usize {
        self.current(g).nslots()
    }

    /// Every slot value of every table, the current one first (for the model checker).
    #[cfg(shuttle)]
    pub(crate) fn slot_values(&self, g: &EpochGuard) -> Vec<Vec<u64>> {
        let mut out = Vec::new();
        let mut t: &Table = self.current(g);
        loop {
            out.push(
                (0..t.nslots())
                    .map(|i| t.slot(i).load(Ordering::Acquire))
                    .collect(),
            );
            match t.next() {
                Some(n) => t = n,
                None => return out,
            }
        }
    }

    /// The access metadata of a slot found in this index.
    #[inline]
    pub(crate) fn meta<'g>(&'g self, slot: &AtomicU64, g: &'g EpochGuard) -> Option<&'g AtomicU16> {
        let t: &Table = self.current(g);
        t.meta_of(slot)
            .or_else(|| t.next().and_then(|n| n.meta_of(slot)))
    }

    /// The first live entry at or after a random position, with its access metadata. During
    /// a resize, from the table being migrated (its unmoved part) or the new one.
    pub(crate) fn sample(&self, r: u64, g: &EpochGuard) -> Option<(u64, u16)> {
        let cur: &Table = self.current(g);
        let first = |t: &Table| {
            let n = t.nslots();
            let start = (r as usize) % n;
            (0..n.min(4096)).find_map(|k| {
                let i = (start + k) % n;
                let v = t.slot(i).load(Ordering::Acquire);
                (is_entry(v) && !is_tomb(v)).then(|| (v, t.meta[i].load(Ordering::Relaxed)))
            })
        };
        first(cur).or_else(|| cur.next().and_then(|n| first(n)))
    }

    /// A slot value chosen at random among the live entries near a random position.
    pub(crate) fn random_entry(
        &self,
        r: u64,
        g: &EpochGuard,
        mut ok: impl FnMut(u64) -> bool,
    ) -> Option<u64> {
        let mut t: &Table = self.current(g);
        if let Some(n) = t.next() {
            t = n;
        }
        let n = t.nslots();
        let start = (r as usize) % n;
        for k in 0..n {
            let v = t.slot((start + k) % n).load(Ordering::Acquire);
            if is_entry(v) && !is_tomb(v) && ok(v) {
                return Some(v);
            }
        }
        None
    }
}

fn migrate_slot<K: KeySource + ?Sized>(
    s: &AtomicU64,
    meta: u16,
    next: &Table,
    log: &K,
    g: &EpochGuard,
) {
    loop {
        let v = s.load(Ordering::Acquire);
        if v == MOVED || v == MOVED_EMPTY {
            return;
        }
        if v != EMPTY && v != DELETED {
            copy_newer(next, v, meta, log, g);
        }
        let mark = if v == EMPTY { MOVED_EMPTY } else { MOVED };
        if s.compare_exchange(v, mark, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return;
        }
    }
}

/// Puts entry `v` into `t` unless `t` already holds a newer entry of the same key.
fn copy_newer<K: KeySource + ?Sized>(t: &Table, v: u64, meta: u16, log: &K, g: &EpochGuard) {
    let Some(key) = log.key_at(slot_addr(v), g) else {
        return;
    };
    let h = hash(key);
    loop {
        match probe(t, log, key, h, g) {
            Probe::Hit(slot, cur) => {
                if !newer(v, cur) {
                    return;
                }
                if slot
                    .compare_exchange(cur, v, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    if let Some(m) = t.meta_of(slot) {
                        m.store(meta, Ordering::Relaxed);
                    }
                    return;
                }
            }
            Probe::Absent(slot) => {
                if is_tomb(v) {
                    return;
                }
                // Copies were given room when the table was made (`used` starts at the live count).
                let slot = slot.expect("index table being migrated into has no empty slot");
                if slot
                    .compare_exchange(EMPTY, v, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    if let Some(m) = t.meta_of(slot) {
                        m.store(meta, Ordering::Relaxed);
                    }
                    return;
                }
            }
        }
    }
}

/// Entries of `t` whose key hash is in `[lo, hi)`: from the home slot of `lo` to the home slot
/// of `hi`, and on past it until an empty slot ends the probe run (keys displaced forward).
fn scan_range<K: KeySource + ?Sized>(
    t: &Table,
    log: &K,
    lo: u64,
    hi: Option<u64>,
    g: &EpochGuard,
    f: &mut dyn FnMut(u64),
) {
    let n = t.nslots();
    let start = t.home(lo);
    let stop = hi.map_or(n, |h| t.home(h));
    let mut i = start;
    let mut steps = 0;
    loop {
        if steps >= n {
            return;
        }
        let idx = i % n;
        let v = t.slot(idx).load(Ordering::Acquire);
        if i >= stop && (v == EMPTY || v == MOVED_EMPTY) {
            return;
        }
        if is_entry(v)
            && let Some(key) = log.key_at(slot_addr(v), g)
        {
            let h = hash(key);
            if h >= lo && hi.is_none_or(|hi| h < hi) {
                f(v);
            }
        }
        i += 1;
        steps += 1;
    }
}

impl Index {
    /// Recovery's insert (single-threaded, records of one key in address order): records
    /// `addr` as the key's newest entry, a tomb when `dead`. Keys are read from the log only
    /// when a slot's tag matches. Returns whether the record was applied (false for a delete
    /// of a key that has no entry), and the address and padded size of the live record it
    /// replaced.
    pub(crate) fn replay_insert(
        &self,
        log: &Log,
        h: u64,
        addr: u64,
        dead: bool,
        ttl: bool,
        g: &EpochGuard,
    ) -> (bool, Option<(u64, u64)>) {
        let t = self.current(g);
        let n = t.nslots();
        let mut i = t.home(h);
        let mut key: Option<&[u8]> = None;
        for _ in 0..n {
            let s = t.slot(i);
            let v = s.load(Ordering::Relaxed);
            if v == EMPTY {
                if dead {
                    return (false, None);
                }
                s.store(make_slot(addr, h, false), Ordering::Relaxed);
                t.used.fetch_add(1, Ordering::Relaxed);
                self.live.fetch_add(1, Ordering::Relaxed);
                self.expires.fetch_add(i64::from(ttl), Ordering::Relaxed);
                return (true, None);
            }
            if tag_matches(v, h) {
                let k = match key {
                    Some(k) => k,
                    None => {
                        let Some(r) = log.read(addr, g) else {
                            return (false, None);
                        };
                        key = Some(r.key);
                        r.key
                    }
                };
                if let Some(old) = log.read(slot_addr(v), g)
                    && old.key == k
                {
                    let was_live = !is_tomb(v);
                    let had_ttl = was_live && old.expire_at.is_some();
                    s.store(make_slot(addr, h, dead), Ordering::Relaxed);
                    self.live
                        .fetch_add(i64::from(!dead) - i64::from(was_live), Ordering::Relaxed);
                    self.expires.fetch_add(
                        i64::from(!dead && ttl) - i64::from(had_ttl),
                        Ordering::Relaxed,
                    );
                    let freed = was_live.then(|| (slot_addr(v), old.padded_len() as u64));
                    return (true, freed);
                }
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
        unreachable!("recovery index sized for every record is full")
    }
}

#[cfg(all(test, not(shuttle)))]
mod tests {
    use super::*;

    /// `find_record` matches an entry by its address alone: past other keys' entries with the
    /// same tag, deleted slots and the end of the table, tombs included, and never an entry
    /// whose tag differs or whose address is another record's.
    #[test]
    fn find_record_matches_the_address_not_the_first_tag() {
        let g = segkv_log::epoch::pin();
        // Two buckets; this hash's home is the second one (slots 8..16), and its tag is 0x123.
        let h = (1u64 << 63) | 0x123;
        let other_tag = (1u64 << 63) | 0x124;
        let mut slots = vec![EMPTY; 16];
        // The home bucket is full: two entries of the same tag (other keys), a deleted slot,
        // entries of another tag (one with the address looked for below, under that tag).
        slots[8] = make_slot(4, h, false);
        slots[9] = make_slot(8, h, false);
        slots[10] = DELETED;
        slots[11] = make_slot(40, other_tag, false);
        for (i, s) in slots.iter_mut().enumerate().skip(12) {
            *s = make_slot(100 + 4 * i as u64, other_tag, false);
        }
        // The run wraps to the first bucket: a tomb, then the entry, then the end of the run.
        slots[0] = make_slot(12, h, true);
        slots[1] = make_slot(16, h, false);
        let index = Index::new(Table::from_slots(&slots));
        let found = |addr| index.find_record(addr, h, &g).map(|(_, v)| v);
        assert_eq!(found(4), Some(make_slot(4, h, false)));
        assert_eq!(found(8), Some(make_slot(8, h, false)));
        assert_eq!(found(12), Some(make_slot(12, h, true)));
        assert_eq!(found(16), Some(make_slot(16, h, false)));
        // Not an entry for this hash (another tag), not in the run, not in the table.
        assert_eq!(found(40), None);
        assert_eq!(found(20), None);
        // The slot it returns is the one holding the value.
        let (slot, v) = index.find_record(16, h, &g).unwrap();
        assert_eq!(slot.load(Ordering::Relaxed), v);
        slot.store(make_slot(24, h, false), Ordering::Relaxed);
        assert_eq!(found(16), None, "a replaced record is dead");
        assert_eq!(found(24), Some(make_slot(24, h, false)));
    }
}
