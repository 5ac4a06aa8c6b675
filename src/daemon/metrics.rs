//! The `metrics` endpoint: when the config sets `metrics: ":8000"` (or `host:port`), core 0 serves
//! `GET /metrics` in the Prometheus text format on that TCP address, from the counters of
//! `daemon::counters`.
//!
//! Invariant: counters only grow; gauges (`tasks`) are read from the index at scrape time,
//! `cache_bytes` from the cache's running total (`Shared::cache_bytes`), `tasks_resting` from
//! the resting map (finished tasks nobody reads, in their compact state).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::daemon::counters::{
    BYTES_FETCHED, CACHE_HITS, DOWNLOADS_DONE, DOWNLOADS_FAILED, PIECES_FETCHED, UPLOAD_BYTES_COPIED,
    UPLOAD_BYTES_SPLICED,
};
use crate::daemon::serving;
use crate::daemon::shared::Shared;
use crate::daemon::task::State;

/// `":8000"` → `0.0.0.0:8000` (Go's meaning of an empty host), `"127.0.0.1:9000"` as is.
pub fn parse_listen(addr: &str) -> Option<SocketAddr> {
    let full = if addr.starts_with(':') { format!("0.0.0.0{addr}") } else { addr.to_string() };
    full.parse().ok()
}

pub fn render(shared: &Shared) -> String {
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let tasks = shared.index.values();
    let running = tasks.iter().filter(|t| t.state() == State::Running).count();
    format!(
        "# TYPE dfget_downloads_done_total counter\ndfget_downloads_done_total {}\n\
         # TYPE dfget_downloads_failed_total counter\ndfget_downloads_failed_total {}\n\
         # TYPE dfget_cache_hits_total counter\ndfget_cache_hits_total {}\n\
         # TYPE dfget_pieces_fetched_total counter\ndfget_pieces_fetched_total {}\n\
         # TYPE dfget_bytes_fetched_total counter\ndfget_bytes_fetched_total {}\n\
         # TYPE dfget_upload_bytes_total counter\n\
         dfget_upload_bytes_total{{path=\"splice\"}} {}\ndfget_upload_bytes_total{{path=\"copy\"}} {}\n\
         # TYPE dfget_tasks gauge\ndfget_tasks {}\n\
         # TYPE dfget_tasks_running gauge\ndfget_tasks_running {}\n\
         # TYPE dfget_cache_bytes gauge\ndfget_cache_bytes {}\n\
         # TYPE dfget_tasks_resting gauge\ndfget_tasks_resting {}\n",
        c(&DOWNLOADS_DONE),
        c(&DOWNLOADS_FAILED),
        c(&CACHE_HITS),
        c(&PIECES_FETCHED),
        c(&BYTES_FETCHED),
        c(&UPLOAD_BYTES_SPLICED),
        c(&UPLOAD_BYTES_COPIED),
        tasks.len() + shared.rested.len(),
        running,
        shared.cache_bytes.load(Ordering::Acquire),
        shared.rested.len()
    )
}

pub async fn serve(shared: Arc<Shared>, addr: SocketAddr) {
    let listener = match compio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, "cannot listen for metrics: {e}");
            return;
        }
    };
    tracing::info!(%addr, "metrics endpoint listening");
    loop {
        let mut stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning core 0.
                tracing::warn!("metrics accept failed: {e}");
                compio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        compio::runtime::spawn(async move {
            let Ok(req) = serving::read_request_within(&mut stream).await else { return };
            let (status, body) = if req.method == "GET" && req.path == "/metrics" {
                ("200 OK", render(&shared))
            } else {
                ("404 Not Found", "only GET /metrics here\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = serving::write(&mut stream, [head.into_bytes(), body.into_bytes()].concat()).await;
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen(":8000"), Some("0.0.0.0:8000".parse().unwrap()));
        assert_eq!(parse_listen("127.0.0.1:9000"), Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(parse_listen("[::1]:9000"), Some("[::1]:9000".parse().unwrap()));
        assert_eq!(parse_listen("nope"), None);
    }
}
