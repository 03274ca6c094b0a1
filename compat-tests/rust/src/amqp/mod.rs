//! lapin as one AMQP 0-9-1 connection with numbered channels, with the commands of
//! compat-tests/node/amqplib.js: `channel` (1 unless given) is opened on first use, as a
//! confirm channel with `confirm: true`, and opened again after the broker closed it. Deliveries
//! to each consumer are collected until a test asks for them; acks name them by delivery tag.
//! Bodies cross the JSON boundary as text. Options use amqplib's names and defaults (queues and
//! exchanges are durable unless `durable: false`).

mod args;
mod values;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{
    Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm,
};
use serde_json::{Value, json};

use crate::error::{AdapterError, Result, parse};
use crate::waiters::Arrivals;
use args::*;

/// Longest the connection handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

struct Numbered {
    channel: Channel,
    confirm: bool,
}

#[derive(Default)]
pub struct Amqp {
    connection: Mutex<Option<Arc<Connection>>>,
    channels: tokio::sync::Mutex<HashMap<u16, Numbered>>,
    /// Consumer tag -> deliveries so far.
    deliveries: Mutex<HashMap<String, Arc<Mutex<Vec<Value>>>>>,
    arrived: Arc<Arrivals>,
}

impl Amqp {
    pub async fn call(&self, op: &str, line: &str) -> Result<Value> {
        if op == "connect" {
            return self.connect(parse(op, line)?).await;
        }
        let on: OnChannel = parse(op, line)?;
        match op {
            "open" => self.channel(&on).await.map(|_| json!({})),
            "assertExchange" => self.assert_exchange(&on, parse(op, line)?).await,
            "assertQueue" => self.declare_queue(&on, parse(op, line)?, false).await,
            "checkQueue" => self.declare_queue(&on, parse(op, line)?, true).await,
            "bindQueue" => self.bind_queue(&on, parse(op, line)?).await,
            "deleteQueue" => self.delete_queue(&on, parse(op, line)?).await,
            "publish" => self.publish(&on, parse(op, line)?).await,
            "publishAllConfirmed" => self.publish_all_confirmed(&on, parse(op, line)?).await,
            "prefetch" => self.prefetch(&on, parse(op, line)?).await,
            "consume" => self.consume(&on, parse(op, line)?).await,
            "expect" => self.expect(parse(op, line)?).await,
            "cancel" => self.cancel(&on, parse(op, line)?).await,
            "get" => self.get(&on, parse(op, line)?).await,
            "ack" | "nack" | "reject" => self.settle(&on, op, parse(op, line)?).await,
            _ => Err(AdapterError::UnknownOp(op.into())),
        }
    }

