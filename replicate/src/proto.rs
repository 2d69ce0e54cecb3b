//! The replication stream's frames, after the RESP handshake (`PSYNC`).
//!
//! ```text
//! primary -> replica
//!   'S' base u64, capacity u64, created_ms u64    a segment starts (its header, in history
//!                                                 addresses)
//!   'D' addr u64, len u32, bytes                  whole records, as the primary's log holds
//!                                                 them at addr
//!   'C'                                           caught up: the full sync is complete
//!   'P' offset u64                                heartbeat, with the primary's offset
//!   'G'                                           send an acknowledgement now (WAIT)
//! replica -> primary
//!   'A' durable u64, received u64                 acknowledgement
//! ```
//! Integers are little-endian. Addresses are *history* addresses: a node's log address minus
//! its offset delta (a replica places its primary's segments at a delta of its own choosing,
//! so its log's addresses keep growing across full resyncs).

use segkv_log::segment::SegmentHeader;

/// Largest `D` payload accepted: one record of the largest size the log allows, plus slack.
pub const MAX_DATA: usize = (1 << 30) + (1 << 20);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    Segment(SegmentHeader),
    Data { addr: u64, bytes: &'a [u8] },
    CaughtUp,
    Ping { offset: u64 },
    GetAck,
    Ack { durable: u64, received: u64 },
}

/// Bytes of a `D` frame before its payload.
pub const DATA_HEADER: usize = 13;

/// Fills in the header of a `D` frame at the start of `frame`, whose payload is the rest of it
/// (the sender reads records straight into its buffer after a placeholder header).
pub fn data_header(frame: &mut [u8], addr: u64) {
    let len = (frame.len() - DATA_HEADER) as u32;
    frame[0] = b'D';
    frame[1..9].copy_from_slice(&addr.to_le_bytes());
    frame[9..13].copy_from_slice(&len.to_le_bytes());
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl Frame<'_> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Segment(h) => {
                out.push(b'S');
                out.extend_from_slice(&h.base.to_le_bytes());
                out.extend_from_slice(&h.capacity.to_le_bytes());
                out.extend_from_slice(&h.created_ms.to_le_bytes());
            }
            Frame::Data { addr, bytes } => {
                out.push(b'D');
                out.extend_from_slice(&addr.to_le_bytes());
                out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Frame::CaughtUp => out.push(b'C'),
            Frame::Ping { offset } => {
                out.push(b'P');
                out.extend_from_slice(&offset.to_le_bytes());
            }
            Frame::GetAck => out.push(b'G'),
            Frame::Ack { durable, received } => {
                out.push(b'A');
                out.extend_from_slice(&durable.to_le_bytes());
                out.extend_from_slice(&received.to_le_bytes());
            }
        }
    }

    /// Decodes the frame at the start of `buf`: `Ok(None)` if it is not complete yet, else
    /// the frame and its length. An unknown type or an oversized payload is an error.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, String> {
        let Some(&t) = buf.first() else {
            return Ok(None);
        };
        let need = match t {
            b'S' => 25,
            b'D' => 13,
            b'C' | b'G' => 1,
            b'P' => 9,
            b'A' => 17,
            _ => return Err(format!("unknown frame type {t:#04x}")),
        };
        if buf.len() < need {
            return Ok(None);
        }
        Ok(Some(match t {
            b'S' => (
                Frame::Segment(SegmentHeader {
                    base: u64_at(buf, 1),
                    capacity: u64_at(buf, 9),
                    created_ms: u64_at(buf, 17),
                }),
                25,
            ),
            b'D' => {
                let len = u32::from_le_bytes(buf[9..13].try_into().unwrap()) as usize;
                if len > MAX_DATA {
                    return Err(format!("data frame of {len} bytes"));
                }
                if buf.len() < 13 + len {
                    return Ok(None);
                }
                (
                    Frame::Data {
                        addr: u64_at(buf, 1),
                        bytes: &buf[13..13 + len],
                    },
                    13 + len,
                )
            }
            b'C' => (Frame::CaughtUp, 1),
            b'G' => (Frame::GetAck, 1),
            b'P' => (
                Frame::Ping {
                    offset: u64_at(buf, 1),
                },
                9,
            ),
            _ => (
                Frame::Ack {
                    durable: u64_at(buf, 1),
                    received: u64_at(buf, 9),
                },
                17,
            ),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_their_bytes() {
        let frames = [
            Frame::Segment(SegmentHeader {
                base: 1 << 26,
                capacity: 16 << 20,
                created_ms: 12345,
            }),
            Frame::Data {
                addr: (1 << 26) + 64,
                bytes: b"0123456789ab",
            },
            Frame::CaughtUp,
            Frame::Ping { offset: 99 },
            Frame::GetAck,
            Frame::Ack {
                durable: 7,
                received: 8,
            },
        ];
        let mut buf = Vec::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        // A header patched in place encodes the same frame.
        let mut patched = vec![0u8; DATA_HEADER];
        patched.extend_from_slice(b"0123456789ab");
        data_header(&mut patched, (1 << 26) + 64);
        let mut direct = Vec::new();
        frames[1].encode(&mut direct);
        assert_eq!(patched, direct);
        let mut at = 0;
        for f in &frames {
            // Every strict prefix of the frame is incomplete.
            let (_, len) = Frame::decode(&buf[at..]).unwrap().unwrap();
            for cut in 0..len {
                assert_eq!(Frame::decode(&buf[at..at + cut]).unwrap(), None);
            }
            let (g, _) = Frame::decode(&buf[at..]).unwrap().unwrap();
            assert_eq!(&g, f);
            at += len;
        }
        assert_eq!(at, buf.len());
        assert!(Frame::decode(b"Z").is_err());
        let mut big = vec![b'D'];
        big.extend_from_slice(&0u64.to_le_bytes());
        big.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Frame::decode(&big).is_err());
    }
}
