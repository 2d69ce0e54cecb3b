//! segkv-engine: the store. A lock-free hash index maps each key to the address of its newest
//! record in the log (`segkv-log`); reads are served from the log in place.
//!
//! ```no_run
//! use segkv_engine::{Engine, Config, SetOptions};
//! let engine = Engine::open(Config::new("./data")).unwrap();
//! engine.set(0, b"greeting", b"hello", SetOptions::default()).unwrap();
//! assert_eq!(engine.get(0, b"greeting").as_deref(), Some(&b"hello"[..]));
//! ```

mod api;
mod gate;
mod index;
mod store;

pub use api::*;
pub use store::{Engine, MAX_DATABASES, RecoveryInfo};
