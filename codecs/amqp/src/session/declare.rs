//! `exchange.*` and `queue.*`: thin translations from methods to broker operations.

use amq_protocol::protocol::{AMQPClass, exchange, queue};

use super::Session;
use crate::broker::QueueDeclare;
use crate::error::AmqpError;
use crate::model::{Binding, Destination, Exchange, ExchangeKind};
use crate::wire::out;

impl Session {
    pub(super) async fn on_exchange(
        &mut self,
        ch: u16,
        m: exchange::AMQPMethod,
    ) -> Result<(), AmqpError> {
        let vhost = self.vhost()?;
        let conn = self.conn.id;
        use exchange::AMQPMethod as M;
        let (reply, nowait) = match m {
            M::Declare(d) => {
                let kind = ExchangeKind::parse(d.kind.as_str())?;
                let exchange = Exchange {
                    name: d.exchange.as_str().to_owned(),
                    kind,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: d.arguments,
                };
                self.broker
                    .declare_exchange(&vhost, exchange, d.passive)
                    .await?;
                (M::DeclareOk(exchange::DeclareOk {}), d.nowait)
            }
            M::Delete(d) => {
                self.broker
                    .delete_exchange(&vhost, d.exchange.as_str(), d.if_unused)
                    .await?;
                (M::DeleteOk(exchange::DeleteOk {}), d.nowait)
            }
            M::Bind(b) => {
                let mut binding = Binding::to_exchange(
                    b.source.as_str(),
                    b.destination.as_str(),
                    b.routing_key.as_str(),
                );
                binding.arguments = b.arguments;
                self.broker.bind(&vhost, conn, binding).await?;
                (M::BindOk(exchange::BindOk {}), b.nowait)
            }
            M::Unbind(b) => {
                let mut binding = Binding::to_exchange(
                    b.source.as_str(),
                    b.destination.as_str(),
                    b.routing_key.as_str(),
                );
                binding.arguments = b.arguments;
                self.broker.unbind(&vhost, conn, binding).await?;
                (M::UnbindOk(exchange::UnbindOk {}), b.nowait)
            }
            _ => return Err(unexpected()),
        };
        if !nowait {
            self.send(ch, AMQPClass::Exchange(reply));
        }
        Ok(())
    }

    pub(super) async fn on_queue(
        &mut self,
        ch: u16,
        m: queue::AMQPMethod,
    ) -> Result<(), AmqpError> {
        let vhost = self.vhost()?;
        let conn = self.conn.id;
        use queue::AMQPMethod as M;
        match m {
            M::Declare(d) => {
                let declare = QueueDeclare {
                    name: d.queue.as_str().to_owned(),
                    passive: d.passive,
                    durable: d.durable,
                    exclusive: d.exclusive,
                    auto_delete: d.auto_delete,
                    arguments: d.arguments,
                };
                let declared = self.broker.declare_queue(&vhost, conn, declare).await?;
                self.channel(ch)?.last_queue = Some(declared.name.clone());
                if !d.nowait {
                    let ok = out::queue_declare_ok(
                        &declared.name,
                        declared.message_count,
                        declared.consumer_count,
                    )?;
                    self.send(ch, ok);
                }
            }
            M::Bind(b) => {
                let queue = self.channel(ch)?.queue_name(b.queue.as_str())?;
                // § queue.bind: an empty key with an empty queue name means the queue's name.
                let key = if b.queue.as_str().is_empty() && b.routing_key.as_str().is_empty() {
                    queue.clone()
                } else {
                    b.routing_key.as_str().to_owned()
                };
                let binding = Binding {
                    source: b.exchange.as_str().to_owned(),
                    destination: Destination::Queue(queue),
                    routing_key: key,
                    arguments: b.arguments,
                };
                self.broker.bind(&vhost, conn, binding).await?;
                if !b.nowait {
                    self.send(ch, AMQPClass::Queue(M::BindOk(queue::BindOk {})));
                }
            }
            M::Unbind(u) => {
                let queue = self.channel(ch)?.queue_name(u.queue.as_str())?;
                let binding = Binding {
                    source: u.exchange.as_str().to_owned(),
                    destination: Destination::Queue(queue),
                    routing_key: u.routing_key.as_str().to_owned(),
                    arguments: u.arguments,
                };
                self.broker.unbind(&vhost, conn, binding).await?;
                self.send(ch, AMQPClass::Queue(M::UnbindOk(queue::UnbindOk {})));
            }
            M::Purge(p) => {
                let queue = self.channel(ch)?.queue_name(p.queue.as_str())?;
                let n = self.broker.purge_queue(&vhost, conn, &queue).await?;
                if !p.nowait {
                    self.send(
                        ch,
                        AMQPClass::Queue(M::PurgeOk(queue::PurgeOk { message_count: n })),
                    );
                }
            }
            M::Delete(d) => {
                let queue = self.channel(ch)?.queue_name(d.queue.as_str())?;
                let n = self
                    .broker
                    .delete_queue(&vhost, conn, &queue, d.if_unused, d.if_empty)
                    .await?;
                // The deleted queue's consumers on this very connection learn it now, before
                // the delete-ok.
                self.pump();
                if !d.nowait {
                    self.send(
                        ch,
                        AMQPClass::Queue(M::DeleteOk(queue::DeleteOk { message_count: n })),
                    );
                }
            }
            _ => return Err(unexpected()),
        }
        Ok(())
    }
}

/// A method only the server sends; `check_client_method` refuses those first, so this is
/// a safety net. The session fills in the class and method.
pub(super) fn unexpected() -> AmqpError {
    AmqpError::connection(
        crate::ReplyCode::CommandInvalid,
        "method not accepted from a client",
    )
}
