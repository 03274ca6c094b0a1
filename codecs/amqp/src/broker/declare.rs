//! Declaring, binding and deleting exchanges and queues in a vhost, with RabbitMQ's checks
//! and reply codes. Changes to durable entities are written to the routing table before the
//! method's `-ok` is sent, so a declare-ok'd durable queue survives a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldTable};
use switchboard_model::{StreamName, TopicPartition};
use switchboard_router::{RouterError, now_ms};

use super::queues::{Backing, QueueHandle, QueueSpec};
use super::{AmqpBroker, VHost};
use crate::ReplyCode;
use crate::error::AmqpError;
use crate::model::{Binding, Destination, Exchange};
use crate::queue::{Queue, QueueArguments};

/// The arguments of `queue.declare`.
#[derive(Debug, Clone, Default)]
pub struct QueueDeclare {
    pub name: String,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

/// `queue.declare-ok`'s content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredQueue {
    pub name: String,
    pub message_count: u32,
    pub consumer_count: u32,
}

/// Queue arguments compared on redeclare (RabbitMQ's equivalence check); others are ignored.
const EQUIVALENCE_ARGS: [&str; 8] = [
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-queue-type",
];

fn now() -> u64 {
    now_ms().max(0) as u64
}

impl AmqpBroker {
    /// `exchange.declare`.
    pub async fn declare_exchange(
        &self,
        vhost: &Arc<VHost>,
        exchange: Exchange,
        passive: bool,
    ) -> Result<(), AmqpError> {
        let durable = exchange.durable;
        let created = vhost.lock().topology.declare_exchange(exchange, passive)?;
        if created == crate::model::Declared::Created && durable {
            self.persist_definitions(vhost).await?;
        }
        Ok(())
    }

    /// `exchange.delete`: deleting a missing exchange is not an error (RabbitMQ 3.x).
    pub async fn delete_exchange(
        &self,
        vhost: &Arc<VHost>,
        name: &str,
        if_unused: bool,
    ) -> Result<(), AmqpError> {
        let durable = {
            let mut state = vhost.lock();
            let durable = state.topology.exchange(name).is_some_and(|e| e.durable);
            state.topology.delete_exchange(name, if_unused)?;
            durable
        };
        if durable {
            self.persist_definitions(vhost).await?;
        }
        Ok(())
    }

    /// `queue.bind` / `exchange.bind`. A binding between durable ends is durable.
    pub async fn bind(
        &self,
        vhost: &Arc<VHost>,
        conn: u64,
        binding: Binding,
    ) -> Result<(), AmqpError> {
        let durable = self.check_binding(vhost, conn, &binding)?;
        vhost.lock().topology.bind(binding)?;
        if durable {
            self.persist_definitions(vhost).await?;
        }
        Ok(())
    }

    /// `queue.unbind` / `exchange.unbind`.
    pub async fn unbind(
        &self,
        vhost: &Arc<VHost>,
        conn: u64,
        binding: Binding,
    ) -> Result<(), AmqpError> {
        let durable = self.check_binding(vhost, conn, &binding)?;
        let deleted = vhost.lock().topology.unbind(&binding)?;
        if durable || !deleted.is_empty() {
            self.persist_definitions(vhost).await?;
        }
        Ok(())
    }

    /// Checks that a binding's queue may be used by `conn`; returns whether it is durable.
    fn check_binding(
        &self,
        vhost: &Arc<VHost>,
        conn: u64,
        binding: &Binding,
    ) -> Result<bool, AmqpError> {
        let state = vhost.lock();
        let source_durable = state
            .topology
            .exchange(&binding.source)
            .is_some_and(|e| e.durable);
        let destination_durable = match &binding.destination {
            Destination::Queue(q) => match state.queues.get(q) {
                Some(handle) => {
                    handle.check_owner(conn)?;
                    handle.spec.durable
                }
                None => return Err(not_found_queue(q, &vhost.name)),
            },
            Destination::Exchange(e) => state.topology.exchange(e).is_some_and(|e| e.durable),
        };
        Ok(source_durable && destination_durable)
    }

