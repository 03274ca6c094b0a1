//! MQTT front-end metrics, declared in one place. No labels: nothing here is per client or per
//! topic, so the series count stays fixed.

use prometheus::{IntCounter, IntGauge, Registry};

#[derive(Clone)]
pub struct MqttMetrics {
    pub connections: IntGauge,
    /// Connected clients that are dormant (quiet, held without a task).
    pub dormant: IntGauge,
    pub publishes_received: IntCounter,
    pub messages_delivered: IntCounter,
    pub messages_dropped: IntCounter,
    pub connections_refused: IntCounter,
    pub closed_by_server: IntCounter,
}

impl MqttMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.dormant.clone()))?;
        registry.register(Box::new(m.publishes_received.clone()))?;
        registry.register(Box::new(m.messages_delivered.clone()))?;
        registry.register(Box::new(m.messages_dropped.clone()))?;
        registry.register(Box::new(m.connections_refused.clone()))?;
        registry.register(Box::new(m.closed_by_server.clone()))?;
        Ok(m)
    }

    /// Metrics not attached to any registry (tests).
    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(Self {
            connections: IntGauge::new("switchboard_mqtt_connections", "Connected MQTT clients")?,
            dormant: IntGauge::new(
                "switchboard_mqtt_dormant_connections",
                "Connected MQTT clients that are quiet and held without a task (mqtt.dormant_after)",
            )?,
            publishes_received: IntCounter::new(
                "switchboard_mqtt_publishes_received_total",
                "PUBLISH packets received from clients and stored",
            )?,
            messages_delivered: IntCounter::new(
                "switchboard_mqtt_messages_delivered_total",
                "PUBLISH packets sent to subscribers (resends included)",
            )?,
            messages_dropped: IntCounter::new(
                "switchboard_mqtt_messages_dropped_total",
                "Messages dropped because a session's queue was full (mqtt.max_queued_messages)",
            )?,
            connections_refused: IntCounter::new(
                "switchboard_mqtt_connections_refused_total",
                "CONNECTs refused (bad credentials, bad client id, bad CONNECT)",
            )?,
            closed_by_server: IntCounter::new(
                "switchboard_mqtt_connections_closed_by_server_total",
                "Connections the server closed: protocol errors, keep-alive time-outs, takeovers",
            )?,
        })
    }
}
