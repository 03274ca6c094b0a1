//! The read cache: byte ranges of wal objects, most recently written or read, up to a byte
//! budget. Followers of the log's end read what was just written without a GET; a consumer
//! paging through one run with small fetches pays one GET for the run.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::index::Entry;

/// Wal sequence number (or 0), run id (or 0), position.
type Key = (u64, u64, u64);

fn key(e: &Entry) -> Key {
    if e.run == 0 {
        (e.seq, 0, e.pos)
    } else {
        (0, e.run, e.pos)
    }
}

pub struct Cache {
    budget: usize,
    used: usize,
    map: HashMap<Key, Bytes>,
    /// Insertion order; the oldest is evicted first.
    order: VecDeque<Key>,
}

impl Cache {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            used: 0,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn get(&self, e: &Entry) -> Option<Bytes> {
        self.map.get(&key(e)).cloned()
    }

    pub fn insert(&mut self, e: &Entry, bytes: Bytes) {
        let key = key(e);
        if bytes.len() > self.budget || self.map.contains_key(&key) {
            return;
        }
        while self.used + bytes.len() > self.budget {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(b) = self.map.remove(&old) {
                self.used -= b.len();
            }
        }
        self.used += bytes.len();
        self.map.insert(key, bytes);
        self.order.push_back(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> Entry {
        Entry {
            base: 0,
            last: 0,
            max_ts: 0,
            seq,
            pos: 8,
            len: 4,
            run: 0,
        }
    }

    #[test]
    fn oldest_ranges_leave_first_and_the_budget_holds() {
        let mut c = Cache::new(10);
        c.insert(&entry(1), Bytes::from_static(b"1111"));
        c.insert(&entry(2), Bytes::from_static(b"2222"));
        c.insert(&entry(3), Bytes::from_static(b"3333"));
        assert!(c.get(&entry(1)).is_none());
        assert_eq!(c.get(&entry(3)).as_deref(), Some(&b"3333"[..]));
        assert!(c.used <= 10);
        c.insert(&entry(4), Bytes::from(vec![0; 11]));
        assert!(
            c.get(&entry(4)).is_none(),
            "larger than the budget: not kept"
        );
    }
}
