//! A store read at most once per key while one decision is made: choosing a
//! request's first target asks of each block slot whether it is blocked,
//! then whether its block has ended, and in the filter every read is a host
//! call.

use std::cell::RefCell;

use super::SharedStore;

type Read = Option<(Vec<u8>, u32)>;

pub struct ReadOnce<'a> {
    store: &'a dyn SharedStore,
    seen: RefCell<Vec<(String, Read)>>,
}

impl<'a> ReadOnce<'a> {
    pub fn new(store: &'a dyn SharedStore) -> ReadOnce<'a> {
        ReadOnce {
            store,
            seen: RefCell::new(Vec::new()),
        }
    }
}

impl SharedStore for ReadOnce<'_> {
    fn get(&self, key: &str) -> Read {
        if let Some((_, read)) = self.seen.borrow().iter().find(|(k, _)| k == key) {
            return read.clone();
        }
        let read = self.store.get(key);
        self.seen.borrow_mut().push((key.to_string(), read.clone()));
        read
    }

    /// Writes through; the key is read afresh after, so an update that lost
    /// its CAS race sees the winner's value.
    fn set(&self, key: &str, value: &[u8], cas: u32) -> bool {
        self.seen.borrow_mut().retain(|(k, _)| k != key);
        self.store.set(key, value, cas)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::blocks::memory::MemoryStore;
    use crate::blocks::{claim_probe, BlockKey};

    /// Counts the reads that reach the store under it.
    #[derive(Default)]
    struct Counted {
        inner: MemoryStore,
        reads: RefCell<Vec<String>>,
    }

    impl SharedStore for Counted {
        fn get(&self, key: &str) -> Read {
            self.reads.borrow_mut().push(key.to_string());
            self.inner.get(key)
        }

        fn set(&self, key: &str, value: &[u8], cas: u32) -> bool {
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn a_key_is_read_once_until_it_is_written() {
        let store = Counted::default();
        store.inner.set("a", b"1", 0);
        let once = ReadOnce::new(&store);
        assert_eq!(once.get("a").map(|r| r.0), Some(b"1".to_vec()));
        assert_eq!(once.get("a").map(|r| r.0), Some(b"1".to_vec()));
        assert_eq!(once.get("b"), None);
        assert_eq!(once.get("b"), None);
        assert_eq!(*store.reads.borrow(), ["a", "b"]);
        assert!(once.set("a", b"2", 0));
        assert_eq!(once.get("a").map(|r| r.0), Some(b"2".to_vec()));
        assert_eq!(*store.reads.borrow(), ["a", "b", "a"]);
    }

    #[test]
    fn an_update_that_loses_its_race_reads_the_winners_value() {
        let store = MemoryStore::default();
        let key = BlockKey::Model("m/a".into());
        store.set(&key.probe_slot(), b"0", 0);
        // Another worker takes the probe between this one's read and write.
        store.competing.borrow_mut().push(b"9000".to_vec());
        let once = ReadOnce::new(&store);
        assert_eq!(claim_probe(&once, &key, 1_000, 5_000), Err(9_000));
    }
}
