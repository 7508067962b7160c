//! The commands whose dispatch runs in this process, by ledger entry and by idempotency key.
//!
//! A retry that finds its key held here waits for the first attempt instead of reading an entry
//! still `sending` and calling it interrupted; reconciliation leaves alone the entries listed
//! here. Both registrations are made *before* the ledger sees the entry, so there is no window in
//! which an entry exists, runs, and is not listed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

/// (provider, account, idempotency key).
type KeyOf = (String, String, String);

#[derive(Default)]
pub(crate) struct InFlight {
    maps: Mutex<Maps>,
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<String, watch::Receiver<bool>>,
    by_key: HashMap<KeyOf, watch::Receiver<bool>>,
}

/// What [`InFlight::claim`] found.
pub(crate) enum Claim {
    /// Registered: the dispatch is this caller's until the guard drops.
    Mine(InFlightGuard),
    /// Another dispatch in this process holds the key; the receiver turns `true` when it ends.
    Busy(watch::Receiver<bool>),
}

impl InFlight {
    /// Registers entry `id` (and its idempotency key, when it has one) as running here, unless
    /// the key is already held by another dispatch.
    pub(crate) fn claim(self: &Arc<Self>, id: &str, key: Option<KeyOf>) -> Claim {
        let mut maps = self.lock();
        if let Some(key) = &key
            && let Some(running) = maps.by_key.get(key)
        {
            return Claim::Busy(running.clone());
        }
        let (done, receiver) = watch::channel(false);
        maps.by_id.insert(id.to_string(), receiver.clone());
        if let Some(key) = &key {
            maps.by_key.insert(key.clone(), receiver);
        }
        Claim::Mine(InFlightGuard {
            in_flight: Arc::clone(self),
            id: id.to_string(),
            key,
            done,
        })
    }

    /// A receiver that turns `true` when entry `id`'s dispatch ends, if one runs here.
    pub(crate) fn waiter(&self, id: &str) -> Option<watch::Receiver<bool>> {
        self.lock().by_id.get(id).cloned()
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.lock().by_id.contains_key(id)
    }

    fn lock(&self) -> MutexGuard<'_, Maps> {
        // The maps hold no invariant a panic could break halfway: recover them.
        self.maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A dispatch's registration; dropping it (at the end, on an error, on a panic) removes it and
/// wakes every waiter.
pub(crate) struct InFlightGuard {
    in_flight: Arc<InFlight>,
    id: String,
    key: Option<KeyOf>,
    done: watch::Sender<bool>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        {
            let mut maps = self.in_flight.lock();
            maps.by_id.remove(&self.id);
            if let Some(key) = &self.key {
                maps.by_key.remove(key);
            }
        }
        self.done.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Option<KeyOf> {
        Some(("p".into(), "a".into(), name.into()))
    }

    #[test]
    fn a_held_key_is_busy_until_its_guard_drops() {
        let in_flight = Arc::new(InFlight::default());
        let Claim::Mine(first) = in_flight.claim("gh_1", key("k")) else {
            panic!("the first claim is ours");
        };
        assert!(in_flight.contains("gh_1"));
        let Claim::Busy(receiver) = in_flight.claim("gh_2", key("k")) else {
            panic!("the key is held");
        };
        assert!(
            !in_flight.contains("gh_2"),
            "a busy claim registers nothing"
        );
        assert!(!*receiver.borrow());
        drop(first);
        assert!(*receiver.borrow(), "the waiter is woken");
        assert!(!in_flight.contains("gh_1"));
        assert!(matches!(in_flight.claim("gh_3", key("k")), Claim::Mine(_)));
    }

    #[test]
    fn commands_without_a_key_never_wait() {
        let in_flight = Arc::new(InFlight::default());
        let _first = in_flight.claim("gh_1", None);
        assert!(matches!(in_flight.claim("gh_2", None), Claim::Mine(_)));
        assert!(in_flight.waiter("gh_1").is_some());
    }
}
