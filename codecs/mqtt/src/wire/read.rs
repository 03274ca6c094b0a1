//! Reading the MQTT data representations (MQTT 5 §1.5) off the body of one packet.
//!
//! The body has already been cut off the connection's buffer, so every length field is checked
//! against the bytes that are really there: no read allocates more than the packet holds.

use bytes::{Buf, Bytes};

use super::DecodeError;

/// The largest value a Variable Byte Integer can hold (MQTT 5 §1.5.5): four bytes of seven bits.
pub const MAX_VARIABLE_BYTE_INTEGER: u32 = 268_435_455;

/// Reads a Variable Byte Integer (MQTT 5 §1.5.5) from the front of `bytes`: its value and how
/// many bytes it took, or `None` when `bytes` ends before its last byte.
pub(super) fn variable_byte_integer(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value = 0u32;
    for (i, &byte) in bytes.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // [MQTT-1.5.5-1]: a trailing zero group means a shorter encoding existed.
            if i > 0 && byte == 0 {
                return Err(DecodeError::Malformed(
                    "variable byte integer does not use the minimum number of bytes",
                ));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        Err(DecodeError::Malformed(
            "variable byte integer (such as the remaining length) is longer than 4 bytes",
        ))
    } else {
        Ok(None)
    }
}

/// A cursor over the body of one packet (or over its property section).
pub(super) struct Reader {
    buf: Bytes,
    /// What running out of bytes means here: the packet, or its property section, ends early.
    short: &'static str,
}

impl Reader {
    pub(super) fn new(buf: Bytes) -> Self {
        Self {
            buf,
            short: "packet ends before the fields it declares",
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails unless every byte of the packet has been read: MQTT has no trailing padding.
    pub(super) fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(what))
        }
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(DecodeError::Malformed(self.short))
        } else {
            Ok(())
        }
    }

    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    pub(super) fn variable_byte_integer(&mut self) -> Result<u32, DecodeError> {
        match variable_byte_integer(&self.buf)? {
            Some((value, len)) => {
                self.buf.advance(len);
                Ok(value)
            }
            None => Err(DecodeError::Malformed(self.short)),
        }
    }

    /// The next `n` bytes, shared with the packet's buffer rather than copied.
    pub(super) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Everything left, shared rather than copied (the PUBLISH payload).
    pub(super) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary Data (MQTT 5 §1.5.6): a two-byte length, then that many bytes.
    pub(super) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// UTF-8 Encoded String (MQTT 5 §1.5.4): a two-byte length, then well-formed UTF-8 with no
    /// U+0000. Rust's UTF-8 check already refuses surrogate code points, as the rule requires.
    pub(super) fn string(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.u16()?);
        self.need(len)?;
        let text = std::str::from_utf8(&self.buf[..len]).map_err(|_| {
            DecodeError::Malformed("UTF-8 encoded string is not well-formed UTF-8 (MQTT 5 §1.5.4)")
        })?;
        if text.as_bytes().contains(&0) {
            return Err(DecodeError::Malformed(
                "UTF-8 encoded string contains the null character U+0000 (MQTT 5 §1.5.4)",
            ));
        }
        let text = text.to_owned();
        self.buf.advance(len);
        Ok(text)
    }

    /// UTF-8 String Pair (MQTT 5 §1.5.7), the form of a user property.
    pub(super) fn string_pair(&mut self) -> Result<(String, String), DecodeError> {
        let name = self.string()?;
        let value = self.string()?;
        Ok((name, value))
    }

    /// The property section of an MQTT 5 packet (§2.2.2): a Variable Byte Integer length, then
    /// exactly that many bytes of properties. The returned reader covers just those bytes, so
    /// a property that would run past the declared length is caught as malformed.
    pub(super) fn properties(&mut self) -> Result<Reader, DecodeError> {
        let len = self.variable_byte_integer()? as usize;
        if len > self.buf.len() {
            return Err(DecodeError::Malformed(
                "property length runs past the end of the packet",
            ));
        }
        Ok(Reader {
            buf: self.buf.split_to(len),
            short: "property length ends inside a property",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_byte_integer_boundaries_decode() {
        let cases: [(&[u8], u32); 8] = [
            (&[0x00], 0),
            (&[0x7f], 127),
            (&[0x80, 0x01], 128),
            (&[0xff, 0x7f], 16_383),
            (&[0x80, 0x80, 0x01], 16_384),
            (&[0xff, 0xff, 0x7f], 2_097_151),
            (&[0x80, 0x80, 0x80, 0x01], 2_097_152),
            (&[0xff, 0xff, 0xff, 0x7f], MAX_VARIABLE_BYTE_INTEGER),
        ];
        for (bytes, value) in cases {
            assert_eq!(
                variable_byte_integer(bytes),
                Ok(Some((value, bytes.len()))),
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn variable_byte_integer_needs_its_last_byte() {
        assert_eq!(variable_byte_integer(&[]), Ok(None));
        assert_eq!(variable_byte_integer(&[0x80, 0x80, 0x80]), Ok(None));
    }

    #[test]
    fn variable_byte_integer_rejects_a_fifth_byte_and_padding() {
        assert!(matches!(
            variable_byte_integer(&[0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            variable_byte_integer(&[0x80, 0x00]),
            Err(DecodeError::Malformed(_))
        ));
    }
}
