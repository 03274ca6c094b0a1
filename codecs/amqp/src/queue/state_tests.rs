use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;

use super::*;

const CH1: ChannelKey = ChannelKey {
    connection: 1,
    channel: 1,
};
const CH2: ChannelKey = ChannelKey {
    connection: 2,
    channel: 1,
};

/// A per-channel tag allocator, as a session keeps: 1, 2, 3… on each channel.
#[derive(Default)]
struct Tags {
    next: std::collections::HashMap<ChannelKey, u64>,
    blocked: Vec<ChannelKey>,
}

impl Tags {
    fn alloc(&mut self) -> impl FnMut(&Consumer) -> Option<u64> + '_ {
        |c| {
            let ch = c.channel;
            if self.blocked.contains(&ch) {
                return None;
            }
            let n = self.next.entry(ch).or_insert(0);
            *n += 1;
            Some(*n)
        }
    }
}

fn msg(body: &str) -> Message {
    Message::new(
        "",
        "q",
        BasicProperties::default(),
        Bytes::from(body.to_owned()),
    )
}

fn msg_with_expiration(body: &str, ms: &str) -> Message {
    let mut m = msg(body);
    m.properties = BasicProperties::default().with_expiration(ms.into());
    m
}

fn queue() -> Queue {
    Queue::new("q", QueueArguments::default())
}

fn queue_with(args: QueueArguments) -> Queue {
    Queue::new("q", args)
}

fn dlx_args() -> QueueArguments {
    QueueArguments {
        dead_letter_exchange: Some("dlx".into()),
        ..QueueArguments::default()
    }
}

fn consumer(id: u64, channel: ChannelKey, prefetch: u16) -> Consumer {
    Consumer::new(
        ConsumerId(id),
        channel,
        &format!("ctag-{id}"),
        prefetch,
        false,
    )
}

fn body(d: &Delivery) -> &[u8] {
    &d.message.body
}

fn publish_all(q: &mut Queue, bodies: &[&str]) {
    for b in bodies {
        q.publish(msg(b), 0).unwrap();
    }
}

#[test]
fn publish_assigns_dense_increasing_offsets() {
    let mut q = queue();
    assert_eq!(q.publish(msg("a"), 0), Ok(PublishOutcome::Enqueued(0)));
    assert_eq!(q.publish(msg("b"), 0), Ok(PublishOutcome::Enqueued(1)));
    assert_eq!(q.message_count(), 2);
    assert_eq!(q.ready_bytes(), 2);
    assert_eq!(q.next_offset(), 2);
}

#[test]
fn consumer_receives_messages_in_order_with_tags_of_its_channel() {
    let mut q = queue();
    publish_all(&mut q, &["a", "b"]);
    q.add_consumer(consumer(1, CH1, 0));
    let mut tags = Tags::default();
    let got = q.deliver_all(0, &mut tags.alloc());
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), vec![b"a", b"b"]);
    assert_eq!(
        got.iter().map(|d| d.delivery_tag).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(
        got.iter()
            .all(|d| d.consumer == Some(ConsumerId(1)) && !d.redelivered)
    );
    assert_eq!((q.message_count(), q.unacked_count()), (0, 2));
}

#[test]
fn consumers_are_served_round_robin() {
    let mut q = queue();
    publish_all(&mut q, &["1", "2", "3", "4"]);
    q.add_consumer(consumer(1, CH1, 0));
    q.add_consumer(consumer(2, CH2, 0));
    let mut tags = Tags::default();
    let who: Vec<u64> = q
        .deliver_all(0, &mut tags.alloc())
        .iter()
        .map(|d| d.consumer.map(|c| c.0).unwrap_or(0))
        .collect();
    assert_eq!(who, vec![1, 2, 1, 2]);
}

#[test]
fn prefetch_limits_unacked_deliveries_per_consumer() {
    let mut q = queue();
    publish_all(&mut q, &["1", "2", "3"]);
    q.add_consumer(consumer(1, CH1, 2));
    let mut tags = Tags::default();
    assert_eq!(q.deliver_all(0, &mut tags.alloc()).len(), 2);
    assert!(!q.consumers()[0].has_credit());
    q.ack(CH1, 1, false).unwrap();
    assert!(q.consumers()[0].has_credit());
    let next = q.deliver_all(0, &mut tags.alloc());
    assert_eq!(next.iter().map(body).collect::<Vec<_>>(), vec![b"3"]);
}

