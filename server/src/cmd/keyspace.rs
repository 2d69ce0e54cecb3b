//! Keys: DEL UNLINK EXISTS TYPE RENAME RENAMENX COPY MOVE KEYS SCAN RANDOMKEY DBSIZE FLUSHDB
//! FLUSHALL SWAPDB TOUCH OBJECT.
//!
//! Multi-key commands (RENAME, RENAMENX, COPY, MOVE) hold the lock-table stripes of every key
//! they touch, so they are atomic with respect to each other, MSET and MGET. Single-key writes
//! take no stripe lock; RENAME and MOVE take their source in one atomic engine step so such a
//! write is never lost (see the atomicity notes in the crate docs).

use segkv_engine::{Action, Cond, SetExpiry, SetOptions};

use super::{Ctx, DB_RANGE, NOT_INT, SYNTAX, engine_err, eq, i32_arg};
use crate::glob;
use crate::reply::Reply;
use crate::resp::parse_i64;
use crate::tri;

pub fn del(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    // Several keys go together, as one step against other multi-key commands.
    let db = ctx.s.db;
    let keys: Vec<(usize, &[u8])> = if a.len() > 2 {
        a[1..].iter().map(|k| (db, *k)).collect()
    } else {
        Vec::new()
    };
    let _g = ctx.srv.locks.lock(&keys);
    let mut n = 0;
    for k in &a[1..] {
        match ctx.srv.engine.delete(ctx.s.db, k) {
            Ok(true) => n += 1,
            Ok(false) => {}
            Err(e) => return engine_err(e),
        }
    }
    Reply::Int(n)
}

pub fn exists(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    Reply::Int(
        a[1..]
            .iter()
            .filter(|k| ctx.srv.engine.exists(ctx.s.db, k))
            .count() as i64,
    )
}

pub fn touch(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    exists(ctx, a)
}

pub fn type_(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    Reply::status(if ctx.srv.engine.exists(ctx.s.db, a[1]) {
        "string"
    } else {
        "none"
    })
}

/// Moves `src` (in `sdb`) to `dst` (in `ddb`) keeping its TTL. `nx`: only if `dst` is absent.
/// `keep_src`: copy instead of move. Returns whether it happened; `Err` for a missing source
/// when `missing_is_error`.
fn transfer(
    ctx: &mut Ctx<'_>,
    (sdb, src): (usize, &[u8]),
    (ddb, dst): (usize, &[u8]),
    nx: bool,
    keep_src: bool,
) -> Result<Option<bool>, Reply> {
    let eng = &ctx.srv.engine;
    let _g = ctx.srv.locks.lock(&[(sdb, src), (ddb, dst)]);
    let same = sdb == ddb && src == dst;
    let opts = |expire_at: Option<u64>, nx: bool| SetOptions {
        cond: if nx { Cond::IfAbsent } else { Cond::Always },
        expiry: expire_at.map(SetExpiry::At).unwrap_or(SetExpiry::Persist),
        get_old: false,
    };
    if keep_src || same {
        let Some((value, expire_at)) = eng.read(sdb, src, |c| (c.value.to_vec(), c.expire_at))
        else {
            return Ok(None);
        };
        if same {
            return Ok(Some(!nx));
        }
        return Ok(Some(
            eng.set(ddb, dst, &value, opts(expire_at, nx))
                .map_err(engine_err)?
                .applied,
        ));
    }
    if !eng.exists(sdb, src) {
        return Ok(None);
    }
    if nx && eng.exists(ddb, dst) {
        return Ok(Some(false));
    }
    // Take the source in one atomic step, so a concurrent single-key write to it is never lost:
    // it lands either before (and moves) or after (and recreates the source).
    let taken = eng
        .update(sdb, src, |cur| match cur {
            Some(c) => (Action::Delete, Some((c.value.to_vec(), c.expire_at))),
            None => (Action::Keep, None),
        })
        .map_err(engine_err)?;
    let Some((value, expire_at)) = taken else {
        return Ok(None);
    };
    if !eng
        .set(ddb, dst, &value, opts(expire_at, nx))
        .map_err(engine_err)?
        .applied
    {
        // A single-key write created the destination meanwhile: put the source back.
        eng.set(sdb, src, &value, opts(expire_at, true))
            .map_err(engine_err)?;
        return Ok(Some(false));
    }
    Ok(Some(true))
}

