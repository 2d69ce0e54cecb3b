//! The command table and dispatch.
//!
//! One static table drives everything: the generated metadata (`meta.rs`: name, arity, flags,
//! key positions, ACL categories, docs) joined with a handler per command here. Dispatch looks a
//! command up, checks its arity, calls the handler and keeps Redis's per-command statistics.
//! Handlers take the parsed arguments and a [`Ctx`] and return a [`Reply`]; they never touch a
//! socket, so they run the same for a client, a test or (later) a replica applying the log.

pub mod connection;
pub mod expire;
pub mod keyspace;
pub mod meta;
pub mod meta_types;
pub mod replication;
pub mod server;
pub mod string;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use segkv_engine::EngineError;

use crate::reply::Reply;
use crate::resp::parse_i64;
use crate::server::{Session, Shared};
use meta_types::Meta;

/// What a handler sees: the shared server and the calling connection's session.
pub struct Ctx<'a> {
    pub srv: &'a Shared,
    pub s: &'a mut Session,
    /// Set by SHUTDOWN: the connection layer syncs the log and exits.
    pub shutdown: bool,
}

pub type Handler = fn(&mut Ctx<'_>, &[&[u8]]) -> Reply;

/// Command flags used by dispatch.
pub const WRITE: u32 = 1;
pub const READONLY: u32 = 2;
pub const MAY_REPLICATE: u32 = 4;
pub const NOSCRIPT: u32 = 8;
pub const FAST: u32 = 16;
/// Redis's CMD_LOADING: allowed while the data set is still loading.
pub const LOADING: u32 = 32;
/// Redis's CMD_DENYOOM: may grow memory, refused past `maxmemory` when nothing can be evicted.
pub const DENYOOM: u32 = 64;

/// Per-command counters, as INFO commandstats shows them.
#[derive(Debug, Default)]
pub struct CmdStats {
    pub calls: AtomicU64,
    pub usec: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
}

/// One command or subcommand, resolved.
#[derive(Debug)]
pub struct Command {
    pub meta: &'static Meta,
    pub handler: Option<Handler>,
    pub flags: u32,
    /// Index in [`Table::all`].
    pub id: usize,
    /// Subcommands by lower-case name (without the parent).
    pub subs: HashMap<Vec<u8>, usize>,
    pub stats: CmdStats,
}

/// The command table.
#[derive(Debug)]
pub struct Table {
    /// Every command and subcommand; ids index this.
    pub all: Vec<Command>,
    /// Top-level commands by lower-case name.
    by_name: HashMap<Vec<u8>, usize>,
    /// Top-level ids, in table order.
    pub top: Vec<usize>,
}

fn handler_for(name: &str) -> Option<Handler> {
    use connection as c;
    use expire as e;
    use keyspace as k;
    use server as v;
    use string as s;
    Some(match name {
        "get" => s::get,
        "set" => s::set,
        "setnx" => s::setnx,
        "setex" => s::setex,
        "psetex" => s::psetex,
        "getset" => s::getset,
        "getdel" => s::getdel,
        "getex" => s::getex,
        "mget" => s::mget,
        "mset" => s::mset,
        "msetnx" => s::msetnx,
        "append" => s::append,
        "strlen" => s::strlen,
        "getrange" | "substr" => s::getrange,
        "setrange" => s::setrange,
        "incr" => s::incr,
        "decr" => s::decr,
        "incrby" => s::incrby,
        "decrby" => s::decrby,
        "incrbyfloat" => s::incrbyfloat,
        "del" | "unlink" => k::del,
        "exists" => k::exists,
        "type" => k::type_,
        "rename" => k::rename,
        "renamenx" => k::renamenx,
        "copy" => k::copy,
        "move" => k::move_,
        "keys" => k::keys,
        "scan" => k::scan,
        "randomkey" => k::randomkey,
        "dbsize" => k::dbsize,
        "flushdb" => k::flushdb,
        "flushall" => k::flushall,
        "swapdb" => k::swapdb,
        "touch" => k::touch,
        "object|encoding" => k::object_encoding,
        "object|freq" => k::object_freq,
        "object|idletime" => k::object_idletime,
        "object|refcount" => k::object_refcount,
        "expire" => e::expire,
        "pexpire" => e::pexpire,
        "expireat" => e::expireat,
        "pexpireat" => e::pexpireat,
        "ttl" => e::ttl,
        "pttl" => e::pttl,
        "expiretime" => e::expiretime,
        "pexpiretime" => e::pexpiretime,
        "persist" => e::persist,
        "ping" => c::ping,
        "echo" => c::echo,
        "quit" => c::quit,
        "select" => c::select,
        "hello" => c::hello,
        "reset" => c::reset,
        "client|id" => c::client_id,
        "client|setname" => c::client_setname,
        "client|getname" => c::client_getname,
        "client|list" => c::client_list,
        "client|info" => c::client_info,
        "client|kill" => c::client_kill,
        "client|pause" => c::client_pause,
        "client|unpause" => c::client_unpause,
        "client|no-evict" => c::client_no_evict,
        "client|no-touch" => c::client_no_touch,
        "client|reply" => c::client_reply,
        "command" => v::command,
        "command|count" => v::command_count,
        "command|info" => v::command_info,
        "command|docs" => v::command_docs,
        "command|list" => v::command_list,
        "command|getkeys" => v::command_getkeys,
        "info" => v::info,
        "config|get" => v::config_get,
        "config|set" => v::config_set,
        "config|resetstat" => v::config_resetstat,
        "config|rewrite" => v::config_rewrite,
        "time" => v::time,
        "lastsave" => v::lastsave,
        "save" => v::save,
        "bgsave" => v::bgsave,
        "shutdown" => v::shutdown,
        "function|flush" => v::function_flush,
        "debug" => v::debug,
        "replicaof" | "slaveof" => replication::replicaof,
        "role" => replication::role,
        "wait" => replication::wait,
        "psync" => replication::psync,
        "sync" => replication::sync,
        "replconf" => replication::replconf,
        n if n.ends_with("|help") => help,
        _ => return None,
    })
}

fn flags_of(m: &Meta) -> u32 {
    m.flags.iter().fold(0, |acc, f| {
        acc | match *f {
            "write" => WRITE,
            "readonly" => READONLY,
            "may_replicate" => MAY_REPLICATE,
            "noscript" => NOSCRIPT,
            "fast" => FAST,
            "loading" => LOADING,
            "denyoom" => DENYOOM,
            _ => 0,
        }
    })
}

/// CLIENT NO-TOUCH arrived in Redis 7.2, after the 7.0 metadata the table is generated from;
/// its metadata is Redis 7.2's. segkv keeps no access times yet, so it only records the mode.
static CLIENT_NO_TOUCH: Meta = Meta {
    name: "client|no-touch",
    arity: 3,
    flags: &["noscript", "loading", "stale"],
    first_key: 0,
    last_key: 0,
    step: 0,
    acl: &["@slow", "@connection"],
    tips: meta_types::M::Set(&[]),
    key_specs: meta_types::M::Set(&[]),
    docs: meta_types::M::Null,
    subcommands: &[],
};

impl Table {
    pub fn build() -> Table {
        let mut t = Table {
            all: Vec::new(),
            by_name: HashMap::new(),
            top: Vec::new(),
        };
        for m in meta::META {
            let id = t.add(m);
            let extra: &[&'static Meta] = if m.name == "client" {
                &[&CLIENT_NO_TOUCH]
            } else {
                &[]
            };
            for sm in m.subcommands.iter().chain(extra.iter().copied()) {
                let sid = t.add(sm);
                let sub = sm.name.split_once('|').map(|(_, s)| s).unwrap_or(sm.name);
                t.all[id].subs.insert(sub.as_bytes().to_vec(), sid);
            }
            t.by_name.insert(m.name.as_bytes().to_vec(), id);
            t.top.push(id);
        }
        t
    }

    fn add(&mut self, m: &'static Meta) -> usize {
        let id = self.all.len();
        self.all.push(Command {
            meta: m,
            handler: handler_for(m.name),
            flags: flags_of(m),
            id,
            subs: HashMap::new(),
            stats: CmdStats::default(),
        });
        id
    }

    /// A top-level command by name, any case.
    pub fn lookup(&self, name: &[u8]) -> Option<&Command> {
        let mut buf = [0u8; 32];
        if name.len() > buf.len() {
            return None;
        }
        for (d, s) in buf.iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        self.by_name.get(&buf[..name.len()]).map(|&i| &self.all[i])
    }

    /// The command (or subcommand) `args` names, as Redis's `lookupCommand`.
    pub fn resolve(&self, args: &[&[u8]]) -> Option<&Command> {
        let c = self.lookup(args[0])?;
        if c.subs.is_empty() || args.len() < 2 {
            return Some(c);
        }
        let sub = args[1].to_ascii_lowercase();
        c.subs.get(&sub).map(|&i| &self.all[i])
    }
}

/// Redis's `%.128s`-style truncation of a C string argument.
fn c_str(b: &[u8], max: usize) -> String {
    let b = match b.iter().position(|&c| c == 0) {
        Some(z) => &b[..z],
        None => b,
    };
    String::from_utf8_lossy(&b[..b.len().min(max)]).into_owned()
}

/// Outcome of [`dispatch`] besides the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The command may have written (hold the reply for durability under appendfsync always).
    pub wrote: bool,
    /// Close the connection without a reply (cross-protocol attack guard).
    pub drop_connection: bool,
}

