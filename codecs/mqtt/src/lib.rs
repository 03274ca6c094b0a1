//! MQTT 3.1, 3.1.1 and 5.0 front end: the packet codec ([`wire`]), the per-client protocol state
//! machine (`session`), the broker-wide state shared by all clients (`broker`) and the socket
//! loops (`conn`).

pub mod broker;
pub mod conn;
pub mod dormant;
pub mod mapping;
pub mod metrics;
pub mod session;
pub mod topic;
pub mod wire;