#[test]
fn a_full_consumer_is_skipped_for_one_with_room() {
    let mut q = queue();
    publish_all(&mut q, &["1", "2", "3"]);
    q.add_consumer(consumer(1, CH1, 1));
    q.add_consumer(consumer(2, CH2, 0));
    let mut tags = Tags::default();
    let who: Vec<u64> = q
        .deliver_all(0, &mut tags.alloc())
        .iter()
        .map(|d| d.consumer.map(|c| c.0).unwrap_or(0))
        .collect();
    assert_eq!(who, vec![1, 2, 2]);
}

#[test]
fn a_channel_without_credit_gets_nothing() {
    let mut q = queue();
    publish_all(&mut q, &["1"]);
    q.add_consumer(consumer(1, CH1, 0));
    let mut tags = Tags {
        blocked: vec![CH1],
        ..Tags::default()
    };
    assert!(q.next_delivery(0, &mut tags.alloc()).is_none());
    assert_eq!(q.message_count(), 1);
}

#[test]
fn no_consumer_means_no_delivery() {
    let mut q = queue();
    publish_all(&mut q, &["1"]);
    assert!(q.next_delivery(0, &mut Tags::default().alloc()).is_none());
}

#[test]
fn no_ack_consumer_settles_on_delivery_and_ignores_prefetch() {
    let mut q = queue();
    publish_all(&mut q, &["1", "2", "3"]);
    q.add_consumer(Consumer::new(ConsumerId(1), CH1, "c", 1, true));
    let got = q.deliver_all(0, &mut Tags::default().alloc());
    assert_eq!(got.len(), 3);
    assert_eq!((q.message_count(), q.unacked_count()), (0, 0));
    assert_eq!(q.ack_floor(), 3, "nothing left to keep");
}

#[test]
fn ack_single_removes_that_message_only() {
    let mut q = queue();
    publish_all(&mut q, &["1", "2"]);
    q.add_consumer(consumer(1, CH1, 0));
    q.deliver_all(0, &mut Tags::default().alloc());
    assert_eq!(q.ack(CH1, 2, false), Ok(1));
    assert_eq!(q.unacked_count(), 1);
    assert_eq!(q.ack_floor(), 0, "offset 0 is still unacked");
}

#[test]
fn ack_multiple_removes_every_tag_up_to_the_given_one() {
    let mut q = queue();
    publish_all(&mut q, &["1", "2", "3"]);
    q.add_consumer(consumer(1, CH1, 0));
    q.deliver_all(0, &mut Tags::default().alloc());
    assert_eq!(q.ack(CH1, 2, true), Ok(2));
    assert_eq!(q.unacked_count(), 1);
    assert_eq!(q.ack_floor(), 2);
}

#[test]
fn ack_multiple_with_tag_zero_acknowledges_everything_outstanding() {
    let mut q = queue();
    publish_all(&mut q, &["1", "2", "3"]);
    q.add_consumer(consumer(1, CH1, 0));
    q.deliver_all(0, &mut Tags::default().alloc());
    assert_eq!(q.ack(CH1, 0, true), Ok(3));
    assert_eq!(q.unacked_count(), 0);
}

#[test]
fn ack_of_an_unknown_tag_is_precondition_failed() {
    let mut q = queue();
    let err = q.ack(CH1, 7, false).unwrap_err();
    assert_eq!(err, QueueError::UnknownDeliveryTag { tag: 7 });
    assert_eq!(err.reply_code().code(), 406);
}

#[test]
fn ack_on_another_channel_does_not_touch_this_ones_tags() {
    let mut q = queue();
    publish_all(&mut q, &["1"]);
    q.add_consumer(consumer(1, CH1, 0));
    q.deliver_all(0, &mut Tags::default().alloc());
    assert!(q.ack(CH2, 1, false).is_err());
    assert_eq!(q.ack(CH2, 0, true), Ok(0));
    assert_eq!(q.unacked_count(), 1);
}