/// Looks up, checks and runs one command.
pub fn dispatch(ctx: &mut Ctx<'_>, args: &[&[u8]]) -> (Reply, Outcome) {
    let srv = ctx.srv;
    let mut out = Outcome::default();
    let name = args[0];
    if name.eq_ignore_ascii_case(b"host:") || name.eq_ignore_ascii_case(b"post") {
        out.drop_connection = true;
        return (Reply::None, out);
    }
    let Some(cmd) = srv.table.resolve(args) else {
        let reply = match srv.table.lookup(name) {
            Some(parent) => Reply::error(format!(
                "ERR unknown subcommand '{}'. Try {} HELP.",
                c_str(args[1], 128),
                parent.meta.name.to_ascii_uppercase()
            )),
            None => {
                let mut rest = String::new();
                for a in &args[1..] {
                    if rest.len() >= 128 {
                        break;
                    }
                    let room = 128 - rest.len();
                    rest.push_str(&format!("'{}' ", c_str(a, room)));
                }
                Reply::error(format!(
                    "ERR unknown command '{}', with args beginning with: {rest}",
                    c_str(name, 128)
                ))
            }
        };
        return (reply, out);
    };
    let argc = args.len() as i64;
    let arity = cmd.meta.arity;
    if (arity > 0 && argc != arity) || argc < -arity {
        cmd.stats.rejected.fetch_add(1, Relaxed);
        return (
            Reply::error(format!(
                "ERR wrong number of arguments for '{}' command",
                cmd.meta.name
            )),
            out,
        );
    }
    let Some(handler) = cmd.handler else {
        // A container command called with a bad subcommand count is caught by arity above.
        return (
            Reply::error(format!(
                "ERR wrong number of arguments for '{}' command",
                cmd.meta.name
            )),
            out,
        );
    };
    if cmd.flags & LOADING == 0 && srv.engine.loaded().is_none() {
        cmd.stats.rejected.fetch_add(1, Relaxed);
        return (Reply::err(LOADING_ERR), out);
    }
    if cmd.flags & DENYOOM != 0 && !crate::memory::make_room(srv, &srv.engine) {
        cmd.stats.rejected.fetch_add(1, Relaxed);
        return (Reply::err(crate::memory::OOM_ERR), out);
    }
    if cmd.flags & WRITE != 0
        && let Some(refusal) = replication::refuse_write(srv)
    {
        cmd.stats.rejected.fetch_add(1, Relaxed);
        return (refusal, out);
    }
    ctx.s.info.last_cmd.store(cmd.id, Relaxed);
    let start = Instant::now();
    let reply = handler(ctx, args);
    let usec = start.elapsed().as_micros() as u64;
    cmd.stats.calls.fetch_add(1, Relaxed);
    cmd.stats.usec.fetch_add(usec, Relaxed);
    if reply.is_error() {
        cmd.stats.failed.fetch_add(1, Relaxed);
    }
    out.wrote = cmd.flags & WRITE != 0;
    (reply, out)
}

