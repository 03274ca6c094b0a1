//! MQTT topics ↔ AMQP routing keys, as the `amq.topic` exchange sees them.
//!
//! The base mapping is RabbitMQ's MQTT plugin's: levels separated by `/` become words
//! separated by `.`, and in filters `+` becomes `*` and `#` stays `#`. So `sensors/+/temp`
//! binds as `sensors.*.temp` and an MQTT publish to `sensors/kitchen/temp` is routed with key
//! `sensors.kitchen.temp`, which AMQP applications bind to as they would on RabbitMQ.
//!
//! RabbitMQ stops there, so a `.` inside an MQTT level splits it into two AMQP words and the
//! round trip loses it (`a.b/c` → `a.b.c` → `a/b/c`). Switchboard escapes, inside each level:
//!
//! | in an MQTT level | in the AMQP word | why |
//! |---|---|---|
//! | `%` | `%25` | the escape character itself |
//! | `.` | `%2E` | the AMQP word separator |
//! | a level that is exactly `*` | `%2A` | `*` alone is an AMQP wildcard; MQTT treats it literally |
//!
//! Escapes are uppercase and nothing else is escaped, so topics without `%`, `.` or a lone `*`
//! level map exactly as on RabbitMQ. Guarantees (property-tested):
//!
//! - every MQTT topic name and filter survives MQTT → AMQP → MQTT unchanged;
//! - every routing key produced from an MQTT topic survives AMQP → MQTT → AMQP unchanged;
//! - an MQTT filter matches an MQTT topic exactly when the translated pattern matches the
//!   translated key in a topic exchange.
//!
//! Routing keys published by AMQP clients are decoded the same way (other `%` sequences stay
//! literal, so the message is still delivered). A key whose word holds `/`, `+`, `#` or NUL has
//! no MQTT topic — MQTT levels cannot contain them — and is reported as
//! [`ModelError::UnmappableTopic`].

use super::error::ModelError;

/// An MQTT topic name or topic filter → the AMQP routing key or binding pattern.
pub fn mqtt_to_amqp(topic: &str) -> String {
    let mut out = String::with_capacity(topic.len() + 8);
    for (i, level) in topic.split('/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        match level {
            "+" => out.push('*'),
            "#" => out.push('#'),
            "*" => out.push_str("%2A"),
            _ => {
                for c in level.chars() {
                    match c {
                        '%' => out.push_str("%25"),
                        '.' => out.push_str("%2E"),
                        c => out.push(c),
                    }
                }
            }
        }
    }
    out
}

/// An AMQP routing key → the MQTT topic name to deliver under.
pub fn amqp_to_mqtt_topic(routing_key: &str) -> Result<String, ModelError> {
    amqp_to_mqtt(routing_key, false)
}

/// An AMQP binding pattern → the MQTT topic filter (`*` → `+`, `#` → `#`).
pub fn amqp_to_mqtt_filter(pattern: &str) -> Result<String, ModelError> {
    amqp_to_mqtt(pattern, true)
}

fn amqp_to_mqtt(key: &str, is_pattern: bool) -> Result<String, ModelError> {
    let unmappable = |reason| ModelError::UnmappableTopic {
        key: key.to_owned(),
        reason,
    };
    let mut out = String::with_capacity(key.len());
    for (i, word) in key.split('.').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match word {
            "*" if is_pattern => out.push('+'),
            "#" if is_pattern => out.push('#'),
            "%2A" => out.push('*'),
            _ => {
                let level = unescape(word);
                if level.contains(['/', '+', '#', '\0']) {
                    return Err(unmappable("a word holds '/', '+', '#' or NUL"));
                }
                out.push_str(&level);
            }
        }
    }
    Ok(out)
}

