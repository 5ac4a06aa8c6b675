//! dfget: a Dragonfly-compatible download daemon and its CLI, thread-per-core on io_uring.
//!
//! The crate is the architecture: `config` (YAML → typed config), `http` (our HTTP/1.1 client: sans-IO
//! codec + IO shell), `piece` (piece math, shared bitmap), `storage` (task files, metadata, export,
//! the lock-free index), `gc` (the pure eviction planner), `proto` (the socket wire both sides
//! speak), `daemon` (cores, socket API, engine, cache lifecycle, logs) and `client` (the `dfget`
//! side). See ARCHITECTURE.md for a URL's trip through them.
//!
//! Invariant: a module is `pub` only where `main.rs`, `benches/`, `fuzz/` or `tests/` use it (the
//! binary's entry points, the sans-IO parsers the benches and fuzz targets drive, the task-id
//! rules and the metadata format the tests and benches check); everything else is `pub(crate)`,
//! so the compiler reports what nothing uses.

pub mod client;
pub(crate) mod clock;
pub mod config;
pub mod daemon;
pub(crate) mod digest;
pub(crate) mod error;
pub(crate) mod gc;
pub mod http;
pub mod limits;
pub mod p2p;
pub mod piece;
pub mod proto;
pub mod source;
pub mod storage;
pub(crate) mod wake;
