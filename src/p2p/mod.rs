//! Joining a Dragonfly cluster: the generated protocol types (`pb`), the Vortex piece codec, the
//! scheduler client, the upload server a child fetches from, and the parent fetcher. Everything
//! gRPC runs on one control-plane thread with a small tokio runtime; piece bytes move on the
//! compio cores. With no scheduler configured nothing here starts, and the daemon behaves as a
//! standalone one.

pub mod conversation;
pub mod fetch;
pub mod grpc;
pub mod node;
pub mod pb;
pub mod peer;
pub mod task_id;
pub mod upload;
pub mod vortex;

pub use node::Node;
