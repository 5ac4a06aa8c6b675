//! The ORAS resource client: `oras://[registry/]repo[:tag|@digest]` → one SIF layer blob.
//! `reference`, `manifest`, `auth` and `creds` are pure (tables and fuzzing); `registry` is the IO
//! shell that talks to the registry with our HTTP client.

pub mod auth;
pub(crate) mod creds;
pub mod manifest;
pub(crate) mod platform;
pub(crate) mod ratelimit;
pub mod reference;
pub(crate) mod registry;