/// Whether a pause in `mode` holds this command back (as Redis: all commands, or writes).
pub fn paused_by(srv: &Shared, args: &[&[u8]], mode: crate::server::PauseMode) -> bool {
    match mode {
        crate::server::PauseMode::All => true,
        crate::server::PauseMode::Write => srv
            .table
            .resolve(args)
            .is_some_and(|c| c.flags & (WRITE | MAY_REPLICATE) != 0),
    }
}

/// `<COMMAND> HELP`.
fn help(_ctx: &mut Ctx<'_>, args: &[&[u8]]) -> Reply {
    let name = String::from_utf8_lossy(args[0]).to_ascii_lowercase();
    let lines = meta::HELP
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, l)| *l)
        .unwrap_or(&[]);
    Reply::Array(
        lines
            .iter()
            .map(|l| Reply::Status(std::borrow::Cow::Borrowed(l)))
            .collect(),
    )
}

// ---- shared helpers for handlers ----

pub const SYNTAX: &str = "ERR syntax error";
pub const NOT_INT: &str = "ERR value is not an integer or out of range";
pub const NOT_FLOAT: &str = "ERR value is not a valid float";
pub const DB_RANGE: &str = "ERR DB index is out of range";
pub const LOADING_ERR: &str = "LOADING Redis is loading the dataset in memory";

