//! The classic group coordinator: JoinGroup / SyncGroup / Heartbeat / LeaveGroup with real
//! rebalances and session time-outs. Group membership is in memory (members rejoin after a
//! restart, as they do after a coordinator move in Kafka); committed offsets are in the
//! replicated routing table.

mod group;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use group::{Group, Member};
pub use group::{JoinOutcome, State, SyncOutcome};

/// Coordinator settings from the server config.
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    /// How long a new group waits for more members before its first generation.
    pub initial_rebalance_delay: Duration,
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            initial_rebalance_delay: Duration::from_millis(500),
            min_session_timeout: Duration::from_secs(6),
            max_session_timeout: Duration::from_secs(1800),
        }
    }
}

/// A JoinGroup request in protocol-neutral form.
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new member must first learn its id (MEMBER_ID_REQUIRED) and rejoin with it.
    pub require_known_member_id: bool,
}

/// A member as DescribeGroups reports it.
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups reports it.
pub struct GroupView {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    settings: GroupSettings,
    next_member: AtomicU64,
}

impl Coordinator {
    pub fn new(settings: GroupSettings) -> Self {
        Self {
            groups: Mutex::new(HashMap::new()),
            settings,
            next_member: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_member_id(&self, client_id: &str) -> String {
        let n = self.next_member.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("{client_id}-{n}-{nanos:08x}")
    }

    pub async fn join(&self, req: JoinRequest) -> JoinOutcome {
        let rx = match self.join_now(req) {
            Ok(rx) => rx,
            Err(outcome) => return *outcome,
        };
        // Bounded: the rebalance deadline completes every join; this only guards a bug.
        match tokio::time::timeout(Duration::from_secs(600), rx).await {
            Ok(Ok(outcome)) => outcome,
            _ => JoinOutcome::error(ResponseError::UnknownMemberId, ""),
        }
    }

    fn join_now(
        &self,
        req: JoinRequest,
    ) -> Result<oneshot::Receiver<JoinOutcome>, Box<JoinOutcome>> {
        let now = Instant::now();
        let s = self.settings;
        if req.session_timeout < s.min_session_timeout
            || req.session_timeout > s.max_session_timeout
        {
            return Err(Box::new(JoinOutcome::error(
                ResponseError::InvalidSessionTimeout,
                &req.member_id,
            )));
        }
        if req.group_id.is_empty() {
            return Err(Box::new(JoinOutcome::error(
                ResponseError::InvalidGroupId,
                &req.member_id,
            )));
        }
        let mut groups = self.lock();
        let group = groups
            .entry(req.group_id.clone())
            .or_insert_with(Group::new);
        if !group.members.is_empty()
            && group
                .protocol_type
                .as_deref()
                .is_some_and(|t| t != req.protocol_type)
        {
            return Err(Box::new(JoinOutcome::error(
                ResponseError::InconsistentGroupProtocol,
                &req.member_id,
            )));
        }
        let member_id = if req.member_id.is_empty() {
            let id = self.new_member_id(&req.client_id);
            if req.require_known_member_id {
                group.pending.insert(id.clone(), now + req.session_timeout);
                return Err(Box::new(JoinOutcome::error(
                    ResponseError::MemberIdRequired,
                    &id,
                )));
            }
            id
        } else {
            if !group.members.contains_key(&req.member_id)
                && group.pending.remove(&req.member_id).is_none()
            {
                return Err(Box::new(JoinOutcome::error(
                    ResponseError::UnknownMemberId,
                    &req.member_id,
                )));
            }
            req.member_id.clone()
        };
        if !group.accepts_protocols(&member_id, &req.protocols) {
            return Err(Box::new(JoinOutcome::error(
                ResponseError::InconsistentGroupProtocol,
                &member_id,
            )));
        }
        // A follower rejoining a stable group with unchanged metadata gets the current
        // generation back without disturbing everyone (as Kafka does).
        let is_leader = group.leader.as_deref() == Some(member_id.as_str());
        if group.state == State::Stable
            && !is_leader
            && let Some(m) = group.members.get_mut(&member_id)
            && m.protocols == req.protocols
        {
            m.last_seen = now;
            return Err(Box::new(JoinOutcome {
                error: 0,
                generation: group.generation,
                protocol_type: group.protocol_type.clone(),
                protocol_name: group.protocol.clone(),
                leader: group.leader.clone().unwrap_or_default(),
                member_id,
                members: Vec::new(),
            }));
        }
        let (tx, rx) = oneshot::channel();
        group.protocol_type = Some(req.protocol_type.clone());
        let member = group.members.entry(member_id).or_insert_with(|| Member {
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout: req.session_timeout,
            rebalance_timeout: req.rebalance_timeout,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            last_seen: now,
            join_tx: None,
            sync_tx: None,
        });
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.protocols = req.protocols;
        member.last_seen = now;
        member.join_tx = Some(tx);
        group.prepare_rebalance(now, s.initial_rebalance_delay);
        group.maybe_complete_join(now);
        Ok(rx)
    }

    pub async fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncOutcome {
        let rx = {
            let mut groups = self.lock();
            let Some(group) = groups.get_mut(group_id) else {
                return SyncOutcome::error(ResponseError::UnknownMemberId);
            };
            if !group.members.contains_key(member_id) {
                return SyncOutcome::error(ResponseError::UnknownMemberId);
            }
            if generation != group.generation {
                return SyncOutcome::error(ResponseError::IllegalGeneration);
            }
            match group.state {
                State::Empty => return SyncOutcome::error(ResponseError::UnknownMemberId),
                State::PreparingRebalance => {
                    return SyncOutcome::error(ResponseError::RebalanceInProgress);
                }
                State::Stable => {
                    let assignment = group.members.get(member_id).map(|m| m.assignment.clone());
                    return SyncOutcome {
                        error: 0,
                        protocol_type: group.protocol_type.clone(),
                        protocol_name: group.protocol.clone(),
                        assignment: assignment.unwrap_or_default(),
                    };
                }
                State::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            if let Some(m) = group.members.get_mut(member_id) {
                m.sync_tx = Some(tx);
                m.last_seen = Instant::now();
            }
            if group.leader.as_deref() == Some(member_id) {
                group.complete_sync(assignments.into_iter().collect());
            }
            rx
        };
        match tokio::time::timeout(Duration::from_secs(600), rx).await {
            Ok(Ok(outcome)) => outcome,
            _ => SyncOutcome::error(ResponseError::RebalanceInProgress),
        }
    }

    pub fn heartbeat(&self, group_id: &str, generation: i32, member_id: &str) -> i16 {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        let state = group.state;
        let current = group.generation;
        let Some(m) = group.members.get_mut(member_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        m.last_seen = Instant::now();
        if state == State::PreparingRebalance {
            return ResponseError::RebalanceInProgress.code();
        }
        if generation != current {
            return ResponseError::IllegalGeneration.code();
        }
        0
    }

    /// Removes members; returns an error code per member id.
    pub fn leave(&self, group_id: &str, member_ids: &[String]) -> Vec<i16> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return vec![ResponseError::UnknownMemberId.code(); member_ids.len()];
        };
        let now = Instant::now();
        member_ids
            .iter()
            .map(|id| {
                if group.remove_member(id, now) {
                    0
                } else {
                    ResponseError::UnknownMemberId.code()
                }
            })
            .collect()
    }

    /// Checks an OffsetCommit against membership: 0 if it may proceed.
    pub fn validate_commit(&self, group_id: &str, generation: i32, member_id: &str) -> i16 {
        // Standalone consumers (assign(), kcat) commit without a generation.
        if generation < 0 && member_id.is_empty() {
            return 0;
        }
        let groups = self.lock();
        let Some(group) = groups.get(group_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        if group.state == State::Empty && generation < 0 {
            return 0;
        }
        if !group.members.contains_key(member_id) {
            return ResponseError::UnknownMemberId.code();
        }
        if group.state == State::CompletingRebalance {
            return ResponseError::RebalanceInProgress.code();
        }
        if generation != group.generation {
            return ResponseError::IllegalGeneration.code();
        }
        0
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupView> {
        let groups = self.lock();
        let g = groups.get(group_id)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        let members = g
            .members
            .iter()
            .map(|(id, m)| MemberView {
                member_id: id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect();
        Some(GroupView {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol,
            members,
        })
    }

    /// Every group with members, and its state.
    pub fn list(&self) -> Vec<(String, &'static str, String)> {
        self.lock()
            .iter()
            .map(|(id, g)| {
                (
                    id.clone(),
                    g.state.name(),
                    g.protocol_type.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// True if the group has live members (it may not be deleted then).
    pub fn has_members(&self, group_id: &str) -> bool {
        self.lock()
            .get(group_id)
            .is_some_and(|g| !g.members.is_empty())
    }

    pub fn forget(&self, group_id: &str) {
        self.lock().remove(group_id);
    }

    /// Expires sessions and completes rebalances whose deadline passed.
    pub fn tick(&self, now: Instant) {
        let mut groups = self.lock();
        for (id, g) in groups.iter_mut() {
            let expired = g.expire_members(now);
            if expired > 0 {
                tracing::info!(group = %id, expired, "group members' sessions expired; rebalancing");
                g.prepare_rebalance(now, Duration::ZERO);
            }
            g.maybe_complete_join(now);
        }
        groups.retain(|_, g| {
            !(g.state == State::Empty && g.members.is_empty() && g.pending.is_empty())
        });
    }

    /// Runs [`Coordinator::tick`] until cancelled. Timer-driven expiry of in-memory sessions,
    /// not storage polling.
    pub async fn run_timers(&self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => self.tick(Instant::now()),
            }
        }
    }
}

#[cfg(test)]
mod tests;
