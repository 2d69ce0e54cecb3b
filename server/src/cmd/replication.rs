//! REPLICAOF SLAVEOF ROLE WAIT PSYNC SYNC REPLCONF, and INFO's Replication section. The work
//! is in `segkv-replicate`; these answer as Redis does.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use segkv_replicate::Role;

use super::{Ctx, eq};
use crate::reply::Reply;
use crate::resp::parse_i64;
use crate::server::{Shared, WaitFor, unix_ms};

/// `REPLICAOF host port` / `REPLICAOF NO ONE` (and SLAVEOF).
pub fn replicaof(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let srv = ctx.srv;
    if eq(a[1], "no") && eq(a[2], "one") {
        if srv.repl.is_replica() {
            srv.repl.promote(srv.engine.loaded());
            srv.config.write().unwrap().set_replicaof(String::new());
            eprintln!("segkv: MASTER MODE enabled (user request)");
        }
        return Reply::OK;
    }
    let port = match parse_i64(a[2]) {
        Some(p) if (0..=65535).contains(&p) => p as u16,
        _ => return Reply::err("ERR Invalid master port"),
    };
    let host = String::from_utf8_lossy(a[1]).into_owned();
    if srv.repl.role()
        == (Role::Replica {
            host: host.clone(),
            port,
        })
    {
        return Reply::status("OK Already connected to specified master");
    }
    let Some(me) = srv.host() else {
        return Reply::err("ERR replication is not available in this process");
    };
    eprintln!("segkv: REPLICAOF {host}:{port} enabled (user request)");
    srv.config
        .write()
        .unwrap()
        .set_replicaof(format!("{host} {port}"));
    srv.repl.replicaof(me, host, port);
    Reply::OK
}

/// This node's replication offset (a history address).
fn offset(srv: &Shared) -> u64 {
    srv.engine.loaded().map_or(0, |e| srv.repl.offset(e))
}

pub fn role(ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    let srv = ctx.srv;
    match srv.repl.role() {
        Role::Primary => Reply::Array(vec![
            Reply::bulk("master"),
            Reply::Int(offset(srv) as i64),
            Reply::Array(
                srv.repl
                    .links()
                    .iter()
                    .map(|l| {
                        Reply::Array(vec![
                            Reply::bulk(l.ip.clone()),
                            Reply::bulk(l.port.to_string()),
                            Reply::bulk(l.ack.load(Relaxed).to_string()),
                        ])
                    })
                    .collect(),
            ),
        ]),
        Role::Replica { host, port } => {
            let state = if srv.repl.sync_in_progress.load(Relaxed) {
                "sync"
            } else if srv.repl.link_up.load(Relaxed) {
                "connected"
            } else {
                "connect"
            };
            // (As Redis: no offset while there is no link to the primary.)
            let off = if srv.repl.link_up.load(Relaxed) {
                offset(srv) as i64
            } else {
                -1
            };
            Reply::Array(vec![
                Reply::bulk("slave"),
                Reply::bulk(host),
                Reply::Int(port as i64),
                Reply::bulk(state),
                Reply::Int(off),
            ])
        }
    }
}

/// `WAIT numreplicas timeout`: blocks (in the connection layer) until that many replicas
/// acknowledged everything this server had written when WAIT arrived, or the timeout.
pub fn wait(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let srv = ctx.srv;
    if srv.repl.is_replica() {
        return Reply::err(
            "ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.",
        );
    }
    let Some(n) = parse_i64(a[1]) else {
        return Reply::err(super::NOT_INT);
    };
    let timeout = match parse_i64(a[2]) {
        Some(t) if t >= 0 => t as u64,
        Some(_) => return Reply::err("ERR timeout is negative"),
        None => return Reply::err("ERR timeout is not an integer or out of range"),
    };
    let target = offset(srv);
    let have = srv.repl.acked(target);
    if n <= 0 || have >= n as usize {
        return Reply::Int(have as i64);
    }
    if let Some(e) = srv.engine.loaded() {
        srv.repl.request_acks(e);
    }
    ctx.s.wait = Some(WaitFor {
        replicas: n as usize,
        offset: target,
        deadline: (timeout > 0).then(|| Instant::now() + Duration::from_millis(timeout)),
    });
    Reply::None
}

/// The reply to a WAIT once it can be given (None while it must go on waiting).
pub fn wait_done(srv: &Shared, w: &WaitFor) -> Option<Reply> {
    let have = srv.repl.acked(w.offset);
    if have >= w.replicas || w.deadline.is_some_and(|d| Instant::now() >= d) {
        Some(Reply::Int(have as i64))
    } else {
        None
    }
}

/// `PSYNC replid offset`: the connection becomes a replication link.
pub fn psync(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let id = String::from_utf8_lossy(a[1]).into_owned();
    let Some(offset) = parse_i64(a[2]) else {
        return Reply::err(super::NOT_INT);
    };
    handoff(ctx, id, offset)
}

/// `SYNC`: the old full-resync-only form.
pub fn sync(ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    handoff(ctx, "?".into(), -1)
}