pub fn int_arg(a: &[u8]) -> Result<i64, Reply> {
    parse_i64(a).ok_or_else(|| Reply::err(NOT_INT))
}

/// `getIntFromObjectOrReply`.
pub fn i32_arg(a: &[u8]) -> Result<i32, Reply> {
    parse_i64(a)
        .and_then(|v| i32::try_from(v).ok())
        .ok_or_else(|| Reply::err(NOT_INT))
}

/// An engine failure as a reply. A failed log refuses writes the way Redis refuses them after
/// an AOF write error (`-MISCONF`); anything else is `-ERR` with the engine's text.
pub fn engine_err(e: EngineError) -> Reply {
    match e {
        EngineError::Log(segkv_log::LogError::Failed(why)) => {
            Reply::error(format!("MISCONF Errors writing to the AOF file: {why}"))
        }
        // A write that raced REPLICAOF: refused as dispatch refuses it on a replica.
        EngineError::ReadOnly => {
            Reply::err("READONLY You can't write against a read only replica.")
        }
        e => Reply::error(format!("ERR {e}")),
    }
}

pub fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// Unwraps a `Result<_, Reply>` or returns the reply from the handler.
#[macro_export]
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

#[cfg(test)]
mod tests {
    //! Handlers run without any socket: a session, the shared state and argument slices.
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::server::{ClientInfo, Session, Shared};

    struct Harness {
        srv: Shared,
        s: Session,
        _dir: tempfile::TempDir,
    }

    impl Harness {
        fn new() -> Harness {
            let dir = tempfile::tempdir().unwrap();
            let engine =
                segkv_engine::Engine::open(segkv_engine::Config::new(dir.path().join("data")))
                    .unwrap();
            let srv = Shared::new(engine, Config::default());
            let info = Arc::new(ClientInfo::new(
                1,
                "127.0.0.1:1".into(),
                "127.0.0.1:2".into(),
                3,
                0,
            ));
            Harness {
                srv,
                s: Session::new(info, true),
                _dir: dir,
            }
        }

        /// Runs a command given as words and returns its RESP2 encoding.
        fn run(&mut self, line: &str) -> String {
            let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
            let mut ctx = Ctx {
                srv: &self.srv,
                s: &mut self.s,
                shutdown: false,
            };
            let (reply, _) = dispatch(&mut ctx, &args);
            let mut out = Vec::new();
            reply.encode(2, &mut out);
            String::from_utf8(out).unwrap()
        }
    }