#[test]
fn double_ack_is_refused() {
    let mut q = queue();
    publish_all(&mut q, &["1"]);
    q.add_consumer(consumer(1, CH1, 0));
    q.deliver_all(0, &mut Tags::default().alloc());
    q.ack(CH1, 1, false).unwrap();
    assert!(q.ack(CH1, 1, false).is_err());
}

#[test]
fn nack_with_requeue_returns_the_message_to_its_original_position_redelivered() {
    let mut q = queue();
    publish_all(&mut q, &["1", "2", "3"]);
    q.add_consumer(consumer(1, CH1, 1));
    let mut tags = Tags::default();
    let first = q.next_delivery(0, &mut tags.alloc()).unwrap();
    assert_eq!(body(&first), b"1");
    q.nack(CH1, first.delivery_tag, false, true, 0).unwrap();
    let again = q.next_delivery(0, &mut tags.alloc()).unwrap();
    assert_eq!(body(&again), b"1", "back at the head, ahead of 2 and 3");
    assert!(again.redelivered);
    assert_eq!(again.delivery_count, 2);
    assert_eq!(again.offset, first.offset);
}

#[test]
fn requeued_message_goes_back_between_its_neighbours() {
    let mut q = queue();
    publish_all(&mut q, &["1", "2", "3"]);
    q.add_consumer(consumer(1, CH1, 0));
    let mut tags = Tags::default();
    let got = q.deliver_all(0, &mut tags.alloc());
    q.reject(CH1, got[1].delivery_tag, true, 0).unwrap();
    q.reject(CH1, got[2].delivery_tag, true, 0).unwrap();
    q.reject(CH1, got[0].delivery_tag, true, 0).unwrap();
    let order: Vec<Vec<u8>> = q
        .deliver_all(0, &mut tags.alloc())
        .iter()
        .map(|d| body(d).to_vec())
        .collect();
    assert_eq!(order, vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
}

#[test]
fn reject_without_requeue_and_without_dlx_drops_the_message() {
    let mut q = queue();
    publish_all(&mut q, &["1"]);
    q.add_consumer(consumer(1, CH1, 0));
    q.deliver_all(0, &mut Tags::default().alloc());
    assert_eq!(q.reject(CH1, 1, false, 0), Ok(1));
    assert_eq!((q.message_count(), q.unacked_count()), (0, 0));
    assert!(q.take_dead_letters().is_empty());
}

#[test]
fn reject_without_requeue_dead_letters_with_reason_rejected() {
    let mut q = queue_with(dlx_args());
    publish_all(&mut q, &["1"]);
    q.add_consumer(consumer(1, CH1, 0));
    q.deliver_all(0, &mut Tags::default().alloc());
    q.reject(CH1, 1, false, 5_000).unwrap();
    let dead = q.take_dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, DeathReason::Rejected);
    assert_eq!(
        (dead[0].exchange.as_str(), dead[0].routing_key.as_str()),
        ("dlx", "q")
    );
    let headers = dead[0].message.properties.headers().clone().unwrap();
    assert!(headers.contains_key("x-death"));
    assert!(q.take_dead_letters().is_empty(), "drained");
}

#[test]
fn nack_multiple_without_requeue_dead_letters_each() {
    let mut q = queue_with(dlx_args());
    publish_all(&mut q, &["1", "2", "3"]);
    q.add_consumer(consumer(1, CH1, 0));
    q.deliver_all(0, &mut Tags::default().alloc());
    assert_eq!(q.nack(CH1, 2, true, false, 0), Ok(2));
    assert_eq!(q.take_dead_letters().len(), 2);
    assert_eq!(q.unacked_count(), 1);
}

#[test]
fn reject_releases_the_prefetch_slot() {
    let mut q = queue();
    publish_all(&mut q, &["1", "2"]);
    q.add_consumer(consumer(1, CH1, 1));
    let mut tags = Tags::default();
    q.next_delivery(0, &mut tags.alloc()).unwrap();
    q.reject(CH1, 1, false, 0).unwrap();
    assert_eq!(body(&q.next_delivery(0, &mut tags.alloc()).unwrap()), b"2");
}

