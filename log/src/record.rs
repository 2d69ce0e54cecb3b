//! The record format. Frozen: see `docs/format.md`; `tests/format_fixture.rs` pins it.
//!
//! ```text
//! offset  size  field
//! 0       4     commit word (LE u32): bit 31 DONE, bit 30 INVALID, bits 0..29 record length
//!               (header + key + value, before padding). 0 = not written yet.
//!               DONE with length 0 marks the end of a segment's data.
//! 4       4     CRC32 (LE) of bytes [8, length)
//! 8       1     kind (low 4 bits) | flags (high 4 bits: EXPIRY, WIDE_KEY, EXT, reserved)
//! 9       1     keyspace (0..15)
//! 10      1     reserved, 0
//! 11      1     key length when it is < 255 (else 255 and WIDE_KEY)
//! 12      4     key length (LE u32), only with WIDE_KEY
//! ..      8     absolute expiry in unix ms (LE u64), only with EXPIRY
//! ..      2     ext length then ext bytes (hash slot, ...), only with EXT (none written yet)
//! ..            key, then value
//! ```
//! Records start 4-byte aligned; padding after a record is zero.

/// Size of the fixed part of a record header.
pub const HEADER_LEN: usize = 12;
/// Records start at multiples of this.
pub const ALIGN: usize = 4;
/// Largest record (header + key + value) the format can describe.
pub const MAX_RECORD_LEN: usize = (1 << 30) - 1;

pub(crate) const DONE: u32 = 1 << 31;
pub(crate) const INVALID: u32 = 1 << 30;
pub const LEN_MASK: u32 = (1 << 30) - 1;
/// Commit word that ends a segment's data.
pub(crate) const END_MARK: u32 = DONE;

const F_EXPIRY: u8 = 0x10;
const F_WIDE_KEY: u8 = 0x20;
const F_EXT: u8 = 0x40;
const F_RESERVED: u8 = 0x80;

/// What a record says. Values are persisted: only append new kinds, never renumber.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string value for a key.
    Put = 1,
    /// The key is deleted (tombstone; no value).
    Delete = 2,
    /// Every key of the keyspace written before this record is deleted (FLUSHDB).
    FlushKeyspace = 3,
    /// Databases swapped (SWAPDB): value is two bytes, the two database numbers.
    SwapDb = 4,
    /// The whole database -> keyspace map (value: 16 bytes, byte `db` = its keyspace). The
    /// cleaner writes one in place of the SwapDb records of a segment it reclaims; replay sets
    /// the map to it, and SwapDb records after it apply on top.
    DbMap = 5,
    /// The segment whose base address is the value (8 bytes, little-endian) was deleted by the
    /// cleaner. Replay ignores it; a replica tailing the log deletes its copy of the segment
    /// once this record is durable there.
    Retire = 6,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Put,
            2 => Kind::Delete,
            3 => Kind::FlushKeyspace,
            4 => Kind::SwapDb,
            5 => Kind::DbMap,
            6 => Kind::Retire,
            _ => return None,
        })
    }
}

/// A record to append.
#[derive(Debug, Clone, Copy)]
pub struct RecordSpec<'a> {
    pub kind: Kind,
    pub keyspace: u8,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub expire_at: Option<u64>,
}

