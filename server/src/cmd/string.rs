//! Strings and counters: GET SET SETNX SETEX PSETEX GETSET GETDEL GETEX MGET MSET MSETNX APPEND
//! STRLEN GETRANGE SUBSTR SETRANGE INCR DECR INCRBY DECRBY INCRBYFLOAT.

use std::sync::atomic::Ordering::Relaxed;

use segkv_engine::{Action, Cond, SetExpiry, SetOptions};

use super::{Ctx, NOT_INT, SYNTAX, engine_err, eq, int_arg};
use crate::reply::Reply;
use crate::resp::parse_i64;
use crate::tri;

pub fn get(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let v = ctx.srv.engine.get(ctx.s.db, a[1]);
    ctx.srv.hit(v.is_some());
    match v {
        Some(v) => Reply::Bulk(v),
        None => Reply::Nil,
    }
}

#[derive(Default)]
struct SetArgs {
    nx: bool,
    xx: bool,
    get: bool,
    keepttl: bool,
    persist: bool,
    /// (absolute flag, milliseconds flag, raw value)
    expire: Option<(bool, bool, usize)>,
}

/// Redis's `parseExtendedStringArgumentsOrReply`, for SET (`is_set`) and GETEX.
fn parse_ext(a: &[&[u8]], from: usize, is_set: bool) -> Result<SetArgs, Reply> {
    let mut o = SetArgs::default();
    let mut j = from;
    while j < a.len() {
        let opt = a[j];
        let has_next = j + 1 < a.len();
        let ttl_set = o.expire.is_some();
        if eq(opt, "nx") && !o.xx && is_set {
            o.nx = true;
        } else if eq(opt, "xx") && !o.nx && is_set {
            o.xx = true;
        } else if eq(opt, "get") && is_set {
            o.get = true;
        } else if eq(opt, "keepttl") && !o.persist && !ttl_set && is_set {
            o.keepttl = true;
        } else if eq(opt, "persist") && !is_set && !ttl_set && !o.keepttl {
            o.persist = true;
        } else if has_next && !o.keepttl && !o.persist {
            let kind = if eq(opt, "ex") {
                (false, false)
            } else if eq(opt, "px") {
                (false, true)
            } else if eq(opt, "exat") {
                (true, false)
            } else if eq(opt, "pxat") {
                (true, true)
            } else {
                return Err(Reply::err(SYNTAX));
            };
            // Only the same kind may repeat.
            if let Some((abs, ms, _)) = o.expire
                && (abs, ms) != kind
            {
                return Err(Reply::err(SYNTAX));
            }
            o.expire = Some((kind.0, kind.1, j + 1));
            j += 1;
        } else {
            return Err(Reply::err(SYNTAX));
        }
        j += 1;
    }
    Ok(o)
}

fn expire_error(name: &str) -> Reply {
    Reply::error(format!("ERR invalid expire time in '{name}' command"))
}

/// Redis's `getExpireMillisecondsOrReply`: the absolute expiry in unix ms.
fn expire_ms(ctx: &Ctx<'_>, raw: &[u8], abs: bool, ms: bool, name: &str) -> Result<u64, Reply> {
    let mut v = int_arg(raw)?;
    if v <= 0 || (!ms && v > i64::MAX / 1000) {
        return Err(expire_error(name));
    }
    if !ms {
        v *= 1000;
    }
    if !abs {
        v = v
            .checked_add(ctx.srv.engine.now_ms() as i64)
            .ok_or_else(|| expire_error(name))?;
    }
    Ok(v as u64)
}

fn do_set(ctx: &mut Ctx<'_>, key: &[u8], val: &[u8], o: &SetArgs, at: Option<u64>) -> Reply {
    let opts = SetOptions {
        cond: if o.nx {
            Cond::IfAbsent
        } else if o.xx {
            Cond::IfPresent
        } else {
            Cond::Always
        },
        expiry: match at {
            Some(t) => SetExpiry::At(t),
            None if o.keepttl => SetExpiry::Keep,
            None => SetExpiry::Persist,
        },
        get_old: o.get,
    };
    match ctx.srv.engine.set(ctx.s.db, key, val, opts) {
        Ok(r) if o.get => r.old.map(Reply::Bulk).unwrap_or(Reply::Nil),
        Ok(r) if r.applied => Reply::OK,
        Ok(_) => Reply::Nil,
        Err(e) => engine_err(e),
    }
}

pub fn set(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let o = tri!(parse_ext(a, 3, true));
    let at = match o.expire {
        Some((abs, ms, i)) => Some(tri!(expire_ms(ctx, a[i], abs, ms, "set"))),
        None => None,
    };
    do_set(ctx, a[1], a[2], &o, at)
}

