//! Kafka framing, pure and sans-I/O: a 4-byte big-endian size, then a request header and body.
//! "Need more bytes" is `Ok(None)`, not an error.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

/// Why a frame or header could not be read. Every variant closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("frame size {0} is negative")]
    NegativeSize(i32),
    #[error("frame of {0} bytes is too short for a request header")]
    ShortHeader(usize),
    #[error("request header could not be decoded: {0}")]
    BadHeader(String),
    /// No Kafka release we know defines this key, so there is no response layout to answer in.
    #[error("API key {0} is unknown to this broker's Kafka codec")]
    UnknownApiKey(i16),
    /// The codec cannot read the header and body of this version, nor write its response.
    #[error(
        "{api:?} v{version} is beyond what this broker's Kafka codec can read (v{min} to v{max})"
    )]
    VersionBeyondCodec {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    /// A request we would refuse, for which no error answer can be built (see `unsupported`).
    #[error("{api:?} v{version} is not served and has no error answer to give")]
    Unanswerable { api: ApiKey, version: i16 },
    #[error("request body of {api:?} v{version} could not be decoded: {reason}")]
    BadBody {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("response could not be encoded: {0}")]
    Encode(String),
}

/// Takes one whole frame off the front of `buf`, or `None` if more bytes are needed.
pub fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 0 {
        return Err(WireError::NegativeSize(size));
    }
    let size = size as usize;
    if size > max {
        return Err(WireError::TooLarge { size, max });
    }
    if buf.len() < 4 + size {
        buf.reserve(4 + size - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size).freeze()))
}

/// The start of a request: enough to answer even when the body turns out bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

pub fn peek_preamble(frame: &[u8]) -> Result<Preamble, WireError> {
    if frame.len() < 8 {
        return Err(WireError::ShortHeader(frame.len()));
    }
    Ok(Preamble {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

/// Decodes the header of a request to a known API; `frame` is left at the body.
pub fn decode_header(
    api: ApiKey,
    version: i16,
    frame: &mut Bytes,
) -> Result<RequestHeader, WireError> {
    let header_version = api.request_header_version(version);
    RequestHeader::decode(frame, header_version).map_err(|e| WireError::BadHeader(format!("{e:#}")))
}

pub fn decode_body<T: Decodable>(
    api: ApiKey,
    version: i16,
    body: &mut Bytes,
) -> Result<T, WireError> {
    T::decode(body, version).map_err(|e| WireError::BadBody {
        api,
        version,
        reason: format!("{e:#}"),
    })
}

/// Decodes the body of a request to any API the codec knows, served by us or not.
pub fn decode_request(
    api: ApiKey,
    version: i16,
    body: &mut Bytes,
) -> Result<RequestKind, WireError> {
    RequestKind::decode(api, body, version).map_err(|e| WireError::BadBody {
        api,
        version,
        reason: format!("{e:#}"),
    })
}

/// Encodes a whole response frame: size, header (v0 or v1 as the API and version demand), body.
pub fn encode_response<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<Bytes, WireError> {
    encode_response_with_header_version(correlation_id, R::header_version(version), version, body)
}

pub fn encode_response_with_header_version<R: Encodable>(
    correlation_id: i32,
    header_version: i16,
    version: i16,
    body: &R,
) -> Result<Bytes, WireError> {
    let enc = |e: anyhow::Error| WireError::Encode(format!("{e:#}"));
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version).map_err(enc)?
        + body.compute_size(version).map_err(enc)?;
    let mut out = BytesMut::with_capacity(4 + size);
    out.put_i32(size as i32);
    header.encode(&mut out, header_version).map_err(enc)?;
    body.encode(&mut out, version).map_err(enc)?;
    Ok(out.freeze())
}

/// Encodes a whole response frame around a response to any API (see [`encode_response`]).
pub fn encode_response_kind(
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    body: &ResponseKind,
) -> Result<Bytes, WireError> {
    let enc = |e: anyhow::Error| WireError::Encode(format!("{e:#}"));
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut out = BytesMut::new();
    out.put_i32(0); // the size, written once the frame is complete
    header
        .encode(&mut out, api.response_header_version(version))
        .map_err(enc)?;
    body.encode(&mut out, version).map_err(enc)?;
    let size = i32::try_from(out.len() - 4)
        .map_err(|_| WireError::Encode(format!("response of {} bytes", out.len())))?;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_only_when_whole() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 3, b'a', b'b']);
        assert!(
            next_frame(&mut buf, 100).unwrap().is_none(),
            "need more bytes is not an error"
        );
        buf.extend_from_slice(&[b'c', 0, 0]);
        assert_eq!(&next_frame(&mut buf, 100).unwrap().unwrap()[..], b"abc");
        assert_eq!(buf.len(), 2, "the next frame's bytes stay buffered");
    }

    #[test]
    fn oversized_and_negative_sizes_are_errors() {
        let mut big = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            next_frame(&mut big, 1024),
            Err(WireError::TooLarge { .. })
        ));
        let mut neg = BytesMut::from(&[0xff, 0xff, 0xff, 0xfb][..]);
        assert!(matches!(
            next_frame(&mut neg, 1024),
            Err(WireError::NegativeSize(-5))
        ));
    }

    #[test]
    fn api_versions_v0_response_has_the_v0_header_layout() {
        use kafka_protocol::messages::ApiVersionsResponse;
        let body = ApiVersionsResponse::default();
        let out = encode_response(42, 0, &body).unwrap();
        // size, correlation id, error code, empty array
        assert_eq!(&out[..], &[0, 0, 0, 10, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0]);
    }
}