pub fn rename(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let db = ctx.s.db;
    match transfer(ctx, (db, a[1]), (db, a[2]), false, false) {
        Ok(None) => Reply::err("ERR no such key"),
        Ok(Some(_)) => Reply::OK,
        Err(r) => r,
    }
}

pub fn renamenx(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let db = ctx.s.db;
    match transfer(ctx, (db, a[1]), (db, a[2]), true, false) {
        Ok(None) => Reply::err("ERR no such key"),
        Ok(Some(done)) => Reply::Int(done as i64),
        Err(r) => r,
    }
}

fn db_index(ctx: &Ctx<'_>, raw: &[u8]) -> Result<usize, Reply> {
    let n = i32_arg(raw)?;
    if n < 0 || n as usize >= ctx.srv.engine.databases() {
        return Err(Reply::err(DB_RANGE));
    }
    Ok(n as usize)
}

pub fn copy(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let src_db = ctx.s.db;
    let mut dst_db = src_db;
    let mut replace = false;
    let mut j = 3;
    while j < a.len() {
        if eq(a[j], "replace") {
            replace = true;
        } else if eq(a[j], "db") && j + 1 < a.len() {
            dst_db = tri!(i32_arg(a[j + 1])) as isize as usize;
            j += 1;
        } else {
            return Reply::err(SYNTAX);
        }
        j += 1;
    }
    if dst_db >= ctx.srv.engine.databases() {
        return Reply::err(DB_RANGE);
    }
    if src_db == dst_db && a[1] == a[2] {
        return Reply::err("ERR source and destination objects are the same");
    }
    match transfer(ctx, (src_db, a[1]), (dst_db, a[2]), !replace, true) {
        Ok(None) => Reply::Int(0),
        Ok(Some(done)) => Reply::Int(done as i64),
        Err(r) => r,
    }
}

pub fn move_(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let src_db = ctx.s.db;
    let dst_db = tri!(db_index(ctx, a[2]));
    if src_db == dst_db {
        return Reply::err("ERR source and destination objects are the same");
    }
    match transfer(ctx, (src_db, a[1]), (dst_db, a[1]), true, false) {
        Ok(None) => Reply::Int(0),
        Ok(Some(done)) => Reply::Int(done as i64),
        Err(r) => r,
    }
}

pub fn keys(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let pat = a[1];
    let all = pat == b"*";
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        cursor = scan_step(ctx, cursor, 1024, |k| {
            if all || glob::matches(pat, k, false) {
                out.push(Reply::Bulk(k.to_vec()));
            }
        });
        if cursor == 0 {
            break;
        }
    }
    Reply::Array(out)
}

/// One engine scan step. The engine answers `u64::MAX` (not 0) when one call reaches the end of
/// the table; finish that last stretch here so clients see Redis's 0 when the scan is done.
fn scan_step(ctx: &Ctx<'_>, cursor: u64, count: usize, f: impl FnMut(&[u8])) -> u64 {
    ctx.srv.engine.scan(ctx.s.db, cursor, count, f)
}

