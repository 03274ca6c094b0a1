//! What every reader that follows a partition does with a chunk it read (MQTT fan-out, MQTT
//! session replay, the MQTT ↔ AMQP link, AMQP stream consumers): expand the batches into the
//! records at or after the offset it asked for, and know where to continue.

use bytes::Bytes;

use crate::batch::{RecordBatch, peek_header};
use crate::builder::Record;
use crate::names::Offset;

/// The records of a chunk of batches read from `from`.
#[derive(Debug, Default)]
pub struct Followed {
    /// Records at or after `from`, in offset order; control batches contribute none.
    pub records: Vec<Record>,
    /// The offset after the chunk's last batch: where the next read starts.
    pub next: Offset,
    /// Batches that could not be expanded (corrupt, unknown codec); the reader logs them.
    pub unreadable: usize,
}

/// Expands `batches` (as a storage read returns them, starting with the batch that holds
/// `from`) into their records at or after `from`.
pub fn records_from(batches: Vec<Bytes>, from: Offset) -> Followed {
    let mut out = Followed {
        next: from,
        ..Followed::default()
    };
    for bytes in batches {
        let batch = match RecordBatch::parse(bytes.clone()) {
            Ok(b) => b,
            Err(_) => {
                // Step over it if its header still says where it ends.
                out.unreadable += 1;
                out.next = next_offset(std::slice::from_ref(&bytes), out.next);
                continue;
            }
        };
        out.next = out.next.max(batch.last_offset().max(0) as Offset + 1);
        if batch.header().is_control() {
            continue;
        }
        match batch.records() {
            Ok(records) => out
                .records
                .extend(records.into_iter().filter(|r| r.offset >= from)),
            Err(_) => out.unreadable += 1,
        }
    }
    out
}

/// The offset after the last of `batches`, reading only their headers: for a reader that skips
/// a chunk without looking at its records.
pub fn next_offset(batches: &[Bytes], from: Offset) -> Offset {
    batches
        .iter()
        .filter_map(|b| peek_header(b).ok())
        .map(|h| (h.base_offset.max(0) as Offset) + h.offset_count())
        .fold(from, Offset::max)
}

/// FNV-1a: a hash that is the same in every process and release, for placing a key on a
/// partition (an MQTT topic, an AMQP routing key) so that it lands there again after a restart.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::BatchBuilder;

    fn batch_at(base: Offset, values: &[&str]) -> Bytes {
        let mut b = BatchBuilder::new();
        for v in values {
            b.push(Record::new(
                None,
                Some(Bytes::copy_from_slice(v.as_bytes())),
                1,
            ));
        }
        b.build()
            .expect("batch")
            .with_base_offset(base)
            .into_bytes()
    }

    #[test]
    fn records_before_the_asked_offset_are_left_out() {
        let batches = vec![batch_at(0, &["a", "b", "c"]), batch_at(3, &["d"])];
        let got = records_from(batches.clone(), 2);
        let values: Vec<_> = got
            .records
            .iter()
            .map(|r| r.value.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            values,
            vec![Bytes::from_static(b"c"), Bytes::from_static(b"d")]
        );
        assert_eq!(got.next, 4);
        assert_eq!(got.unreadable, 0);
        assert_eq!(next_offset(&batches, 2), 4);
    }

    #[test]
    fn a_corrupt_batch_is_counted_and_skipped() {
        let mut bad = batch_at(0, &["a"]).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let got = records_from(vec![Bytes::from(bad), batch_at(1, &["b"])], 0);
        assert_eq!(got.unreadable, 1);
        assert_eq!(got.records.len(), 1);
        assert_eq!(got.next, 2);
    }

    #[test]
    fn the_stable_hash_does_not_change() {
        // FNV-1a test vectors: the hash must never change, or keys move partitions.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
