//! InitProducerId for idempotent producers. Ids come from the routing table, so they are unique
//! across restarts. Transactions are not implemented: a transactional id is refused with a
//! clear, non-retriable error rather than a hang.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::Request;
use crate::KafkaContext;
use crate::errors::router_error_code;

pub async fn handle(
    ctx: &KafkaContext,
    _req: &Request<'_>,
    body: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let base = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if body.transactional_id.is_some() {
        return base.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    // KIP-360: a producer that already has an id asks to bump its epoch after an error.
    if body.producer_id.0 >= 0 && body.producer_epoch >= 0 {
        if body.producer_epoch == i16::MAX {
            // Epoch exhausted: hand out a fresh id instead.
        } else {
            return base
                .with_producer_id(body.producer_id)
                .with_producer_epoch(body.producer_epoch + 1);
        }
    }
    match ctx.router.allocate_producer_id().await {
        Ok(id) => base.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => base.with_error_code(router_error_code(&e)),
    }
}