    /// `queue.declare`.
    pub async fn declare_queue(
        self: &Arc<Self>,
        vhost: &Arc<VHost>,
        conn: u64,
        d: QueueDeclare,
    ) -> Result<DeclaredQueue, AmqpError> {
        if let Some(existing) = vhost.queue(&d.name) {
            return self.redeclare(vhost, conn, &existing, &d);
        }
        if d.passive {
            return Err(not_found_queue(&d.name, &vhost.name));
        }
        if d.name.starts_with("amq.") {
            return Err(AmqpError::channel(
                ReplyCode::AccessRefused,
                format!("queue name '{}' contains reserved prefix 'amq.*'", d.name),
            ));
        }
        let name = if d.name.is_empty() {
            self.generated_name("amq.gen-")
        } else {
            d.name.clone()
        };
        let args = QueueArguments::from_table(&d.arguments)?;
        let expires_ms = expires_argument(&d.arguments)?;
        let backing = self.backing_for(vhost, &name, &d).await?;
        let mut queue = Queue::new(&name, args);
        if let Backing::Stream(tp) = &backing {
            let hw = self.router().bounds(tp).await?.high_watermark;
            queue.set_next_offset(hw);
        }
        let durable = d.durable;
        let spec = QueueSpec {
            name: name.clone(),
            durable,
            exclusive_owner: d.exclusive.then_some(conn),
            auto_delete: d.auto_delete,
            arguments: d.arguments.clone(),
            expires_ms,
            backing,
        };
        let handle = QueueHandle::new(&vhost.name, spec, queue, now());
        {
            let mut state = vhost.lock();
            if let Some(raced) = state.queues.get(&name).cloned() {
                drop(state);
                return self.redeclare(vhost, conn, &raced, &d);
            }
            state.topology.add_queue(&name);
            state.queues.insert(name.clone(), handle.clone());
        }
        if durable {
            if handle.backing_partition().is_some() {
                self.persist_ack_state(&handle).await?;
            }
            self.persist_definitions(vhost).await?;
        }
        if let Some(ms) = expires_ms {
            self.watch_expires(vhost, &handle, ms);
        }
        Ok(DeclaredQueue {
            name,
            message_count: 0,
            consumer_count: 0,
        })
    }

    /// A declare of a queue that exists: passive, or checked for equivalence.
    fn redeclare(
        &self,
        vhost: &Arc<VHost>,
        conn: u64,
        q: &Arc<QueueHandle>,
        d: &QueueDeclare,
    ) -> Result<DeclaredQueue, AmqpError> {
        q.check_owner(conn)?;
        if !d.passive {
            check_equivalent(q, d, &vhost.name)?;
        }
        q.lock().last_used = now();
        Ok(DeclaredQueue {
            name: q.name().to_owned(),
            message_count: q.message_count(),
            consumer_count: q.consumer_count(),
        })
    }

    /// Where a new queue keeps its messages: memory, a stream of its own (durable), or the
    /// stream it is (`x-queue-type: stream`), created here if needed.
    async fn backing_for(
        &self,
        vhost: &Arc<VHost>,
        name: &str,
        d: &QueueDeclare,
    ) -> Result<Backing, AmqpError> {
        let kind = match d.arguments.inner().get("x-queue-type") {
            None => "classic".to_owned(),
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
            Some(other) => {
                return Err(precondition(format!(
                    "invalid arg 'x-queue-type': {other:?} is not a string"
                )));
            }
        };
        match kind.as_str() {
            // Quorum queues are durable, replicated classic queues; one node has nothing to
            // replicate to, so they behave as durable classic queues here.
            "classic" | "quorum" => {}
            "stream" => return self.stream_queue_backing(name, d).await,
            other => {
                return Err(precondition(format!(
                    "invalid arg 'x-queue-type': unsupported queue type '{other}'"
                )));
            }
        }
        if !d.durable {
            return Ok(Backing::Memory);
        }
        let stream = durable_stream_name(&vhost.name, name);
        self.ensure_stream(&stream, queue_stream_config()).await?;
        Ok(Backing::Stream(TopicPartition::new(stream, 0)))
    }

