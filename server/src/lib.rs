//! segkv-server: the Redis-compatible RESP server on top of `segkv-engine`.
//!
//! Layers, from the wire in:
//! - [`resp`]: the request parser (RESP2 multibulk and inline, incremental, zero-copy);
//! - [`net`]: the acceptor and the worker event loops (one mio loop per thread), backpressure and
//!   durability holds;
//! - [`cmd`]: the static command table, dispatch and the handlers, grouped by family; handlers
//!   return [`reply::Reply`] values and never touch sockets;
//! - [`config`]: Redis-named configuration (file, `--name value`, CONFIG GET/SET/REWRITE);
//! - [`server`]: state shared by the workers (engine, config, clients, stats, lock table).
//!
//! # Atomicity of multi-key commands
//!
//! Every single-key command is one engine call (`get`, `set`, `update`, `expire`, ...), so it is
//! atomic on its own, read-modify-writes included (the engine retries the closure on races).
//! Commands over several keys compose engine calls under a process-wide table of 1024 striped
//! mutexes ([`server::LockTable`]), locked in ascending stripe order:
//!
//! - MSET, MSETNX, MGET, DEL / UNLINK of several keys, RENAME, RENAMENX, COPY, MOVE take the
//!   stripes of all their keys, so they are atomic with respect to each other: an MGET never
//!   sees half of an MSET or of a DEL, two RENAMEs of the same key serialize, MSETNX's
//!   existence check and its writes are one step
//!   against other multi-key commands.
//! - Single-key commands take no stripe, so they can interleave with a multi-key command, with
//!   these outcomes: RENAME / RENAMENX / MOVE take the source out in one atomic engine step
//!   (`update` returning `Delete`) and then write the destination, so a concurrent write to the
//!   source is never lost (it lands before, and moves, or after, and recreates the source), but
//!   a reader may briefly see the value under neither name; if a concurrent write creates the
//!   destination of a RENAMENX / MOVE in that instant, the source is put back and the command
//!   answers 0. COPY reads then writes. A SET between MSETNX's check and its writes is
//!   overwritten.
//! - FLUSHDB, FLUSHALL and SWAPDB are single engine calls.
//!
//! ```
//! use segkv_server::resp::{Parser, Parsed};
//! let mut p = Parser::default();
//! assert_eq!(p.next(b"PING\r\n", 1 << 20), Ok(Parsed::Command));
//! ```
#![forbid(unsafe_code)]

pub mod cmd;
pub mod config;
pub mod f80;
#[doc(hidden)]
pub mod fuzzing;
pub mod glob;
pub mod memory;
pub mod net;
pub mod reply;
pub mod resp;
pub mod server;

/// The Redis version segkv answers as (INFO, HELLO): the one whose behaviour it matches.
pub const REDIS_VERSION: &str = "7.0.15";
