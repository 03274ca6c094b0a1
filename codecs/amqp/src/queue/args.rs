//! `queue.declare` arguments the queue state machine acts on (RabbitMQ's optional queue
//! arguments). Unknown arguments are ignored, as RabbitMQ ignores them.

use amq_protocol::types::{AMQPValue, FieldTable};

use super::error::QueueError;

/// What happens when a publish finds the queue full (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (or dead-letter, reason `maxlen`) the oldest ready messages. RabbitMQ's default.
    #[default]
    DropHead,
    /// Refuse the new message: the publisher gets `basic.nack` when confirms are on.
    RejectPublish,
    /// Refuse it and dead-letter it (reason `maxlen`).
    RejectPublishDlx,
}

/// The queue arguments that shape its behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueArguments {
    /// `x-max-length`: most ready messages kept.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: most body bytes of ready messages kept.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-message-ttl`, in milliseconds.
    pub message_ttl: Option<u64>,
    /// `x-dead-letter-exchange` (`""` is the default exchange).
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`; without it the message keeps its routing key.
    pub dead_letter_routing_key: Option<String>,
}

impl QueueArguments {
    /// Reads the arguments of `queue.declare`, refusing wrong types and negative numbers with
    /// 406 as RabbitMQ does.
    pub fn from_table(table: &FieldTable) -> Result<Self, QueueError> {
        let args = table.inner();
        let overflow = match args.get("x-overflow") {
            None => Overflow::DropHead,
            Some(value) => match string(value).as_deref() {
                Some("drop-head") => Overflow::DropHead,
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => {
                    return Err(QueueError::InvalidArgument {
                        arg: "x-overflow",
                        reason: format!(
                            "{value:?} is not drop-head, reject-publish or reject-publish-dlx"
                        ),
                    });
                }
            },
        };
        let parsed = Self {
            max_length: non_negative(args.get("x-max-length"), "x-max-length")?,
            max_length_bytes: non_negative(args.get("x-max-length-bytes"), "x-max-length-bytes")?,
            overflow,
            message_ttl: non_negative(args.get("x-message-ttl"), "x-message-ttl")?,
            dead_letter_exchange: text(
                args.get("x-dead-letter-exchange"),
                "x-dead-letter-exchange",
            )?,
            dead_letter_routing_key: text(
                args.get("x-dead-letter-routing-key"),
                "x-dead-letter-routing-key",
            )?,
        };
        if parsed.dead_letter_routing_key.is_some() && parsed.dead_letter_exchange.is_none() {
            return Err(QueueError::InvalidArgument {
                arg: "x-dead-letter-routing-key",
                reason: "requires x-dead-letter-exchange".into(),
            });
        }
        Ok(parsed)
    }
}

fn string(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn text(value: Option<&AMQPValue>, arg: &'static str) -> Result<Option<String>, QueueError> {
    match value {
        None => Ok(None),
        Some(v) => string(v)
            .map(Some)
            .ok_or_else(|| QueueError::InvalidArgument {
                arg,
                reason: format!("expected a string, got {v:?}"),
            }),
    }
}

fn non_negative(value: Option<&AMQPValue>, arg: &'static str) -> Result<Option<u64>, QueueError> {
    use AMQPValue as V;
    let Some(value) = value else {
        return Ok(None);
    };
    let n: i128 = match value {
        V::ShortShortInt(v) => (*v).into(),
        V::ShortShortUInt(v) => (*v).into(),
        V::ShortInt(v) => (*v).into(),
        V::ShortUInt(v) => (*v).into(),
        V::LongInt(v) => (*v).into(),
        V::LongUInt(v) => (*v).into(),
        V::LongLongInt(v) => (*v).into(),
        other => {
            return Err(QueueError::InvalidArgument {
                arg,
                reason: format!("expected an integer, got {other:?}"),
            });
        }
    };
    u64::try_from(n)
        .map(Some)
        .map_err(|_| QueueError::InvalidArgument {
            arg,
            reason: format!("{n} is negative"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn no_arguments_mean_an_unbounded_queue_dropping_at_the_head() {
        let args = QueueArguments::from_table(&FieldTable::default()).unwrap();
        assert_eq!(args, QueueArguments::default());
        assert_eq!(args.overflow, Overflow::DropHead);
    }

    #[test]
    fn limits_ttl_and_dead_lettering_are_read_from_any_integer_width() {
        let args = QueueArguments::from_table(&table(&[
            ("x-max-length", AMQPValue::ShortShortUInt(10)),
            ("x-max-length-bytes", AMQPValue::LongLongInt(1 << 20)),
            ("x-message-ttl", AMQPValue::LongInt(60_000)),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
            (
                "x-dead-letter-exchange",
                AMQPValue::LongString("dlx".into()),
            ),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString("dead".into()),
            ),
            ("x-unknown", AMQPValue::Boolean(true)),
        ]))
        .unwrap();
        assert_eq!(args.max_length, Some(10));
        assert_eq!(args.max_length_bytes, Some(1 << 20));
        assert_eq!(args.message_ttl, Some(60_000));
        assert_eq!(args.overflow, Overflow::RejectPublish);
        assert_eq!(args.dead_letter_exchange.as_deref(), Some("dlx"));
        assert_eq!(args.dead_letter_routing_key.as_deref(), Some("dead"));
    }

    #[test]
    fn negative_limits_are_precondition_failed() {
        let err = QueueArguments::from_table(&table(&[("x-max-length", AMQPValue::LongInt(-1))]))
            .unwrap_err();
        assert_eq!(err.reply_code().code(), 406);
        assert!(err.reply_text().contains("x-max-length"));
    }

    #[test]
    fn ttl_given_as_a_string_is_refused() {
        let err = QueueArguments::from_table(&table(&[(
            "x-message-ttl",
            AMQPValue::LongString("5".into()),
        )]));
        assert!(matches!(
            err,
            Err(QueueError::InvalidArgument {
                arg: "x-message-ttl",
                ..
            })
        ));
    }

    #[test]
    fn unknown_overflow_mode_is_refused() {
        let err = QueueArguments::from_table(&table(&[(
            "x-overflow",
            AMQPValue::LongString("drop-tail".into()),
        )]));
        assert!(err.is_err());
    }

    #[test]
    fn dead_letter_routing_key_without_exchange_is_refused() {
        let err = QueueArguments::from_table(&table(&[(
            "x-dead-letter-routing-key",
            AMQPValue::LongString("k".into()),
        )]));
        assert!(err.is_err());
    }
}