#[test]
fn basic_cancel_keeps_unacked_messages_ackable() {
    let mut q = queue();
    publish_all(&mut q, &["1"]);
    q.add_consumer(consumer(1, CH1, 0));
    q.deliver_all(0, &mut Tags::default().alloc());
    assert!(
        q.cancel_consumer(ConsumerId(1), OnCancel::KeepUnacked, 0)
            .is_some()
    );
    assert_eq!(q.consumer_count(), 0);
    assert_eq!(q.ack(CH1, 1, false), Ok(1));
}

#[test]
fn consumer_cancel_with_requeue_returns_its_unacked_messages_redelivered() {
    let mut q = queue();
    publish_all(&mut q, &["1", "2"]);
    q.add_consumer(consumer(1, CH1, 0));
    q.add_consumer(consumer(2, CH2, 0));
    let mut tags = Tags::default();
    q.deliver_all(0, &mut tags.alloc());
    q.cancel_consumer(ConsumerId(1), OnCancel::Requeue, 0)
        .unwrap();
    assert_eq!((q.message_count(), q.unacked_count()), (1, 1));
    let d = q.next_delivery(0, &mut tags.alloc()).unwrap();
    assert_eq!(
        (body(&d), d.redelivered, d.consumer),
        (&b"1"[..], true, Some(ConsumerId(2)))
    );
}

#[test]
fn cancelling_an_unknown_consumer_changes_nothing() {
    let mut q = queue();
    assert!(
        q.cancel_consumer(ConsumerId(9), OnCancel::Requeue, 0)
            .is_none()
    );
}

#[test]
fn duplicate_consumer_id_is_refused() {
    let mut q = queue();
    assert!(q.add_consumer(consumer(1, CH1, 0)));
    assert!(!q.add_consumer(consumer(1, CH2, 0)));
    assert_eq!(q.consumer_count(), 1);
}

#[test]
fn closing_a_channel_removes_its_consumers_and_requeues_what_it_held() {
    let mut q = queue();
    publish_all(&mut q, &["1", "2", "3"]);
    q.add_consumer(consumer(1, CH1, 0));
    let mut tags = Tags::default();
    q.deliver_all(0, &mut tags.alloc());
    let got = q.get(CH2, false, 0, || 1).is_none();
    assert!(got, "everything was delivered");
    assert_eq!(q.close_channel(CH1, 0), 3);
    assert_eq!(
        (q.consumer_count(), q.message_count(), q.unacked_count()),
        (0, 3, 0)
    );
    let d = q.get(CH2, false, 0, || 1).unwrap();
    assert!(d.redelivered);
}

#[test]
fn recover_requeues_the_channels_unacked_messages() {
    let mut q = queue();
    publish_all(&mut q, &["1", "2"]);
    q.add_consumer(consumer(1, CH1, 0));
    q.deliver_all(0, &mut Tags::default().alloc());
    assert_eq!(q.recover(CH1, 0), 2);
    assert_eq!(q.consumer_count(), 1, "consumers stay");
    assert_eq!(q.message_count(), 2);
}

#[test]
fn basic_get_takes_the_head_and_reports_what_remains() {
    let mut q = queue();
    publish_all(&mut q, &["1", "2"]);
    let d = q.get(CH1, false, 0, || 42).unwrap();
    assert_eq!(
        (body(&d), d.delivery_tag, d.message_count, d.consumer),
        (&b"1"[..], 42, 1, None)
    );
    assert_eq!(q.ack(CH1, 42, false), Ok(1));
}

#[test]
fn basic_get_on_an_empty_queue_allocates_no_tag() {
    let mut q = queue();
    let mut allocated = false;
    assert!(
        q.get(CH1, false, 0, || {
            allocated = true;
            1
        })
        .is_none()
    );
    assert!(!allocated);
}

#[test]
fn basic_get_no_ack_settles_immediately() {
    let mut q = queue();
    publish_all(&mut q, &["1"]);
    q.get(CH1, true, 0, || 1).unwrap();
    assert_eq!((q.message_count(), q.unacked_count()), (0, 0));
}

