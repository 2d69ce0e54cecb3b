//! The engine's own index and writer gate, behind a thin public face for the shuttle model in
//! `tests/shuttle_index.rs`. Built only with `--cfg shuttle` (see `run-shuttle.sh`); every
//! method is a direct call of the code the store runs.

use crate::{gate, index};

pub use crate::index::KeySource;
pub use segkv_log::epoch::{EpochGuard, pin};

pub fn hash(key: &[u8]) -> u64 {
    index::hash(key)
}

pub fn make_slot(addr: u64, h: u64, tomb: bool) -> u64 {
    index::make_slot(addr, h, tomb)
}

pub fn slot_addr(v: u64) -> u64 {
    index::slot_addr(v)
}

pub fn is_tomb(v: u64) -> bool {
    index::is_tomb(v)
}

/// Whether a slot value is an entry (live or tomb), not EMPTY or a migration marker.
pub fn is_entry(v: u64) -> bool {
    v != index::EMPTY && v != index::MOVED && v != index::MOVED_EMPTY
}

/// One keyspace's index (`index::Index`).
pub struct Index(index::Index);

/// Where `find` left a key (`index::Found`).
pub struct Found<'g>(index::Found<'g>);

impl Found<'_> {
    /// The slot value if the key has a slot (live or tomb), `None` for a miss.
    pub fn value(&self) -> Option<u64> {
        match self.0 {
            index::Found::Hit { v, .. } => Some(v),
            index::Found::Miss { .. } => None,
        }
    }
}

impl Index {
    /// An index whose first table has `buckets` buckets of eight slots.
    pub fn with_buckets(buckets: usize) -> Index {
        Index(index::Index::new(index::Table::with_buckets(buckets)))
    }

    pub fn find<'g, K: KeySource + ?Sized>(
        &'g self,
        log: &K,
        key: &[u8],
        h: u64,
        g: &'g EpochGuard,
    ) -> Found<'g> {
        Found(self.0.find(log, key, h, g))
    }

    /// The live slot value of `key`, if any.
    pub fn get<K: KeySource + ?Sized>(
        &self,
        log: &K,
        key: &[u8],
        h: u64,
        g: &EpochGuard,
    ) -> Option<u64> {
        self.0.get(log, key, h, g).map(|(v, _)| v)
    }

    pub fn install(&self, found: &Found<'_>, new: u64) -> bool {
        self.0.install(&found.0, new)
    }

    /// Whether an insert at `found` must first help the migration (the table it would go into
    /// is being migrated into and is over its load limit).
    pub fn must_help_first(&self, found: &Found<'_>, g: &EpochGuard) -> bool {
        self.0.must_help_first(&found.0, g)
    }

    /// Whether an insert at `found` must first leave the gate and grow the table (the current
    /// table is at its load limit).
    pub fn must_grow_first(&self, found: &Found<'_>, g: &EpochGuard) -> bool {
        self.0.must_grow_first(&found.0, g)
    }

    /// Whether a write at `found` would revive a tomb in the table being migrated; if so the
    /// slot was migrated and the caller looks again.
    pub fn must_migrate_first<K: KeySource + ?Sized>(
        &self,
        found: &Found<'_>,
        log: &K,
        g: &EpochGuard,
    ) -> bool {
        self.0.must_migrate_first(&found.0, log, g)
    }

    /// Adjusts the live-key count (the store does it after each install; resize sizes by it).
    pub fn add_live(&self, delta: i64) {
        self.0.live.fetch_add(delta, crate::sync::Ordering::Relaxed);
    }

    pub fn needs_resize(&self, g: &EpochGuard) -> bool {
        self.0.needs_resize(g)
    }

    /// Call only with the gate closed.
    pub fn start_resize(&self, g: &EpochGuard) {
        self.0.start_resize(g)
    }

    pub fn resizing(&self, g: &EpochGuard) -> bool {
        self.0.resizing(g)
    }

    pub fn help_migrate<K: KeySource + ?Sized>(&self, log: &K, g: &EpochGuard) -> bool {
        self.0.help_migrate(log, g)
    }

    pub fn nslots(&self, g: &EpochGuard) -> usize {
        self.0.nslots(g)
    }

    /// Every slot value of every table (the current one first, then the one being migrated
    /// into, if any), including EMPTY and MOVED slots.
    pub fn tables(&self, g: &EpochGuard) -> Vec<Vec<u64>> {
        self.0.slot_values(g)
    }
}

/// The writer gate (`gate::Gate`).
pub struct Gate(gate::Gate);

/// A write in progress; leaves the gate when dropped.
pub struct Entered<'a>(#[allow(dead_code)] gate::Entered<'a>);

/// The gate closed; reopens when dropped.
pub struct Closed<'a>(#[allow(dead_code)] gate::Closed<'a>);

impl Default for Gate {
    fn default() -> Self {
        Gate(gate::Gate::new())
    }
}

impl Gate {
    pub fn enter(&self) -> Entered<'_> {
        Entered(self.0.enter())
    }

    pub fn close(&self) -> Closed<'_> {
        Closed(self.0.close())
    }
}