    async fn stream_queue_backing(
        &self,
        name: &str,
        d: &QueueDeclare,
    ) -> Result<Backing, AmqpError> {
        if !d.durable || d.exclusive || d.auto_delete {
            return Err(precondition(format!(
                "invalid property for stream queue '{name}': a stream queue must be durable, \
                 not exclusive and not auto-delete"
            )));
        }
        let stream = StreamName::new(name).map_err(|e| {
            precondition(format!("queue name '{name}' cannot be a stream name: {e}"))
        })?;
        let mut config = BTreeMap::new();
        if let Some(bytes) =
            crate::queue::QueueArguments::from_table(&d.arguments)?.max_length_bytes
        {
            config.insert("retention.bytes".to_owned(), bytes.to_string());
        }
        self.ensure_stream(&stream, config).await?;
        Ok(Backing::StreamQueue(stream))
    }

    /// Creates a stream unless it exists (a Kafka topic of that name, or one left by an
    /// earlier declare).
    async fn ensure_stream(
        &self,
        stream: &StreamName,
        config: BTreeMap<String, String>,
    ) -> Result<(), AmqpError> {
        if self.router().stream(stream).is_some() {
            return Ok(());
        }
        match self.router().create_stream(stream.clone(), 1, config).await {
            Ok(_) | Err(RouterError::Rejected(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// `queue.delete`. A missing queue is not an error (RabbitMQ answers delete-ok, 0).
    /// Returns the number of messages deleted.
    pub async fn delete_queue(
        self: &Arc<Self>,
        vhost: &Arc<VHost>,
        conn: u64,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32, AmqpError> {
        let Some(q) = vhost.queue(name) else {
            return Ok(0);
        };
        q.check_owner(conn)?;
        if if_unused && q.consumer_count() > 0 {
            return Err(precondition(format!(
                "queue '{name}' in vhost '{}' in use",
                vhost.name
            )));
        }
        let count = q.message_count();
        if if_empty && count > 0 {
            return Err(precondition(format!(
                "queue '{name}' in vhost '{}' is not empty",
                vhost.name
            )));
        }
        self.remove_queue(vhost, &q).await?;
        Ok(count)
    }

    /// Removes a queue, whatever the reason (delete, auto-delete, exclusive owner gone,
    /// `x-expires`): its consumers are cancelled, its bindings go, and a durable queue's
    /// stream and stored state are deleted.
    pub(crate) async fn remove_queue(
        &self,
        vhost: &Arc<VHost>,
        q: &Arc<QueueHandle>,
    ) -> Result<(), AmqpError> {
        {
            let mut state = vhost.lock();
            match state.queues.get(q.name()) {
                Some(current) if Arc::ptr_eq(current, q) => {}
                _ => return Ok(()),
            }
            state.queues.remove(q.name());
            state.topology.remove_queue(q.name());
        }
        // An append of held copies that got the lock first finishes before the stream goes;
        // one that comes after sees the queue deleted (`broker::append`). Otherwise it could
        // write into the stream of a queue re-declared under the same name.
        let _appends = q.append_lock.lock().await;
        q.mark_deleted();
        q.cancel_all_consumers();
        if q.spec.durable {
            self.persist_definitions(vhost).await?;
            if let Some(tp) = q.backing_partition() {
                self.forget_ack_state(q).await?;
                match self.router().delete_stream(&tp.stream).await {
                    Ok(()) | Err(RouterError::Rejected(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// `queue.purge`: drops the ready messages. Returns how many.
    pub async fn purge_queue(
        &self,
        vhost: &Arc<VHost>,
        conn: u64,
        name: &str,
    ) -> Result<u32, AmqpError> {
        let q = self.queue_for(vhost, conn, name)?;
        let mut inner = q.lock();
        let n = inner.queue.purge();
        inner.dirty = true;
        inner.wake_publishers();
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// A queue `conn` may use: 404 if missing, 405 if another connection's exclusive queue.
    pub fn queue_for(
        &self,
        vhost: &Arc<VHost>,
        conn: u64,
        name: &str,
    ) -> Result<Arc<QueueHandle>, AmqpError> {
        let q = vhost
            .queue(name)
            .ok_or_else(|| not_found_queue(name, &vhost.name))?;
        q.check_owner(conn)?;
        Ok(q)
    }

    /// Deletes the exclusive queues of a connection that is closing.
    pub(crate) async fn drop_exclusive_queues(self: &Arc<Self>, conn: u64) {
        for vhost in self.vhosts.values() {
            let owned: Vec<Arc<QueueHandle>> = vhost
                .lock()
                .queues
                .values()
                .filter(|q| q.spec.exclusive_owner == Some(conn))
                .cloned()
                .collect();
            for q in owned {
                if let Err(e) = self.remove_queue(vhost, &q).await {
                    tracing::warn!(queue = q.name(), error = %e, "cannot delete exclusive queue");
                }
            }
        }
    }

    /// `x-expires`: a task that deletes the queue once it has gone unused (no consumers, no
    /// `basic.get`, no redeclare) for `ms`. It sleeps until the earliest moment that can
    /// happen and looks again, so it costs one timer per such queue.
    pub(super) fn watch_expires(
        self: &Arc<Self>,
        vhost: &Arc<VHost>,
        q: &Arc<QueueHandle>,
        ms: u64,
    ) {
        let (broker, vhost, q) = (self.clone(), vhost.clone(), Arc::downgrade(q));
        let cancel = self.cancel_token().clone();
        self.tracker().spawn(async move {
            loop {
                let due = {
                    let Some(q) = q.upgrade() else { return };
                    if q.is_deleted() {
                        return;
                    }
                    let inner = q.lock();
                    if inner.consumers.is_empty() {
                        inner.last_used.saturating_add(ms)
                    } else {
                        now().saturating_add(ms)
                    }
                };
                let wait = due.saturating_sub(now());
                if wait == 0 {
                    let Some(q) = q.upgrade() else { return };
                    if let Err(e) = broker.remove_queue(&vhost, &q).await {
                        tracing::warn!(queue = q.name(), error = %e, "cannot expire queue");
                    }
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    _ = cancel.cancelled() => return,
                }
            }
        });
    }

    /// A server-generated name: `prefix` and 22 URL-safe base64 characters, as RabbitMQ's
    /// `amq.gen-…` and `amq.ctag-…`.
    pub fn generated_name(&self, prefix: &str) -> String {
        use std::hash::{BuildHasher, Hasher};
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bits = 0u128;
        for round in 0..2u64 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(self.next_id());
            h.write_i64(now_ms());
            h.write_u64(round);
            bits = (bits << 64) | u128::from(h.finish());
        }
        let mut name = String::with_capacity(prefix.len() + 22);
        name.push_str(prefix);
        for i in 0..22 {
            name.push(ALPHABET[((bits >> (i * 6)) & 63) as usize] as char);
        }
        name
    }
}

/// RabbitMQ's equivalence rule for a redeclare: durable, auto-delete and exclusive must match
/// and so must the queue arguments that shape behaviour.
fn check_equivalent(q: &QueueHandle, d: &QueueDeclare, vhost: &str) -> Result<(), AmqpError> {
    let name = q.name();
    let differ = |arg: &str, received: String, current: String| {
        Err(precondition(format!(
            "inequivalent arg '{arg}' for queue '{name}' in vhost '{vhost}': received \
             '{received}' but current is '{current}'"
        )))
    };
    if q.spec.durable != d.durable {
        return differ("durable", d.durable.to_string(), q.spec.durable.to_string());
    }
    if q.spec.auto_delete != d.auto_delete {
        return differ(
            "auto_delete",
            d.auto_delete.to_string(),
            q.spec.auto_delete.to_string(),
        );
    }
    if q.spec.exclusive_owner.is_some() != d.exclusive {
        return differ(
            "exclusive",
            d.exclusive.to_string(),
            q.spec.exclusive_owner.is_some().to_string(),
        );
    }
    for arg in EQUIVALENCE_ARGS {
        let received = d.arguments.inner().get(arg).map(normalize);
        let current = q.spec.arguments.inner().get(arg).map(normalize);
        if received != current {
            return differ(
                arg,
                received.unwrap_or_else(|| "none".into()),
                current.unwrap_or_else(|| "none".into()),
            );
        }
    }
    Ok(())
}

/// A comparable text form of an argument: integers by value whatever their width, strings
/// by content whatever their kind.
fn normalize(value: &AMQPValue) -> String {
    use AMQPValue as V;
    match value {
        V::ShortShortInt(v) => v.to_string(),
        V::ShortShortUInt(v) => v.to_string(),
        V::ShortInt(v) => v.to_string(),
        V::ShortUInt(v) => v.to_string(),
        V::LongInt(v) => v.to_string(),
        V::LongUInt(v) => v.to_string(),
        V::LongLongInt(v) => v.to_string(),
        V::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        V::ShortString(s) => s.as_str().to_owned(),
        other => format!("{other:?}"),
    }
}

/// `x-expires`: a positive integer of milliseconds.
pub(super) fn expires_argument(args: &FieldTable) -> Result<Option<u64>, AmqpError> {
    let Some(value) = args.inner().get("x-expires") else {
        return Ok(None);
    };
    match normalize(value).parse::<i64>() {
        Ok(ms) if ms > 0 => Ok(Some(ms as u64)),
        _ => Err(precondition(format!(
            "invalid arg 'x-expires': {value:?} is not a positive integer"
        ))),
    }
}

/// The stream backing a durable classic queue: `amqp-q.` + the vhost and name with every
/// character a stream name cannot hold replaced by `_`, cut short, + a hash of the exact
/// vhost and name so that two names sanitized alike still get different streams.
pub(crate) fn durable_stream_name(vhost: &str, queue: &str) -> StreamName {
    let hash = switchboard_model::stable_hash(format!("{vhost}\0{queue}").as_bytes());
    let raw = format!("{vhost}.{queue}");
    let mut clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    clean.truncate(200);
    let name = format!("amqp-q.{clean}.{hash:016x}");
    StreamName::new(&name).unwrap_or_else(|_| {
        // Unreachable: every character is in the allowed set and the length is bounded.
        #[allow(clippy::unwrap_used)]
        StreamName::new(&format!("amqp-q.{hash:016x}")).unwrap()
    })
}

/// Streams backing durable queues keep everything until the queue's ack floor trims them.
fn queue_stream_config() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("retention.ms".to_owned(), "-1".to_owned()),
        ("retention.bytes".to_owned(), "-1".to_owned()),
    ])
}

pub(crate) fn not_found_queue(name: &str, vhost: &str) -> AmqpError {
    AmqpError::channel(
        ReplyCode::NotFound,
        format!("no queue '{name}' in vhost '{vhost}'"),
    )
}

fn precondition(detail: String) -> AmqpError {
    AmqpError::channel(ReplyCode::PreconditionFailed, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_stream_names_are_valid_and_distinct_for_names_sanitized_alike() {
        let a = durable_stream_name("/", "orders/eu");
        let b = durable_stream_name("/", "orders eu");
        assert!(a.as_str().starts_with("amqp-q._.orders_eu."), "{a}");
        assert_ne!(a, b);
        let long = durable_stream_name("/", &"é".repeat(127));
        assert!(long.as_str().len() <= 249);
    }

    #[test]
    fn arguments_compare_by_value_across_integer_widths() {
        assert_eq!(
            normalize(&AMQPValue::LongInt(5)),
            normalize(&AMQPValue::LongLongInt(5))
        );
        assert_eq!(
            normalize(&AMQPValue::ShortString("a".into())),
            normalize(&AMQPValue::LongString("a".into()))
        );
    }

    #[test]
    fn x_expires_must_be_positive() {
        let mut t = FieldTable::default();
        t.insert("x-expires".into(), AMQPValue::LongInt(0));
        assert!(expires_argument(&t).is_err());
        t.insert("x-expires".into(), AMQPValue::LongInt(10));
        assert_eq!(expires_argument(&t).unwrap(), Some(10));
    }
}
