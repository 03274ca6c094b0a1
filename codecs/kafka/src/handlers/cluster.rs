//! FindCoordinator and DescribeCluster: this node coordinates every group.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, FindCoordinatorRequest,
    FindCoordinatorResponse,
};

use super::{Request, str_bytes};
use crate::KafkaContext;

const GROUP: i8 = 0;

pub async fn find_coordinator(
    ctx: &KafkaContext,
    req: &Request<'_>,
    body: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let host = str_bytes(ctx.settings.advertised_host.clone());
    let port = i32::from(ctx.settings.advertised_port);
    let node = BrokerId(ctx.settings.node_id);
    let error = if body.key_type == GROUP {
        0
    } else {
        ResponseError::CoordinatorNotAvailable.code()
    };
    if req.version >= 4 {
        let coordinators = body
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(node)
                    .with_host(host.clone())
                    .with_port(port)
                    .with_error_code(error)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    FindCoordinatorResponse::default()
        .with_error_code(error)
        .with_node_id(node)
        .with_host(host)
        .with_port(port)
}

pub async fn describe_cluster(
    ctx: &KafkaContext,
    _req: &Request<'_>,
    _body: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let broker = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(ctx.settings.node_id))
        .with_host(str_bytes(ctx.settings.advertised_host.clone()))
        .with_port(i32::from(ctx.settings.advertised_port));
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(ctx.settings.cluster_id.clone()))
        .with_controller_id(BrokerId(ctx.settings.node_id))
        .with_brokers(vec![broker])
        .with_endpoint_type(1)
        .with_cluster_authorized_operations(i32::MIN)
}