#[test]
fn purge_drops_ready_messages_but_not_unacked_ones() {
    let mut q = queue_with(dlx_args());
    publish_all(&mut q, &["1", "2", "3"]);
    q.get(CH1, false, 0, || 1).unwrap();
    assert_eq!(q.purge(), 2);
    assert_eq!(
        (q.message_count(), q.unacked_count(), q.ready_bytes()),
        (0, 1, 0)
    );
    assert!(
        q.take_dead_letters().is_empty(),
        "purge does not dead-letter"
    );
}

#[test]
fn queue_ttl_expires_messages_at_the_head() {
    let mut q = queue_with(QueueArguments {
        message_ttl: Some(1_000),
        ..dlx_args()
    });
    q.publish(msg("old"), 0).unwrap();
    q.publish(msg("new"), 500).unwrap();
    assert_eq!(q.expire(1_000), 0, "alive through publish + ttl");
    assert_eq!(q.expire(1_001), 1);
    assert_eq!(q.message_count(), 1);
    let dead = q.take_dead_letters();
    assert_eq!(dead[0].reason, DeathReason::Expired);
    assert_eq!(&dead[0].message.body[..], b"old");
}

#[test]
fn per_message_expiration_applies_and_the_shorter_ttl_wins() {
    let mut q = queue_with(QueueArguments {
        message_ttl: Some(10_000),
        ..QueueArguments::default()
    });
    q.publish(msg_with_expiration("short", "100"), 0).unwrap();
    q.publish(msg_with_expiration("long", "60000"), 0).unwrap();
    assert_eq!(q.expire(101), 1);
    assert_eq!(q.expire(10_000), 0);
    assert_eq!(q.expire(10_001), 1, "capped by x-message-ttl");
}

#[test]
fn only_the_head_expires_so_a_short_ttl_behind_a_long_one_waits() {
    let mut q = queue();
    q.publish(msg_with_expiration("long", "10000"), 0).unwrap();
    q.publish(msg_with_expiration("short", "10"), 0).unwrap();
    assert_eq!(q.expire(100), 0);
    assert_eq!(q.message_count(), 2);
}

#[test]
fn expired_messages_are_not_delivered() {
    let mut q = queue();
    q.publish(msg_with_expiration("stale", "10"), 0).unwrap();
    q.publish(msg("fresh"), 0).unwrap();
    q.add_consumer(consumer(1, CH1, 0));
    let got = q.deliver_all(100, &mut Tags::default().alloc());
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), vec![b"fresh"]);
}

#[test]
fn ttl_zero_reaches_a_consumer_at_the_instant_of_publish_only() {
    let mut q = queue();
    q.publish(msg_with_expiration("now", "0"), 7).unwrap();
    q.add_consumer(consumer(1, CH1, 0));
    assert!(q.next_delivery(7, &mut Tags::default().alloc()).is_some());
    q.publish(msg_with_expiration("late", "0"), 7).unwrap();
    assert!(q.next_delivery(8, &mut Tags::default().alloc()).is_none());
}

#[test]
fn invalid_expiration_is_precondition_failed() {
    let mut q = queue();
    for bad in ["-1", "soon", "", "1.5", " 10"] {
        let err = q.publish(msg_with_expiration("x", bad), 0).unwrap_err();
        assert_eq!(err.reply_code().code(), 406, "{bad:?}");
    }
    assert_eq!(q.message_count(), 0);
}

#[test]
fn max_length_drop_head_drops_the_oldest_ready_message() {
    let mut q = queue_with(QueueArguments {
        max_length: Some(2),
        ..QueueArguments::default()
    });
    publish_all(&mut q, &["1", "2", "3"]);
    assert_eq!(q.message_count(), 2);
    let d = q.get(CH1, true, 0, || 1).unwrap();
    assert_eq!(body(&d), b"2");
}

#[test]
fn max_length_drop_head_dead_letters_with_reason_maxlen() {
    let mut q = queue_with(QueueArguments {
        max_length: Some(1),
        ..dlx_args()
    });
    publish_all(&mut q, &["1", "2"]);
    let dead = q.take_dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].reason, &dead[0].message.body[..]),
        (DeathReason::MaxLen, &b"1"[..])
    );
}

