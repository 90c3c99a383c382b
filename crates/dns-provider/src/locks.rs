//! In-process locks per key (typically `zone|name|type`), for adapters that read a record set,
//! merge a value and write it back: two tasks of this process never race each other on one name,
//! so the backend's own conflict detection (ETags, change batches) only has other writers to
//! catch. Entries are dropped once nobody holds or waits for them.
//!
//! It must not be mistaken for cross-process safety: another dcvd, or a person editing the
//! zone, is still only caught by the backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// A map of async locks by key.
#[derive(Debug, Default)]
pub(crate) struct NameLocks {
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// The guards of [`NameLocks::lock_all`]; dropping it releases every lock.
pub(crate) type Guards = Vec<OwnedMutexGuard<()>>;

impl NameLocks {
    /// An empty map.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn entry(&self, key: &str) -> Arc<AsyncMutex<()>> {
        let mut locks = self.locks.lock().expect("name locks");
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(key.to_string()).or_default().clone()
    }

    /// Waits for the lock of `key`.
    pub(crate) async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        self.entry(key).lock_owned().await
    }

    /// Waits for the locks of every key, taken in sorted order so that two batches cannot
    /// deadlock; a key given twice is locked once.
    pub(crate) async fn lock_all(&self, keys: impl IntoIterator<Item = String>) -> Guards {
        let keys: std::collections::BTreeSet<String> = keys.into_iter().collect();
        let mut guards = Vec::with_capacity(keys.len());
        for key in &keys {
            guards.push(self.lock(key).await);
        }
        guards
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_holder_per_key_and_entries_are_dropped() {
        let locks = Arc::new(NameLocks::new());
        let held = locks.lock_all(["b".to_string(), "a".to_string(), "a".to_string()]).await;
        assert_eq!(held.len(), 2);
        let other = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock("a").await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!other.is_finished(), "a second holder of `a` got in");
        drop(locks.lock("c").await); // another key is free meanwhile
        drop(held);
        drop(other.await.expect("waiter"));
        let _ = locks.entry("d");
        assert_eq!(locks.locks.lock().unwrap().len(), 1, "released entries are dropped");
    }
}
