//! How one metadata node reaches another: the client side of the peer protocol ([`super::wire`]).
//!
//! openraft asks for a new client per election and per replication stream, so connections are
//! not owned by clients but by [`Peers`], one pool per node: a client takes a connection when it
//! first sends, keeps it while it lives (a replication stream sends for as long as its node
//! leads), and gives it back when dropped. Proposals forwarded to the leader use the same pool.
//!
//! Any failure drops the connection and the next request opens a new one; there is no
//! background reconnecting. openraft retries on its own: after an unreachable peer (refused
//! connection or handshake) it backs off ([`PeerClient::backoff`]), after any other failure it
//! retries at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tokio::net::TcpStream;

use super::TypeConfig;
use super::conn::{ConnError, Connection};
use super::wire::{self, FrameError, Hello, MAX_FRAME, Refusal, Request, Response, Written};
use crate::table::Command;

type NodeId = u64;

/// Idle connections kept per peer. One is busy per replication stream; more are only open while
/// proposals are forwarded concurrently.
const IDLE_PER_PEER: usize = 4;

/// First and longest pause before sending again to an unreachable peer.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Who this node is, as it introduces itself to peers and checks their introductions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Identity {
    pub(super) cluster: String,
    pub(super) id: NodeId,
    /// The configured members (node id → address); empty for a group of this node alone.
    pub(super) members: BTreeMap<NodeId, String>,
}

impl Identity {
    fn hello(&self, to: NodeId) -> Hello {
        Hello {
            version: wire::PROTOCOL_VERSION,
            cluster: self.cluster.clone(),
            from: self.id,
            to,
            members: self.members.clone(),
        }
    }
}

/// Why a request to a peer got no answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum CallError {
    #[error("cannot connect to node {target} at {addr}: {source}")]
    Connect {
        target: NodeId,
        addr: String,
        source: std::io::Error,
    },
    #[error("node {target} at {addr} did not complete the handshake: {source}")]
    Handshake {
        target: NodeId,
        addr: String,
        source: ConnError,
    },
    #[error("node {target} at {addr} refused us: {reason}")]
    Refused {
        target: NodeId,
        addr: String,
        reason: String,
    },
    #[error("request of {entries} entries cannot be sent: {source}")]
    TooLarge { entries: usize, source: FrameError },
    #[error("node {target} at {addr} did not answer within {timeout:?}")]
    Timeout {
        target: NodeId,
        addr: String,
        timeout: Duration,
        sent: bool,
    },
    #[error("connection to node {target} at {addr} failed: {source}")]
    Broken {
        target: NodeId,
        addr: String,
        source: ConnError,
    },
    #[error("node {target} at {addr} answered with an unexpected message")]
    Unexpected { target: NodeId, addr: String },
}

impl CallError {
    /// True when the request may have reached the peer: retrying it could apply it twice.
    pub(super) fn maybe_delivered(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Handshake { .. }
            | Self::Refused { .. }
            | Self::TooLarge { .. } => false,
            Self::Timeout { sent, .. } => *sent,
            Self::Broken { .. } | Self::Unexpected { .. } => true,
        }
    }

    /// The error openraft expects: unreachable peers are backed off, a batch too large is split.
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, BasicNode, E> {
        match self {
            Self::Connect { .. } | Self::Handshake { .. } | Self::Refused { .. } => {
                RPCError::Unreachable(Unreachable::new(&self))
            }
            Self::TooLarge { entries, .. } if entries > 1 => {
                RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries as u64 / 2))
            }
            _ => RPCError::Network(NetworkError::new(&self)),
        }
    }
}

/// The connections of this node to its peers.
pub(super) struct Peers {
    identity: Identity,
    idle: Mutex<HashMap<(NodeId, String), Vec<Connection>>>,
    /// Set on shutdown: connections are then closed instead of kept.
    closed: AtomicBool,
}

impl Peers {
    pub(super) fn new(identity: Identity) -> Self {
        Self {
            identity,
            idle: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// Closes the idle connections and every connection given back from now on.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// A live idle connection to `target`, if there is one.
    fn take_idle(&self, target: NodeId, addr: &str) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let conns = idle.get_mut(&(target, addr.to_owned()))?;
        while let Some(conn) = conns.pop() {
            if !conn.is_stale() {
                return Some(conn);
            }
        }
        None
    }

    fn give_back(&self, target: NodeId, addr: &str, conn: Connection) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let conns = idle.entry((target, addr.to_owned())).or_default();
        if conns.len() < IDLE_PER_PEER {
            conns.push(conn);
        }
    }