fn handoff(ctx: &mut Ctx<'_>, id: String, offset: i64) -> Reply {
    if ctx.srv.engine.loaded().is_none() {
        return Reply::err(super::LOADING_ERR);
    }
    if ctx.srv.repl.is_replica() {
        return Reply::err(
            "NOMASTERLINK this segkv node is a replica: it does not serve replicas of its own",
        );
    }
    ctx.s.handoff = Some((id, offset));
    Reply::None
}

/// `REPLCONF option value ...`: what a replica says during the handshake.
pub fn replconf(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    if a.len().is_multiple_of(2) {
        return Reply::err(super::SYNTAX);
    }
    for pair in a[1..].chunks(2) {
        if eq(pair[0], "listening-port") {
            match parse_i64(pair[1]) {
                Some(p) if (0..=65535).contains(&p) => ctx.s.repl_port = p as u16,
                _ => return Reply::err(super::NOT_INT),
            }
        } else if eq(pair[0], "ip-address")
            || eq(pair[0], "capa")
            || eq(pair[0], "rdb-only")
            || eq(pair[0], "rdb-filter-only")
        {
            // Accepted; segkv streams its log whatever the replica can parse.
        } else if eq(pair[0], "ack") || eq(pair[0], "getack") {
            // Sent on the replication link itself, never as a command.
            return Reply::None;
        } else {
            return Reply::error(format!(
                "ERR Unrecognized REPLCONF option: {}",
                String::from_utf8_lossy(pair[0])
            ));
        }
    }
    Reply::OK
}

/// INFO's `# Replication` lines.
pub fn info_lines(srv: &Shared, out: &mut String) {
    let repl = &srv.repl;
    let st = repl.state();
    let off = offset(srv);
    let mut line = |s: String| {
        out.push_str(&s);
        out.push_str("\r\n");
    };
    match repl.role() {
        Role::Primary => line("role:master".into()),
        Role::Replica { host, port } => {
            line("role:slave".into());
            line(format!("master_host:{host}"));
            line(format!("master_port:{port}"));
            let up = repl.link_up.load(Relaxed);
            line(format!(
                "master_link_status:{}",
                if up { "up" } else { "down" }
            ));
            let last = repl.last_io_ms.load(Relaxed);
            let ago = if last == 0 || !up {
                -1
            } else {
                (unix_ms().saturating_sub(last) / 1000) as i64
            };
            line(format!("master_last_io_seconds_ago:{ago}"));
            let syncing = repl.sync_in_progress.load(Relaxed);
            line(format!("master_sync_in_progress:{}", u8::from(syncing)));
            line(format!("slave_read_repl_offset:{off}"));
            line(format!("slave_repl_offset:{off}"));
            if !up {
                line("master_link_down_since_seconds:-1".into());
            }
            line("slave_priority:100".into());
            let ro = srv.limits.replica_read_only.load(Relaxed);
            line(format!("slave_read_only:{}", u8::from(ro)));
            line("replica_announced:1".into());
        }
    }
    let links = repl.links();
    line(format!("connected_slaves:{}", links.len()));
    let now = unix_ms();
    for (i, l) in links.iter().enumerate() {
        let state = if l.online.load(Relaxed) {
            "online"
        } else {
            "send_bulk"
        };
        let mut s = String::new();
        let _ = write!(
            s,
            "slave{i}:ip={},port={},state={state},offset={},lag={}",
            l.ip,
            l.port,
            l.ack.load(Relaxed),
            now.saturating_sub(l.last_ack_ms.load(Relaxed)) / 1000
        );
        line(s);
    }
    let min_w = srv.limits.min_replicas_to_write.load(Relaxed);
    if min_w > 0 && !repl.is_replica() {
        let good = repl.healthy(srv.limits.min_replicas_max_lag.load(Relaxed));
        line(format!("min_slaves_good_slaves:{good}"));
    }
    line("master_failover_state:no-failover".into());
    line(format!("master_replid:{}", st.replid));
    line(format!("master_replid2:{}", st.replid2));
    line(format!("master_repl_offset:{off}"));
    line(format!("second_repl_offset:{}", st.second_offset));
    let (first, histlen) = srv.engine.loaded().map_or((0, 0), |e| {
        let first = e
            .log()
            .segments()
            .iter()
            .find(|s| s.base >= st.delta)
            .map_or(0, |s| s.base - st.delta);
        (first, off.saturating_sub(first))
    });
    line("repl_backlog_active:1".into());
    line(format!(
        "repl_backlog_size:{}",
        repl.settings.backlog_size.load(Relaxed)
    ));
    line(format!("repl_backlog_first_byte_offset:{first}"));
    line(format!("repl_backlog_histlen:{histlen}"));
}

/// Why a write is refused on replication grounds (Redis's READONLY and NOREPLICAS), if it is.
pub fn refuse_write(srv: &Shared) -> Option<Reply> {
    // Whatever `replica-read-only` says: a writable replica's writes would not be in its
    // primary's log, and segkv's replicas hold nothing else.
    if srv.repl.is_replica() {
        return Some(Reply::err(
            "READONLY You can't write against a read only replica.",
        ));
    }
    let min = srv.limits.min_replicas_to_write.load(Relaxed);
    if min > 0 {
        let lag = srv.limits.min_replicas_max_lag.load(Relaxed);
        if (srv.repl.healthy(lag) as u64) < min {
            return Some(Reply::err("NOREPLICAS Not enough good replicas to write."));
        }
    }
    None
}
