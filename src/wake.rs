//! Cross-core wake-ups that never make one core wait on another.
//!
//! A `Signal` is shared by every core (a task's progress, a returned connection permit); waiters
//! `listen()` on their own core and `notify()` may run on any thread. Waking a future that lives on
//! another core goes through compio's bounded cross-thread queue (64 entries), whose producer spins
//! while it is full. `event_listener::Event` wakes every listener under its list mutex, so with
//! ~130 waiters on another core that core, blocked on the same mutex, could never drain its queue:
//! the daemon-wide deadlock of issue 10. Here the number of cross-thread wakes does not grow with
//! the number of waiters, and nothing is locked while waking.
//!
//! Shape: each runtime thread that listens claims a relay slot (a `pending` flag and one
//! `AtomicWaker`) and runs one relay future. A signal keeps a version and a sticky mask of the
//! slots that listened to it (bit = slot % 64). `notify` bumps the version, then for each marked
//! slot flips `pending` false→true and wakes that slot's relay only on that transition: at most one
//! cross-thread wake outstanding per thread, however many wait. The relay clears `pending`, then
//! wakes — same thread, no queue limit — the local listeners of every signal whose version moved.
//!
//! Invariant: a listener completes after any `notify` that began after it was created (the mask
//! bit is set before the listener reads the version; `notify` bumps the version before it reads
//! the mask; both SeqCst). No lock is held while any waker runs.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;

use crate::limits::{MAX_RELAY_SLOTS, WAKE_FALLBACK_POLL};

/// One runtime thread's relay: what other threads touch to wake it.
struct Slot {
    claimed: AtomicBool,
    /// A wake is on its way (or the relay is about to look): later notifiers need not wake it again.
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl Slot {
    const fn new() -> Slot {
        Slot { claimed: AtomicBool::new(false), pending: AtomicBool::new(false), waker: AtomicWaker::new() }
    }

    fn poke(&self) {
        if self.claimed.load(SeqCst) && !self.pending.swap(true, SeqCst) {
            self.waker.wake();
        }
    }
}

static SLOTS: [Slot; MAX_RELAY_SLOTS] = [const { Slot::new() }; MAX_RELAY_SLOTS];

struct Inner {
    version: AtomicU64,
    /// Slots (mod 64) that ever listened; sticky, so a spurious relay wake is the worst case.
    mask: AtomicU64,
}

/// A wake-up many futures on any cores can wait for (see the module comment).
pub struct Signal(Arc<Inner>);

impl Default for Signal {
    fn default() -> Self {
        Signal::new()
    }
}

impl Signal {
    pub fn new() -> Signal {
        Signal(Arc::new(Inner { version: AtomicU64::new(0), mask: AtomicU64::new(0) }))
    }

    /// Wakes every listener created before this call. Never blocks, never waits on a core.
    pub fn notify(&self) {
        self.0.version.fetch_add(1, SeqCst);
        let mut bits = self.0.mask.load(SeqCst);
        while bits != 0 {
            let bit = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            for slot in SLOTS.iter().skip(bit).step_by(64) {
                slot.poke();
            }
        }
    }

    /// A future that completes at the next `notify` after this call. Create it before checking
    /// the state it waits for, then await it. Must be made (and polled) inside a compio runtime.
    pub fn listen(&self) -> Listener {
        LOCAL.with(|local| Listener::new(self.0.clone(), local.clone()))
    }
}

/// This thread's view: its slot and the signals it has listeners on.
struct Local {
    /// None when every slot is taken: listeners then poll on a timer (see `WAKE_FALLBACK_POLL`).
    slot: Option<usize>,
    relay_running: Cell<bool>,
    /// Keyed by the signal's address; present while it has a listener here.
    entries: RefCell<HashMap<usize, Entry>>,
    next_id: Cell<u64>,
}

struct Entry {
    inner: Arc<Inner>,
    /// The version the relay last fanned out.
    seen: u64,
    n_listeners: usize,
    wakers: HashMap<u64, Waker>,
}

thread_local! {
    static LOCAL: Rc<Local> = Rc::new(Local::claim());
}

impl Local {
    fn claim() -> Local {
        let slot = SLOTS.iter().position(|s| s.claimed.compare_exchange(false, true, SeqCst, SeqCst).is_ok());
        if let Some(i) = slot {
            SLOTS[i].pending.store(false, SeqCst);
        }
        Local { slot, relay_running: Cell::new(false), entries: RefCell::new(HashMap::new()), next_id: Cell::new(0) }
    }

