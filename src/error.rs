//! The daemon's error: where a failure came from and whether retrying can help (Pingora's shape).
//!
//! Invariant: retries and back-to-source decisions read `source` and `retryable`, never the message;
//! the message is for people and never contains credentials.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a failure came from. On the socket wire (`proto::Event::Error`) as a lowercase word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The origin server or registry (bad status, malformed response, connection trouble).
    Origin,
    /// The request itself (bad URL, bad header, bad digest syntax).
    Client,
    /// Local storage (ENOSPC, permissions, a corrupt task file).
    Disk,
    /// A bug or an exhausted internal resource.
    Internal,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Origin => "origin",
            Source::Client => "client",
            Source::Disk => "disk",
            Source::Internal => "internal",
        }
    }
}

/// What kind of failure, where callers branch on it (fallbacks, exit codes, tests). On the socket
/// wire as a snake_case word, or `{"status": N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    Other,
    /// The TLS handshake failed (wrong protocol, untrusted certificate).
    TlsHandshake,
    /// One of the configured timeouts elapsed.
    Timeout,
    /// The origin answered with this HTTP status.
    Status(u16),
    /// Size or digest of the content did not match what was expected.
    Integrity,
    /// EOF or reset before any response byte on a reused keep-alive connection: the server closed
    /// it while idle. Retried at once on a fresh connection by `http::client` (GET is idempotent),
    /// never waited out; it does not leave the HTTP client unless the fresh connection fails too.
    StaleConnection,
    /// The caller may not do this (another user's task, cache management).
    Denied,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub source: Source,
    pub kind: Kind,
    pub retryable: bool,
    /// How long the origin asked us to wait before a retry (`Retry-After` on a 429 or 503).
    pub retry_after: Option<Duration>,
    pub message: String,
}

impl Error {
    pub fn origin(retryable: bool, message: impl Into<String>) -> Error {
        Error { source: Source::Origin, kind: Kind::Other, retryable, retry_after: None, message: message.into() }
    }
    pub fn client(message: impl Into<String>) -> Error {
        Error {
            source: Source::Client,
            kind: Kind::Other,
            retryable: false,
            retry_after: None,
            message: message.into(),
        }
    }
    pub fn disk(message: impl Into<String>) -> Error {
        Error { source: Source::Disk, kind: Kind::Other, retryable: false, retry_after: None, message: message.into() }
    }
    pub fn internal(message: impl Into<String>) -> Error {
        Error {
            source: Source::Internal,
            kind: Kind::Other,
            retryable: false,
            retry_after: None,
            message: message.into(),
        }
    }
    pub fn with_kind(mut self, kind: Kind) -> Error {
        self.kind = kind;
        self
    }
    /// Prefixes the message with what was being done.
    pub fn context(mut self, what: impl fmt::Display) -> Error {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
