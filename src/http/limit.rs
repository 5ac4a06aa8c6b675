//! `maxConnsPerHost`: a cap on requests in flight to one origin (host:port), across all cores.
//!
//! Shared on purpose — the limit protects the origin, which sees every core's connections — so it is
//! a small map behind a std `Mutex` (held only to bump a counter, never across an await) plus an
//! event that wakes waiters when a permit is returned. Idle pooled connections hold no permit: Go
//! counts them too, but then a core's idle connection could starve another core forever.
//!
//! Invariant: the count for a host never exceeds its limit, and every permit handed out is returned
//! exactly once (on drop of its last clone).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use crate::http::conn::PoolKey;

static IN_FLIGHT: LazyLock<Mutex<HashMap<(String, u16), usize>>> = LazyLock::new(Default::default);
static RETURNED: LazyLock<crate::wake::Signal> = LazyLock::new(crate::wake::Signal::new);

/// Proof of one in-flight request to a host; unlimited hosts get an empty permit.
#[derive(Clone)]
pub struct Permit(#[allow(dead_code)] Option<Arc<Held>>);

pub struct Held {
    host: (String, u16),
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut map) = IN_FLIGHT.lock() {
            if let Some(n) = map.get_mut(&self.host) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.host);
                }
            }
        }
        RETURNED.notify();
    }
}

pub async fn acquire(key: &PoolKey, max_per_host: usize) -> Permit {
    if max_per_host == 0 {
        return Permit(None);
    }
    let host = (key.host.clone(), key.port);
    loop {
        let listener = RETURNED.listen();
        if let Ok(mut map) = IN_FLIGHT.lock() {
            let n = map.entry(host.clone()).or_insert(0);
            if *n < max_per_host {
                *n += 1;
                return Permit(Some(Arc::new(Held { host })));
            }
        } else {
            // A poisoned lock means a panic elsewhere; do not add a hang on top of it.
            return Permit(None);
        }
        listener.await;
    }
}
