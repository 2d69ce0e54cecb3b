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
//! ```
//! use segkv_server::resp::{Parser, Parsed};
//! let mut p = Parser::default();
//! assert_eq!(p.next(b"PING\r\n", 1 << 20), Ok(Parsed::Command));
//! ```
#![forbid(unsafe_code)]

pub mod cmd;
pub mod config;
pub mod glob;
pub mod net;
pub mod reply;
pub mod resp;
pub mod server;

/// The Redis version segkv answers as (INFO, HELLO): the one whose behaviour it matches.
pub const REDIS_VERSION: &str = "7.0.15";
