//! segkv-engine: the store. A lock-free hash index maps each key to the address of its newest
//! record in the log (`segkv-log`); reads are served from the log in place.
//!
//! ```no_run
//! use segkv_engine::{Engine, Config, SetOptions};
//! let engine = Engine::open(Config::new("./data")).unwrap();
//! engine.set(0, b"greeting", b"hello", SetOptions::default()).unwrap();
//! assert_eq!(engine.get(0, b"greeting").as_deref(), Some(&b"hello"[..]));
//! ```

// Built with `--cfg shuttle` (run-shuttle.sh) the crate is only the index, the writer gate and
// `model_support`, on shuttle's atomics; the store, over the real log, is left out.
#![cfg_attr(shuttle, allow(dead_code, unused_imports))]

mod api;
mod gate;
mod index;
#[cfg(shuttle)]
#[doc(hidden)]
pub mod model_support;
#[cfg(not(shuttle))]
mod store;
mod sync;

pub use api::*;
#[cfg(not(shuttle))]
pub use store::{
    BulkLoad, CheckpointInfo, CleanerStats, Engine, EvictPolicy, MAX_DATABASES, RecoveryInfo,
    Settle,
};

/// Runs the deferred frees whose readers are gone (segments, write buffers, index tables):
/// call from a background thread now and then, so memory returns to the OS promptly.
pub fn reclaim_memory() {
    segkv_log::epoch::flush();
}

/// Returns the allocator's free memory to the OS (it keeps freed buffers otherwise). Costs
/// a walk over the heaps: call it about once a second, not per operation.
pub fn trim_heap() {
    segkv_log::sys::trim_heap();
}
