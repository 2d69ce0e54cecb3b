//! What a node remembers about its replication history across restarts, in the data
//! directory's `replication.state` (a few `name value` lines, replaced atomically).

use std::io::Write;
use std::path::{Path, PathBuf};

pub const FILE: &str = "replication.state";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The history this node's log belongs to (Redis's master_replid).
    pub replid: String,
    /// The history it forked from at promotion, and the offset up to which the two agree
    /// (Redis's master_replid2 / second_repl_offset; -1 when none).
    pub replid2: String,
    pub second_offset: i64,
    /// Local log address minus history offset (a replica chooses it at a full resync).
    pub delta: u64,
    /// A replica has a complete copy of `replid`'s history up to its log's tail (false while a
    /// full resync is under way: a restart then starts the full resync again).
    pub synced: bool,
    /// The node was last a replica (its log a copy): started as a primary, it forks a new
    /// history from where its log ends.
    pub replica: bool,
}

pub const NO_ID: &str = "0000000000000000000000000000000000000000";

/// 40 random hex characters.
pub fn new_id() -> String {
    let mut b = [0u8; 20];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id());
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(97);
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl State {
    pub fn fresh() -> State {
        State {
            replid: new_id(),
            replid2: NO_ID.into(),
            second_offset: -1,
            delta: 0,
            synced: true,
            replica: false,
        }
    }

    fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// The saved state, or a fresh one (new history id) when there is none or it is unreadable.
    pub fn load(dir: &Path) -> State {
        let Ok(text) = std::fs::read_to_string(Self::path(dir)) else {
            return State::fresh();
        };
        let mut s = State::fresh();
        let mut seen = 0;
        for line in text.lines() {
            let Some((k, v)) = line.split_once(' ') else {
                continue;
            };
            let id_ok = v.len() == 40 && v.bytes().all(|c| c.is_ascii_hexdigit());
            match k {
                "replid" if id_ok => {
                    s.replid = v.into();
                    seen += 1;
                }
                "replid2" if id_ok => s.replid2 = v.into(),
                "second_offset" => s.second_offset = v.parse().unwrap_or(-1),
                "delta" => {
                    if let Ok(d) = v.parse() {
                        s.delta = d;
                        seen += 1;
                    }
                }
                "synced" => s.synced = v == "1",
                "replica" => s.replica = v == "1",
                _ => {}
            }
        }
        if seen < 2 {
            return State::fresh();
        }
        s
    }

    /// Writes the state durably (temp file, fsync, rename, directory fsync).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        write!(
            f,
            "replid {}\nreplid2 {}\nsecond_offset {}\ndelta {}\nsynced {}\nreplica {}\n",
            self.replid,
            self.replid2,
            self.second_offset,
            self.delta,
            u8::from(self.synced),
            u8::from(self.replica)
        )?;
        f.sync_all()?;
        std::fs::rename(&tmp, Self::path(dir))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_save_and_a_damaged_file_starts_fresh() {
        let d = tempfile::tempdir().unwrap();
        let s = State {
            replid: new_id(),
            replid2: new_id(),
            second_offset: 12345,
            delta: 1 << 27,
            synced: false,
            replica: true,
        };
        s.save(d.path()).unwrap();
        assert_eq!(State::load(d.path()), s);
        std::fs::write(d.path().join(FILE), "garbage").unwrap();
        let f = State::load(d.path());
        assert_ne!(f.replid, s.replid);
        assert!(f.synced && f.delta == 0 && f.second_offset == -1);
        assert_ne!(new_id(), new_id());
    }
}