    /// Before the engine is open, every command with Redis's `loading` flag runs (and must not
    /// need the engine: INFO of every section included); every other one gets -LOADING.
    #[test]
    fn while_loading_only_commands_with_the_loading_flag_run() {
        let srv = Shared::loading(Config::default(), None);
        let info = Arc::new(ClientInfo::new(1, "a:1".into(), "b:2".into(), 3, 0));
        let mut s = Session::new(info, true);
        let mut run = |line: &str| {
            let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
            let mut ctx = Ctx {
                srv: &srv,
                s: &mut s,
                shutdown: false,
            };
            let (reply, _) = dispatch(&mut ctx, &args);
            let mut out = Vec::new();
            reply.encode(2, &mut out);
            String::from_utf8(out).unwrap()
        };
        let loading = format!("-{LOADING_ERR}\r\n");
        for refused in [
            "GET k",
            "SET k v",
            "PING",
            "DBSIZE",
            "OBJECT ENCODING k",
            "SAVE",
        ] {
            assert_eq!(run(refused), loading, "{refused}");
        }
        assert_eq!(run("SELECT 15"), "+OK\r\n");
        assert_eq!(run("SELECT 16"), "-ERR DB index is out of range\r\n");
        assert!(run("INFO everything").contains("loading:1\r\n"));
        assert!(run("CONFIG GET maxclients").contains("10000"));
        assert!(run("CLIENT LIST").starts_with('$'));
        assert!(run("COMMAND COUNT").starts_with(':'));
        assert!(run("GET").starts_with("-ERR wrong number of arguments"));
        let stats = srv
            .table
            .lookup(b"get")
            .unwrap()
            .stats
            .rejected
            .load(Relaxed);
        assert_eq!(stats, 2, "rejected calls are counted as Redis counts them");
    }

    #[test]
    fn dispatch_checks_arity_and_names() {
        let mut h = Harness::new();
        assert_eq!(
            h.run("get"),
            "-ERR wrong number of arguments for 'get' command\r\n"
        );
        assert_eq!(h.run("GeT k"), "$-1\r\n");
        assert_eq!(
            h.run("foo a b"),
            "-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n"
        );
        assert_eq!(
            h.run("client foo"),
            "-ERR unknown subcommand 'foo'. Try CLIENT HELP.\r\n"
        );
        assert_eq!(
            h.run("config get"),
            "-ERR wrong number of arguments for 'config|get' command\r\n"
        );
    }

    #[test]
    fn string_handlers_without_tcp() {
        let mut h = Harness::new();
        assert_eq!(h.run("SET k 10"), "+OK\r\n");
        assert_eq!(h.run("INCRBY k 5"), ":15\r\n");
        assert_eq!(h.run("APPEND k x"), ":3\r\n");
        assert_eq!(
            h.run("INCR k"),
            "-ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(h.run("GETRANGE k 0 1"), "$2\r\n15\r\n");
        assert_eq!(h.run("SELECT 2"), "+OK\r\n");
        assert_eq!(h.run("GET k"), "$-1\r\n");
        assert_eq!(h.run("SELECT 0"), "+OK\r\n");
        assert_eq!(h.run("RENAME k j"), "+OK\r\n");
        assert_eq!(h.run("MGET k j"), "*2\r\n$-1\r\n$3\r\n15x\r\n");
        assert_eq!(h.run("EXPIRE j 100"), ":1\r\n");
        assert_eq!(h.run("TTL j"), ":100\r\n");
    }

    #[test]
    fn stats_count_calls_rejections_and_failures() {
        let mut h = Harness::new();
        h.run("GET a");
        h.run("GET");
        h.run("INCRBY a x");
        let get = h.srv.table.lookup(b"get").unwrap();
        assert_eq!(get.stats.calls.load(Relaxed), 1);
        assert_eq!(get.stats.rejected.load(Relaxed), 1);
        let incrby = h.srv.table.lookup(b"incrby").unwrap();
        assert_eq!(incrby.stats.failed.load(Relaxed), 1);
    }

    #[test]
    fn every_command_in_the_table_has_a_handler() {
        let t = Table::build();
        for c in &t.all {
            assert!(
                c.handler.is_some() || !c.subs.is_empty(),
                "{} has no handler",
                c.meta.name
            );
        }
    }
}
