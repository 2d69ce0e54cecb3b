//! Connection: PING ECHO QUIT SELECT HELLO RESET CLIENT (ID SETNAME GETNAME LIST INFO KILL PAUSE
//! UNPAUSE NO-EVICT REPLY).

use std::sync::atomic::Ordering::Relaxed;

use super::{Ctx, DB_RANGE, SYNTAX, eq, i32_arg};
use crate::reply::Reply;
use crate::resp::parse_i64;
use crate::server::{ClientInfo, PauseMode, ReplyMode, unix_ms};
use crate::tri;

pub fn ping(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    if a.len() > 2 {
        return Reply::err("ERR wrong number of arguments for 'ping' command");
    }
    let _ = ctx;
    match a.get(1) {
        Some(m) => Reply::bulk(*m),
        None => Reply::status("PONG"),
    }
}

pub fn echo(_ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    Reply::bulk(a[1])
}

pub fn quit(ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    ctx.s.close_after_reply = true;
    Reply::OK
}

pub fn select(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let n = tri!(i32_arg(a[1]));
    if n < 0 || n as usize >= ctx.srv.databases() {
        return Reply::err(DB_RANGE);
    }
    ctx.s.db = n as usize;
    ctx.s.info.db.store(n as usize, Relaxed);
    Reply::OK
}

fn valid_name(n: &[u8]) -> bool {
    n.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

fn set_name(ctx: &mut Ctx<'_>, n: &[u8]) -> Result<(), Reply> {
    if !valid_name(n) {
        return Err(Reply::err(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    *ctx.s.info.name.lock().unwrap() = n.to_vec();
    Ok(())
}

pub fn hello(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let mut proto = ctx.s.proto;
    let mut j = 1;
    if a.len() >= 2 {
        let v = match parse_i64(a[1]) {
            Some(v) => v,
            None => return Reply::err("ERR Protocol version is not an integer or out of range"),
        };
        if !(2..=3).contains(&v) {
            return Reply::err("NOPROTO unsupported protocol version");
        }
        proto = v as u8;
        j = 2;
    }
    let mut name: Option<&[u8]> = None;
    while j < a.len() {
        let more = a.len() - j - 1;
        if eq(a[j], "auth") && more >= 2 {
            // No users or passwords yet: the default user accepts any password, as Redis's
            // `nopass` default user does.
            if !eq(a[j + 1], "default") {
                return Reply::err("WRONGPASS invalid username-password pair or user is disabled.");
            }
            j += 3;
        } else if eq(a[j], "setname") && more >= 1 {
            name = Some(a[j + 1]);
            j += 2;
        } else {
            return Reply::error(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(a[j])
            ));
        }
    }
    if let Some(n) = name {
        tri!(set_name(ctx, n));
    }
    ctx.s.proto = proto;
    ctx.s.info.resp.store(proto, Relaxed);
    Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("redis")),
        (Reply::bulk("version"), Reply::bulk(crate::REDIS_VERSION)),
        (Reply::bulk("proto"), Reply::Int(proto as i64)),
        (Reply::bulk("id"), Reply::Int(ctx.s.info.id as i64)),
        (Reply::bulk("mode"), Reply::bulk("standalone")),
        (Reply::bulk("role"), Reply::bulk("master")),
        (Reply::bulk("modules"), Reply::Array(vec![])),
    ])
}

pub fn reset(ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    ctx.s.db = 0;
    ctx.s.info.db.store(0, Relaxed);
    ctx.s.proto = 2;
    ctx.s.info.resp.store(2, Relaxed);
    ctx.s.reply = ReplyMode::On;
    ctx.s.info.no_evict.store(false, Relaxed);
    ctx.s.no_touch = false;
    ctx.s.info.name.lock().unwrap().clear();
    Reply::status("RESET")
}

pub fn client_id(ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    Reply::Int(ctx.s.info.id as i64)
}

pub fn client_setname(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    match set_name(ctx, a[2]) {
        Ok(()) => Reply::OK,
        Err(r) => r,
    }
}

pub fn client_getname(ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    let n = ctx.s.info.name.lock().unwrap();
    if n.is_empty() {
        Reply::Nil
    } else {
        Reply::Bulk(n.clone())
    }
}

