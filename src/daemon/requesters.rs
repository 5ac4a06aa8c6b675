//! Who asked for a task since the daemon started: a small lock-free set of uids. Noting a
//! requester on every download is a few atomic loads (one compare-and-swap the first time), and
//! the socket API asks it whether a caller may see a task (`tasks ls`/`stat`/`rm`) or remove it.
//!
//! Invariant: slots fill in order and are never cleared, so a uid sits in at most one slot and a
//! noted uid stays noted. Past `MAX_TASK_REQUESTERS` distinct uids the set only records that there
//! were more: a uid it could not note is treated as one that never asked (it does not see the
//! task, may not remove it) — fewer rights, never more.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::limits::MAX_TASK_REQUESTERS;

/// Slot value: uid + 1; 0 = empty.
pub struct Requesters {
    slots: [AtomicU64; MAX_TASK_REQUESTERS],
    more: AtomicBool,
}

/// The same set at rest (a finished task nobody reads): the uids noted, and whether there were more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Noted {
    uids: Box<[u32]>,
    more: bool,
}

impl Default for Requesters {
    fn default() -> Requesters {
        Requesters { slots: std::array::from_fn(|_| AtomicU64::new(0)), more: AtomicBool::new(false) }
    }
}

impl Requesters {
    /// Records that `uid` asked.
    pub fn note(&self, uid: u32) {
        let me = u64::from(uid) + 1;
        for slot in &self.slots {
            match slot.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(held) if held == me => return,
                Err(_) => {}
            }
        }
        self.more.store(true, Ordering::Release);
    }

    pub fn snapshot(&self) -> Noted {
        let uids = self.slots.iter().map(|s| s.load(Ordering::Acquire)).take_while(|v| *v != 0);
        Noted { uids: uids.map(|v| (v - 1) as u32).collect(), more: self.more.load(Ordering::Acquire) }
    }

    /// A set holding what `noted` holds (a task revived from rest).
    pub fn restored(noted: &Noted) -> Requesters {
        let r = Requesters::default();
        for uid in noted.uids.iter() {
            r.note(*uid);
        }
        r.more.store(noted.more, Ordering::Release);
        r
    }
}

impl Noted {
    /// Whether `uid` is one of the requesters noted.
    pub fn includes(&self, uid: u32) -> bool {
        self.uids.contains(&uid)
    }

    /// The one uid that asked, if exactly one did.
    pub fn sole(&self) -> Option<u32> {
        match (&*self.uids, self.more) {
            ([only], false) => Some(*only),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requesters_are_noted_once_each_and_the_crowd_past_the_slots_is_no_one() {
        let r = Requesters::default();
        assert_eq!(r.snapshot(), Noted::default());
        assert_eq!(r.snapshot().sole(), None);
        r.note(1000);
        r.note(1000);
        assert_eq!(r.snapshot().sole(), Some(1000));
        r.note(0);
        let n = r.snapshot();
        assert!(n.includes(1000) && n.includes(0) && !n.includes(1001));
        assert_eq!(n.sole(), None, "two requesters");
        for uid in 1..=MAX_TASK_REQUESTERS as u32 + 3 {
            r.note(uid);
        }
        let n = r.snapshot();
        assert_eq!(n.uids.len(), MAX_TASK_REQUESTERS);
        assert!(n.more && !n.includes(MAX_TASK_REQUESTERS as u32 + 3), "past the slots: not noted");
        assert_eq!(Requesters::restored(&n).snapshot(), n, "rest and revival keep the set");
        // uid u32::MAX (never a real uid: the kernel's "no change") still fits a slot.
        let edge = Requesters::default();
        edge.note(u32::MAX);
        assert_eq!(edge.snapshot().sole(), Some(u32::MAX));
    }

    #[test]
    fn one_uid_noted_from_many_threads_takes_one_slot() {
        let r = std::sync::Arc::new(Requesters::default());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        r.note(7);
                        r.note(100 + i % 2);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut uids = r.snapshot().uids.to_vec();
        uids.sort_unstable();
        assert_eq!(uids, vec![7, 100, 101]);
    }
}