impl RecordSpec<'_> {
    fn wide_key(&self) -> bool {
        self.key.len() >= 255
    }

    /// Length of header + key + value (what the commit word holds).
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + if self.wide_key() { 4 } else { 0 }
            + if self.expire_at.is_some() { 8 } else { 0 }
            + self.key.len()
            + self.value.len()
    }

    /// Space taken in the log, padded to `ALIGN`.
    pub fn padded_len(&self) -> usize {
        pad(self.encoded_len())
    }

    /// Writes everything but the commit word: `body` is the record's bytes `[4, length)`
    /// (CRC included), so `body.len()` must be `encoded_len() - 4`.
    pub fn encode_body(&self, body: &mut [u8]) {
        debug_assert_eq!(body.len() + 4, self.encoded_len());
        let mut flags = 0u8;
        if self.expire_at.is_some() {
            flags |= F_EXPIRY;
        }
        if self.wide_key() {
            flags |= F_WIDE_KEY;
        }
        body[4] = self.kind as u8 | flags;
        body[5] = self.keyspace;
        body[6] = 0;
        let mut p = 8;
        if self.wide_key() {
            body[7] = 255;
            body[8..12].copy_from_slice(&(self.key.len() as u32).to_le_bytes());
            p = 12;
        } else {
            body[7] = self.key.len() as u8;
        }
        if let Some(t) = self.expire_at {
            body[p..p + 8].copy_from_slice(&t.to_le_bytes());
            p += 8;
        }
        body[p..p + self.key.len()].copy_from_slice(self.key);
        p += self.key.len();
        body[p..p + self.value.len()].copy_from_slice(self.value);
        let crc = crc32fast::hash(&body[4..]);
        body[0..4].copy_from_slice(&crc.to_le_bytes());
    }

    /// The whole record as it lies on disk (commit word DONE), padded. For tests and tools.
    pub fn encode(&self) -> Vec<u8> {
        let len = self.encoded_len();
        let mut v = vec![0u8; pad(len)];
        self.encode_body(&mut v[4..len]);
        v[0..4].copy_from_slice(&(len as u32 | DONE).to_le_bytes());
        v
    }
}

/// `n` rounded up to `ALIGN`.
pub const fn pad(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// A decoded record, borrowing from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub kind: Kind,
    pub keyspace: u8,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub expire_at: Option<u64>,
}

impl RecordView<'_> {
    /// Space the record takes in the log, padded to `ALIGN`.
    pub fn padded_len(&self) -> usize {
        RecordSpec {
            kind: self.kind,
            keyspace: self.keyspace,
            key: self.key,
            value: self.value,
            expire_at: self.expire_at,
        }
        .padded_len()
    }

    /// Whether the record has expired at `now_ms` (a record expires at its deadline, as Redis).
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expire_at.is_some_and(|t| t <= now_ms)
    }
}

/// Why a record failed to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The commit word is zero: nothing was written here.
    Unwritten,
    /// The commit word lacks DONE, or its length is impossible.
    BadCommit,
    /// The record runs past the end of the data.
    Truncated,
    /// The CRC does not match.
    BadCrc,
    /// Unknown kind or reserved flag set.
    BadHeader,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecodeError::Unwritten => "no record written here",
            DecodeError::BadCommit => "invalid commit word",
            DecodeError::Truncated => "record runs past the end of the segment",
            DecodeError::BadCrc => "checksum mismatch",
            DecodeError::BadHeader => "invalid record header",
        })
    }
}

/// One step of a scan over segment data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanned<'a> {
    /// A valid record, and the padded space it takes.
    Record(RecordView<'a>, usize),
    /// A record its writer marked invalid (lost a race); skip this many bytes.
    Invalid(usize),
    /// The segment's data ends here.
    End,
}

/// Reads the commit word at the start of `data`.
pub fn commit_word(data: &[u8]) -> Option<u32> {
    data.get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
}

/// Decodes and verifies the record at the start of `data` (which may extend past it).
/// Never trusts a length before the CRC over it is checked.
pub fn scan(data: &[u8]) -> Result<Scanned<'_>, DecodeError> {
    let Some(w) = commit_word(data) else {
        return Ok(Scanned::End);
    };
    if w == 0 {
        return Err(DecodeError::Unwritten);
    }
    if w == END_MARK {
        return Ok(Scanned::End);
    }
    if w & DONE == 0 {
        return Err(DecodeError::BadCommit);
    }
    let len = (w & LEN_MASK) as usize;
    if len < HEADER_LEN {
        return Err(DecodeError::BadCommit);
    }
    if len > data.len() {
        return Err(DecodeError::Truncated);
    }
    if w & INVALID != 0 {
        return Ok(Scanned::Invalid(pad(len).min(data.len())));
    }
    let rec = &data[..len];
    let crc = u32::from_le_bytes(rec[4..8].try_into().unwrap());
    if crc32fast::hash(&rec[8..]) != crc {
        return Err(DecodeError::BadCrc);
    }
    let view = decode_verified(rec).ok_or(DecodeError::BadHeader)?;
    Ok(Scanned::Record(view, pad(len).min(data.len())))
}

