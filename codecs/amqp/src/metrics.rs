//! AMQP front-end metrics, declared in one place. No labels: nothing here is per client, queue
//! or exchange, so the series count stays fixed.

use prometheus::{IntCounter, IntGauge, Registry};

#[derive(Clone)]
pub struct AmqpMetrics {
    pub connections: IntGauge,
    pub channels: IntGauge,
    pub publishes_received: IntCounter,
    pub messages_delivered: IntCounter,
    pub messages_unroutable: IntCounter,
    pub connections_refused: IntCounter,
    pub closed_by_server: IntCounter,
    pub channel_errors: IntCounter,
    pub flow_pauses: IntCounter,
    pub flow_pauses_timed_out: IntCounter,
}

impl AmqpMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.channels.clone()))?;
        registry.register(Box::new(m.publishes_received.clone()))?;
        registry.register(Box::new(m.messages_delivered.clone()))?;
        registry.register(Box::new(m.messages_unroutable.clone()))?;
        registry.register(Box::new(m.connections_refused.clone()))?;
        registry.register(Box::new(m.closed_by_server.clone()))?;
        registry.register(Box::new(m.channel_errors.clone()))?;
        registry.register(Box::new(m.flow_pauses.clone()))?;
        registry.register(Box::new(m.flow_pauses_timed_out.clone()))?;
        Ok(m)
    }

    /// Metrics not attached to any registry (tests).
    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(Self {
            connections: IntGauge::new("switchboard_amqp_connections", "Open AMQP connections")?,
            channels: IntGauge::new("switchboard_amqp_channels", "Open AMQP channels")?,
            publishes_received: IntCounter::new(
                "switchboard_amqp_publishes_received_total",
                "basic.publish messages received from clients",
            )?,
            messages_delivered: IntCounter::new(
                "switchboard_amqp_messages_delivered_total",
                "basic.deliver and basic.get-ok sent to clients (redeliveries included)",
            )?,
            messages_unroutable: IntCounter::new(
                "switchboard_amqp_messages_unroutable_total",
                "Published messages that matched no queue (returned when mandatory)",
            )?,
            connections_refused: IntCounter::new(
                "switchboard_amqp_connections_refused_total",
                "Handshakes refused: bad protocol header, credentials or virtual host",
            )?,
            closed_by_server: IntCounter::new(
                "switchboard_amqp_connections_closed_by_server_total",
                "Connections the server closed: connection exceptions, heartbeat time-outs, shutdown",
            )?,
            channel_errors: IntCounter::new(
                "switchboard_amqp_channel_errors_total",
                "Channels closed by the server with a channel exception",
            )?,
            flow_pauses: IntCounter::new(
                "switchboard_amqp_flow_pauses_total",
                "Times a publishing connection stopped being read because a queue it published \
                 into was above its flow-control high-water mark",
            )?,
            flow_pauses_timed_out: IntCounter::new(
                "switchboard_amqp_flow_pauses_timed_out_total",
                "Flow-control pauses that reached amqp.flow_max_pause before the queue drained \
                 (consumers stalled, or connections waiting on each other's acks)",
            )?,
        })
    }
}