pub fn setnx(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let o = SetArgs {
        nx: true,
        ..Default::default()
    };
    match do_set(ctx, a[1], a[2], &o, None) {
        Reply::Nil => Reply::Int(0),
        Reply::Status(_) => Reply::Int(1),
        r => r,
    }
}

pub fn setex(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let at = tri!(expire_ms(ctx, a[2], false, false, "setex"));
    do_set(ctx, a[1], a[3], &SetArgs::default(), Some(at))
}

pub fn psetex(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let at = tri!(expire_ms(ctx, a[2], false, true, "psetex"));
    do_set(ctx, a[1], a[3], &SetArgs::default(), Some(at))
}

pub fn getset(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    do_set(
        ctx,
        a[1],
        a[2],
        &SetArgs {
            get: true,
            ..Default::default()
        },
        None,
    )
}

pub fn getdel(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let r = ctx.srv.engine.update(ctx.s.db, a[1], |cur| match cur {
        Some(c) => (Action::Delete, Some(c.value.to_vec())),
        None => (Action::Keep, None),
    });
    match r {
        Ok(Some(v)) => Reply::Bulk(v),
        Ok(None) => Reply::Nil,
        Err(e) => engine_err(e),
    }
}

pub fn getex(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let o = tri!(parse_ext(a, 2, false));
    let at = match o.expire {
        Some((abs, ms, i)) => Some(tri!(expire_ms(ctx, a[i], abs, ms, "getex"))),
        None => None,
    };
    let now = ctx.srv.engine.now_ms();
    let persist = o.persist;
    let r = ctx.srv.engine.update(ctx.s.db, a[1], |cur| {
        let Some(c) = cur else {
            return (Action::Keep, None);
        };
        let v = c.value.to_vec();
        let act = match at {
            Some(t) if t <= now => Action::Delete,
            Some(t) => Action::Put {
                value: v.clone(),
                expire_at: Some(t),
            },
            None if persist && c.expire_at.is_some() => Action::Put {
                value: v.clone(),
                expire_at: None,
            },
            None => Action::Keep,
        };
        (act, Some(v))
    });
    match r {
        Ok(Some(v)) => {
            ctx.srv.hit(true);
            Reply::Bulk(v)
        }
        Ok(None) => {
            ctx.srv.hit(false);
            Reply::Nil
        }
        Err(e) => engine_err(e),
    }
}

pub fn mget(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let db = ctx.s.db;
    let keys: Vec<(usize, &[u8])> = a[1..].iter().map(|k| (db, *k)).collect();
    let _g = ctx.srv.locks.lock(&keys);
    Reply::Array(
        a[1..]
            .iter()
            .map(|k| {
                let v = ctx.srv.engine.get(db, k);
                ctx.srv.hit(v.is_some());
                v.map(Reply::Bulk).unwrap_or(Reply::Nil)
            })
            .collect(),
    )
}

fn mset_generic(ctx: &mut Ctx<'_>, a: &[&[u8]], nx: bool) -> Reply {
    if a.len().is_multiple_of(2) {
        return Reply::error(format!(
            "ERR wrong number of arguments for '{}' command",
            if nx { "msetnx" } else { "mset" }
        ));
    }
    let db = ctx.s.db;
    let keys: Vec<(usize, &[u8])> = a[1..].iter().step_by(2).map(|k| (db, *k)).collect();
    let _g = ctx.srv.locks.lock(&keys);
    if nx && keys.iter().any(|(_, k)| ctx.srv.engine.exists(db, k)) {
        return Reply::Int(0);
    }
    for kv in a[1..].chunks(2) {
        if let Err(e) = ctx.srv.engine.set(db, kv[0], kv[1], SetOptions::default()) {
            return engine_err(e);
        }
    }
    if nx { Reply::Int(1) } else { Reply::OK }
}

pub fn mset(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    mset_generic(ctx, a, false)
}

pub fn msetnx(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    mset_generic(ctx, a, true)
}

const TOO_BIG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

pub fn append(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let max = ctx.srv.limits.proto_max_bulk_len.load(Relaxed);
    let add = a[2];
    let r = ctx.srv.engine.update(ctx.s.db, a[1], |cur| match cur {
        None => (
            Action::Put {
                value: add.to_vec(),
                expire_at: None,
            },
            Ok(add.len()),
        ),
        Some(c) => {
            let len = c.value.len() + add.len();
            if len as u64 > max {
                return (Action::Keep, Err(()));
            }
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(c.value);
            v.extend_from_slice(add);
            (
                Action::Put {
                    value: v,
                    expire_at: c.expire_at,
                },
                Ok(len),
            )
        }
    });
    match r {
        Ok(Ok(n)) => Reply::Int(n as i64),
        Ok(Err(())) => Reply::err(TOO_BIG),
        Err(e) => engine_err(e),
    }
}

