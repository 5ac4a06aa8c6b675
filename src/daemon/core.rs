//! Cores: one OS thread per core, each running its own compio runtime (io_uring, or the polling
//! driver where io_uring is unavailable), fed through its own inbox. No work-stealing: a future
//! spawned on a core stays there, so per-core state (connection pool, file handles) needs no lock.
//!
//! Invariant: the front thread (`daemon/front.rs`) owns the listening socket, answers health
//! probes and hands each other accepted connection to one core, round-robin; shutdown reaches
//! every core through its inbox and the front through `Shared::shutting_down`.

use std::os::unix::net::UnixListener as StdListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use compio::driver::{DriverType, ProactorBuilder};
use compio::runtime::Runtime;

use crate::daemon::shared::{CoreMsg, Shared};
use crate::daemon::{api, cache, engine, front, metrics};

/// `DFGET_DRIVER=polling|io_uring` forces a driver (tests run both paths); default: io_uring when the
/// kernel allows it, else polling.
fn proactor() -> ProactorBuilder {
    let mut pb = ProactorBuilder::new();
    match std::env::var("DFGET_DRIVER").as_deref() {
        Ok("polling") => {
            pb.driver_type(DriverType::Poll);
        }
        Ok("io_uring") => {
            pb.driver_type(DriverType::IoUring);
        }
        _ => {}
    }
    pb
}

/// Says which driver the cores will run, and why when it is not io_uring.
pub fn probe_driver() -> String {
    let rt = match Runtime::builder().with_proactor(proactor()).build() {
        Ok(rt) => rt,
        Err(e) => return format!("unavailable ({e})"),
    };
    match rt.driver_type() {
        DriverType::IoUring => "io_uring".to_string(),
        other => {
            let mut pb = ProactorBuilder::new();
            pb.driver_type(DriverType::IoUring);
            let why = match Runtime::builder().with_proactor(pb).build() {
                Err(e) => {
                    format!("io_uring unavailable ({e}; seccomp or kernel.io_uring_disabled?)")
                }
                Ok(_) if std::env::var("DFGET_DRIVER").is_ok() => "forced by DFGET_DRIVER".to_string(),
                Ok(_) => "io_uring lacks an opcode this runtime needs".to_string(),
            };
            format!("{} — {why}", format!("{other:?}").to_lowercase())
        }
    }
}

/// Runs all cores; returns after a shutdown signal once every core has stopped.
pub fn run_cores(
    shared: Arc<Shared>,
    inboxes: Vec<flume::Receiver<CoreMsg>>,
    listener: StdListener,
) -> anyhow::Result<()> {
    let mut threads = Vec::new();
    for (idx, inbox) in inboxes.into_iter().enumerate() {
        let shared = shared.clone();
        let t = std::thread::Builder::new()
            .name(format!("core-{idx}"))
            .spawn(move || core_main(idx, shared, inbox))
            .context("cannot start a core thread")?;
        threads.push(t);
    }
    threads.push(front::start(shared.clone(), listener).context("cannot start the front thread")?);
    wait_for_stop_signal();
    tracing::info!("stop signal received, shutting down");
    shared.shutting_down.store(true, Ordering::Release);
    stop_watchdog(shared.config.socket_path.clone());
    for core in &shared.cores {
        let _ = core.send(CoreMsg::Shutdown);
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Whatever is running (a core stuck in a syscall, a park that syncs a huge file), the process
/// exits `STOP_DEADLINE` after the signal: an init system's SIGKILL would otherwise come first and
/// skip even the socket removal.
fn stop_watchdog(socket: std::path::PathBuf) {
    let spawned = std::thread::Builder::new().name("stop-watchdog".into()).spawn(move || {
        std::thread::sleep(crate::limits::STOP_DEADLINE);
        tracing::warn!(
            "still stopping {:?} after the stop signal: exiting now; unfinished tasks resume from their last saved progress",
            crate::limits::STOP_DEADLINE
        );
        let _ = std::fs::remove_file(&socket);
        std::process::exit(0);
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the stop watchdog: {e}");
    }
}

fn core_main(idx: usize, shared: Arc<Shared>, inbox: flume::Receiver<CoreMsg>) {
    let rt = match Runtime::builder().with_proactor(proactor()).build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(core = idx, "cannot start the core's runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        if let Some(node) = &shared.p2p {
            compio::runtime::spawn(crate::p2p::upload::accept_loop(node.clone())).detach();
        }
        if idx == 0 {
            compio::runtime::spawn(cache::run_loop(shared.clone())).detach();
            if let Some(addr) = shared.config.metrics.as_deref().and_then(metrics::parse_listen) {
                compio::runtime::spawn(metrics::serve(shared.clone(), addr)).detach();
            }
        }
        while let Ok(msg) = inbox.recv_async().await {
            match msg {
                CoreMsg::Conn(s, slot) => match compio::net::UnixStream::from_std(s) {
                    Ok(s) => {
                        let shared = shared.clone();
                        compio::runtime::spawn(async move {
                            api::serve(shared, s).await;
                            drop(slot);
                        })
                        .detach();
                    }
                    Err(e) => tracing::warn!(core = idx, "cannot adopt a client connection: {e}"),
                },
                CoreMsg::Work { task, n_workers } => {
                    for _ in 0..n_workers {
                        compio::runtime::spawn(engine::piece_worker(task.clone())).detach();
                    }
                }
                CoreMsg::Entry(job) => compio::runtime::spawn(api::run_batch_job(shared.clone(), job)).detach(),
                CoreMsg::Shutdown => break,
            }
        }
    });
}

/// SIGTERM/SIGINT are blocked in every thread and taken synchronously by `sigwait` on the main
/// thread, so no core is interrupted mid-syscall and no async signal handler is needed.
pub fn block_stop_signals() {
    // SAFETY: plain libc signal-mask calls on a zero-initialised sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn wait_for_stop_signal() {
    // SAFETY: as above; sigwait only reads the set and writes the signal number.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let mut sig: libc::c_int = 0;
        libc::sigwait(&set, &mut sig);
    }
}