pub fn scan(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    // Redis parses the cursor with strtoul: any unsigned decimal, leading zeros allowed.
    let cursor = match std::str::from_utf8(a[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(c) if !a[1].starts_with(b"+") => c,
        _ => return Reply::err("ERR invalid cursor"),
    };
    let mut count = 10i64;
    let mut pat: Option<&[u8]> = None;
    let mut typ: Option<&[u8]> = None;
    let mut j = 2;
    while j < a.len() {
        let more = j + 1 < a.len();
        if eq(a[j], "count") && more {
            count = match parse_i64(a[j + 1]) {
                Some(c) => c,
                None => return Reply::err(NOT_INT),
            };
            if count < 1 {
                return Reply::err(SYNTAX);
            }
        } else if eq(a[j], "match") && more {
            pat = Some(a[j + 1]).filter(|p| *p != b"*");
        } else if eq(a[j], "type") && more {
            typ = Some(a[j + 1]);
        } else {
            return Reply::err(SYNTAX);
        }
        j += 2;
    }
    let want_strings = typ.is_none_or(|t| eq(t, "string"));
    let mut keys = Vec::new();
    // A huge COUNT only means "as many as you like": cap the work of one call.
    let next = scan_step(ctx, cursor, count.min(1 << 20) as usize, |k| {
        if want_strings && pat.is_none_or(|p| glob::matches(p, k, false)) {
            keys.push(Reply::Bulk(k.to_vec()));
        }
    });
    Reply::Array(vec![
        Reply::Bulk(next.to_string().into_bytes()),
        Reply::Array(keys),
    ])
}

pub fn randomkey(ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    ctx.srv
        .engine
        .random_key(ctx.s.db)
        .map(Reply::Bulk)
        .unwrap_or(Reply::Nil)
}

pub fn dbsize(ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    Reply::Int(ctx.srv.engine.len(ctx.s.db) as i64)
}

fn flush_mode_ok(a: &[&[u8]]) -> bool {
    match a.len() {
        1 => true,
        2 => eq(a[1], "async") || eq(a[1], "sync"),
        _ => false,
    }
}

pub fn flushdb(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    if !flush_mode_ok(a) {
        return Reply::err(SYNTAX);
    }
    match ctx.srv.engine.flush_db(ctx.s.db) {
        Ok(()) => Reply::OK,
        Err(e) => engine_err(e),
    }
}

pub fn flushall(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    if !flush_mode_ok(a) {
        return Reply::err(SYNTAX);
    }
    match ctx.srv.engine.flush_all() {
        Ok(()) => Reply::OK,
        Err(e) => engine_err(e),
    }
}

pub fn swapdb(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let Some(x) = parse_i64(a[1]).and_then(|v| i32::try_from(v).ok()) else {
        return Reply::err("ERR invalid first DB index");
    };
    let Some(y) = parse_i64(a[2]).and_then(|v| i32::try_from(v).ok()) else {
        return Reply::err("ERR invalid second DB index");
    };
    let n = ctx.srv.engine.databases() as i32;
    if x < 0 || x >= n || y < 0 || y >= n {
        return Reply::err(DB_RANGE);
    }
    match ctx.srv.engine.swap_db(x as usize, y as usize) {
        Ok(()) => Reply::OK,
        Err(e) => engine_err(e),
    }
}

/// Redis's encoding of a string value: `int`, `embstr` (up to 44 bytes) or `raw`.
pub fn encoding_of(v: &[u8]) -> &'static str {
    if v.len() <= 20 && parse_i64(v).is_some() {
        "int"
    } else if v.len() <= 44 {
        "embstr"
    } else {
        "raw"
    }
}

pub fn object_encoding(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    match ctx
        .srv
        .engine
        .read(ctx.s.db, a[2], |c| encoding_of(c.value))
    {
        Some(e) => Reply::bulk(e),
        None => Reply::Nil,
    }
}

fn policy(ctx: &Ctx<'_>) -> String {
    ctx.srv
        .config
        .read()
        .unwrap()
        .get("maxmemory-policy")
        .to_string()
}

/// OBJECT FREQ: the key's logarithmic access counter (LFU policies only).
pub fn object_freq(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let Some((_, freq)) = ctx.srv.engine.access_info(ctx.s.db, a[2]) else {
        return Reply::Nil;
    };
    if !policy(ctx).contains("lfu") {
        return Reply::err(
            "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.",
        );
    }
    Reply::Int(i64::from(freq))
}

/// OBJECT IDLETIME: seconds since the key was last read or written (not under LFU policies).
pub fn object_idletime(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let Some((idle, _)) = ctx.srv.engine.access_info(ctx.s.db, a[2]) else {
        return Reply::Nil;
    };
    if policy(ctx).contains("lfu") {
        return Reply::err(
            "ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.",
        );
    }
    Reply::Int(idle as i64)
}

/// OBJECT REFCOUNT: Redis shares the integers 0..9999 (refcount INT_MAX) unless an LRU/LFU
/// policy needs per-object metadata; everything else has one reference.
pub fn object_refcount(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let shared_ok = {
        let c = ctx.srv.config.read().unwrap();
        c.get("maxmemory") == "0"
            || !(c.get("maxmemory-policy").contains("lru")
                || c.get("maxmemory-policy").contains("lfu"))
    };
    match ctx.srv.engine.read(ctx.s.db, a[2], |c| {
        parse_i64(c.value).filter(|_| c.value.len() <= 20)
    }) {
        Some(Some(n)) if (0..10000).contains(&n) && shared_ok => Reply::Int(i32::MAX as i64),
        Some(_) => Reply::Int(1),
        None => Reply::Nil,
    }
}
