//! The peer protocol of the metadata group: frames and the messages they carry. Pure: bytes in,
//! messages out, no sockets ([`super::conn`] owns those).
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of JSON. JSON because the
//! log and snapshots are already JSON, so every type has exactly one serialization, and the
//! traffic is metadata (a few proposals a second and heartbeats), not records.
//!
//! A connection opens with a [`Hello`] that the server accepts or refuses; after that the client
//! sends one [`Request`] at a time and the server answers each with the matching [`Response`]
//! before it reads the next. A client that gives up waiting for an answer closes the
//! connection, so an answer can never be taken for the one to a later request.

use std::collections::BTreeMap;

use bytes::{Buf, Bytes, BytesMut};
use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::TypeConfig;
use crate::table::{Applied, Command};

type NodeId = u64;

/// Bumped when a message changes incompatibly; peers of another version are refused.
pub(super) const PROTOCOL_VERSION: u32 = 1;

/// Largest frame sent or accepted. Far above any single command, and above a snapshot chunk
/// (1 MiB of bytes is at most 4 MiB as a JSON array); a batch of entries that would exceed it is
/// sent in smaller batches (openraft's `PayloadTooLarge`).
pub(super) const MAX_FRAME: usize = 64 << 20;

/// Bytes of the length prefix.
const LEN: usize = 4;

/// What a client says about itself when it connects, so that a peer configured for another
/// group is refused before it can vote or replicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Hello {
    pub(super) version: u32,
    pub(super) cluster: String,
    pub(super) from: NodeId,
    pub(super) to: NodeId,
    /// The member list the client was configured with; see [`super::server::check_hello`].
    pub(super) members: BTreeMap<NodeId, String>,
}

/// A message from client to server.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Request {
    Hello(Hello),
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A proposal forwarded by a follower to the leader.
    ClientWrite(Command),
}

impl Request {
    /// Entries of an AppendEntries, else zero: a batch that is too large can be split.
    pub(super) fn entries(&self) -> usize {
        match self {
            Self::AppendEntries(r) => r.entries.len(),
            _ => 0,
        }
    }
}

/// A message from server to client, answering the [`Request`] of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Response {
    /// `Err` carries why the server refused the connection; it closes it after sending this.
    Hello(Result<(), String>),
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    ClientWrite(Result<Written, Refusal>),
}

/// The leader's answer to a forwarded proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Written {
    /// Log index of the entry, so the follower can wait until it applied it too.
    pub(super) index: u64,
    pub(super) applied: Applied,
}

/// Why the leader did not take a forwarded proposal. Nothing was written in either case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Refusal {
    /// The server is not (or no longer) the leader; `leader` is the one it knows of.
    NotLeader { leader: Option<(NodeId, BasicNode)> },
    /// The server is shutting down.
    Stopped,
    /// The proposal failed for a reason a retry does not fix.
    Failed(String),
}

/// Why bytes are not a frame.
#[derive(Debug, thiserror::Error)]
pub(super) enum FrameError {
    #[error("frame of {len} bytes is larger than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Json(#[from] serde_json::Error),
}

/// Serializes `msg` into one frame of at most `max` bytes (prefix included).
pub(super) fn encode<T: Serialize>(msg: &T, max: usize) -> Result<Bytes, FrameError> {
    // Room for the length first, filled in once the body is written.
    let mut out = vec![0; LEN];
    serde_json::to_writer(&mut out, msg)?;
    let len = out.len();
    let body = u32::try_from(len - LEN).map_err(|_| FrameError::TooLarge { len, max })?;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    out[..LEN].copy_from_slice(&body.to_be_bytes());
    Ok(Bytes::from(out))
}

/// Takes one message off the front of `buf`: `Ok(None)` until a whole frame is there. A length
/// over `max` is an error at once, before its body arrives.
pub(super) fn decode<T: DeserializeOwned>(
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<T>, FrameError> {
    let Some(prefix) = buf.first_chunk::<LEN>() else {
        return Ok(None);
    };
    let len = LEN + u32::from_be_bytes(*prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if buf.len() < len {
        buf.reserve(len - buf.len());
        return Ok(None);
    }
    buf.advance(LEN);
    let body = buf.split_to(len - LEN);
    Ok(Some(serde_json::from_slice(&body)?))
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use openraft::Vote;

    use super::*;

    fn hello() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            cluster: "switchboard".into(),
            from: 2,
            to: 1,
            members: BTreeMap::from([(1, "a:1".into()), (2, "b:2".into())]),
        }
    }

    #[test]
    fn a_frame_decodes_to_what_was_encoded() {
        let frame = encode(&Request::Hello(hello()), MAX_FRAME).expect("encode");
        let mut buf = BytesMut::from(&frame[..]);
        let decoded: Option<Request> = decode(&mut buf, MAX_FRAME).expect("decode");
        assert!(matches!(decoded, Some(Request::Hello(h)) if h == hello()));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_partial_frame_needs_more_bytes() {
        let frame = encode(
            &Request::Vote(VoteRequest::new(Vote::new(3, 1), None)),
            MAX_FRAME,
        )
        .expect("encode");
        let mut buf = BytesMut::new();
        for byte in &frame[..frame.len() - 1] {
            buf.put_u8(*byte);
            assert!(matches!(decode::<Request>(&mut buf, MAX_FRAME), Ok(None)));
        }
        buf.put_u8(frame[frame.len() - 1]);
        let decoded = decode::<Request>(&mut buf, MAX_FRAME).expect("decode");
        assert!(matches!(decoded, Some(Request::Vote(v)) if v.vote == Vote::new(3, 1)));
    }

    #[test]
    fn two_frames_in_one_read_decode_one_after_the_other() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&encode(&Response::Hello(Ok(())), MAX_FRAME).expect("encode"));
        let refused = Response::Hello(Err("wrong cluster".into()));
        buf.extend_from_slice(&encode(&refused, MAX_FRAME).expect("encode"));
        let first = decode::<Response>(&mut buf, MAX_FRAME).expect("first");
        let second = decode::<Response>(&mut buf, MAX_FRAME).expect("second");
        assert!(matches!(first, Some(Response::Hello(Ok(())))));
        assert!(matches!(second, Some(Response::Hello(Err(e))) if e == "wrong cluster"));
        assert!(matches!(decode::<Response>(&mut buf, MAX_FRAME), Ok(None)));
    }

    #[test]
    fn an_oversized_frame_is_refused_on_both_sides() {
        let big = Request::Hello(Hello {
            cluster: "x".repeat(100),
            ..hello()
        });
        assert!(matches!(
            encode(&big, 64),
            Err(FrameError::TooLarge { max: 64, .. })
        ));
        // The receiver refuses on the length prefix alone, before the body arrives.
        let frame = encode(&big, MAX_FRAME).expect("encode");
        let mut buf = BytesMut::from(&frame[..LEN]);
        assert!(matches!(
            decode::<Request>(&mut buf, 64),
            Err(FrameError::TooLarge { max: 64, .. })
        ));
    }

    #[test]
    fn a_malformed_body_is_an_error() {
        let mut buf = BytesMut::new();
        buf.put_u32(5);
        buf.put_slice(b"nope!");
        assert!(matches!(
            decode::<Request>(&mut buf, MAX_FRAME),
            Err(FrameError::Json(_))
        ));
    }
}
