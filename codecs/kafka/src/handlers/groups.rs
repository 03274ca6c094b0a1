//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ListGroups, DescribeGroups, DeleteGroups.

use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest,
    SyncGroupResponse,
};

use super::metadata::GROUP_OPS;
use super::{Request, str_bytes};
use crate::KafkaContext;
use crate::coordinator::JoinRequest;
use crate::errors::router_error_code;

pub async fn join_group(
    ctx: &KafkaContext,
    req: &Request<'_>,
    body: JoinGroupRequest,
) -> JoinGroupResponse {
    let session = Duration::from_millis(body.session_timeout_ms.max(0) as u64);
    // v0 had no rebalance timeout: the session timeout served for both.
    let rebalance = if req.version == 0 || body.rebalance_timeout_ms <= 0 {
        session
    } else {
        Duration::from_millis(body.rebalance_timeout_ms as u64)
    };
    let outcome = ctx
        .coordinator
        .join(JoinRequest {
            group_id: body.group_id.0.to_string(),
            member_id: body.member_id.to_string(),
            client_id: req
                .header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default(),
            client_host: String::new(),
            session_timeout: session,
            rebalance_timeout: rebalance,
            protocol_type: body.protocol_type.to_string(),
            protocols: body
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), p.metadata))
                .collect(),
            require_known_member_id: req.version >= 4,
        })
        .await;
    let members = outcome
        .members
        .into_iter()
        .map(|(id, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(id))
                .with_metadata(metadata)
        })
        .collect();
    JoinGroupResponse::default()
        .with_error_code(outcome.error)
        .with_generation_id(outcome.generation)
        .with_protocol_type(outcome.protocol_type.map(str_bytes))
        .with_protocol_name(Some(str_bytes(outcome.protocol_name.unwrap_or_default())))
        .with_leader(str_bytes(outcome.leader))
        .with_member_id(str_bytes(outcome.member_id))
        .with_members(members)
}

pub async fn sync_group(
    ctx: &KafkaContext,
    _req: &Request<'_>,
    body: SyncGroupRequest,
) -> SyncGroupResponse {
    let assignments = body
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let outcome = ctx
        .coordinator
        .sync(
            body.group_id.0.as_str(),
            body.generation_id,
            body.member_id.as_str(),
            assignments,
        )
        .await;
    SyncGroupResponse::default()
        .with_error_code(outcome.error)
        .with_protocol_type(outcome.protocol_type.map(str_bytes))
        .with_protocol_name(outcome.protocol_name.map(str_bytes))
        .with_assignment(outcome.assignment)
}

pub async fn heartbeat(
    ctx: &KafkaContext,
    _req: &Request<'_>,
    body: HeartbeatRequest,
) -> HeartbeatResponse {
    let code = ctx.coordinator.heartbeat(
        body.group_id.0.as_str(),
        body.generation_id,
        body.member_id.as_str(),
    );
    HeartbeatResponse::default().with_error_code(code)
}

pub async fn leave_group(
    ctx: &KafkaContext,
    req: &Request<'_>,
    body: LeaveGroupRequest,
) -> LeaveGroupResponse {
    // v3 batched members (KIP-345); earlier versions name one member.
    let ids: Vec<String> = if req.version >= 3 {
        body.members
            .iter()
            .map(|m| m.member_id.to_string())
            .collect()
    } else {
        vec![body.member_id.to_string()]
    };
    let codes = ctx.coordinator.leave(body.group_id.0.as_str(), &ids);
    if req.version >= 3 {
        let members = ids
            .into_iter()
            .zip(codes)
            .map(|(id, code)| {
                MemberResponse::default()
                    .with_member_id(str_bytes(id))
                    .with_error_code(code)
            })
            .collect();
        LeaveGroupResponse::default().with_members(members)
    } else {
        LeaveGroupResponse::default().with_error_code(codes.first().copied().unwrap_or(0))
    }
}

pub async fn list_groups(
    ctx: &KafkaContext,
    _req: &Request<'_>,
    body: ListGroupsRequest,
) -> ListGroupsResponse {
    let mut listed: Vec<(String, &'static str, String)> = ctx.coordinator.list();
    // Groups with committed offsets but no live members are Empty consumer groups.
    let with_offsets: Vec<String> = ctx.router.meta().read(|t| t.groups().cloned().collect());
    for g in with_offsets {
        if !listed.iter().any(|(id, _, _)| *id == g) {
            listed.push((g, "Empty", "consumer".into()));
        }
    }
    let groups = listed
        .into_iter()
        .filter(|(_, state, _)| {
            body.states_filter.is_empty() || body.states_filter.iter().any(|s| s.as_str() == *state)
        })
        .map(|(id, state, ptype)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(ptype))
                .with_group_state(str_bytes(state))
                .with_group_type(str_bytes("classic"))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn describe_groups(
    ctx: &KafkaContext,
    _req: &Request<'_>,
    body: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let groups = body
        .groups
        .into_iter()
        .map(|g| {
            let ops = if body.include_authorized_operations {
                GROUP_OPS
            } else {
                i32::MIN
            };
            let base = DescribedGroup::default()
                .with_group_id(g.clone())
                .with_authorized_operations(ops);
            match ctx.coordinator.describe(g.0.as_str()) {
                Some(view) => {
                    let members = view
                        .members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_client_id(str_bytes(m.client_id))
                                .with_client_host(str_bytes(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect();
                    base.with_group_state(str_bytes(view.state))
                        .with_protocol_type(str_bytes(view.protocol_type))
                        .with_protocol_data(str_bytes(view.protocol))
                        .with_members(members)
                }
                None => {
                    let known = ctx
                        .router
                        .meta()
                        .read(|t| t.groups().any(|x| x.as_str() == g.0.as_str()));
                    let state = if known { "Empty" } else { "Dead" };
                    base.with_group_state(str_bytes(state))
                        .with_protocol_type(str_bytes(if known { "consumer" } else { "" }))
                }
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn delete_groups(
    ctx: &KafkaContext,
    _req: &Request<'_>,
    body: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for g in body.groups_names {
        let base = DeletableGroupResult::default().with_group_id(g.clone());
        let code = if ctx.coordinator.has_members(g.0.as_str()) {
            ResponseError::NonEmptyGroup.code()
        } else {
            match ctx.router.delete_group(g.0.as_str()).await {
                Ok(()) => {
                    ctx.coordinator.forget(g.0.as_str());
                    0
                }
                Err(e) => router_error_code(&e),
            }
        };
        results.push(base.with_error_code(code));
    }
    DeleteGroupsResponse::default().with_results(results)
}
