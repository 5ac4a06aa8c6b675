//! This core's keep-alive pool. Thread-local on purpose: a connection is owned by the core whose
//! io_uring ring it was registered with, so pools are never shared and need no lock.
//!
//! Invariant: the pool never holds more than `maxIdleConnsPerHost` connections per key nor
//! `maxIdleConns` in all, and never hands out one idle longer than `idleConnTimeout`, one with
//! bytes past its last response, or one on which anything (bytes, EOF) arrived while it idled.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::http::conn::{Conn, PoolKey};

#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    pub max_idle_total: usize,
    pub max_idle_per_host: usize,
    pub idle_timeout: Duration,
}

#[derive(Default)]
struct Pool {
    idle: HashMap<PoolKey, Vec<Conn>>,
    n_idle: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Takes the most recently used idle connection for `key` that has not expired and is quiet
/// (`Conn::is_quiet`: no late bytes, no EOF arrived while it idled); the others are closed.
pub fn take(key: &PoolKey, limits: &PoolLimits) -> Option<Conn> {
    POOL.with_borrow_mut(|pool| {
        let list = pool.idle.get_mut(key)?;
        while let Some(conn) = list.pop() {
            pool.n_idle -= 1;
            if conn.idle_since.elapsed() > limits.idle_timeout {
                continue;
            }
            if conn.is_quiet() {
                return Some(conn);
            }
            tracing::debug!(origin = %conn.key, "pooled connection got bytes or a close while idle: closed");
        }
        None
    })
}

/// Returns a connection whose last response was read completely.
pub fn put(mut conn: Conn, limits: &PoolLimits) {
    if limits.max_idle_per_host == 0 || limits.max_idle_total == 0 {
        return;
    }
    conn.idle_since = Instant::now();
    POOL.with_borrow_mut(|pool| {
        if pool.n_idle >= limits.max_idle_total {
            evict_oldest(pool);
        }
        let list = pool.idle.entry(conn.key.clone()).or_default();
        if list.len() >= limits.max_idle_per_host {
            list.remove(0);
            pool.n_idle -= 1;
        }
        list.push(conn);
        pool.n_idle += 1;
    });
}

fn evict_oldest(pool: &mut Pool) {
    let oldest =
        pool.idle.iter().filter_map(|(k, v)| v.first().map(|c| (k.clone(), c.idle_since))).min_by_key(|(_, t)| *t);
    if let Some((k, _)) = oldest {
        if let Some(list) = pool.idle.get_mut(&k) {
            list.remove(0);
            pool.n_idle -= 1;
        }
    }
}
