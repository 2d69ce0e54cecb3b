//! The primary's side: one sender thread per replica streams the log from the replica's
//! position, and one reader thread takes its acknowledgements. Both block on their own
//! socket only: a slow replica slows its own threads, never the event loops, and the sender
//! holds at most one chunk in memory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use segkv_engine::Engine;
use segkv_log::Stream;

use crate::proto::{self, Frame};
use crate::{Host, Link, Replication, unix_ms};

/// Bytes gathered per socket write.
const CHUNK: usize = 1 << 20;

pub(crate) fn serve(
    repl: Arc<Replication>,
    host: Arc<dyn Host>,
    mut sock: TcpStream,
    replid: String,
    offset: i64,
    port: u16,
) {
    let Some(engine) = host.engine() else {
        let _ = sock.write_all(b"-LOADING Redis is loading the dataset in memory\r\n");
        return;
    };
    if repl.is_replica() {
        let _ = sock.write_all(b"-NOMASTERLINK this segkv node is a replica: it does not serve replicas of its own\r\n");
        return;
    }
    let _ = sock.set_nodelay(true);
    let _ = sock.set_write_timeout(Some(repl.timeout()));
    let Ok(clone) = sock.try_clone() else {
        return;
    };
    let link = Arc::new(Link {
        id: repl.next_link_id.fetch_add(1, Ordering::Relaxed),
        ip: sock
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default(),
        port,
        ack: AtomicU64::new(0),
        last_ack_ms: AtomicU64::new(unix_ms()),
        online: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        // Nothing is retired while the start is chosen.
        hold: AtomicU64::new(0),
        sock: clone,
    });
    let log = engine.log();
    repl.links.lock().unwrap().push(link.clone());
    repl.nlinks.fetch_add(1, Ordering::AcqRel);
    // From the first replica on, the log's tail is kept as a backlog (Redis creates its
    // backlog then too): a replica whose link drops resumes with a partial resync.
    repl.backlog_active.store(true, Ordering::Release);
    log.set_backlog(repl.settings.backlog_size.load(Ordering::Relaxed));
    if repl.is_replica() {
        // REPLICAOF came between the check above and the push: no chained replication.
        link.stop();
    }
    repl.update_hold(engine);

    let st = repl.state();
    let delta = st.delta;
    let same = offset >= 0
        && (replid == st.replid || (replid == st.replid2 && offset <= st.second_offset));
    // A replica of the same former primary that had received more than this node when it
    // was promoted: its log goes past the fork. It cuts it back to the fork and goes on
    // from there (instead of a full resync, which is all Redis offers it).
    let past_fork =
        offset >= 0 && st.second_offset >= 0 && replid == st.replid2 && offset > st.second_offset;
    let local = if past_fork {
        Some(st.second_offset as u64 + delta)
    } else if same {
        u64::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(delta))
    } else {
        None
    };
    let (cursor, full) = match local {
        Some(l) if log.holds_position(l) => (l, false),
        _ => (first_segment(engine, delta), true),
    };

    link.hold.store(cursor, Ordering::Release);
    repl.update_hold(engine);
    let line = if full {
        repl.full_syncs.fetch_add(1, Ordering::Relaxed);
        if offset >= 0 {
            repl.partial_syncs_err.fetch_add(1, Ordering::Relaxed);
        }
        format!("+FULLRESYNC {} {}\r\n", st.replid, cursor - delta)
    } else if past_fork {
        repl.partial_syncs_ok.fetch_add(1, Ordering::Relaxed);
        link.ack.store(st.second_offset as u64, Ordering::Release);
        format!("+TRUNCATE {} {}\r\n", st.replid, st.second_offset)
    } else {
        repl.partial_syncs_ok.fetch_add(1, Ordering::Relaxed);
        link.ack.store(offset as u64, Ordering::Release);
        format!("+CONTINUE {}\r\n", st.replid)
    };
    eprintln!(
        "segkv: replica {}:{} asked for {replid} offset {offset}: {}",
        link.ip,
        port,
        if full {
            "full resync"
        } else if past_fork {
            "partial resync from the fork (it cuts its log back to it)"
        } else {
            "partial resync accepted"
        }
    );
    if sock.write_all(line.as_bytes()).is_ok() {
        let reader = {
            let (repl, host, link) = (repl.clone(), host.clone(), link.clone());
            let rs = sock.try_clone();
            std::thread::Builder::new()
                .name("segkv-repl-ack".into())
                .spawn(move || {
                    if let Ok(rs) = rs {
                        read_acks(&repl, &*host, &link, rs)
                    }
                })
        };
        // Streaming the whole log is background work: a thread of lower priority does it,
        // so the workers' requests keep their latency; tailing goes on at normal priority.
        let copied = if full {
            std::thread::scope(|sc| {
                let sock = &mut sock;
                let (repl, link) = (&*repl, &*link);
                sc.spawn(move || {
                    let _ = segkv_log::sys::lower_thread_priority(10);
                    stream(repl, engine, link, sock, cursor, delta, true)
                })
                .join()
                .unwrap_or_else(|_| Err("the full resync thread panicked".into()))
            })
        } else {
            Ok(Some(cursor))
        };
        let r = match copied {
            Ok(Some(cursor)) => stream(&repl, engine, &link, &mut sock, cursor, delta, false),
            other => other,
        };
        if let Err(e) = r {
            eprintln!("segkv: replica {}:{} dropped: {e}", link.ip, port);
        }
        link.stop();
        if let Ok(r) = reader {
            let _ = r.join();
        }
    }
    repl.links
        .lock()
        .unwrap()
        .retain(|l| !Arc::ptr_eq(l, &link));
    repl.nlinks.fetch_sub(1, Ordering::AcqRel);
    repl.update_hold(engine);
}

