//! segkv-tool's logic: a read-only replay of a data directory (newest record of each key wins,
//! as at recovery), and the reports built on it. Reads files with plain reads and takes no
//! lock, so it runs beside a live server without disturbing it.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::Path;

use segkv_log::inspect::{Item, SegmentFile, segment_files};
use segkv_log::{Kind, LogError};

pub const MAX_DATABASES: usize = 16;

/// Per-segment figures.
#[derive(Debug, Default, Clone)]
pub struct SegStats {
    pub path: String,
    pub base: u64,
    pub file_len: u64,
    pub header_error: Option<String>,
    /// Records by kind value (index = kind as u8).
    pub by_kind: [u64; 8],
    pub invalid: u64,
    /// Bytes taken by records (padded), valid or invalid.
    pub data_bytes: u64,
    /// Bytes of records that are the live value of their key.
    pub live_bytes: u64,
    /// (offset, why, torn tail)
    pub damaged: Vec<(u64, String, bool)>,
}

/// The newest record of a key.
#[derive(Debug, Clone, Copy)]
pub struct Latest {
    pub seg: usize,
    pub offset: u64,
    pub padded: u64,
    pub kind: Kind,
    pub expire_at: Option<u64>,
}

/// The replayed state of a directory.
#[derive(Debug, Default)]
pub struct Replay {
    pub files: Vec<SegmentFile>,
    pub segs: Vec<SegStats>,
    /// Newest Put or Delete of each (keyspace, key).
    pub latest: HashMap<(u8, Vec<u8>), Latest>,
    /// Database → keyspace, after every SWAPDB.
    pub db_map: [u8; MAX_DATABASES],
    /// Base-address chain problems: (path, why).
    pub chain: Vec<(String, String)>,
}

impl Replay {
    /// Reads every segment of `dir` in address order. `progress` is called after each segment.
    pub fn load(dir: &Path, mut progress: impl FnMut(usize, usize)) -> Result<Replay, LogError> {
        let files = segment_files(dir)?;
        let mut r = Replay {
            db_map: std::array::from_fn(|i| i as u8),
            ..Default::default()
        };
        let mut prev_end: Option<(u64, String)> = None;
        for (i, f) in files.iter().enumerate() {
            let seg = f.load()?;
            let later_has_data = files[i + 1..].iter().any(|f| f.starts_with_valid_record());
            let mut st = SegStats {
                path: f.path.display().to_string(),
                base: f.base,
                file_len: f.file_len,
                ..Default::default()
            };
            if let Some((end, p)) = &prev_end
                && f.base < *end
            {
                r.chain.push((
                    st.path.clone(),
                    format!("starts at {:#x}, inside the previous segment {p}", f.base),
                ));
            }
            prev_end = Some((f.base + f.file_len, st.path.clone()));
            if let Err(e) = &seg.header {
                st.header_error = Some(e.clone());
            }
            for item in seg.items(later_has_data) {
                match item {
                    Item::Record {
                        offset,
                        padded,
                        view,
                    } => {
                        st.by_kind[(view.kind as usize).min(7)] += 1;
                        st.data_bytes += padded as u64;
                        let ks = view.keyspace;
                        match view.kind {
                            Kind::Put | Kind::Delete => {
                                r.latest.insert(
                                    (ks, view.key.to_vec()),
                                    Latest {
                                        seg: i,
                                        offset,
                                        padded: padded as u64,
                                        kind: view.kind,
                                        expire_at: view.expire_at,
                                    },
                                );
                            }
                            Kind::FlushKeyspace => r.latest.retain(|(k, _), _| *k != ks),
                            Kind::SwapDb => {
                                if let [a, b] = view.value
                                    && (*a as usize) < MAX_DATABASES
                                    && (*b as usize) < MAX_DATABASES
                                {
                                    r.db_map.swap(*a as usize, *b as usize);
                                }
                            }
                            Kind::Retire => {}
                            Kind::DbMap => {
                                if view.value.len() == MAX_DATABASES
                                    && view.value.iter().all(|&k| (k as usize) < MAX_DATABASES)
                                {
                                    for (d, &k) in view.value.iter().enumerate() {
                                        r.db_map[d] = k;
                                    }
                                }
                            }
                        }
                    }
                    Item::Invalid { padded, .. } => {
                        st.invalid += 1;
                        st.data_bytes += padded as u64;
                    }
                    Item::Damaged {
                        offset,
                        why,
                        torn_tail,
                    } => st.damaged.push((offset, why, torn_tail)),
                }
            }
            r.segs.push(st);
            progress(i + 1, files.len());
        }
        r.files = files;
        Ok(r)
    }

    /// Whether `l` is the live value of its key at `now_ms`.
    pub fn is_live(l: &Latest, now_ms: u64) -> bool {
        l.kind == Kind::Put && l.expire_at.is_none_or(|t| t > now_ms)
    }

    /// Fills each segment's `live_bytes`.
    pub fn account_live(&mut self, now_ms: u64) {
        for s in self.segs.iter_mut() {
            s.live_bytes = 0;
        }
        for l in self.latest.values() {
            if Self::is_live(l, now_ms) {
                self.segs[l.seg].live_bytes += l.padded;
            }
        }
    }

    /// The database a keyspace is currently mapped to.
    pub fn db_of(&self, ks: u8) -> Option<usize> {
        self.db_map.iter().position(|&k| k == ks)
    }

    /// Problems that make `verify` fail: (path, offset, why). Torn tails are not among them.
    pub fn problems(&self) -> Vec<(String, u64, String)> {
        let mut out = Vec::new();
        for (p, why) in &self.chain {
            out.push((p.clone(), 0, why.clone()));
        }
        for (i, s) in self.segs.iter().enumerate() {
            if let Some(e) = &s.header_error {
                let trailing = i + 1 == self.segs.len();
                if !trailing {
                    out.push((s.path.clone(), 0, e.clone()));
                }
            }
            for (off, why, tail) in &s.damaged {
                if !tail {
                    out.push((s.path.clone(), *off, why.clone()));
                }
            }
        }
        out
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A RESP command (array of bulk strings).
pub fn resp_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// A JSON string holding `bytes`: printable ASCII as is, every other byte as `\u00XX` (so the
/// original bytes are the code points, losslessly).
pub fn json_bytes(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\u{b:04x}")),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_every_non_printable_byte() {
        let mut s = String::new();
        json_bytes(&mut s, b"a\"b\\c\n\xff");
        assert_eq!(s, r#""a\"b\\c\u000a\u00ff""#);
    }

    #[test]
    fn resp_is_an_array_of_bulk_strings() {
        let mut v = Vec::new();
        resp_command(&mut v, &[b"SET", b"k", b""]);
        assert_eq!(v, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }
}
