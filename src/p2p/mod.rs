//! Joining a Dragonfly cluster: the generated protocol types (`pb`), the Vortex piece codec, the
//! manager client (which schedulers to use), the scheduler client, the upload server a child
//! fetches from, and the parent fetcher. Everything gRPC runs on one control-plane thread with a
//! small tokio runtime; piece bytes move on the compio cores. With no scheduler and no enabled
//! manager configured nothing here starts, and the daemon behaves as a standalone one.

pub(crate) mod conversation;
pub(crate) mod fetch;
pub(crate) mod grpc;
pub(crate) mod manager;
pub(crate) mod node;
// Generated: the subset of the API this daemon speaks, with the stubs it does not call; public so
// tests can speak to a daemon as a Dragonfly peer does.
#[allow(dead_code, unused_imports)]
pub mod pb;
pub(crate) mod peer;
pub(crate) mod pick;
pub(crate) mod spread;
pub mod task_id;
pub(crate) mod upload;
pub(crate) mod vortex;

pub use node::Node;