pub fn strlen(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    Reply::Int(
        ctx.srv
            .engine
            .read(ctx.s.db, a[1], |c| c.value.len())
            .unwrap_or(0) as i64,
    )
}

pub fn getrange(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let mut start = tri!(int_arg(a[2]));
    let mut end = tri!(int_arg(a[3]));
    let r = ctx.srv.engine.read(ctx.s.db, a[1], |c| {
        let len = c.value.len() as i64;
        if start < 0 && end < 0 && start > end {
            return Vec::new();
        }
        if start < 0 {
            start += len;
        }
        if end < 0 {
            end += len;
        }
        start = start.max(0);
        end = end.max(0);
        if end >= len {
            end = len - 1;
        }
        if start > end || len == 0 {
            Vec::new()
        } else {
            c.value[start as usize..=end as usize].to_vec()
        }
    });
    Reply::Bulk(r.unwrap_or_default())
}

pub fn setrange(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let offset = tri!(int_arg(a[2]));
    if offset < 0 {
        return Reply::err("ERR offset is out of range");
    }
    let add = a[3];
    let max = ctx.srv.limits.proto_max_bulk_len.load(Relaxed);
    let too_big = !add.is_empty() && (offset as u64).saturating_add(add.len() as u64) > max;
    let off = offset as usize;
    let r = ctx.srv.engine.update(ctx.s.db, a[1], |cur| {
        let cur_len = cur.map(|c| c.value.len()).unwrap_or(0);
        if add.is_empty() {
            return (Action::Keep, Ok(cur_len));
        }
        if too_big {
            return (Action::Keep, Err(()));
        }
        let mut v = cur.map(|c| c.value.to_vec()).unwrap_or_default();
        if v.len() < off + add.len() {
            v.resize(off + add.len(), 0);
        }
        v[off..off + add.len()].copy_from_slice(add);
        let len = v.len();
        (
            Action::Put {
                value: v,
                expire_at: cur.and_then(|c| c.expire_at),
            },
            Ok(len),
        )
    });
    match r {
        Ok(Ok(n)) => Reply::Int(n as i64),
        Ok(Err(())) => Reply::err(TOO_BIG),
        Err(e) => engine_err(e),
    }
}

fn incr_by(ctx: &mut Ctx<'_>, key: &[u8], by: i64) -> Reply {
    let r = ctx.srv.engine.update(ctx.s.db, key, |cur| {
        let old = match cur {
            None => 0,
            Some(c) => match parse_i64(c.value) {
                Some(v) => v,
                None => return (Action::Keep, Err(NOT_INT)),
            },
        };
        match old.checked_add(by) {
            None => (
                Action::Keep,
                Err("ERR increment or decrement would overflow"),
            ),
            Some(n) => (
                Action::Put {
                    value: n.to_string().into_bytes(),
                    expire_at: cur.and_then(|c| c.expire_at),
                },
                Ok(n),
            ),
        }
    });
    match r {
        Ok(Ok(n)) => Reply::Int(n),
        Ok(Err(t)) => Reply::err(t),
        Err(e) => engine_err(e),
    }
}

pub fn incr(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    incr_by(ctx, a[1], 1)
}

pub fn decr(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    incr_by(ctx, a[1], -1)
}

pub fn incrby(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let by = tri!(int_arg(a[2]));
    incr_by(ctx, a[1], by)
}

pub fn decrby(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let by = tri!(int_arg(a[2]));
    if by == i64::MIN {
        return Reply::err("ERR decrement would overflow");
    }
    incr_by(ctx, a[1], -by)
}

pub fn incrbyfloat(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let by = a[2];
    let r = ctx.srv.engine.update(ctx.s.db, a[1], |cur| {
        let old = cur.map(|c| c.value).unwrap_or(b"0");
        match crate::f80::incr_by_float(old, by) {
            Ok(s) => (
                Action::Put {
                    value: s.clone().into_bytes(),
                    expire_at: cur.and_then(|c| c.expire_at),
                },
                Ok(s),
            ),
            Err(t) => (Action::Keep, Err(t)),
        }
    });
    match r {
        Ok(Ok(s)) => Reply::Bulk(s.into_bytes()),
        Ok(Err(t)) => Reply::err(t),
        Err(e) => engine_err(e),
    }
}
