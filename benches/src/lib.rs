//! Shared helpers for the segkv benchmarks: the key/value data set and engine setup.
//! The benchmarks themselves live in `benches/*.rs`; see `README.md` for how to run them.

pub const KEY_LEN: usize = 16;
pub const VALUE_LEN: usize = 32;
/// Keys in the standard data set.
pub const N_KEYS: usize = 1_000_000;

/// The `i`th key: 16 bytes, `key:` followed by 12 decimal digits (fixed width, distinct per `i`).
pub fn key(i: usize) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..4].copy_from_slice(b"key:");
    let mut n = i;
    for b in k[4..].iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

/// A 32-byte value derived from `i` and a `generation` (so overwrites store fresh bytes).
pub fn value(i: usize, generation: u64) -> [u8; VALUE_LEN] {
    let mut v = [0u8; VALUE_LEN];
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ generation.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    for chunk in v.chunks_mut(8) {
        x ^= x >> 31;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    v
}

/// A fixed pseudo-random visiting order of `0..n` (so lookups do not walk memory in
/// insertion order, which would flatter the log's locality).
pub fn shuffled(n: usize, seed: u64) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    let mut s = seed | 1;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let j = (s % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// Opens an engine in `dir` with `appendfsync` `policy` and the given writer.
pub fn open_engine(
    dir: &std::path::Path,
    policy: segkv_engine::FsyncPolicy,
    writer: segkv_engine::WriterKind,
) -> segkv_engine::Engine {
    let mut cfg = segkv_engine::Config::new(dir);
    cfg.appendfsync = policy;
    cfg.writer = writer;
    segkv_engine::Engine::open(cfg).expect("open engine")
}

/// Loads keys `0..n` with generation-0 values.
pub fn load(engine: &segkv_engine::Engine, n: usize) {
    for i in 0..n {
        engine
            .set(
                0,
                &key(i),
                &value(i, 0),
                segkv_engine::SetOptions::default(),
            )
            .expect("set");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_sized() {
        assert_eq!(key(0).len(), 16);
        assert_eq!(&key(123)[..], b"key:000000000123");
        assert_ne!(value(1, 0), value(1, 1));
        let mut s = shuffled(1000, 7);
        s.sort();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
    }
}