#[test]
fn max_length_counts_only_ready_messages() {
    let mut q = queue_with(QueueArguments {
        max_length: Some(1),
        ..QueueArguments::default()
    });
    publish_all(&mut q, &["1"]);
    q.get(CH1, false, 0, || 1).unwrap();
    assert_eq!(q.publish(msg("2"), 0), Ok(PublishOutcome::Enqueued(1)));
    assert_eq!((q.message_count(), q.unacked_count()), (1, 1));
}

#[test]
fn max_length_zero_with_drop_head_keeps_nothing() {
    let mut q = queue_with(QueueArguments {
        max_length: Some(0),
        ..QueueArguments::default()
    });
    q.publish(msg("1"), 0).unwrap();
    assert_eq!(q.message_count(), 0);
}

#[test]
fn reject_publish_refuses_new_messages_when_full() {
    let mut q = queue_with(QueueArguments {
        max_length: Some(1),
        overflow: Overflow::RejectPublish,
        ..dlx_args()
    });
    assert_eq!(q.publish(msg("1"), 0), Ok(PublishOutcome::Enqueued(0)));
    assert_eq!(q.publish(msg("2"), 0), Ok(PublishOutcome::Rejected));
    assert_eq!(q.message_count(), 1);
    assert!(
        q.take_dead_letters().is_empty(),
        "reject-publish does not dead-letter"
    );
    assert_eq!(body(&q.get(CH1, true, 0, || 1).unwrap()), b"1");
}

#[test]
fn reject_publish_dlx_dead_letters_the_refused_message() {
    let mut q = queue_with(QueueArguments {
        max_length: Some(0),
        overflow: Overflow::RejectPublishDlx,
        ..dlx_args()
    });
    assert_eq!(q.publish(msg("1"), 0), Ok(PublishOutcome::Rejected));
    let dead = q.take_dead_letters();
    assert_eq!((dead.len(), dead[0].reason), (1, DeathReason::MaxLen));
}

#[test]
fn max_length_bytes_limits_ready_body_bytes() {
    let mut q = queue_with(QueueArguments {
        max_length_bytes: Some(5),
        ..QueueArguments::default()
    });
    publish_all(&mut q, &["abc", "de", "f"]);
    assert_eq!((q.message_count(), q.ready_bytes()), (2, 3));
    let mut reject = queue_with(QueueArguments {
        max_length_bytes: Some(5),
        overflow: Overflow::RejectPublish,
        ..QueueArguments::default()
    });
    publish_all(&mut reject, &["abc", "de"]);
    assert_eq!(reject.publish(msg("f"), 0), Ok(PublishOutcome::Rejected));
}

#[test]
fn dead_letter_routing_key_is_used_when_set() {
    let mut q = queue_with(QueueArguments {
        dead_letter_routing_key: Some("parking".into()),
        ..dlx_args()
    });
    publish_all(&mut q, &["1"]);
    q.get(CH1, false, 0, || 1).unwrap();
    q.reject(CH1, 1, false, 0).unwrap();
    assert_eq!(q.take_dead_letters()[0].routing_key, "parking");
}

#[test]
fn dead_letters_from_queue_arguments_parsed_from_a_declare_table() {
    let mut table = FieldTable::default();
    table.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    table.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString("dlq".into()),
    );
    table.insert("x-max-length".into(), AMQPValue::LongInt(1));
    let mut q = Queue::new("work", QueueArguments::from_table(&table).unwrap());
    publish_all(&mut q, &["1", "2"]);
    let dead = q.take_dead_letters();
    assert_eq!(
        (dead[0].exchange.as_str(), dead[0].routing_key.as_str()),
        ("", "dlq")
    );
}

#[test]
fn ack_floor_tracks_the_lowest_unsettled_offset() {
    let mut q = queue();
    assert_eq!(q.ack_floor(), 0);
    publish_all(&mut q, &["1", "2", "3"]);
    q.add_consumer(consumer(1, CH1, 0));
    q.deliver_all(0, &mut Tags::default().alloc());
    q.ack(CH1, 2, false).unwrap();
    assert_eq!(q.ack_floor(), 0);
    q.ack(CH1, 1, false).unwrap();
    assert_eq!(q.ack_floor(), 2);
    q.ack(CH1, 3, false).unwrap();
    assert_eq!(q.ack_floor(), 3);
}