/// Where a full resync starts: the oldest segment of this node's history.
fn first_segment(engine: &Engine, delta: u64) -> u64 {
    engine
        .log()
        .segments()
        .iter()
        .find(|s| s.base >= delta)
        .map_or(delta, |s| s.base)
}

fn stream(
    repl: &Replication,
    engine: &Engine,
    link: &Link,
    sock: &mut TcpStream,
    mut cursor: u64,
    delta: u64,
    full: bool,
) -> Result<Option<u64>, String> {
    let log = engine.log();
    let mut out = Vec::with_capacity(CHUNK + 64);
    let mut caught_up = !full;
    if caught_up {
        link.online.store(true, Ordering::Release);
    }
    let mut last_send = Instant::now();
    let mut getack_seen = repl.getack.load(Ordering::Acquire);
    let mut last_lag_check = Instant::now();
    let start_tail = if full { log.tail_addr() } else { 0 };
    loop {
        if link.stop.load(Ordering::Acquire) {
            return Err("the connection was closed".into());
        }
        out.clear();
        let before = cursor;
        while out.len() < CHUNK {
            // Records are read straight after their frame's header, patched once their
            // length is known.
            let at = out.len();
            out.extend_from_slice(&[0u8; proto::DATA_HEADER]);
            let (found, next) = log.read_stream(cursor, CHUNK - at, &mut out);
            if let Stream::Data(addr) = found {
                proto::data_header(&mut out[at..], addr - delta);
                cursor = next;
                continue;
            }
            out.truncate(at);
            match (found, next) {
                (Stream::Segment(mut h), next) => {
                    h.base -= delta;
                    Frame::Segment(h).encode(&mut out);
                    cursor = next;
                }
                (Stream::Data(_), _) => unreachable!("handled above"),
                (Stream::Wait, _) => {
                    if !caught_up {
                        caught_up = true;
                        Frame::CaughtUp.encode(&mut out);
                        link.online.store(true, Ordering::Release);
                    }
                    break;
                }
                (Stream::Gone, _) => {
                    return Err(format!(
                        "the log at {:#x} it still needed was deleted",
                        cursor - delta
                    ));
                }
            }
        }
        let ga = repl.getack.load(Ordering::Acquire);
        if ga != getack_seen {
            getack_seen = ga;
            Frame::GetAck.encode(&mut out);
        }
        if out.is_empty() && last_send.elapsed() >= Duration::from_secs(1) {
            Frame::Ping {
                offset: repl.offset(engine),
            }
            .encode(&mut out);
        }
        if !out.is_empty() {
            sock.write_all(&out).map_err(|e| format!("write: {e}"))?;
            last_send = Instant::now();
        }
        if full && caught_up {
            // The full resync is done: the caller tails from here.
            return Ok(Some(cursor));
        }
        // A replica that cannot keep up holds the primary's log on disk: past
        // repl-backlog-size of records behind, it is dropped (and resyncs).
        if last_lag_check.elapsed() >= Duration::from_millis(100) {
            last_lag_check = Instant::now();
            // (During a full resync, what was written since it began.)
            let behind = log.data_after(cursor.max(start_tail));
            let limit = repl.settings.backlog_size.load(Ordering::Relaxed);
            if behind > limit {
                return Err(format!(
                    "{behind} bytes behind, past repl-backlog-size {limit}: it resyncs"
                ));
            }
        }
        if cursor != before {
            link.hold.store(cursor, Ordering::Release);
            repl.update_hold(engine);
            continue;
        }
        if repl.getack.load(Ordering::Acquire) == getack_seen {
            log.wait_stream(cursor, Duration::from_millis(100));
        }
    }
}

fn read_acks(repl: &Replication, host: &dyn Host, link: &Link, mut sock: TcpStream) {
    let _ = sock.set_read_timeout(Some(repl.timeout()));
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = match sock.read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&tmp[..n]);
        let mut at = 0;
        loop {
            match Frame::decode(&buf[at..]) {
                Ok(Some((f, len))) => {
                    if let Frame::Ack { durable, .. } = f {
                        link.ack.fetch_max(durable, Ordering::AcqRel);
                        link.last_ack_ms.store(unix_ms(), Ordering::Relaxed);
                        host.acked();
                    }
                    at += len;
                }
                Ok(None) => break,
                Err(_) => {
                    link.stop();
                    return;
                }
            }
        }
        buf.drain(..at);
    }
    link.stop();
    // Wake the sender so it notices.
    if let Some(e) = host.engine() {
        e.log().wake_readers();
    }
}