    fn ensure_relay(self: &Rc<Self>) {
        let Some(slot) = self.slot else { return };
        if self.relay_running.get() {
            return;
        }
        let local = self.clone();
        let spawned = compio::runtime::Runtime::try_with_current(|rt| rt.spawn(relay(local, slot)).detach());
        if spawned.is_ok() {
            self.relay_running.set(true);
        }
    }

    /// Wakes the local listeners of every signal whose version moved since the last fan-out.
    fn fan_out(&self) {
        let mut woken = Vec::new();
        for e in self.entries.borrow_mut().values_mut() {
            let v = e.inner.version.load(SeqCst);
            if v != e.seen {
                e.seen = v;
                woken.extend(e.wakers.drain().map(|(_, w)| w));
            }
        }
        for w in woken {
            w.wake();
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            SLOTS[i].waker.take();
            SLOTS[i].claimed.store(false, SeqCst);
        }
    }
}

/// This thread's relay: one future, woken by at most one outstanding cross-thread wake.
async fn relay(local: Rc<Local>, slot: usize) {
    struct Running(Rc<Local>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.relay_running.set(false);
        }
    }
    let running = Running(local);
    let s = &SLOTS[slot];
    loop {
        std::future::poll_fn(|cx| {
            s.waker.register(cx.waker());
            if s.pending.swap(false, SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        running.0.fan_out();
    }
}

/// Completes at the first `notify` after it was created (see `Signal::listen`).
pub struct Listener {
    inner: Arc<Inner>,
    start: u64,
    id: u64,
    local: Rc<Local>,
    fallback: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

impl Listener {
    fn new(inner: Arc<Inner>, local: Rc<Local>) -> Listener {
        if let Some(slot) = local.slot {
            let bit = 1u64 << (slot % 64);
            // Checked first: listening is frequent, and an RMW would bounce the line between cores.
            if inner.mask.load(SeqCst) & bit == 0 {
                inner.mask.fetch_or(bit, SeqCst);
            }
            local.ensure_relay();
        }
        let start = inner.version.load(SeqCst);
        let id = local.next_id.get();
        local.next_id.set(id + 1);
        let key = Arc::as_ptr(&inner) as usize;
        local
            .entries
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| Entry { inner: inner.clone(), seen: start, n_listeners: 0, wakers: HashMap::new() })
            .n_listeners += 1;
        Listener { inner, start, id, local, fallback: None }
    }

    fn key(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }
}

impl Future for Listener {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.inner.version.load(SeqCst) != this.start {
            return Poll::Ready(());
        }
        if this.local.slot.is_none() || !this.local.relay_running.get() {
            // No relay on this thread: look again after a short sleep instead.
            let sleep = this.fallback.get_or_insert_with(|| Box::pin(compio::time::sleep(WAKE_FALLBACK_POLL)));
            if sleep.as_mut().poll(cx).is_ready() {
                this.fallback = None;
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
        let key = this.key();
        if let Some(e) = this.local.entries.borrow_mut().get_mut(&key) {
            e.wakers.insert(this.id, cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let key = self.key();
        let mut entries = self.local.entries.borrow_mut();
        if let Some(e) = entries.get_mut(&key) {
            e.wakers.remove(&self.id);
            e.n_listeners -= 1;
            if e.n_listeners == 0 {
                entries.remove(&key);
            }
        }
    }
}

/// Wake-ups for tasks outside the compio runtimes (the tokio control-plane thread's SyncPieces
/// streams), which cannot `listen()` on a `Signal`: each subscription is a bounded(1) tokio
/// channel in a lock-free map, and `notify` `try_send`s one token to each. A full channel already
/// holds a wake, so nothing is lost and `notify` never waits, never takes a lock, and never
/// touches a compio queue. Empty (nobody subscribed) it costs one skiplist probe.
///
/// Invariant: a `Watch` receives a token for every `notify` that began after it was created.
#[derive(Default)]
pub struct Watchers(Arc<WatchersInner>);

#[derive(Default)]
struct WatchersInner {
    next_id: AtomicU64,
    subs: crossbeam_skiplist::SkipMap<u64, tokio::sync::mpsc::Sender<()>>,
}

impl Watchers {
    pub fn subscribe(&self) -> Watch {
        let id = self.0.next_id.fetch_add(1, SeqCst);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        self.0.subs.insert(id, tx);
        Watch { inner: self.0.clone(), id, rx }
    }

    pub fn notify(&self) {
        for e in self.0.subs.iter() {
            let _ = e.value().try_send(());
        }
    }

    pub fn n_watches(&self) -> usize {
        self.0.subs.len()
    }
}

/// One subscription; unsubscribes on drop.
pub struct Watch {
    inner: Arc<WatchersInner>,
    id: u64,
    rx: tokio::sync::mpsc::Receiver<()>,
}

impl Watch {
    /// Completes at the first `notify` since the last `changed` (or since `subscribe`).
    pub async fn changed(&mut self) {
        // The sender lives in the map until `drop`, so `recv` cannot return None before then.
        let _ = self.rx.recv().await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.inner.subs.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Many listeners on each of several runtime threads, notified from yet another thread many
    /// times: every listener completes each round, and no thread stalls.
    #[test]
    fn thousands_of_listeners_on_several_threads_all_wake_each_round() {
        const THREADS: usize = 3;
        const PER_THREAD: usize = 2000;
        const ROUNDS: usize = 20;
        let signal = Arc::new(Signal::new());
        let round = Arc::new(AtomicU64::new(0));
        let arrived = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..THREADS {
            let (signal, round, arrived) = (signal.clone(), round.clone(), arrived.clone());
            handles.push(std::thread::spawn(move || {
                let rt = compio::runtime::Runtime::new().unwrap();
                rt.block_on(async move {
                    let mut joins = Vec::new();
                    for _ in 0..PER_THREAD {
                        let (signal, round, arrived) = (signal.clone(), round.clone(), arrived.clone());
                        joins.push(compio::runtime::spawn(async move {
                            for r in 1..=ROUNDS as u64 {
                                loop {
                                    let l = signal.listen();
                                    if round.load(SeqCst) >= r {
                                        break;
                                    }
                                    l.await;
                                }
                                arrived.fetch_add(1, SeqCst);
                            }
                        }));
                    }
                    for j in joins {
                        let _ = j.await;
                    }
                });
            }));
        }
        for r in 1..=ROUNDS {
            // Each round waits for every listener of the previous one, so all are re-listening.
            let want = (r - 1) * THREADS * PER_THREAD;
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while arrived.load(SeqCst) < want {
                assert!(std::time::Instant::now() < deadline, "round {r}: {} of {want} arrived", arrived.load(SeqCst));
                std::thread::sleep(Duration::from_millis(1));
            }
            round.store(r as u64, SeqCst);
            signal.notify();
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(arrived.load(SeqCst), ROUNDS * THREADS * PER_THREAD);
    }

    #[test]
    fn a_listener_made_before_notify_completes_and_one_made_after_waits() {
        let rt = compio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let s = Signal::new();
            let before = s.listen();
            s.notify();
            let after = s.listen();
            assert!(compio::time::timeout(Duration::from_secs(5), before).await.is_ok());
            assert!(compio::time::timeout(Duration::from_millis(100), after).await.is_err());
        });
    }

    #[test]
    fn a_watch_keeps_a_notify_made_before_it_waits_and_unsubscribes_on_drop() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let w = Watchers::default();
        let mut a = w.subscribe();
        let b = w.subscribe();
        assert_eq!(w.n_watches(), 2);
        w.notify();
        w.notify();
        rt.block_on(async {
            // Two notifies while nobody waited: one token, kept.
            tokio::time::timeout(Duration::from_secs(1), a.changed()).await.expect("woken by the earlier notify");
            let again = tokio::time::timeout(Duration::from_millis(50), a.changed()).await;
            assert!(again.is_err(), "one token per burst, not per notify");
            // A notify from another thread wakes a waiting watch.
            let w2 = std::sync::Arc::new(w);
            let n = w2.clone();
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                n.notify();
            });
            tokio::time::timeout(Duration::from_secs(5), a.changed()).await.expect("woken from another thread");
            t.join().unwrap();
            drop(b);
            assert_eq!(w2.n_watches(), 1);
            drop(a);
            assert_eq!(w2.n_watches(), 0);
        });
    }
}
