//! The replica's side: connect, handshake, then append what the primary streams to this
//! node's log and apply it to the index; a second thread acknowledges what is durable.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use segkv_engine::{BulkLoad, Engine};
use segkv_log::Kind;

use crate::proto::Frame;
use crate::state::{NO_ID, State};
use crate::{Host, Replication, unix_ms};

pub(crate) fn run(
    repl: Arc<Replication>,
    host: Arc<dyn Host>,
    h: String,
    port: u16,
    generation: u64,
) {
    let current = |r: &Replication| r.generation.load(Ordering::Acquire) == generation;
    let mut need_full = false;
    let mut reported = String::new();
    while current(&repl) {
        let Some(engine) = host.engine() else {
            // (Still loading: the link starts as soon as the data set is in.)
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        eprintln!("segkv: connecting to primary {h}:{port}");
        if let Err(e) = session(&repl, &host, engine, &h, port, generation, &mut need_full)
            && current(&repl)
            && e != reported
        {
            eprintln!("segkv: replication from {h}:{port}: {e}");
            reported = e;
        }
        repl.link_up.store(false, Ordering::Release);
        for _ in 0..10 {
            if !current(&repl) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn io<T>(what: &str, r: std::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Sends a command as RESP and reads the one-line reply.
fn command(sock: &mut TcpStream, args: &[&str]) -> Result<String, String> {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    io("send", sock.write_all(out.as_bytes()))?;
    read_line(sock)
}

/// One CRLF-terminated line, read a byte at a time (the stream that follows is not ours to
/// buffer).
fn read_line(sock: &mut TcpStream) -> Result<String, String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match sock.read(&mut b) {
            Ok(0) => return Err("the primary closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        if b[0] == b'\n' {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(b[0]);
        if line.len() > 4096 {
            return Err("reply line too long".into());
        }
    }
}

fn expect_ok(line: String, what: &str) -> Result<(), String> {
    if line.starts_with('+') {
        Ok(())
    } else {
        Err(format!("{what}: the primary replied {line}"))
    }
}

fn session(
    repl: &Arc<Replication>,
    host: &Arc<dyn Host>,
    engine: &Engine,
    h: &str,
    port: u16,
    generation: u64,
    need_full: &mut bool,
) -> Result<(), String> {
    // A full resync's copy, until it is complete.
    let bulk = &mut None;
    let addr = io("resolve", (h, port).to_socket_addrs())?
        .next()
        .ok_or_else(|| format!("cannot resolve {h}"))?;
    let mut sock = io(
        "connect",
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)),
    )?;
    let _ = sock.set_nodelay(true);
    *repl.replica_sock.lock().unwrap() = Some(io("socket", sock.try_clone())?);
    if repl.generation.load(Ordering::Acquire) != generation {
        return Ok(());
    }
    io("socket", sock.set_read_timeout(Some(repl.timeout())))?;
    expect_ok(command(&mut sock, &["PING"])?, "PING")?;
    let lp = repl.listening_port.to_string();
    expect_ok(
        command(&mut sock, &["REPLCONF", "listening-port", &lp])?,
        "REPLCONF",
    )?;
    expect_ok(
        command(&mut sock, &["REPLCONF", "capa", "segkv"])?,
        "REPLCONF",
    )?;
    let st = repl.state();
    let offset = repl.offset(engine);
    // A node with nothing in its log asks for everything (`PSYNC ? -1`, as a fresh Redis).
    let empty = engine.log().data_bytes() == 0;
    let (id, off) = if st.synced && !*need_full && !empty {
        (st.replid.clone(), offset.to_string())
    } else {
        ("?".to_string(), "-1".to_string())
    };
    let line = command(&mut sock, &["PSYNC", &id, &off])?;
    // From here on this thread changes the node: not once REPLICAOF moved on (it waits for
    // this thread to end before it acts).
    if repl.generation.load(Ordering::Acquire) != generation {
        return Ok(());
    }
    if let Some(rest) = line.strip_prefix("+FULLRESYNC ") {
        let mut it = rest.split(' ');
        let (Some(replid), Some(first)) =
            (it.next(), it.next().and_then(|f| f.parse::<u64>().ok()))
        else {
            return Err(format!("bad reply to PSYNC: {line}"));
        };
        eprintln!("segkv: full resync from {h}:{port} (history {replid}) starting");
        repl.sync_in_progress.store(true, Ordering::Release);
        // A restart from here on must start the full resync again.
        let mut s = st.clone();
        s.synced = false;
        s.replica = true;
        repl.save_state(s);
        *bulk = Some(
            engine
                .mirror_reset()
                .map_err(|e| format!("reset before a full resync: {e}"))?,
        );
        // Place the primary's segments past everything this log ever had, so its addresses
        // keep growing.
        let delta = engine.log().active_next_base().saturating_sub(first);
        engine.log().set_history_delta(delta);
        repl.save_state(State {
            replid: replid.to_string(),
            replid2: NO_ID.into(),
            second_offset: -1,
            delta,
            synced: false,
            replica: true,
        });
    } else if let Some(rest) = line.strip_prefix("+TRUNCATE ") {
        // The primary was promoted from a replica that had received less than this one: the
        // histories fork at `fork`. This log is cut back to it and copying goes on from there.
        let mut it = rest.split(' ');
        let (Some(id), Some(fork)) = (it.next(), it.next().and_then(|f| f.parse::<u64>().ok()))
        else {
            return Err(format!("bad reply to PSYNC: {line}"));
        };
        engine.set_mirroring(true);
        let cut = fork.checked_add(repl.delta()).ok_or("address overflow")?;
        let t = Instant::now();
        let done = engine.mirror_truncate(cut).map_err(|e| {
            // (Half done, or not at all: only a full resync is sure to mend it.)
            *need_full = true;
            format!("cutting the log back to offset {fork}: {e}")
        })?;
        if !done {
            *need_full = true;
            return Err(format!(
                "cannot cut the log back to offset {fork} (a segment it needs was retired past it): a full resync follows"
            ));
        }
        let mut s = st.clone();
        s.replid2 = std::mem::replace(&mut s.replid, id.to_string());
        s.second_offset = fork as i64;
        repl.save_state(s);
        eprintln!(
            "segkv: partial resync from {h}:{port}: log cut back to the fork at offset {fork} in {:.3} s",
            t.elapsed().as_secs_f64()
        );
    } else if let Some(rest) = line.strip_prefix("+CONTINUE") {
        let id = rest.trim();
        if !id.is_empty() && id != st.replid {
            // The primary's history took a new id (it was promoted): ours goes on as that one,
            // and the old id is kept as where it came from.
            let mut s = st.clone();
            s.replid2 = std::mem::replace(&mut s.replid, id.to_string());
            s.second_offset = offset as i64;
            repl.save_state(s);
        }
        eprintln!("segkv: partial resync from {h}:{port} at offset {offset}");
    } else {
        return Err(format!("PSYNC: the primary replied {line}"));
    }
    *need_full = false;
    engine.set_mirroring(true);
    repl.link_up.store(true, Ordering::Release);
    repl.last_io_ms.store(unix_ms(), Ordering::Relaxed);

    let stop = Arc::new(AtomicBool::new(false));
    let acker = {
        let (repl, host, stop) = (repl.clone(), host.clone(), stop.clone());
        let ack_sock = io("socket", sock.try_clone())?;
        std::thread::Builder::new()
            .name("segkv-repl-ack".into())
            .spawn(move || acknowledge(&repl, &*host, ack_sock, generation, &stop))
    };
    let mut inbox = Inbox::new();
    let mut r = Ok(());
    if bulk.is_some() {
        // A full resync is background work here too (the old data set is served meanwhile):
        // a thread of lower priority copies it, so that this machine's other work keeps its
        // latency; tailing goes on at normal priority, on this thread.
        let (sock, inbox) = (&mut sock, &mut inbox);
        r = std::thread::scope(|sc| {
            sc.spawn(|| {
                let _ = segkv_log::sys::lower_thread_priority(10);
                receive(repl, engine, sock, generation, need_full, bulk, inbox)
            })
            .join()
            .unwrap_or_else(|_| Err("the full resync thread panicked".into()))
        });
    }
    if r.is_ok() && bulk.is_none() {
        r = receive(
            repl, engine, &mut sock, generation, need_full, bulk, &mut inbox,
        );
    }
    if let Some(b) = bulk.take() {
        // Cut short: the partial copy goes (the old data set stays), and the next
        // connection starts a full resync again.
        *need_full = true;
        if let Err(e) = engine.mirror_abandon(b) {
            eprintln!("segkv: dropping an incomplete full resync: {e}");
        }
    }
    stop.store(true, Ordering::Release);
    repl.ack_soon(false);
    let _ = sock.shutdown(std::net::Shutdown::Both);
    if let Ok(a) = acker {
        let _ = a.join();
    }
    r
}

/// Bytes read from the primary and not applied yet: `buf[start..end]` (frames are parsed
/// where they were read).
struct Inbox {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    last: Instant,
}

/// Bytes asked of the socket per read.
const READ: usize = 1 << 20;

impl Inbox {
    fn new() -> Inbox {
        Inbox {
            buf: vec![0u8; 4 * READ],
            start: 0,
            end: 0,
            last: Instant::now(),
        }
    }
}

/// Reads frames until the link breaks or REPLICAOF changes (or, during a full resync, until
/// it is complete: `bulk` was Some and is None); applies them in order.
fn receive(
    repl: &Replication,
    engine: &Engine,
    sock: &mut TcpStream,
    generation: u64,
    need_full: &mut bool,
    bulk: &mut Option<BulkLoad>,
    inbox: &mut Inbox,
) -> Result<(), String> {
    io(
        "socket",
        sock.set_read_timeout(Some(Duration::from_millis(100))),
    )?;
    let delta = repl.delta();
    let full = bulk.is_some();
    let Inbox {
        buf,
        start,
        end,
        last,
    } = inbox;
    loop {
        if repl.generation.load(Ordering::Acquire) != generation {
            return Ok(());
        }
        // Apply what is buffered (after a full resync, what came with its end).
        loop {
            match Frame::decode(&buf[*start..*end]) {
                Ok(Some((f, len))) => {
                    if let Err(e) = apply(repl, engine, f, delta, bulk) {
                        *need_full = true;
                        return Err(e);
                    }
                    *start += len;
                    if full && bulk.is_none() {
                        return Ok(()); // the full resync is complete
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    *need_full = true;
                    return Err(format!("bad frame from the primary: {e}"));
                }
            }
        }
        if *start == *end {
            (*start, *end) = (0, 0);
            if buf.len() > 8 * READ {
                // A large frame passed: give the memory back.
                *buf = vec![0u8; 4 * READ];
            }
        }
        if buf.len() - *end < READ {
            // Keep the partial frame at the front; grow only for a frame larger than the
            // buffer (one record can be up to the log's record limit).
            buf.copy_within(*start..*end, 0);
            *end -= *start;
            *start = 0;
            if buf.len() - *end < READ {
                buf.resize(*end + READ, 0);
            }
        }
        match sock.read(&mut buf[*end..]) {
            Ok(0) => return Err("the primary closed the connection".into()),
            Ok(n) => {
                *end += n;
                *last = Instant::now();
                repl.last_io_ms.store(unix_ms(), Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                if last.elapsed() > repl.timeout() {
                    return Err("timeout: nothing from the primary for repl-timeout".into());
                }
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

fn apply(
    repl: &Replication,
    engine: &Engine,
    f: Frame<'_>,
    delta: u64,
    bulk: &mut Option<BulkLoad>,
) -> Result<(), String> {
    let log = engine.log();
    match f {
        Frame::Segment(mut h) => {
            h.base = h
                .base
                .checked_add(delta)
                .ok_or("segment address overflow")?;
            log.mirror_segment(h).map_err(|e| e.to_string())
        }
        Frame::Data { addr, bytes } => {
            let local = addr.checked_add(delta).ok_or("address overflow")?;
            if let Some(b) = bulk {
                let now = engine.now_ms();
                return log
                    .mirror_append(local, bytes, |at, r| {
                        b.visit(at, &r, delta, now);
                        Ok(())
                    })
                    .map_err(|e| e.to_string());
            }
            log.mirror_append(local, bytes, |at, r| {
                if r.kind == Kind::Retire {
                    if let Ok(b) = <[u8; 8]>::try_from(r.value) {
                        let base = u64::from_le_bytes(b).saturating_add(delta);
                        let end = at + r.padded_len() as u64;
                        engine.mirror_retire(base, end).map_err(|e| e.to_string())?;
                    }
                    Ok(())
                } else {
                    engine.apply_mirrored(at, &r).map_err(|e| e.to_string())
                }
            })
            .map_err(|e| e.to_string())?;
            Ok(())
        }
        Frame::CaughtUp => {
            let Some(b) = bulk.take() else {
                return Ok(());
            };
            let t = Instant::now();
            let settle = engine
                .mirror_finish(b)
                .map_err(|e| format!("finishing the full resync: {e}"))?;
            let built = t.elapsed();
            // The new data set is served from here on (as Redis's replica serves once its
            // RDB is loaded); it becomes this replica's for good once the copy is durable.
            repl.sync_in_progress.store(false, Ordering::Release);
            engine
                .mirror_settle(settle)
                .map_err(|e| format!("finishing the full resync: {e}"))?;
            let mut s = repl.state();
            s.synced = true;
            repl.save_state(s);
            eprintln!(
                "segkv: full resync done: this replica holds its primary's data set (index built in {:.3} s, copy durable {:.3} s later)",
                built.as_secs_f64(),
                (t.elapsed() - built).as_secs_f64()
            );
            Ok(())
        }
        // (Its arrival is what counts: master_last_io_seconds_ago.)
        Frame::Ping { .. } => Ok(()),
        Frame::GetAck => {
            repl.ack_soon(true);
            Ok(())
        }
        Frame::Ack { .. } => Ok(()),
    }
}

/// Acknowledges the durable offset: when the log syncs, when the primary asks (after a
/// sync), and at least once a second.
fn acknowledge(
    repl: &Replication,
    host: &dyn Host,
    mut sock: TcpStream,
    generation: u64,
    stop: &AtomicBool,
) {
    let _ = sock.set_write_timeout(Some(repl.timeout()));
    let mut out = Vec::new();
    loop {
        let sync = {
            let mut g = repl.ack_mx.lock().unwrap();
            if !*g {
                g = repl
                    .ack_cv
                    .wait_timeout(g, Duration::from_secs(1))
                    .unwrap()
                    .0;
            }
            std::mem::take(&mut *g)
        };
        if stop.load(Ordering::Acquire) || repl.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let Some(engine) = host.engine() else {
            continue;
        };
        if sync {
            let _ = engine.sync();
        }
        let delta = repl.delta();
        out.clear();
        Frame::Ack {
            durable: engine.durable_addr().saturating_sub(delta),
            received: engine.tail_addr().saturating_sub(delta),
        }
        .encode(&mut out);
        if sock.write_all(&out).is_err() {
            return;
        }
    }
}
