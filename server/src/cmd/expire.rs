//! TTL: EXPIRE PEXPIRE EXPIREAT PEXPIREAT (NX XX GT LT) TTL PTTL EXPIRETIME PEXPIRETIME PERSIST.

use segkv_engine::ExpireCond;

use super::{Ctx, engine_err, eq, int_arg};
use crate::reply::Reply;
use crate::tri;

/// Redis's `parseExtendedExpireArgumentsOrReply`.
fn parse_cond(a: &[&[u8]]) -> Result<ExpireCond, Reply> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &a[3..] {
        if eq(opt, "nx") {
            nx = true;
        } else if eq(opt, "xx") {
            xx = true;
        } else if eq(opt, "gt") {
            gt = true;
        } else if eq(opt, "lt") {
            lt = true;
        } else {
            return Err(Reply::error(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(opt)
            )));
        }
    }
    if nx && (xx || gt || lt) {
        return Err(Reply::err(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(Reply::err(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    Ok(match (nx, xx, gt, lt) {
        (true, ..) => ExpireCond::Nx,
        (_, _, true, _) => ExpireCond::Gt,
        (_, _, _, true) => ExpireCond::Lt,
        (_, true, ..) => ExpireCond::Xx,
        _ => ExpireCond::Always,
    })
}

fn expire_generic(
    ctx: &mut Ctx<'_>,
    a: &[&[u8]],
    relative: bool,
    seconds: bool,
    name: &str,
) -> Reply {
    let cond = tri!(parse_cond(a));
    let mut when = tri!(int_arg(a[2]));
    let bad = || Reply::error(format!("ERR invalid expire time in '{name}' command"));
    if seconds {
        if !(i64::MIN / 1000..=i64::MAX / 1000).contains(&when) {
            return bad();
        }
        when *= 1000;
    }
    let base = if relative {
        ctx.srv.engine.now_ms() as i64
    } else {
        0
    };
    if when > i64::MAX - base {
        return bad();
    }
    when += base;
    // XX combined with GT/LT: both must hold. The engine's GT/LT already fail on a key without
    // a TTL for GT; LT on a persistent key must also fail under XX.
    if cond == ExpireCond::Lt
        && a[3..].iter().any(|o| eq(o, "xx"))
        && ctx
            .srv
            .engine
            .read(ctx.s.db, a[1], |c| c.expire_at.is_none())
            .unwrap_or(true)
    {
        return Reply::Int(0);
    }
    match ctx
        .srv
        .engine
        .expire(ctx.s.db, a[1], Some(when.max(0) as u64), cond)
    {
        Ok(done) => Reply::Int(done as i64),
        Err(e) => engine_err(e),
    }
}

pub fn expire(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    expire_generic(ctx, a, true, true, "expire")
}

pub fn pexpire(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    expire_generic(ctx, a, true, false, "pexpire")
}

pub fn expireat(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    expire_generic(ctx, a, false, true, "expireat")
}

pub fn pexpireat(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    expire_generic(ctx, a, false, false, "pexpireat")
}

fn ttl_generic(ctx: &mut Ctx<'_>, key: &[u8], ms: bool, absolute: bool) -> Reply {
    let now = ctx.srv.engine.now_ms() as i64;
    match ctx.srv.engine.read(ctx.s.db, key, |c| c.expire_at) {
        None => Reply::Int(-2),
        Some(None) => Reply::Int(-1),
        Some(Some(at)) => {
            let mut t = if absolute {
                at as i64
            } else {
                (at as i64 - now).max(0)
            };
            if !ms {
                t = (t + 500) / 1000;
            }
            Reply::Int(t)
        }
    }
}

pub fn ttl(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    ttl_generic(ctx, a[1], false, false)
}

pub fn pttl(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    ttl_generic(ctx, a[1], true, false)
}

pub fn expiretime(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    ttl_generic(ctx, a[1], false, true)
}

pub fn pexpiretime(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    ttl_generic(ctx, a[1], true, true)
}

pub fn persist(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    match ctx.srv.engine.expire(ctx.s.db, a[1], None, ExpireCond::Xx) {
        Ok(done) => Reply::Int(done as i64),
        Err(e) => engine_err(e),
    }
}