#[test]
fn round_robin_survives_removing_a_consumer() {
    let mut q = queue();
    publish_all(&mut q, &["1", "2", "3", "4"]);
    q.add_consumer(consumer(1, CH1, 0));
    q.add_consumer(consumer(2, CH1, 0));
    q.add_consumer(consumer(3, CH2, 0));
    let mut tags = Tags::default();
    assert_eq!(
        q.next_delivery(0, &mut tags.alloc()).unwrap().consumer,
        Some(ConsumerId(1))
    );
    assert_eq!(
        q.next_delivery(0, &mut tags.alloc()).unwrap().consumer,
        Some(ConsumerId(2))
    );
    q.cancel_consumer(ConsumerId(1), OnCancel::KeepUnacked, 0);
    assert_eq!(
        q.next_delivery(0, &mut tags.alloc()).unwrap().consumer,
        Some(ConsumerId(3))
    );
    assert_eq!(
        q.next_delivery(0, &mut tags.alloc()).unwrap().consumer,
        Some(ConsumerId(2))
    );
}

mod invariants {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Publish {
            size: u8,
            ttl: Option<u8>,
        },
        Deliver,
        Ack {
            tag: u8,
            multiple: bool,
        },
        Nack {
            tag: u8,
            multiple: bool,
            requeue: bool,
        },
        Get {
            no_ack: bool,
        },
        Cancel {
            id: u8,
            requeue: bool,
        },
        AddConsumer {
            id: u8,
            prefetch: u8,
        },
        CloseChannel,
        Tick {
            ms: u8,
        },
        Purge,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), proptest::option::of(0u8..50))
                .prop_map(|(size, ttl)| Op::Publish { size: size % 16, ttl }),
            3 => Just(Op::Deliver),
            2 => (0u8..12, any::<bool>()).prop_map(|(tag, multiple)| Op::Ack { tag, multiple }),
            2 => (0u8..12, any::<bool>(), any::<bool>())
                .prop_map(|(tag, multiple, requeue)| Op::Nack { tag, multiple, requeue }),
            1 => any::<bool>().prop_map(|no_ack| Op::Get { no_ack }),
            1 => (0u8..3, any::<bool>()).prop_map(|(id, requeue)| Op::Cancel { id, requeue }),
            1 => (0u8..3, 0u8..3).prop_map(|(id, prefetch)| Op::AddConsumer { id, prefetch }),
            1 => Just(Op::CloseChannel),
            1 => (0u8..40).prop_map(|ms| Op::Tick { ms }),
            1 => Just(Op::Purge),
        ]
    }

    proptest! {
        /// Whatever clients do, every enqueued message is in exactly one place: ready,
        /// unacked, acked, settled by a no-ack delivery, dead-lettered or purged; byte and
        /// prefetch accounting stay consistent; nothing panics.
        #[test]
        fn every_message_is_accounted_for(ops in proptest::collection::vec(op(), 0..80)) {
            let mut q = queue_with(QueueArguments {
                max_length: Some(6),
                message_ttl: Some(30),
                ..dlx_args()
            });
            let mut tags = Tags::default();
            let mut now = 0u64;
            let (mut enqueued, mut acked, mut no_ack, mut dead, mut purged) = (0, 0, 0, 0, 0);
            for op in ops {
                match op {
                    Op::Publish { size, ttl } => {
                        let mut m = msg(&"x".repeat(size as usize));
                        if let Some(ttl) = ttl {
                            m.properties = BasicProperties::default().with_expiration(ttl.to_string().into());
                        }
                        if let Ok(PublishOutcome::Enqueued(_)) = q.publish(m, now) {
                            enqueued += 1;
                        }
                    }
                    Op::Deliver => {
                        for d in q.deliver_all(now, &mut tags.alloc()) {
                            if q.consumers().iter().any(|c| Some(c.id) == d.consumer && c.no_ack) {
                                no_ack += 1;
                            }
                        }
                    }
                    Op::Ack { tag, multiple } => {
                        acked += q.ack(CH1, u64::from(tag), multiple).unwrap_or(0);
                    }
                    Op::Nack { tag, multiple, requeue } => {
                        let _ = q.nack(CH1, u64::from(tag), multiple, requeue, now);
                    }
                    Op::Get { no_ack: settle } => {
                        let mut next = *tags.next.get(&CH1).unwrap_or(&0) + 1;
                        if q.get(CH1, settle, now, || next).is_some() {
                            tags.next.insert(CH1, next);
                            next += 1;
                            let _ = next;
                            if settle {
                                no_ack += 1;
                            }
                        }
                    }
                    Op::Cancel { id, requeue } => {
                        let how = if requeue { OnCancel::Requeue } else { OnCancel::KeepUnacked };
                        q.cancel_consumer(ConsumerId(u64::from(id)), how, now);
                    }
                    Op::AddConsumer { id, prefetch } => {
                        q.add_consumer(Consumer::new(
                            ConsumerId(u64::from(id)),
                            CH1,
                            "c",
                            u16::from(prefetch),
                            id == 2,
                        ));
                    }
                    Op::CloseChannel => {
                        q.close_channel(CH1, now);
                    }
                    Op::Tick { ms } => {
                        now += u64::from(ms);
                        q.expire(now);
                    }
                    Op::Purge => purged += q.purge(),
                }
                dead += q.take_dead_letters().len();

                let held = q.message_count() + q.unacked_count();
                prop_assert_eq!(held, q.entries.len());
                prop_assert_eq!(enqueued, held + acked + no_ack + dead + purged);
                let bytes: u64 = q.ready.iter().map(|o| q.entries[o].message.body.len() as u64).sum();
                prop_assert_eq!(bytes, q.ready_bytes());
                prop_assert!(q.message_count() <= 6);
                for c in q.consumers() {
                    let held_by_c = q.entries.values().filter(|e| matches!(e.state,
                        State::Unacked { consumer: Some(id), .. } if id == c.id)).count();
                    prop_assert_eq!(held_by_c as u32, c.unacked());
                }
            }
        }
    }
}

