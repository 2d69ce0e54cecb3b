//! The check behind the `resp` fuzz target (`fuzz/fuzz_targets/resp.rs`), shared with the
//! corpus-replay test `tests/fuzz_corpus.rs`, which runs it on stable in the normal test suite.
//! Not part of the server's API.
//!
//! Input: byte 0 picks the bulk length limit, byte 1 seeds how the rest is cut into reads;
//! the rest is what a client sent.

use crate::resp::{INLINE_MAX, Parsed, Parser, ProtocolError};

/// What a stream parsed into: the commands, and the error that ended it, if any.
type Outcome = (Vec<Vec<Vec<u8>>>, Option<ProtocolError>);

/// Feeds `data` to the parser in one read and in pseudo-random reads the way a connection does
/// (`net.rs`: parse straight from the read when nothing is buffered, else append and compact).
/// Panics if the parser panics, reports a position or argument outside the buffer, asks for
/// more than a bulk argument's worth of memory, or if the cut changes what is parsed.
pub fn check_resp(data: &[u8]) {
    let [limit, seed, stream @ ..] = data else {
        return;
    };
    let max_bulk = match limit & 3 {
        0 => 512 << 20,
        1 => u64::from(limit >> 2),
        2 => 0,
        _ => u64::MAX,
    };
    let whole = parse(&[stream], max_bulk);
    let mut rng = u64::from(*seed) + 1;
    let mut chunks = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        rng = splitmix(rng);
        // Mostly short reads, which cut every length line and argument somewhere.
        let n = if rng & 7 == 0 {
            rest.len()
        } else {
            1 + (rng >> 8) as usize % 8
        }
        .min(rest.len());
        chunks.push(&rest[..n]);
        rest = &rest[n..];
    }
    let cut = parse(&chunks, max_bulk);
    // Only the size limits on unterminated lines depend on how much has arrived (as in Redis).
    let too_big = |o: &Outcome| o.1.as_ref().is_some_and(|e| e.0.contains("too big"));
    if !too_big(&whole) && !too_big(&cut) {
        assert_eq!(
            whole, cut,
            "the same bytes parsed differently when cut into reads"
        );
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn parse(chunks: &[&[u8]], max_bulk: u64) -> Outcome {
    let mut p = Parser::default();
    let mut rbuf: Vec<u8> = Vec::new();
    let mut cmds = Vec::new();
    for chunk in chunks {
        let r = if rbuf.is_empty() {
            let r = run(&mut p, chunk, max_bulk, &mut cmds);
            let start = p.start();
            assert!(start <= chunk.len(), "consumed past the read");
            rbuf.extend_from_slice(&chunk[start..]);
            p.rebase(start);
            r
        } else {
            rbuf.extend_from_slice(chunk);
            let r = run(&mut p, &rbuf, max_bulk, &mut cmds);
            p.compact(&mut rbuf);
            r
        };
        if let Err(e) = r {
            return (cmds, Some(e));
        }
        assert_eq!(p.in_request(rbuf.len()), !rbuf.is_empty());
    }
    (cmds, None)
}

/// Runs every complete command in `buf`, checking what the parser reports against it.
fn run(
    p: &mut Parser,
    buf: &[u8],
    max_bulk: u64,
    cmds: &mut Vec<Vec<Vec<u8>>>,
) -> Result<(), ProtocolError> {
    loop {
        let r = p.next(buf, max_bulk)?;
        assert!(p.start() <= buf.len(), "consumed past the buffer");
        // What a caller would reserve: never more than the bulk argument being read.
        let wanted = p.wanted(buf.len()) as u64;
        assert!(
            wanted <= max_bulk.saturating_add(2),
            "asked for {wanted} bytes"
        );
        match r {
            Parsed::Incomplete => {
                // An unfinished inline request is refused before it passes the inline limit.
                let pending = buf.len() - p.start();
                assert!(
                    !p.is_inline() || pending <= INLINE_MAX,
                    "{pending} bytes of inline request buffered"
                );
                return Ok(());
            }
            Parsed::Empty => p.consume(),
            Parsed::Command => {
                let args = p.args(buf);
                assert_eq!(args.len(), p.argc());
                assert!(!args.is_empty());
                let total: usize = args.iter().map(|a| a.len()).sum();
                assert!(
                    total <= buf.len() - p.start(),
                    "arguments larger than the request"
                );
                if !p.is_inline() {
                    let rest = buf[p.start()..].as_ptr_range();
                    for a in &args {
                        let r = a.as_ptr_range();
                        assert!(
                            rest.start <= r.start && r.end <= rest.end,
                            "argument outside the request"
                        );
                        assert!(a.len() as u64 <= max_bulk);
                    }
                }
                cmds.push(args.iter().map(|a| a.to_vec()).collect());
                p.consume();
            }
        }
    }
}
