use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::*;

fn coordinator() -> Arc<Coordinator> {
    Arc::new(Coordinator::new(GroupSettings {
        initial_rebalance_delay: Duration::ZERO,
        min_session_timeout: Duration::from_millis(10),
        max_session_timeout: Duration::from_secs(60),
    }))
}

fn join_req(member_id: &str, session_ms: u64) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        client_id: "c".into(),
        client_host: String::new(),
        session_timeout: Duration::from_millis(session_ms),
        rebalance_timeout: Duration::from_millis(300),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
        require_known_member_id: true,
    }
}

/// Asks for a member id (v4 flow) and returns it.
async fn member_id(c: &Coordinator) -> String {
    let first = c.join(join_req("", 10_000)).await;
    assert_eq!(first.error, ResponseError::MemberIdRequired.code());
    first.member_id
}

#[tokio::test]
async fn new_member_must_rejoin_with_the_id_it_was_given() {
    let c = coordinator();
    let id = member_id(&c).await;
    let joined = c.join(join_req(&id, 10_000)).await;
    assert_eq!(joined.error, 0);
    assert_eq!(
        (joined.generation, joined.leader.as_str()),
        (1, id.as_str())
    );
    assert_eq!(joined.members.len(), 1, "the leader sees every member");
    let unknown = c.join(join_req("made-up", 10_000)).await;
    assert_eq!(unknown.error, ResponseError::UnknownMemberId.code());
}

#[tokio::test]
async fn two_members_share_a_generation_and_get_the_leaders_assignment() {
    let c = coordinator();
    let a = member_id(&c).await;
    let first = c.join(join_req(&a, 10_000)).await;
    let b = member_id(&c).await;
    // b's join starts a rebalance; a learns of it from its heartbeat and rejoins.
    let (c1, b2) = (c.clone(), b.clone());
    let b_join = tokio::spawn(async move { c1.join(join_req(&b2, 10_000)).await });
    // Until b's join is registered, a's heartbeats are fine; then they ask for a rejoin.
    let mut answer = 0;
    for _ in 0..5_000 {
        answer = c.heartbeat("g", first.generation, &a);
        if answer != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(answer, ResponseError::RebalanceInProgress.code());
    let a_join = c.join(join_req(&a, 10_000)).await;
    let b_join = b_join.await.unwrap();
    assert_eq!(a_join.generation, 2);
    assert_eq!(b_join.generation, 2);
    let leader_sees = a_join.members.len().max(b_join.members.len());
    assert_eq!(leader_sees, 2);

    let (leader, follower) = if a_join.leader == a { (a, b) } else { (b, a) };
    let (c2, f2) = (c.clone(), follower.clone());
    // The follower's sync may arrive before or after the leader's: either way it gets its
    // assignment once the leader's is in.
    let follower_sync = tokio::spawn(async move { c2.sync("g", 2, &f2, vec![]).await });
    tokio::task::yield_now().await;
    let assignments = vec![
        (leader.clone(), Bytes::from_static(b"p0")),
        (follower.clone(), Bytes::from_static(b"p1")),
    ];
    let mine = c.sync("g", 2, &leader, assignments).await;
    assert_eq!(mine.assignment, Bytes::from_static(b"p0"));
    assert_eq!(
        follower_sync.await.unwrap().assignment,
        Bytes::from_static(b"p1")
    );
    assert_eq!(c.heartbeat("g", 2, &follower), 0);
}

#[tokio::test]
async fn expired_session_removes_the_member_and_rebalances() {
    let c = coordinator();
    let a = member_id(&c).await;
    let joined = c.join(join_req(&a, 50)).await;
    c.sync("g", joined.generation, &a, vec![(a.clone(), Bytes::new())])
        .await;
    c.tick(Instant::now() + Duration::from_millis(200));
    assert_eq!(
        c.heartbeat("g", joined.generation, &a),
        ResponseError::UnknownMemberId.code()
    );
}

#[tokio::test]
async fn leaving_member_is_gone_and_stale_generations_are_refused() {
    let c = coordinator();
    let a = member_id(&c).await;
    let joined = c.join(join_req(&a, 10_000)).await;
    c.sync("g", joined.generation, &a, vec![]).await;
    assert_eq!(
        c.validate_commit("g", joined.generation + 1, &a),
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(c.validate_commit("g", joined.generation, &a), 0);
    assert_eq!(c.leave("g", std::slice::from_ref(&a)), vec![0]);
    assert_eq!(
        c.heartbeat("g", joined.generation, &a),
        ResponseError::UnknownMemberId.code()
    );
    assert!(!c.has_members("g"));
    assert_eq!(
        c.validate_commit("g", -1, ""),
        0,
        "standalone commits need no membership"
    );
}

#[tokio::test]
async fn session_timeout_outside_the_broker_bounds_is_refused() {
    let c = coordinator();
    let out = c.join(join_req("", 1)).await;
    assert_eq!(out.error, ResponseError::InvalidSessionTimeout.code());
}
