//! How one metadata node reaches another.
//!
//! A single-node group never opens a connection, so this is all it needs. A group with peers
//! has the types ready (node id `u64`, address in [`BasicNode`]) but no transport yet: every
//! RPC reports the peer as unreachable, and openraft backs off and retries.

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::TypeConfig;

type NodeId = u64;

/// The error every peer RPC returns until a transport exists.
#[derive(Debug, thiserror::Error)]
#[error("multi-node networking not implemented yet (peer {target} at {addr:?})")]
pub(super) struct NotImplemented {
    target: NodeId,
    addr: String,
}

/// Creates one [`PeerClient`] per peer.
#[derive(Debug, Clone, Default)]
pub(super) struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
        }
    }
}

/// The connection to one peer.
#[derive(Debug)]
pub(super) struct PeerClient {
    target: NodeId,
    addr: String,
}

impl PeerClient {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        RPCError::Unreachable(Unreachable::new(&NotImplemented {
            target: self.target,
            addr: self.addr.clone(),
        }))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::Vote;

    use super::*;

    #[tokio::test]
    async fn peer_rpcs_say_networking_is_not_implemented() {
        let mut client = Network
            .new_client(2, &BasicNode::new("meta-2.invalid:7000"))
            .await;
        let rpc = VoteRequest::new(Vote::new(1, 1), None);
        let err = client
            .vote(rpc, RPCOption::new(Duration::from_secs(1)))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("multi-node networking not implemented yet"),
            "{err}"
        );
    }
}