/// Decodes a record whose bytes are known good (CRC checked, or written by this process).
/// `rec` is exactly the record's `length` bytes.
pub fn decode_verified(rec: &[u8]) -> Option<RecordView<'_>> {
    decode_body(rec.get(4..)?)
}

/// As `decode_verified`, on the record's bytes after the commit word (`length - 4` bytes).
/// Live readers use this: the commit word may still be changing under them.
pub fn decode_body(body: &[u8]) -> Option<RecordView<'_>> {
    if body.len() < HEADER_LEN - 4 {
        return None;
    }
    let b = body[4];
    let kind = Kind::from_u8(b & 0x0f)?;
    let flags = b & 0xf0;
    if flags & (F_RESERVED | F_EXT) != 0 {
        return None;
    }
    let keyspace = body[5];
    let mut p = 8;
    let key_len = if flags & F_WIDE_KEY != 0 {
        let k = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?) as usize;
        p = 12;
        k
    } else {
        body[7] as usize
    };
    let expire_at = if flags & F_EXPIRY != 0 {
        let t = u64::from_le_bytes(body.get(p..p + 8)?.try_into().ok()?);
        p += 8;
        Some(t)
    } else {
        None
    };
    let key = body.get(p..p.checked_add(key_len)?)?;
    let value = &body[p + key_len..];
    Some(RecordView {
        kind,
        keyspace,
        key,
        value,
        expire_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_values_are_frozen() {
        assert_eq!(Kind::Put as u8, 1);
        assert_eq!(Kind::Delete as u8, 2);
        assert_eq!(Kind::FlushKeyspace as u8, 3);
        assert_eq!(Kind::SwapDb as u8, 4);
        assert_eq!(Kind::DbMap as u8, 5);
        assert_eq!(Kind::Retire as u8, 6);
        for v in 0..=255u8 {
            if let Some(k) = Kind::from_u8(v) {
                assert_eq!(k as u8, v);
            }
        }
    }

    #[test]
    fn header_is_12_bytes_and_small_record_is_60() {
        let spec = RecordSpec {
            kind: Kind::Put,
            keyspace: 0,
            key: &[7; 16],
            value: &[9; 32],
            expire_at: None,
        };
        assert_eq!(spec.encoded_len(), 60);
        assert_eq!(spec.padded_len(), 60);
    }

    #[test]
    fn round_trip_wide_key_and_expiry() {
        let key = vec![1u8; 300];
        let spec = RecordSpec {
            kind: Kind::Put,
            keyspace: 3,
            key: &key,
            value: b"v",
            expire_at: Some(12345),
        };
        let bytes = spec.encode();
        match scan(&bytes).unwrap() {
            Scanned::Record(v, n) => {
                assert_eq!(n, bytes.len());
                assert_eq!(v.key, &key[..]);
                assert_eq!(v.value, b"v");
                assert_eq!(v.expire_at, Some(12345));
                assert_eq!(v.keyspace, 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let spec = RecordSpec {
            kind: Kind::Put,
            keyspace: 1,
            key: b"key",
            value: b"value",
            expire_at: Some(9),
        };
        let bytes = spec.encode();
        for i in 4..spec.encoded_len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(
                    scan(&b).is_err(),
                    "flip at byte {i} bit {bit} went unnoticed"
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = scan(&data);
            let _ = decode_verified(&data);
        }

        #[test]
        fn encode_decode(key in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
                         value in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
                         ttl in proptest::option::of(proptest::num::u64::ANY), ks in 0u8..16) {
            let spec = RecordSpec { kind: Kind::Put, keyspace: ks, key: &key, value: &value, expire_at: ttl };
            let bytes = spec.encode();
            let Ok(Scanned::Record(v, _)) = scan(&bytes) else { panic!() };
            proptest::prop_assert_eq!(v.key, &key[..]);
            proptest::prop_assert_eq!(v.value, &value[..]);
            proptest::prop_assert_eq!(v.expire_at, ttl);
        }
    }
}
