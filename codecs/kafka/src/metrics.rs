//! Kafka front-end metrics, declared in one place. Label values are bounded: API names come
//! from the fixed set of API keys.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct KafkaMetrics {
    pub requests: IntCounterVec,
    pub request_errors: IntCounterVec,
    pub connections: IntGauge,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub produced_records: IntCounter,
    pub closed_bad_input: IntCounter,
}

impl KafkaMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.request_errors.clone()))?;
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.bytes_in.clone()))?;
        registry.register(Box::new(m.bytes_out.clone()))?;
        registry.register(Box::new(m.produced_records.clone()))?;
        registry.register(Box::new(m.closed_bad_input.clone()))?;
        Ok(m)
    }

    /// Metrics not attached to any registry (tests).
    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(Self {
            requests: IntCounterVec::new(
                Opts::new("switchboard_kafka_requests_total", "Kafka requests by API"),
                &["api"],
            )?,
            request_errors: IntCounterVec::new(
                Opts::new(
                    "switchboard_kafka_request_errors_total",
                    "Kafka responses carrying an error code, by API",
                ),
                &["api"],
            )?,
            connections: IntGauge::new("switchboard_kafka_connections", "Open Kafka connections")?,
            bytes_in: IntCounter::new("switchboard_kafka_bytes_in_total", "Request bytes read")?,
            bytes_out: IntCounter::new(
                "switchboard_kafka_bytes_out_total",
                "Response bytes written",
            )?,
            produced_records: IntCounter::new(
                "switchboard_kafka_produced_records_total",
                "Records appended through Kafka produce",
            )?,
            closed_bad_input: IntCounter::new(
                "switchboard_kafka_connections_closed_bad_input_total",
                "Connections closed because of malformed or oversized frames",
            )?,
        })
    }
}