/// Decodes `%25` and `%2E`; any other `%` is kept as it is.
fn unescape(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("%25") {
            out.push('%');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("%2E") {
            out.push('.');
            rest = after;
        } else {
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::topic::TopicTrie;
    use proptest::prelude::*;

    #[test]
    fn levels_become_words_as_on_rabbitmq() {
        assert_eq!(mqtt_to_amqp("sensors/kitchen/temp"), "sensors.kitchen.temp");
        assert_eq!(
            amqp_to_mqtt_topic("sensors.kitchen.temp").unwrap(),
            "sensors/kitchen/temp"
        );
    }

    #[test]
    fn filter_wildcards_translate() {
        assert_eq!(mqtt_to_amqp("sensors/+/temp"), "sensors.*.temp");
        assert_eq!(mqtt_to_amqp("sensors/#"), "sensors.#");
        assert_eq!(amqp_to_mqtt_filter("sensors.*.#").unwrap(), "sensors/+/#");
    }

    #[test]
    fn dots_inside_levels_are_escaped_and_restored() {
        assert_eq!(mqtt_to_amqp("v1.2/status"), "v1%2E2.status");
        assert_eq!(amqp_to_mqtt_topic("v1%2E2.status").unwrap(), "v1.2/status");
    }

    #[test]
    fn percent_signs_are_escaped_and_restored() {
        assert_eq!(mqtt_to_amqp("100%/a%2E"), "100%25.a%252E");
        assert_eq!(amqp_to_mqtt_topic("100%25.a%252E").unwrap(), "100%/a%2E");
    }

    #[test]
    fn a_literal_star_level_does_not_become_a_wildcard() {
        assert_eq!(mqtt_to_amqp("a/*"), "a.%2A");
        assert_eq!(amqp_to_mqtt_filter("a.%2A").unwrap(), "a/*");
        assert_eq!(
            mqtt_to_amqp("a/b*"),
            "a.b*",
            "only a whole level is a wildcard"
        );
    }

    #[test]
    fn empty_levels_are_kept() {
        assert_eq!(mqtt_to_amqp("/a//b/"), ".a..b.");
        assert_eq!(amqp_to_mqtt_topic(".a..b.").unwrap(), "/a//b/");
    }

    #[test]
    fn amqp_keys_with_other_percent_sequences_still_map() {
        assert_eq!(amqp_to_mqtt_topic("sale.50%off").unwrap(), "sale/50%off");
    }

    #[test]
    fn amqp_words_holding_mqtt_separators_or_wildcards_are_unmappable() {
        for key in ["orders/eu", "a.b+c", "a.#", "x.\0"] {
            let err = amqp_to_mqtt_topic(key).unwrap_err();
            assert!(matches!(err, ModelError::UnmappableTopic { .. }), "{key:?}");
        }
        assert_eq!(
            amqp_to_mqtt_filter("a.#").unwrap(),
            "a/#",
            "fine as a pattern"
        );
    }

    /// A reference MQTT matcher (MQTT 3.1.1 §4.7), for topics that do not start with '$'.
    fn mqtt_matches(filter: &str, topic: &str) -> bool {
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = topic.split('/').collect();
        let mut i = 0;
        loop {
            match (f.get(i), t.get(i)) {
                (Some(&"#"), _) => return true,
                (Some(&"+"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
            i += 1;
        }
    }

    fn level() -> impl Strategy<Value = String> {
        let parts: &'static [&str] = &["a", "b", ".", "%", "2E", "25", "2A", "*", "x y", "é"];
        proptest::collection::vec(proptest::sample::select(parts), 0..4)
            .prop_map(|parts| parts.concat())
    }

    fn topic_name() -> impl Strategy<Value = String> {
        proptest::collection::vec(level(), 1..5)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("MQTT topics are not empty", |t| !t.is_empty())
    }

    fn topic_filter() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(prop_oneof![3 => level(), 1 => Just("+".to_owned())], 1..5),
            any::<bool>(),
        )
            .prop_map(|(mut levels, hash)| {
                if hash {
                    levels.push("#".to_owned());
                }
                levels.join("/")
            })
            .prop_filter("MQTT filters are not empty", |f| !f.is_empty())
    }

    proptest! {
        #[test]
        fn mqtt_topic_names_round_trip(topic in topic_name()) {
            prop_assert_eq!(amqp_to_mqtt_topic(&mqtt_to_amqp(&topic)), Ok(topic));
        }

        #[test]
        fn mqtt_topic_filters_round_trip(filter in topic_filter()) {
            prop_assert_eq!(amqp_to_mqtt_filter(&mqtt_to_amqp(&filter)), Ok(filter));
        }

        #[test]
        fn translated_keys_round_trip_from_the_amqp_side(topic in topic_name()) {
            let key = mqtt_to_amqp(&topic);
            let back = amqp_to_mqtt_topic(&key).map(|t| mqtt_to_amqp(&t));
            prop_assert_eq!(back, Ok(key));
        }

        #[test]
        fn translated_patterns_match_exactly_when_mqtt_filters_do(
            filter in topic_filter(),
            topic in topic_name(),
        ) {
            let mut trie = TopicTrie::new();
            trie.insert(&mqtt_to_amqp(&filter), ());
            let amqp = !trie.matches(&mqtt_to_amqp(&topic)).is_empty();
            prop_assert_eq!(amqp, mqtt_matches(&filter, &topic), "{:?} vs {:?}", filter, topic);
        }
    }
}
