//! One consumer group's state machine (Kafka's classic rebalance protocol), without I/O: the
//! async layer hands in the current time and delivers the outcomes it returns.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
        }
    }
}

/// What a JoinGroup call is answered with.
#[derive(Debug, Clone, Default)]
pub struct JoinOutcome {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: every member and its subscription metadata.
    pub members: Vec<(String, Bytes)>,
}

impl JoinOutcome {
    pub fn error(e: ResponseError, member_id: &str) -> Self {
        Self {
            error: e.code(),
            generation: -1,
            member_id: member_id.to_owned(),
            ..Default::default()
        }
    }
}

/// What a SyncGroup call is answered with.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncOutcome {
    pub fn error(e: ResponseError) -> Self {
        Self {
            error: e.code(),
            ..Default::default()
        }
    }
}

pub struct Member {
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_seen: Instant,
    pub join_tx: Option<oneshot::Sender<JoinOutcome>>,
    pub sync_tx: Option<oneshot::Sender<SyncOutcome>>,
}

pub struct Group {
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, valid until the instant given.
    pub pending: HashMap<String, Instant>,
    /// When a rebalance in progress completes even if not every member rejoined.
    pub rebalance_deadline: Option<Instant>,
    /// A new group waits this long for more members before its first generation.
    pub initial_delay_until: Option<Instant>,
}

impl Group {
    pub fn new() -> Self {
        Self {
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
        }
    }

    /// Protocols every member supports, in the order of the first member's preference.
    fn common_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .find(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .cloned()
    }

    /// True if a joining member with these protocols shares one with everyone else.
    pub fn accepts_protocols(&self, member_id: &str, protocols: &[(String, Bytes)]) -> bool {
        let others: Vec<_> = self
            .members
            .iter()
            .filter(|(id, _)| *id != member_id)
            .collect();
        if others.is_empty() {
            return !protocols.is_empty();
        }
        protocols.iter().any(|(name, _)| {
            others
                .iter()
                .all(|(_, m)| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Starts (or keeps) a rebalance; pending syncs learn a rebalance is under way.
    pub fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == State::PreparingRebalance {
            return;
        }
        for m in self.members.values_mut() {
            if let Some(tx) = m.sync_tx.take() {
                let _ = tx.send(SyncOutcome::error(ResponseError::RebalanceInProgress));
            }
        }
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        if self.state == State::Empty {
            self.initial_delay_until = Some(now + initial_delay);
        }
        self.rebalance_deadline = Some(now + longest.max(initial_delay));
        self.state = State::PreparingRebalance;
    }

    /// Completes the join phase when every member has rejoined (after the initial delay) or the
    /// rebalance deadline has passed.
    pub fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_tx.is_some());
        let delay_over = self.initial_delay_until.is_none_or(|t| now >= t);
        let deadline_passed = self.rebalance_deadline.is_some_and(|t| now >= t);
        if (all_joined && delay_over) || deadline_passed {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: Instant) {
        self.members.retain(|_, m| m.join_tx.is_some());
        self.generation += 1;
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.leader = None;
            self.protocol = None;
            return;
        }
        self.protocol = self.common_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = State::CompletingRebalance;
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let all: Vec<(String, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                (id.clone(), meta)
            })
            .collect();
        for (id, m) in self.members.iter_mut() {
            m.assignment = Bytes::new();
            m.last_seen = now;
            if let Some(tx) = m.join_tx.take() {
                let _ = tx.send(JoinOutcome {
                    error: 0,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        all.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    /// The leader's assignments end the rebalance: every waiting member gets its share.
    pub fn complete_sync(&mut self, assignments: HashMap<String, Bytes>) {
        for (id, m) in self.members.iter_mut() {
            m.assignment = assignments.get(id).cloned().unwrap_or_default();
            if let Some(tx) = m.sync_tx.take() {
                let _ = tx.send(SyncOutcome {
                    error: 0,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    assignment: m.assignment.clone(),
                });
            }
        }
        self.state = State::Stable;
    }

    /// Removes members whose session expired; returns how many.
    pub fn expire_members(&mut self, now: Instant) -> usize {
        self.pending.retain(|_, until| *until > now);
        let before = self.members.len();
        // A member parked in JoinGroup is alive: its session is the join itself.
        self.members
            .retain(|_, m| m.join_tx.is_some() || now < m.last_seen + m.session_timeout);
        before - self.members.len()
    }

    /// Removes one member and starts a rebalance for the rest.
    pub fn remove_member(&mut self, member_id: &str, now: Instant) -> bool {
        if self.members.remove(member_id).is_none() {
            return false;
        }
        self.prepare_rebalance(now, Duration::ZERO);
        self.maybe_complete_join(now);
        true
    }
}
