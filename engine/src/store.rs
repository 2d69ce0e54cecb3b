//! TEMPORARY in-memory backend with the final API, so the server can be written in parallel.
//! Replaced by the log-backed index in this same session.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::api::*;

type Db = HashMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

pub struct Engine {
    cfg: Config,
    dbs: Mutex<Vec<Db>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("dir", &self.cfg.dir).finish()
    }
}

fn live(e: &(Vec<u8>, Option<u64>), now: u64) -> bool {
    e.1.is_none_or(|t| t > now)
}

impl Engine {
    pub fn open(cfg: Config) -> Result<Engine, EngineError> {
        let n = cfg.databases;
        Ok(Engine { cfg, dbs: Mutex::new((0..n).map(|_| HashMap::new()).collect()) })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn databases(&self) -> usize {
        self.cfg.databases
    }

    pub fn now_ms(&self) -> u64 {
        self.cfg.clock.now_ms()
    }

    /// Calls `f` with the live value of `key`, if any.
    pub fn read<R>(&self, db: usize, key: &[u8], f: impl FnOnce(Current<'_>) -> R) -> Option<R> {
        let now = self.now_ms();
        let dbs = self.dbs.lock().unwrap();
        let e = dbs[db].get(key)?;
        if !live(e, now) {
            return None;
        }
        Some(f(Current { value: &e.0, expire_at: e.1 }))
    }

    pub fn get(&self, db: usize, key: &[u8]) -> Option<Vec<u8>> {
        self.read(db, key, |c| c.value.to_vec())
    }

    pub fn exists(&self, db: usize, key: &[u8]) -> bool {
        self.read(db, key, |_| ()).is_some()
    }

    /// Atomic read-modify-write: `f` sees the current value (or none) and decides.
    /// `f` may be called more than once when writers race; only the last call's action applies.
    pub fn update<R>(
        &self,
        db: usize,
        key: &[u8],
        mut f: impl FnMut(Option<Current<'_>>) -> (Action, R),
    ) -> Result<R, EngineError> {
        let now = self.now_ms();
        let mut dbs = self.dbs.lock().unwrap();
        let d = &mut dbs[db];
        let cur = d.get(key).filter(|e| live(e, now));
        let (act, r) = f(cur.map(|e| Current { value: &e.0, expire_at: e.1 }));
        match act {
            Action::Keep => {}
            Action::Put { value, expire_at } => {
                d.insert(key.to_vec(), (value, expire_at));
            }
            Action::Delete => {
                d.remove(key);
            }
        }
        Ok(r)
    }

    pub fn set(&self, db: usize, key: &[u8], value: &[u8], opts: SetOptions) -> Result<SetResult, EngineError> {
        self.update(db, key, |cur| {
            let old = if opts.get_old { cur.map(|c| c.value.to_vec()) } else { None };
            let ok = match opts.cond {
                Cond::Always => true,
                Cond::IfAbsent => cur.is_none(),
                Cond::IfPresent => cur.is_some(),
            };
            if !ok {
                return (Action::Keep, SetResult { applied: false, old });
            }
            let expire_at = match opts.expiry {
                SetExpiry::Persist => None,
                SetExpiry::Keep => cur.and_then(|c| c.expire_at),
                SetExpiry::At(t) => Some(t),
            };
            (Action::Put { value: value.to_vec(), expire_at }, SetResult { applied: true, old })
        })
    }

    pub fn delete(&self, db: usize, key: &[u8]) -> Result<bool, EngineError> {
        self.update(db, key, |cur| (Action::Delete, cur.is_some()))
    }

    /// Sets (or with `None` removes) the expiry of an existing key under `cond`.
    /// Returns whether the key existed and the condition held. An expiry in the past deletes.
    pub fn expire(&self, db: usize, key: &[u8], at: Option<u64>, cond: ExpireCond) -> Result<bool, EngineError> {
        let now = self.now_ms();
        self.update(db, key, |cur| {
            let Some(c) = cur else { return (Action::Keep, false) };
            let ok = match (cond, c.expire_at, at) {
                (ExpireCond::Always, _, _) => true,
                (ExpireCond::Nx, old, _) => old.is_none(),
                (ExpireCond::Xx, old, _) => old.is_some(),
                (ExpireCond::Gt, None, _) => false,
                (ExpireCond::Gt, Some(old), new) => new.is_none_or(|n| n > old),
                (ExpireCond::Lt, None, new) => new.is_some(),
                (ExpireCond::Lt, Some(old), new) => new.is_some_and(|n| n < old),
            };
            if !ok {
                return (Action::Keep, false);
            }
            match at {
                Some(t) if t <= now => (Action::Delete, true),
                _ => (Action::Put { value: c.value.to_vec(), expire_at: at }, true),
            }
        })
    }

    /// Keys in `db` (including expired keys not yet reclaimed, as Redis's DBSIZE).
    pub fn len(&self, db: usize) -> u64 {
        self.dbs.lock().unwrap()[db].len() as u64
    }

    /// Keys in `db` that have an expiry.
    pub fn expires_len(&self, db: usize) -> u64 {
        self.dbs.lock().unwrap()[db].values().filter(|e| e.1.is_some()).count() as u64
    }

    pub fn flush_db(&self, db: usize) -> Result<(), EngineError> {
        self.dbs.lock().unwrap()[db].clear();
        Ok(())
    }

    pub fn flush_all(&self) -> Result<(), EngineError> {
        for d in self.dbs.lock().unwrap().iter_mut() {
            d.clear();
        }
        Ok(())
    }

    pub fn swap_db(&self, a: usize, b: usize) -> Result<(), EngineError> {
        self.dbs.lock().unwrap().swap(a, b);
        Ok(())
    }

    /// One SCAN step: calls `f` for about `count` live keys from `cursor`, returns the next
    /// cursor (0 when done). Every key present for the whole scan is returned at least once.
    pub fn scan(&self, db: usize, cursor: u64, count: usize, mut f: impl FnMut(&[u8])) -> u64 {
        let now = self.now_ms();
        let dbs = self.dbs.lock().unwrap();
        let mut keys: Vec<&Vec<u8>> = dbs[db].iter().filter(|(_, e)| live(e, now)).map(|(k, _)| k).collect();
        keys.sort();
        let start = cursor as usize;
        let end = (start + count.max(1)).min(keys.len());
        for k in &keys[start.min(keys.len())..end] {
            f(k);
        }
        if end >= keys.len() { 0 } else { end as u64 }
    }

    pub fn random_key(&self, db: usize) -> Option<Vec<u8>> {
        let now = self.now_ms();
        let dbs = self.dbs.lock().unwrap();
        dbs[db].iter().find(|(_, e)| live(e, now)).map(|(k, _)| k.clone())
    }

    /// Log address after every write issued so far; a write is durable once
    /// `durable_addr() >= ` the value read after it completed.
    pub fn tail_addr(&self) -> u64 {
        0
    }

    pub fn durable_addr(&self) -> u64 {
        0
    }

    /// Registers a callback run (on the flusher thread) whenever the durable address advances.
    pub fn on_durable(&self, _cb: Box<dyn Fn(u64) + Send + Sync>) {}

    /// Blocks until everything written so far is on disk (SAVE, SHUTDOWN).
    pub fn sync(&self) -> Result<(), EngineError> {
        Ok(())
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats::default()
    }
}