/// One CLIENT LIST line, with Redis 7.0's fields.
pub fn client_line(ctx: &Ctx<'_>, c: &ClientInfo) -> String {
    let now_ms = c.created.elapsed().as_millis() as u64;
    let idle = (now_ms.saturating_sub(c.last_interaction_ms.load(Relaxed))) / 1000;
    let cmd = match c.last_cmd.load(Relaxed) {
        usize::MAX => "NULL",
        i => ctx.srv.table.all[i].meta.name,
    };
    let qbuf = c.qbuf.load(Relaxed);
    let obl = c.obl.load(Relaxed);
    let flags = if c.no_evict.load(Relaxed) { "e" } else { "N" };
    format!(
        "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db={} sub=0 psub=0 ssub=0 multi=-1 qbuf={} qbuf-free={} argv-mem=0 multi-mem=0 rbs={} rbp=0 obl={} oll=0 omem=0 tot-mem={} events=r cmd={} user=default redir=-1 resp={}",
        c.id,
        c.addr,
        c.laddr,
        c.fd,
        String::from_utf8_lossy(&c.name.lock().unwrap()),
        now_ms / 1000,
        idle,
        flags,
        c.db.load(Relaxed),
        qbuf,
        if qbuf > 0 {
            16384u64.saturating_sub(qbuf)
        } else {
            0
        },
        if qbuf > 0 { 16384 } else { 0 },
        obl,
        qbuf + obl + 1024,
        cmd,
        c.resp.load(Relaxed),
    )
}

pub fn client_list(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    // As Redis 7.0: `TYPE t` alone, or `ID id...`, or nothing.
    let mut ids: Option<Vec<u64>> = None;
    if a.len() == 4 && eq(a[2], "type") {
        let t = a[3];
        if !(eq(t, "normal")
            || eq(t, "master")
            || eq(t, "replica")
            || eq(t, "slave")
            || eq(t, "pubsub"))
        {
            return Reply::error(format!(
                "ERR Unknown client type '{}'",
                String::from_utf8_lossy(t)
            ));
        }
        if !eq(t, "normal") {
            ids = Some(vec![]);
        }
    } else if a.len() > 3 && eq(a[2], "id") {
        let mut v = Vec::new();
        for raw in &a[3..] {
            match parse_i64(raw) {
                Some(id) if id > 0 => v.push(id as u64),
                _ => return Reply::err("ERR Invalid client ID"),
            }
        }
        ids = Some(v);
    } else if a.len() != 2 {
        return Reply::err(SYNTAX);
    }
    let mut clients: Vec<_> = ctx.srv.clients.lock().unwrap().values().cloned().collect();
    clients.sort_by_key(|c| c.id);
    let mut out = String::new();
    for c in clients
        .iter()
        .filter(|c| ids.as_ref().is_none_or(|ids| ids.contains(&c.id)))
    {
        out.push_str(&client_line(ctx, c));
        out.push('\n');
    }
    Reply::Verbatim(out)
}

pub fn client_info(ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    let info = ctx.s.info.clone();
    Reply::Verbatim(client_line(ctx, &info) + "\n")
}