    pub async fn close(&self) {
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(c) = connection {
            let closing = c.close(200, "OK".into());
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), closing).await {
                eprintln!("close: {e}");
            }
        }
    }

    /// -> {serverProperties}: null, as lapin does not expose the server's properties.
    async fn connect(&self, a: ConnectArgs) -> Result<Value> {
        let connecting = Connection::connect(&a.url, ConnectionProperties::default());
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                AdapterError::Timeout("connect".into(), CONNECT_TIMEOUT.as_millis() as u64)
            })?
            .map_err(amqp_error)?;
        *self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(connection));
        Ok(json!({"serverProperties": null}))
    }

    /// The channel numbered `on.channel`, opened (again) if need be.
    async fn channel(&self, on: &OnChannel) -> Result<Channel> {
        let n = on.channel.unwrap_or(1);
        let mut channels = self.channels.lock().await;
        // One the broker closed (a channel exception) is opened again, as amqplib does.
        if let Some(open) = channels.get(&n)
            && open.channel.status().connected()
        {
            return Ok(open.channel.clone());
        }
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                AdapterError::State(r#"send {"op":"connect","url":...} first"#.into())
            })?;
        let channel = connection.create_channel().await.map_err(amqp_error)?;
        let confirm = on.confirm.unwrap_or(false);
        if confirm {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(amqp_error)?;
        }
        channels.insert(
            n,
            Numbered {
                channel: channel.clone(),
                confirm,
            },
        );
        Ok(channel)
    }

    async fn is_confirm_channel(&self, on: &OnChannel) -> bool {
        let n = on.channel.unwrap_or(1);
        self.channels
            .lock()
            .await
            .get(&n)
            .is_some_and(|c| c.confirm)
    }

    async fn assert_exchange(&self, on: &OnChannel, a: ExchangeArgs) -> Result<Value> {
        let ch = self.channel(on).await?;
        let kind = match a.kind.as_str() {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            other => ExchangeKind::Custom(other.to_string()),
        };
        let o = &a.options;
        let options = ExchangeDeclareOptions {
            durable: o.durable.unwrap_or(true),
            auto_delete: o.auto_delete.unwrap_or(false),
            internal: o.internal.unwrap_or(false),
            ..Default::default()
        };
        ch.exchange_declare(a.exchange.as_str().into(), kind, options, o.arguments())
            .await
            .map_err(amqp_error)?;
        Ok(json!({"exchange": a.exchange}))
    }

    /// -> {queue, messageCount, consumerCount}; `passive` is checkQueue.
    async fn declare_queue(&self, on: &OnChannel, a: QueueArgs, passive: bool) -> Result<Value> {
        let ch = self.channel(on).await?;
        let o = &a.options;
        let options = QueueDeclareOptions {
            passive,
            durable: o.durable.unwrap_or(true),
            exclusive: o.exclusive.unwrap_or(false),
            auto_delete: o.auto_delete.unwrap_or(false),
            ..Default::default()
        };
        let arguments = if passive {
            FieldTable::default()
        } else {
            o.arguments()
        };
        let q = ch
            .queue_declare(a.queue.as_str().into(), options, arguments)
            .await
            .map_err(amqp_error)?;
        Ok(
            json!({"queue": q.name().as_str(), "messageCount": q.message_count(),
                  "consumerCount": q.consumer_count()}),
        )
    }

    async fn bind_queue(&self, on: &OnChannel, a: BindArgs) -> Result<Value> {
        let ch = self.channel(on).await?;
        let arguments = a.args.as_ref().map(values::to_table).unwrap_or_default();
        ch.queue_bind(
            a.queue.as_str().into(),
            a.exchange.as_str().into(),
            a.pattern.as_str().into(),
            QueueBindOptions::default(),
            arguments,
        )
        .await
        .map_err(amqp_error)?;
        Ok(json!({}))
    }

    async fn delete_queue(&self, on: &OnChannel, a: DeleteQueueArgs) -> Result<Value> {
        let ch = self.channel(on).await?;
        let options = QueueDeleteOptions {
            if_unused: a.options.if_unused.unwrap_or(false),
            if_empty: a.options.if_empty.unwrap_or(false),
            ..Default::default()
        };
        let count = ch
            .queue_delete(a.queue.as_str().into(), options)
            .await
            .map_err(amqp_error)?;
        Ok(json!({"messageCount": count}))
    }

    async fn send(&self, ch: &Channel, a: &PublishArgs, body: &str) -> Result<PublisherConfirm> {
        let options = BasicPublishOptions {
            mandatory: a.options.mandatory.unwrap_or(false),
            ..Default::default()
        };
        ch.basic_publish(
            a.exchange.as_str().into(),
            a.routing_key.as_str().into(),
            options,
            body.as_bytes(),
            a.options.properties()?,
        )
        .await
        .map_err(amqp_error)
    }

    /// On a confirm channel, answers once the broker confirmed the message and fails on a
    /// nack: -> {confirmed}.
    async fn publish(&self, on: &OnChannel, a: PublishArgs) -> Result<Value> {
        let ch = self.channel(on).await?;
        let confirm = self.send(&ch, &a, &a.body).await?;
        if !self.is_confirm_channel(on).await {
            return Ok(json!({"confirmed": false}));
        }
        match confirm.await.map_err(amqp_error)? {
            Confirmation::Nack(_) => {
                Err(AdapterError::library("broker nacked the publish", "nack"))
            }
            _ => Ok(json!({"confirmed": true})),
        }
    }

    /// Publishes every body on a confirm channel, then waits for every confirm:
    /// -> {acked, nacked}.
    async fn publish_all_confirmed(&self, on: &OnChannel, a: PublishArgs) -> Result<Value> {
        let on = OnChannel {
            channel: on.channel,
            confirm: Some(true),
        };
        let ch = self.channel(&on).await?;
        let mut confirms = Vec::with_capacity(a.bodies.len());
        for body in &a.bodies {
            confirms.push(self.send(&ch, &a, body).await?);
        }
        let (mut acked, mut nacked) = (0, 0);
        for confirm in confirms {
            match confirm.await.map_err(amqp_error)? {
                Confirmation::Ack(_) => acked += 1,
                Confirmation::Nack(_) => nacked += 1,
                Confirmation::NotRequested => {
                    return Err(AdapterError::State(format!(
                        "channel {} is not a confirm channel",
                        on.channel.unwrap_or(1)
                    )));
                }
            }
        }
        Ok(json!({"acked": acked, "nacked": nacked}))
    }

    async fn prefetch(&self, on: &OnChannel, a: PrefetchArgs) -> Result<Value> {
        let ch = self.channel(on).await?;
        ch.basic_qos(
            a.count,
            BasicQosOptions {
                global: a.global.unwrap_or(false),
            },
        )
        .await
        .map_err(amqp_error)?;
        Ok(json!({}))
    }

    /// -> {consumerTag} (the broker's); deliveries are collected for `expect`.
    async fn consume(&self, on: &OnChannel, a: ConsumeArgs) -> Result<Value> {
        let ch = self.channel(on).await?;
        let options = BasicConsumeOptions {
            no_ack: a.no_ack.unwrap_or(false),
            exclusive: a.exclusive.unwrap_or(false),
            ..Default::default()
        };
        let mut consumer = ch
            .basic_consume(
                a.queue.as_str().into(),
                "".into(),
                options,
                FieldTable::default(),
            )
            .await
            .map_err(amqp_error)?;
        let tag = consumer.tag().as_str().to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        lock(&self.deliveries).insert(tag.clone(), Arc::clone(&received));
        let arrived = Arc::clone(&self.arrived);
        let name = tag.clone();
        tokio::spawn(async move {
            while let Some(next) = consumer.next().await {
                match next {
                    Ok(d) => {
                        lock(&received).push(delivery_json(&d, None));
                        arrived.notify();
                    }
                    Err(e) => {
                        eprintln!("consumer {name}: {e}");
                        return;
                    }
                }
            }
        });
        Ok(json!({"consumerTag": tag}))
    }

    /// {consumer: tag, count, timeoutMs} -> {complete, messages}: every delivery so far.
    async fn expect(&self, a: ExpectArgs) -> Result<Value> {
        let received = lock(&self.deliveries)
            .get(&a.consumer)
            .cloned()
            .ok_or_else(|| AdapterError::State(format!("no consumer {:?}", a.consumer)))?;
        let timeout = crate::waiters::millis(a.timeout_ms);
        let complete = self
            .arrived
            .until(|| lock(&received).len() >= a.count, timeout)
            .await;
        let messages = lock(&received).clone();
        Ok(json!({"complete": complete, "messages": messages}))
    }

    async fn cancel(&self, on: &OnChannel, a: CancelArgs) -> Result<Value> {
        let ch = self.channel(on).await?;
        ch.basic_cancel(a.consumer.as_str().into(), BasicCancelOptions::default())
            .await
            .map_err(amqp_error)?;
        Ok(json!({}))
    }

    /// -> {message: delivery | null}.
    async fn get(&self, on: &OnChannel, a: GetArgs) -> Result<Value> {
        let ch = self.channel(on).await?;
        let options = BasicGetOptions {
            no_ack: a.no_ack.unwrap_or(false),
        };
        let got = ch
            .basic_get(a.queue.as_str().into(), options)
            .await
            .map_err(amqp_error)?;
        let message = got.map(|m| delivery_json(&m.delivery, Some(m.message_count)));
        Ok(json!({"message": message}))
    }

    /// ack / nack / reject by delivery tag.
    async fn settle(&self, on: &OnChannel, op: &str, a: SettleArgs) -> Result<Value> {
        let ch = self.channel(on).await?;
        let multiple = a.multiple.unwrap_or(false);
        let requeue = a.requeue.unwrap_or(true);
        let settled = match op {
            "ack" => {
                ch.basic_ack(a.delivery_tag, BasicAckOptions { multiple })
                    .await
            }
            "nack" => {
                ch.basic_nack(a.delivery_tag, BasicNackOptions { multiple, requeue })
                    .await
            }
            _ => {
                ch.basic_reject(a.delivery_tag, BasicRejectOptions { requeue })
                    .await
            }
        };
        settled.map_err(amqp_error)?;
        Ok(json!({}))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A lapin error as a reply: a channel or connection exception keeps its reply code (404,
/// 406, ...) as the code, as amqplib's errors do.
fn amqp_error(e: lapin::Error) -> AdapterError {
    let code = match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => json!(amqp.get_id()),
        _ => Value::Null,
    };
    AdapterError::library(e, code)
}

/// A delivery as the amqplib adapter reports it; messageCount is basic.get's.
fn delivery_json(d: &Delivery, message_count: Option<u32>) -> Value {
    json!({
        "body": String::from_utf8_lossy(&d.data),
        "deliveryTag": d.delivery_tag,
        "redelivered": d.redelivered,
        "exchange": d.exchange.as_str(),
        "routingKey": d.routing_key.as_str(),
        "messageCount": message_count,
        "properties": values::properties_json(&d.properties),
    })
}
