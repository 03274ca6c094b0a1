//! Zig-zag variable-length integers as used inside Kafka v2 records (protobuf style).

/// Appends `v` zig-zag encoded.
pub fn put_varlong(buf: &mut Vec<u8>, v: i64) {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    while u >= 0x80 {
        buf.push((u as u8) | 0x80);
        u >>= 7;
    }
    buf.push(u as u8);
}

pub fn put_varint(buf: &mut Vec<u8>, v: i32) {
    put_varlong(buf, i64::from(v));
}

/// The most bytes a zig-zag varint of an `i32` takes.
pub const VARINT_MAX: usize = 5;

/// `v` zig-zag encoded into a fixed array, and how many of its bytes it uses.
pub fn varint_bytes(v: i32) -> ([u8; VARINT_MAX], usize) {
    let mut u = ((v << 1) ^ (v >> 31)) as u32;
    let mut out = [0u8; VARINT_MAX];
    let mut n = 0;
    while u >= 0x80 {
        out[n] = (u as u8) | 0x80;
        u >>= 7;
        n += 1;
    }
    out[n] = u as u8;
    (out, n + 1)
}

/// Reads a zig-zag varlong from the front of `buf`, returning it and the bytes consumed;
/// `None` if `buf` ends early or the value runs past ten bytes.
pub fn get_varlong(buf: &[u8]) -> Option<(i64, usize)> {
    let mut u: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        u |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let v = ((u >> 1) as i64) ^ -((u & 1) as i64);
            return Some((v, i + 1));
        }
    }
    None
}

pub fn get_varint(buf: &[u8]) -> Option<(i32, usize)> {
    let (v, n) = get_varlong(buf)?;
    i32::try_from(v).ok().map(|v| (v, n))
}

/// Encoded length of `v`, without writing it.
pub fn varlong_len(v: i64) -> usize {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while u >= 0x80 {
        u >>= 7;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors_match_the_kafka_encoding() {
        for (v, bytes) in [
            (0i64, vec![0u8]),
            (-1, vec![1]),
            (1, vec![2]),
            (63, vec![0x7e]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
            (300, vec![0xd8, 0x04]),
        ] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert_eq!(buf, bytes, "encoding {v}");
            assert_eq!(get_varlong(&bytes), Some((v, bytes.len())));
            assert_eq!(varlong_len(v), bytes.len());
        }
    }

    #[test]
    fn fixed_array_varints_are_the_same_bytes_as_growing_ones() {
        for v in [0, -1, 1, 63, -64, 64, 300, 1 << 20, i32::MAX, i32::MIN] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let (bytes, n) = varint_bytes(v);
            assert_eq!(&bytes[..n], &buf[..], "encoding {v}");
        }
    }

    #[test]
    fn round_trips_extremes_and_rejects_truncation() {
        for v in [i64::MIN, i64::MAX, i64::from(i32::MIN), 123_456_789] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert_eq!(get_varlong(&buf), Some((v, buf.len())));
            assert_eq!(get_varlong(&buf[..buf.len() - 1]), None);
        }
        assert_eq!(get_varint(&[0xff, 0xff, 0xff, 0xff, 0x7f]), None);
    }
}
