//! What each message carries so the receiver can measure it: the send time, which publisher sent
//! it and its sequence number. Publishers and subscribers run in this one process, so one
//! monotonic clock serves both ends and no clock synchronisation is needed.

use std::sync::OnceLock;
use std::time::Instant;

use hdrhistogram::Histogram;

/// Bytes of the header at the start of every payload: send time (u64 nanoseconds since
/// [`epoch`]), publisher index (u32) and sequence number (u32), little endian.
pub const HEADER_LEN: usize = 16;

/// Largest latency the histograms hold; larger values are clamped to it.
const MAX_LATENCY_US: u64 = 600_000_000;

/// The process-wide zero of send timestamps.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process-wide epoch.
pub fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A payload of `size` bytes (at least [`HEADER_LEN`]) stamped with the current time.
pub fn payload(size: usize, publisher: u32, seq: u32) -> Vec<u8> {
    let mut p = vec![b'x'; size.max(HEADER_LEN)];
    p[0..8].copy_from_slice(&now_ns().to_le_bytes());
    p[8..12].copy_from_slice(&publisher.to_le_bytes());
    p[12..16].copy_from_slice(&seq.to_le_bytes());
    p
}

/// The header of a received payload, or `None` when it is too short to be one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sent_ns: u64,
    pub publisher: u32,
    pub seq: u32,
}

impl Stamp {
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let header = payload.get(..HEADER_LEN)?;
        let (sent, rest) = header.split_at(8);
        let (publisher, seq) = rest.split_at(4);
        Some(Stamp {
            sent_ns: u64::from_le_bytes(sent.try_into().ok()?),
            publisher: u32::from_le_bytes(publisher.try_into().ok()?),
            seq: u32::from_le_bytes(seq.try_into().ok()?),
        })
    }
}

/// A prefix no other run shares, so leftovers of an earlier run (clients, retained messages,
/// queues) cannot mix into this one's topics, client ids and queue names.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:08x}", std::process::id(), nanos)
}

/// A latency histogram in microseconds.
pub fn histogram() -> Histogram<u64> {
    // Three significant digits: p99.9 of a few thousand µs is exact to a few µs.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid")
}

/// What one subscriber saw: deliveries, latencies, and per publisher which sequence numbers
/// arrived, to count losses, duplicates and reordering.
pub struct Receipts {
    pub latency: Histogram<u64>,
    pub deliveries: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Payloads without our header or from an unknown publisher.
    pub foreign: u64,
    seen: Vec<SeqSet>,
}

#[derive(Default)]
struct SeqSet {
    bits: Vec<u64>,
    unique: u64,
    highest: Option<u32>,
}

impl Receipts {
    pub fn new(publishers: u32) -> Receipts {
        Receipts {
            latency: histogram(),
            deliveries: 0,
            duplicates: 0,
            reordered: 0,
            foreign: 0,
            seen: (0..publishers).map(|_| SeqSet::default()).collect(),
        }
    }

    /// Records one delivery received at `now_ns`.
    pub fn record(&mut self, payload: &[u8], now_ns: u64) {
        self.deliveries += 1;
        let Some(stamp) = Stamp::read(payload) else {
            self.foreign += 1;
            return;
        };
        let Some(set) = usize::try_from(stamp.publisher)
            .ok()
            .and_then(|i| self.seen.get_mut(i))
        else {
            self.foreign += 1;
            return;
        };
        let latency_us = now_ns.saturating_sub(stamp.sent_ns) / 1000;
        self.latency.saturating_record(latency_us.max(1));
        let word = (stamp.seq / 64) as usize;
        let bit = 1u64 << (stamp.seq % 64);
        if set.bits.len() <= word {
            set.bits.resize(word + 1, 0);
        }
        if set.bits[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        set.bits[word] |= bit;
        set.unique += 1;
        match set.highest {
            Some(h) if stamp.seq < h => self.reordered += 1,
            _ => set.highest = Some(stamp.seq),
        }
    }

    /// Distinct messages received from publisher `i`.
    pub fn unique_from(&self, i: usize) -> u64 {
        self.seen.get(i).map_or(0, |s| s.unique)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_carries_its_stamp_and_has_the_requested_size() {
        let before = now_ns();
        let p = payload(100, 7, 42);
        assert_eq!(p.len(), 100);
        let stamp = Stamp::read(&p).expect("header");
        assert_eq!((stamp.publisher, stamp.seq), (7, 42));
        assert!(stamp.sent_ns >= before && stamp.sent_ns <= now_ns());
    }

    #[test]
    fn a_short_payload_is_foreign() {
        let mut r = Receipts::new(1);
        r.record(b"hello", now_ns());
        assert_eq!((r.deliveries, r.foreign), (1, 1));
    }

    #[test]
    fn receipts_count_duplicates_and_reordering_per_publisher() {
        let mut r = Receipts::new(2);
        for (publisher, seq) in [(0, 0), (0, 2), (0, 1), (0, 2), (1, 0), (1, 1)] {
            r.record(&payload(16, publisher, seq), now_ns());
        }
        assert_eq!(r.deliveries, 6);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.reordered, 1);
        assert_eq!((r.unique_from(0), r.unique_from(1)), (3, 2));
        assert_eq!(r.latency.len(), 6);
    }

    #[test]
    fn an_unknown_publisher_is_foreign() {
        let mut r = Receipts::new(1);
        r.record(&payload(16, 5, 0), now_ns());
        assert_eq!(r.foreign, 1);
        assert_eq!(r.unique_from(0), 0);
    }
}
