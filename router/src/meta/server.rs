//! The server side of the peer protocol ([`super::wire`]): accepts peers, checks who they are,
//! and hands their requests to the local Raft node.

use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;
use openraft::error::{ClientWriteError, Fatal, RaftError};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::TypeConfig;
use super::conn::{ConnError, Connection};
use super::network::Identity;
use super::wire::{Hello, MAX_FRAME, PROTOCOL_VERSION, Refusal, Request, Response, Written};
use crate::table::Command;

/// A new connection must introduce itself within this time.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection that sends nothing for this long is closed. Pooled connections of a live peer
/// are used by heartbeats many times a second; this only reaps those of vanished peers.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Pause after a failed accept (out of file descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts peer connections on `listener` until `cancel`, each served in a task of `tasks`.
pub(super) async fn serve(
    listener: TcpListener,
    raft: Raft<TypeConfig>,
    identity: Arc<Identity>,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let conn = PeerConn {
                    raft: raft.clone(),
                    identity: identity.clone(),
                    peer: peer.to_string(),
                };
                let cancel = cancel.clone();
                tasks.spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = conn.run(stream) => {}
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metadata listener cannot accept; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Whether a peer's [`Hello`] fits this node; `Err` says why not, for both sides' logs.
///
/// The member lists must be equal: every node of a new group calls `initialize` with its own
/// list (see `MetaStore::start`), and two lists that differ would start two groups that both
/// believe in their own log, a split brain. Refusing the connection makes the mistake a
/// failed start instead.
pub(super) fn check_hello(local: &Identity, hello: &Hello) -> Result<(), String> {
    if hello.version != PROTOCOL_VERSION {
        return Err(format!(
            "node {} speaks metadata protocol {}, this node {PROTOCOL_VERSION}",
            hello.from, hello.version
        ));
    }
    if hello.cluster != local.cluster {
        return Err(format!(
            "node {} belongs to cluster {:?}, this node to {:?}",
            hello.from, hello.cluster, local.cluster
        ));
    }
    if hello.to != local.id {
        return Err(format!(
            "node {} dialed this address as node {}, but it is node {}; check the addresses in \
             meta.members",
            hello.from, hello.to, local.id
        ));
    }
    if hello.members != local.members {
        return Err(format!(
            "node {} is configured with members {:?}, this node {} with {:?}; every node of a \
             group must list the same meta.members",
            hello.from, hello.members, local.id, local.members
        ));
    }
    Ok(())
}

/// One accepted peer connection.
struct PeerConn {
    raft: Raft<TypeConfig>,
    identity: Arc<Identity>,
    peer: String,
}

impl PeerConn {
    async fn run(self, stream: TcpStream) {
        let mut conn = Connection::new(stream, MAX_FRAME);
        match self.greet(&mut conn).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "metadata peer left before its hello");
                return;
            }
        }
        loop {
            let request = match tokio::time::timeout(IDLE_TIMEOUT, conn.recv::<Request>()).await {
                Ok(Ok(Some(request))) => request,
                Ok(Err(e @ ConnError::Frame(_))) => {
                    tracing::warn!(peer = %self.peer, error = %e, "malformed metadata request; closing");
                    return;
                }
                // A peer that closes its connection, or goes quiet, is not an error: it restarted
                // or dropped a connection it no longer needs.
                Ok(Ok(None) | Err(_)) | Err(_) => return,
            };
            let Some(response) = answer(&self.raft, request).await else {
                tracing::warn!(peer = %self.peer, "metadata peer repeated its hello; closing");
                return;
            };
            if let Err(e) = conn.send(&response).await {
                tracing::debug!(peer = %self.peer, error = %e, "metadata peer left before its answer");
                return;
            }
        }
    }

    /// Reads and checks the hello; `Ok(false)` when the peer was refused.
    async fn greet(&self, conn: &mut Connection) -> Result<bool, ConnError> {
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, conn.recv::<Request>()).await {
            Ok(Ok(Some(Request::Hello(hello)))) => hello,
            Ok(Ok(Some(_))) => {
                tracing::warn!(peer = %self.peer, "metadata peer did not start with a hello");
                return Ok(false);
            }
            Ok(Ok(None)) | Err(_) => return Ok(false),
            Ok(Err(e)) => return Err(e),
        };
        let checked = check_hello(&self.identity, &hello);
        if let Err(reason) = &checked {
            // A person must fix a configuration; the peer logs the same reason on its side.
            tracing::warn!(peer = %self.peer, %reason, "refused a metadata peer");
        }
        let accepted = checked.is_ok();
        conn.send(&Response::Hello(checked)).await?;
        Ok(accepted)
    }
}

/// The answer to one request; `None` for a request that has no place after the hello.
async fn answer(raft: &Raft<TypeConfig>, request: Request) -> Option<Response> {
    Some(match request {
        Request::Hello(_) => return None,
        Request::AppendEntries(rpc) => Response::AppendEntries(raft.append_entries(rpc).await),
        Request::Vote(rpc) => Response::Vote(raft.vote(rpc).await),
        Request::InstallSnapshot(rpc) => {
            Response::InstallSnapshot(raft.install_snapshot(rpc).await)
        }
        Request::ClientWrite(cmd) => Response::ClientWrite(write(raft, cmd).await),
    })
}

/// Proposes `cmd` to the local node: what a leader does with its own and forwarded proposals.
pub(super) async fn write(raft: &Raft<TypeConfig>, cmd: Command) -> Result<Written, Refusal> {
    match raft.client_write(cmd).await {
        Ok(written) => Ok(Written {
            index: written.log_id.index,
            applied: written.data,
        }),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(Refusal::NotLeader {
            leader: f.leader_id.zip(f.leader_node),
        }),
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            Err(Refusal::Failed(e.to_string()))
        }
        Err(RaftError::Fatal(Fatal::Stopped)) => Err(Refusal::Stopped),
        Err(RaftError::Fatal(e)) => Err(Refusal::Failed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn local() -> Identity {
        Identity {
            cluster: "switchboard".into(),
            id: 1,
            members: BTreeMap::from([
                (1, "127.0.0.1:9301".into()),
                (2, "127.0.0.1:9302".into()),
                (3, "127.0.0.1:9303".into()),
            ]),
        }
    }

    fn hello_from_2() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            cluster: "switchboard".into(),
            from: 2,
            to: 1,
            members: local().members,
        }
    }

    #[test]
    fn a_peer_of_the_same_group_is_accepted() {
        assert_eq!(check_hello(&local(), &hello_from_2()), Ok(()));
    }

    #[test]
    fn a_peer_with_other_members_is_refused() {
        let mut hello = hello_from_2();
        hello.members.insert(4, "127.0.0.1:9304".into());
        let refused = check_hello(&local(), &hello).err().unwrap_or_default();
        assert!(refused.contains("same meta.members"), "{refused}");
    }

    #[test]
    fn a_peer_of_another_cluster_version_or_node_is_refused() {
        let other_cluster = Hello {
            cluster: "other".into(),
            ..hello_from_2()
        };
        let other_version = Hello {
            version: PROTOCOL_VERSION + 1,
            ..hello_from_2()
        };
        let wrong_node = Hello {
            to: 3,
            ..hello_from_2()
        };
        for (hello, why) in [
            (other_cluster, "cluster"),
            (other_version, "protocol"),
            (wrong_node, "dialed"),
        ] {
            let refused = check_hello(&local(), &hello).err().unwrap_or_default();
            assert!(refused.contains(why), "{why}: {refused}");
        }
    }
}