#[test]
fn requeue_beyond_max_length_drops_the_head_as_rabbitmq_does() {
    let mut q = queue_with(QueueArguments {
        max_length: Some(2),
        ..dlx_args()
    });
    publish_all(&mut q, &["1", "2"]);
    q.add_consumer(consumer(1, CH1, 0));
    q.deliver_all(0, &mut Tags::default().alloc());
    publish_all(&mut q, &["3", "4"]);
    assert_eq!(q.nack(CH1, 0, true, true, 0), Ok(2));
    assert_eq!(q.message_count(), 2);
    let dropped: Vec<Vec<u8>> = q
        .take_dead_letters()
        .iter()
        .map(|d| d.message.body.to_vec())
        .collect();
    assert_eq!(
        dropped,
        vec![b"1".to_vec(), b"2".to_vec()],
        "the requeued ones were oldest"
    );
}

#[test]
fn deliveries_kept_after_cancel_do_not_count_against_a_consumer_reusing_the_id() {
    let mut q = queue();
    publish_all(&mut q, &["1", "2", "3"]);
    q.add_consumer(consumer(1, CH1, 1));
    let mut tags = Tags::default();
    q.next_delivery(0, &mut tags.alloc()).unwrap();
    q.cancel_consumer(ConsumerId(1), OnCancel::KeepUnacked, 0);
    q.add_consumer(consumer(1, CH1, 1));
    q.next_delivery(0, &mut tags.alloc()).unwrap();
    q.ack(CH1, 1, false).unwrap();
    assert!(
        !q.consumers()[0].has_credit(),
        "acking the old delivery must not free the new consumer's slot"
    );
}

#[test]
fn ttl_zero_message_is_expired_for_basic_get() {
    let mut q = queue();
    q.publish(msg_with_expiration("now", "0"), 7).unwrap();
    q.publish(msg("later"), 7).unwrap();
    let got = q.get(CH1, true, 7, || 1).expect("a message");
    assert_eq!(body(&got), b"later");
}