    /// Opens a connection and introduces this node.
    async fn connect(&self, target: NodeId, addr: &str) -> Result<Connection, CallError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| CallError::Connect {
                target,
                addr: addr.to_owned(),
                source,
            })?;
        let mut conn = Connection::new(stream, MAX_FRAME);
        let handshake = |source| CallError::Handshake {
            target,
            addr: addr.to_owned(),
            source,
        };
        conn.send(&Request::Hello(self.identity.hello(target)))
            .await
            .map_err(handshake)?;
        match conn.answer().await.map_err(handshake)? {
            Response::Hello(Ok(())) => Ok(conn),
            Response::Hello(Err(reason)) => Err(CallError::Refused {
                target,
                addr: addr.to_owned(),
                reason,
            }),
            _ => Err(CallError::Unexpected {
                target,
                addr: addr.to_owned(),
            }),
        }
    }

    /// Sends `request` to `target` over `held` (or a pooled or new connection) and waits at
    /// most `timeout` for the answer. On success the connection is left in `held`; on any
    /// failure, or if this future is dropped midway, it is closed, so that a late answer can
    /// never be read as the answer to a later request.
    async fn exchange(
        &self,
        held: &mut Option<Connection>,
        target: NodeId,
        addr: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let frame = wire::encode(request, MAX_FRAME).map_err(|source| CallError::TooLarge {
            entries: request.entries(),
            source,
        })?;
        let reused = held.take().filter(|c| !c.is_stale());
        let mut sent = false;
        let exchanged = tokio::time::timeout(timeout, async {
            let mut conn = match reused.or_else(|| self.take_idle(target, addr)) {
                Some(conn) => conn,
                None => self.connect(target, addr).await?,
            };
            sent = true;
            let answer = send_and_receive(&mut conn, &frame).await;
            answer
                .map(|response| (conn, response))
                .map_err(|source| CallError::Broken {
                    target,
                    addr: addr.to_owned(),
                    source,
                })
        })
        .await;
        match exchanged {
            Ok(Ok((conn, response))) => {
                *held = Some(conn);
                Ok(response)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CallError::Timeout {
                target,
                addr: addr.to_owned(),
                timeout,
                sent,
            }),
        }
    }

    /// Forwards a proposal to `leader` and returns its answer. On [`CallError`], see
    /// [`CallError::maybe_delivered`] before trying again.
    pub(super) async fn forward(
        &self,
        leader: NodeId,
        addr: &str,
        cmd: Command,
        timeout: Duration,
    ) -> Result<Result<Written, Refusal>, CallError> {
        let mut held = None;
        let response = self
            .exchange(&mut held, leader, addr, &Request::ClientWrite(cmd), timeout)
            .await?;
        if let Some(conn) = held {
            self.give_back(leader, addr, conn);
        }
        match response {
            Response::ClientWrite(answer) => Ok(answer),
            _ => Err(CallError::Unexpected {
                target: leader,
                addr: addr.to_owned(),
            }),
        }
    }
}

async fn send_and_receive(conn: &mut Connection, frame: &Bytes) -> Result<Response, ConnError> {
    conn.send_frame(frame).await?;
    conn.answer().await
}

/// Creates one [`PeerClient`] per peer, all sharing this node's [`Peers`].
#[derive(Clone)]
pub(super) struct Network {
    peers: Arc<Peers>,
}

impl Network {
    pub(super) fn new(peers: Arc<Peers>) -> Self {
        Self { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
            conn: None,
        }
    }
}

/// openraft's handle on one peer.
pub(super) struct PeerClient {
    target: NodeId,
    addr: String,
    peers: Arc<Peers>,
    conn: Option<Connection>,
}

impl PeerClient {
    /// Sends `request` and picks the expected answer out of the response.
    async fn call<T, E: std::error::Error>(
        &mut self,
        request: Request,
        option: &RPCOption,
        pick: impl FnOnce(Response) -> Option<Result<T, E>>,
    ) -> Result<T, RPCError<NodeId, BasicNode, E>> {
        let response = self
            .peers
            .exchange(
                &mut self.conn,
                self.target,
                &self.addr,
                &request,
                option.hard_ttl(),
            )
            .await
            .map_err(CallError::into_rpc)?;
        match pick(response) {
            Some(Ok(answer)) => Ok(answer),
            Some(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                BasicNode::new(&self.addr),
                remote,
            ))),
            None => {
                self.conn = None;
                Err(CallError::Unexpected {
                    target: self.target,
                    addr: self.addr.clone(),
                }
                .into_rpc())
            }
        }
    }
}

impl Drop for PeerClient {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.peers.give_back(self.target, &self.addr, conn);
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Request::AppendEntries(rpc), &option, |r| match r {
            Response::AppendEntries(answer) => Some(answer),
            _ => None,
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Request::InstallSnapshot(rpc), &option, |r| match r {
            Response::InstallSnapshot(answer) => Some(answer),
            _ => None,
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Request::Vote(rpc), &option, |r| match r {
            Response::Vote(answer) => Some(answer),
            _ => None,
        })
        .await
    }

    /// Pauses of a replication stream whose peer is unreachable: doubling from 200 ms to 2 s,
    /// so a node that is down for long costs a connection attempt (and a log line) every two
    /// seconds, and one that restarts is caught up within two seconds.
    fn backoff(&self) -> Backoff {
        let pauses =
            std::iter::successors(Some(BACKOFF_FIRST), |d| Some((*d * 2).min(BACKOFF_MAX)));
        Backoff::new(pauses)
    }
}

#[cfg(test)]
mod tests {
    use openraft::Vote;

    use super::*;

    fn identity() -> Identity {
        Identity {
            cluster: "switchboard".into(),
            id: 1,
            members: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn a_peer_that_is_not_listening_is_unreachable() {
        // A port that was free a moment ago; nothing listens on it once the listener is gone.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);

        let mut client = Network::new(Arc::new(Peers::new(identity())))
            .new_client(2, &BasicNode::new(&addr))
            .await;
        let rpc = VoteRequest::new(Vote::new(1, 1), None);
        let err = client
            .vote(rpc, RPCOption::new(Duration::from_secs(5)))
            .await
            .err();
        assert!(matches!(err, Some(RPCError::Unreachable(_))), "{err:?}");
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_times_out_and_the_connection_is_dropped() {
        // Connections to a listener that never accepts complete in its backlog, then hang.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = silent.local_addr().expect("addr").to_string();
        let mut client = Network::new(Arc::new(Peers::new(identity())))
            .new_client(2, &BasicNode::new(&addr))
            .await;
        let rpc = VoteRequest::new(Vote::new(1, 1), None);
        let err = client
            .vote(rpc, RPCOption::new(Duration::from_millis(200)))
            .await
            .err();
        assert!(matches!(err, Some(RPCError::Network(_))), "{err:?}");
        assert!(client.conn.is_none());
    }
}