pub fn client_kill(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let clients: Vec<_> = ctx.srv.clients.lock().unwrap().values().cloned().collect();
    let me = ctx.s.info.id;
    let kill = |c: &ClientInfo| {
        c.kill.store(true, Relaxed);
    };
    if a.len() == 3 {
        // Old form: CLIENT KILL addr:port.
        let Some(c) = clients.iter().find(|c| c.addr.as_bytes() == a[2]) else {
            return Reply::err("ERR No such client");
        };
        kill(c);
        if c.id == me {
            ctx.s.close_after_reply = true;
        }
        ctx.srv
            .kill_epoch
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        ctx.srv.wake_all();
        return Reply::OK;
    }
    if !a.len().is_multiple_of(2) {
        return Reply::err(SYNTAX);
    }
    let mut id: Option<u64> = None;
    let mut addr: Option<&[u8]> = None;
    let mut laddr: Option<&[u8]> = None;
    let mut normal_only: Option<bool> = None;
    let mut user: Option<&[u8]> = None;
    let mut skipme = true;
    let mut maxage: Option<u64> = None;
    for kv in a[2..].chunks(2) {
        let (k, v) = (kv[0], kv[1]);
        if eq(k, "id") {
            match parse_i64(v) {
                Some(n) if n > 0 => id = Some(n as u64),
                _ => return Reply::err("ERR client-id should be greater than 0"),
            }
        } else if eq(k, "type") {
            if !(eq(v, "normal")
                || eq(v, "master")
                || eq(v, "replica")
                || eq(v, "slave")
                || eq(v, "pubsub"))
            {
                return Reply::error(format!(
                    "ERR Unknown client type '{}'",
                    String::from_utf8_lossy(v)
                ));
            }
            normal_only = Some(eq(v, "normal"));
        } else if eq(k, "addr") {
            addr = Some(v);
        } else if eq(k, "laddr") {
            laddr = Some(v);
        } else if eq(k, "user") {
            user = Some(v);
        } else if eq(k, "skipme") {
            if eq(v, "yes") {
                skipme = true;
            } else if eq(v, "no") {
                skipme = false;
            } else {
                return Reply::err(SYNTAX);
            }
        } else if eq(k, "maxage") {
            match parse_i64(v) {
                Some(n) if n >= 0 => maxage = Some(n as u64),
                _ => return Reply::err(SYNTAX),
            }
        } else {
            return Reply::err(SYNTAX);
        }
    }
    if let Some(u) = user
        && !eq(u, "default")
    {
        return Reply::error(format!("ERR No such user '{}'", String::from_utf8_lossy(u)));
    }
    let mut n = 0;
    for c in &clients {
        if id.is_some_and(|i| i != c.id)
            || addr.is_some_and(|x| x != c.addr.as_bytes())
            || laddr.is_some_and(|x| x != c.laddr.as_bytes())
            || normal_only == Some(false)
            || maxage.is_some_and(|m| c.created.elapsed().as_secs() < m)
            || (skipme && c.id == me)
        {
            continue;
        }
        kill(c);
        if c.id == me {
            ctx.s.close_after_reply = true;
        }
        n += 1;
    }
    ctx.srv
        .kill_epoch
        .fetch_add(1, std::sync::atomic::Ordering::Release);
    ctx.srv.wake_all();
    Reply::Int(n)
}

pub fn client_pause(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    if a.len() > 4 {
        return Reply::error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(a[1])
        ));
    }
    let ms = match parse_i64(a[2]) {
        Some(v) => v,
        None => return Reply::err("ERR timeout is not an integer or out of range"),
    };
    if ms < 0 {
        return Reply::err("ERR timeout is negative");
    }
    let mode = match a.get(3) {
        None => PauseMode::All,
        Some(m) if eq(m, "all") => PauseMode::All,
        Some(m) if eq(m, "write") => PauseMode::Write,
        Some(_) => return Reply::err("ERR CLIENT PAUSE mode must be WRITE or ALL"),
    };
    let until = unix_ms().saturating_add(ms as u64);
    let mut p = ctx.srv.pause.lock().unwrap();
    // As Redis: a later deadline wins, and ALL wins over WRITE.
    let (m, u) = match *p {
        Some((old_m, old_u)) => (
            if old_m == PauseMode::All || mode == PauseMode::All {
                PauseMode::All
            } else {
                mode
            },
            old_u.max(until),
        ),
        None => (mode, until),
    };
    *p = Some((m, u));
    ctx.srv.pause_active.store(true, Relaxed);
    Reply::OK
}

pub fn client_unpause(ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    *ctx.srv.pause.lock().unwrap() = None;
    ctx.srv.pause_active.store(false, Relaxed);
    ctx.srv.wake_all();
    Reply::OK
}

pub fn client_no_evict(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    if eq(a[2], "on") {
        ctx.s.info.no_evict.store(true, Relaxed);
    } else if eq(a[2], "off") {
        ctx.s.info.no_evict.store(false, Relaxed);
    } else {
        return Reply::err(SYNTAX);
    }
    Reply::OK
}

pub fn client_no_touch(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    if eq(a[2], "on") {
        ctx.s.no_touch = true;
    } else if eq(a[2], "off") {
        ctx.s.no_touch = false;
    } else {
        return Reply::err(SYNTAX);
    }
    Reply::OK
}

pub fn client_reply(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    if eq(a[2], "on") {
        ctx.s.reply = ReplyMode::On;
        Reply::OK
    } else if eq(a[2], "off") {
        ctx.s.reply = ReplyMode::Off;
        Reply::None
    } else if eq(a[2], "skip") {
        if ctx.s.reply == ReplyMode::On {
            ctx.s.reply = ReplyMode::SkipNext;
        }
        Reply::None
    } else {
        Reply::err(SYNTAX)
    }
}
