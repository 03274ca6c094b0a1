"""The one table behind the compatibility matrix: which behaviour (row) and which client library
(column) each test of this suite stands for, and which cells cannot exist at all (n/a).

compat-tests/run reads it; the tests themselves know nothing of it. A test is mapped by the first
RULES entry whose pattern matches `file::test_name[params]` (re.search). Its column is the
rule's client if it names one, else the file's client (FILES); "paho", "mqtt.js" and "rumqttc"
are resolved to the protocol version in the test's parameters or name (v31 / v311 / v5; the
default is 3.1.1). The cases shared by the adapter-driven test files (CASE_FILES) have one rule
each, for every file that runs them.
A test no rule matches lands in the row "(unmapped)" of its file's section, and the runner
warns: add a rule.

A cell aggregates all its tests: it passes only if every test that ran passed. A cell no test
maps to is empty, unless NA declares that the client cannot do that behaviour: then it shows
"n/a" with the reason.
"""
import re

# Sections of the matrix, in display order.
SECTIONS = ["Kafka", "MQTT", "AMQP 0-9-1", "Cross-protocol (Switchboard only)",
            "Switchboard itself"]

# Test file -> (protocol it needs an endpoint for, section, client column).
FILES = {
    "test_kafka_confluent.py": ("kafka", "Kafka", "confluent-kafka"),
    "test_kafka_python.py": ("kafka", "Kafka", "kafka-python"),
    "test_kcat.py": ("kafka", "Kafka", "kcat"),
    "test_bad_input.py": ("kafka", "Kafka", "raw socket"),
    "test_cli.py": ("kafka", "Switchboard itself", "switchboard CLI"),
    "test_object_storage.py": ("kafka", "Switchboard itself", "clients over SeaweedFS (S3)"),
    "test_mqtt_paho.py": ("mqtt", "MQTT", "paho"),
    "test_mqtt_cli.py": ("mqtt", "MQTT", "mosquitto_pub/sub"),
    "test_mqtt_cross.py": ("mqtt", "Cross-protocol (Switchboard only)", "paho"),
    "test_amqp_pika.py": ("amqp", "AMQP 0-9-1", "pika"),
    "test_amqp_cli.py": ("amqp", "AMQP 0-9-1", "amqp-tools"),
    "test_amqp_bad_input.py": ("amqp", "AMQP 0-9-1", "raw socket"),
    "test_amqp_cross.py": ("amqp", "Cross-protocol (Switchboard only)", "pika"),
    # Client libraries behind an adapter (adapterkit.py), running the cases of
    # cases_<protocol>.py: Node.js scripts in compat-tests/node, the Rust binary of
    # compat-tests/rust.
    "test_kafka_kafkajs.py": ("kafka", "Kafka", "kafkajs"),
    "test_kafka_rust.py": ("kafka", "Kafka", "rust (rskafka)"),
    "test_mqtt_mqttjs.py": ("mqtt", "MQTT", "mqtt.js"),
    "test_mqtt_rumqttc.py": ("mqtt", "MQTT", "rumqttc"),
    "test_amqp_amqplib.py": ("amqp", "AMQP 0-9-1", "amqplib"),
    "test_amqp_lapin.py": ("amqp", "AMQP 0-9-1", "lapin"),
}

# The test files of each protocol that run its shared cases (cases_<protocol>.py), one per
# client library: a rule for a case covers them all.
CASE_FILES = {
    "kafka": ("test_kafka_kafkajs.py", "test_kafka_rust.py"),
    "mqtt": ("test_mqtt_mqttjs.py", "test_mqtt_rumqttc.py"),
    "amqp": ("test_amqp_amqplib.py", "test_amqp_lapin.py"),
}


def _case(protocol: str, pattern: str) -> str:
    """A RULES pattern for the case(s) `pattern` in every test file running them."""
    files = "|".join(re.escape(f) for f in CASE_FILES[protocol])
    return rf"(?:{files})::{pattern}"


# Column order (a section shows the columns it has cells in).
CLIENTS = ["confluent-kafka", "kafka-python", "kcat", "kafkajs", "rust (rskafka)", "paho 3.1",
           "paho 3.1.1", "paho 5", "mosquitto_pub/sub", "mqtt.js 3.1.1", "mqtt.js 5",
           "rumqttc 3.1.1", "rumqttc 5", "pika", "amqp-tools", "amqplib", "lapin", "raw socket",
           "switchboard CLI", "clients over SeaweedFS (S3)"]

# Rows, in display order: (section, behaviour).
ROWS = [
    ("Kafka", "produce/consume"),
    ("Kafka", "consumer groups & committed offsets"),
    ("Kafka", "consumer-group rebalance"),
    ("Kafka", "idempotence"),
    ("Kafka", "offsets survive kill -9"),
    ("Kafka", "compression codecs"),
    ("Kafka", "offsets for times & watermarks"),
    ("Kafka", "topic admin & metadata"),
    ("Kafka", "topic auto-creation"),
    ("Kafka", "bad input"),

    ("MQTT", "connect"),
    ("MQTT", "client identifiers"),
    ("MQTT", "session takeover"),
    ("MQTT", "authentication"),
    ("MQTT", "publish/subscribe QoS 0/1/2"),
    ("MQTT", "QoS downgrade"),
    ("MQTT", "ordering (1000 x QoS 1)"),
    ("MQTT", "WebSocket transport"),
    ("MQTT", "unsubscribe"),
    ("MQTT", "topic wildcards"),
    ("MQTT", "retained messages"),
    ("MQTT", "will messages"),
    ("MQTT", "persistent sessions"),
    ("MQTT", "session survives broker restart"),
    ("MQTT", "QoS 2 across reconnect"),
    ("MQTT", "message expiry"),
    ("MQTT", "MQTT 5 properties"),
    ("MQTT", "MQTT 5 subscription options"),
    ("MQTT", "shared subscriptions"),
    ("MQTT", "topic aliases"),
    ("MQTT", "keep-alive"),
    ("MQTT", "bad input"),

    ("AMQP 0-9-1", "connect & authentication"),
    ("AMQP 0-9-1", "exchange routing"),
    ("AMQP 0-9-1", "exchange errors (403/404)"),
    ("AMQP 0-9-1", "queue declaration"),
    ("AMQP 0-9-1", "exclusive & auto-delete queues"),
    ("AMQP 0-9-1", "queue delete & purge"),
    ("AMQP 0-9-1", "message properties & bodies"),
    ("AMQP 0-9-1", "publish/consume"),
    ("AMQP 0-9-1", "basic.get"),
    ("AMQP 0-9-1", "acks"),
    ("AMQP 0-9-1", "nack/requeue"),
    ("AMQP 0-9-1", "requeue on channel/connection close"),
    ("AMQP 0-9-1", "dead-lettering"),
    ("AMQP 0-9-1", "TTL"),
    ("AMQP 0-9-1", "max-length"),
    ("AMQP 0-9-1", "prefetch"),
    ("AMQP 0-9-1", "mandatory & returns"),
    ("AMQP 0-9-1", "confirms"),
    ("AMQP 0-9-1", "transactions"),
    ("AMQP 0-9-1", "stream queues"),
    ("AMQP 0-9-1", "durability across restart"),
    ("AMQP 0-9-1", "bad input"),

    ("Cross-protocol (Switchboard only)", "MQTT → Kafka"),
    ("Cross-protocol (Switchboard only)", "Kafka → MQTT"),
    ("Cross-protocol (Switchboard only)", "MQTT session survives kill -9"),
    ("Cross-protocol (Switchboard only)", "AMQP ↔ MQTT"),
    ("Cross-protocol (Switchboard only)", "Kafka → AMQP stream queue"),
    ("Cross-protocol (Switchboard only)", "AMQP stream queue → Kafka"),

    ("Switchboard itself", "config printing"),
    ("Switchboard itself", "port conflict reporting"),
    ("Switchboard itself", "topic admin CLI"),
    ("Switchboard itself", "metrics endpoint"),
    ("Switchboard itself", "S3 storage: Kafka, MQTT, AMQP in direct and tiered mode"),
    ("Switchboard itself", "S3 storage: clean-disk restart keeps data, groups, configs"),
    ("Switchboard itself", "S3 storage: store outage costs retries, not messages"),
]

RAW = "raw socket"

# (pattern, row, client or None). First match wins; order matters where patterns overlap.
RULES = [
    # Kafka ---------------------------------------------------------------------------------
    (r"test_kafka_confluent\.py::test_idempotent_lz4_group_consumption_survives_kill9",
     ("idempotence", "consumer-group rebalance", "offsets survive kill -9"), None),
    (r"test_kafka_confluent\.py::test_every_compression_codec_round_trips\[none\]",
     "produce/consume", None),
    (r"test_kafka_confluent\.py::test_every_compression_codec_round_trips", "compression codecs",
     None),
    (r"test_kafka_confluent\.py::test_offsets_for_times_and_watermarks",
     "offsets for times & watermarks", None),
    (r"test_kafka_confluent\.py::test_unknown_topic_is_auto_created_on_produce",
     "topic auto-creation", None),
    (r"test_kafka_python\.py::test_produce_and_group_consume_with_commit",
     ("produce/consume", "consumer groups & committed offsets", "topic admin & metadata"), None),
    (r"test_kcat\.py::test_kcat_produces_consumes_and_lists_metadata",
     ("produce/consume", "topic admin & metadata"), None),
    (r"test_kcat\.py::test_kcat_consumer_group_mode", "consumer groups & committed offsets", None),
    (r"test_bad_input\.py::", "bad input", None),
    (r"test_amqp_bad_input\.py::", "bad input", None),
    (r"test_cli\.py::test_config_prints", "config printing", None),
    (r"test_cli\.py::test_taken_port", "port conflict reporting", None),
    (r"test_cli\.py::test_topic_cli", "topic admin CLI", None),
    (r"test_cli\.py::test_metrics", "metrics endpoint", None),
    (r"test_object_storage\.py::test_(mqtt_and_amqp|tiered_mode)",
     "S3 storage: Kafka, MQTT, AMQP in direct and tiered mode", None),
    (r"test_object_storage\.py::test_(kafka_records_survive|a_clean_disk)",
     "S3 storage: clean-disk restart keeps data, groups, configs", None),
    (r"test_object_storage\.py::test_store_outage",
     "S3 storage: store outage costs retries, not messages", None),

    # Kafka: the shared cases (kafkajs, rskafka) ----------------------------------------------
    (_case("kafka", "test_produce_and_consume"), "produce/consume", None),
    (_case("kafka", "test_unknown_topic_is_auto_created"), "topic auto-creation", None),
    (_case("kafka", "test_committed_offsets"), "consumer groups & committed offsets", None),
    (_case("kafka", "test_second_member_joining"), "consumer-group rebalance", None),
    (_case("kafka", "test_gzip"), "compression codecs", None),
    (_case("kafka", "test_idempotent_producer"), "idempotence", None),
    (_case("kafka", "test_admin_"), "topic admin & metadata", None),
    (_case("kafka", "test_topic_offsets"), "offsets for times & watermarks", None),

    # MQTT: paho and raw sockets ------------------------------------------------------------
    (r"test_mqtt_paho\.py::.*\[.*\bws\]", "WebSocket transport", None),
    (r"test_mqtt_paho\.py::test_connect_is_acknowledged", "connect", None),
    (r"test_mqtt_paho\.py::test_v5_empty_client_id", "client identifiers", None),
    (r"test_mqtt_paho\.py::test_v311_empty_client_id", "client identifiers", RAW),
    (r"test_mqtt_paho\.py::test_second_connection_with_same_client_id", "session takeover", None),
    (r"test_mqtt_paho\.py::test_right_password", "authentication", None),
    (r"test_mqtt_paho\.py::test_bad_credentials", "authentication", RAW),
    (r"test_mqtt_paho\.py::test_publish_reaches_subscriber_at_same_qos",
     "publish/subscribe QoS 0/1/2", None),
    (r"test_mqtt_paho\.py::test_delivered_qos_is_the_lower", "QoS downgrade", None),
    (r"test_mqtt_paho\.py::test_thousand_qos1", "ordering (1000 x QoS 1)", None),
    (r"test_mqtt_paho\.py::test_unsubscribed", "unsubscribe", None),
    (r"test_mqtt_paho\.py::test_(single_level|multi_level|leading)_wildcard", "topic wildcards",
     None),
    (r"test_mqtt_paho\.py::test_v5_retained_message_expires", "message expiry", None),
    (r"test_mqtt_paho\.py::test_v5_retain_(as_published|handling)", "MQTT 5 subscription options",
     None),
    (r"test_mqtt_paho\.py::test_.*retained", "retained messages", None),
    (r"test_mqtt_paho\.py::test_.*will", "will messages", None),
    (r"test_mqtt_paho\.py::test_persistent_session_survives_a_broker_restart",
     "session survives broker restart", "paho 5"),
    (r"test_mqtt_paho\.py::test_(persistent_session|clean_session|v5_session)",
     "persistent sessions", None),
    (r"test_mqtt_paho\.py::test_qos2_", "QoS 2 across reconnect", RAW),
    (r"test_mqtt_paho\.py::test_v5_publish_properties", "MQTT 5 properties", None),
    (r"test_mqtt_paho\.py::test_v5_(subscription_identifiers|no_local)",
     "MQTT 5 subscription options", None),
    (r"test_mqtt_paho\.py::test_v5_shared_subscription", "shared subscriptions", None),
    (r"test_mqtt_paho\.py::test_v5_topic_alias", "topic aliases", None),
    (r"test_mqtt_paho\.py::test_(silent_client|client_that_pings)", "keep-alive", RAW),
    (r"test_mqtt_paho\.py::test_(first_packet|second_connect|unknown_protocol_level|malformed"
     r"|packet_larger)", "bad input", RAW),

    # MQTT: mosquitto_pub / mosquitto_sub ----------------------------------------------------
    (r"test_mqtt_cli\.py::test_cli_over_websocket", "WebSocket transport", None),
    (r"test_mqtt_cli\.py::test_cli_(publish_reaches|line_mode)", "publish/subscribe QoS 0/1/2",
     None),
    (r"test_mqtt_cli\.py::test_cli_.*retained", "retained messages", None),
    (r"test_mqtt_cli\.py::test_.*v5_properties", "MQTT 5 properties", None),
    (r"test_mqtt_cli\.py::test_cli_with_", "authentication", None),

    # MQTT: the shared cases (mqtt.js, rumqttc) ----------------------------------------------
    (_case("mqtt", r".*\[.*\bws\]"), "WebSocket transport", None),
    (_case("mqtt", "test_connect_is_acknowledged"), "connect", None),
    (_case("mqtt", "test_publish_reaches_subscriber"), "publish/subscribe QoS 0/1/2", None),
    (_case("mqtt", "test_wildcards"), "topic wildcards", None),
    (_case("mqtt", "test_.*retained"), "retained messages", None),
    (_case("mqtt", "test_will_"), "will messages", None),
    (_case("mqtt", "test_persistent_session"), "persistent sessions", None),
    (_case("mqtt", "test_v5_user_properties"), "MQTT 5 properties", None),
    (_case("mqtt", "test_v5_topic_aliases"), "topic aliases", None),
    (_case("mqtt", "test_v5_shared_"), "shared subscriptions", None),

    # Cross-protocol -------------------------------------------------------------------------
    (r"test_mqtt_cross\.py::test_mqtt_publish_is_a_record", "MQTT → Kafka", "paho 3.1.1"),
    (r"test_mqtt_cross\.py::test_v5_user_properties", "MQTT → Kafka", "paho 5"),
    (r"test_mqtt_cross\.py::test_kafka_record_keyed_by_topic", "Kafka → MQTT", "paho 3.1.1"),
    (r"test_mqtt_cross\.py::test_persistent_mqtt_session_survives_kill9",
     "MQTT session survives kill -9", "paho 5"),
    (r"test_amqp_cross\.py::test_(amqp_publish_to_amq_topic|mqtt_publish_reaches)",
     "AMQP ↔ MQTT", None),
    (r"test_amqp_cross\.py::test_stream_queue_named_after", "Kafka → AMQP stream queue", None),
    (r"test_amqp_cross\.py::test_amqp_publish_into_a_stream_queue", "AMQP stream queue → Kafka",
     None),

    # AMQP: pika and amqp-tools --------------------------------------------------------------
    (r"test_amqp_pika\.py::test_(guest_connects|server_announces|bad_credentials|unknown_vhost)",
     "connect & authentication", None),
    (r"test_amqp_cli\.py::test_wrong_password", "connect & authentication", None),
    (r"test_amqp_pika\.py::test_(declaring_a_new_amq|passive_declare_of_a_missing_exchange"
     r"|publish_to_a_missing_exchange)", "exchange errors (403/404)", None),
    (r"test_amqp_cli\.py::test_publish_to_a_missing_exchange", "exchange errors (403/404)", None),
    (r"test_amqp_pika\.py::test_(default_exchange|direct_exchange|fanout_exchange|topic_|headers_"
     r"|exchange_to_exchange|predeclared|unbind)", "exchange routing", None),
    (r"test_amqp_cli\.py::test_(publish_to_an_exchange|consume_from_an_exchange)",
     "exchange routing", None),
    (r"test_amqp_pika\.py::test_(server_named_queue|declare_ok|passive_declare_of_a_missing_queue"
     r"|redeclare)", "queue declaration", None),
    (r"test_amqp_cli\.py::test_(declare_queue|get_on_a_missing_queue)", "queue declaration", None),
    (r"test_amqp_pika\.py::test_(exclusive_queue|auto_delete)", "exclusive & auto-delete queues",
     None),
    (r"test_amqp_pika\.py::test_(delete_if|purge|deleting_a_queue)", "queue delete & purge", None),
    (r"test_amqp_cli\.py::test_delete_queue", "queue delete & purge", None),
    (r"test_amqp_pika\.py::test_(every_basic_property|user_id|empty_body|body_larger)",
     "message properties & bodies", None),
    (r"test_amqp_cli\.py::test_publish_sets_the_properties", "message properties & bodies", None),
    (r"test_amqp_pika\.py::test_(consumer_receives|no_ack_deliveries|deliveries_carry"
     r"|cancelled_consumer)", "publish/consume", None),
    (r"test_amqp_cli\.py::test_(publish_then_get|publish_line_buffered|consume_count"
     r"|consume_waits|consume_no_ack)", "publish/consume", None),
    (r"test_amqp_pika\.py::test_basic_get", "basic.get", None),
    (r"test_amqp_cli\.py::test_get_on_an_empty_queue", "basic.get", None),
    (r"test_amqp_pika\.py::test_ack_multiple", "acks", None),
    (r"test_amqp_cli\.py::test_consume_acknowledges", "acks", None),
    (r"test_amqp_pika\.py::test_(nack_|basic_recover)", "nack/requeue", None),
    (r"test_amqp_pika\.py::test_closing_", "requeue on channel/connection close", None),
    (r"test_amqp_pika\.py::test_(reject_without_requeue|dead_letter)", "dead-lettering", None),
    (r"test_amqp_pika\.py::test_(queue_ttl|per_message_expiration|expired_message)", "TTL", None),
    (r"test_amqp_pika\.py::test_max_length", "max-length", None),
    (r"test_amqp_pika\.py::test_prefetch", "prefetch", None),
    (r"test_amqp_pika\.py::test_(mandatory|non_mandatory)", "mandatory & returns", None),
    (r"test_amqp_pika\.py::test_publisher_confirms", "confirms", None),
    (r"test_amqp_pika\.py::test_transaction", "transactions", None),
    (r"test_amqp_pika\.py::test_stream_queue", "stream queues", None),
    (r"test_amqp_pika\.py::test_(durable_|confirmed_persistent)", "durability across restart",
     None),

    # AMQP: the shared cases (amqplib, lapin) ------------------------------------------------
    (_case("amqp", "test_topic_exchange_delivers"),
     ("publish/consume", "exchange routing", "message properties & bodies"), None),
    (_case("amqp", "test_publisher_confirms"), "confirms", None),
    (_case("amqp", "test_nack_"), "nack/requeue", None),
    (_case("amqp", "test_reject_without_requeue"), "dead-lettering", None),
    (_case("amqp", "test_queue_ttl"), "TTL", None),
    (_case("amqp", "test_prefetch"), "prefetch", None),
]

_V5_ONLY = "an MQTT 5 feature: protocol 3.1 / 3.1.1 has no way to express it"
_RAW_ONLY = ("needs a client that stops half-way through the exchange or sends malformed "
             "packets: tested on raw sockets")
_NO_ARGS = "amqp-declare-queue cannot set queue arguments (x-…)"
# Kept in step with the CANNOT of test_kafka_rust.py and test_mqtt_rumqttc.py.
_RSKAFKA = "rust (rskafka)"
_NO_GROUPS = ("rskafka has no consumer groups (no JoinGroup / SyncGroup / OffsetCommit / "
              "OffsetFetch): it reads partitions by offset")
_NO_RUMQTTC_WS = ("the adapter is built without rumqttc's \"websocket\" feature (a second "
                  "WebSocket stack, async-tungstenite with rustls)")

# (row, client) -> why that client cannot do that behaviour.
NA = {
    **{(row, client): _V5_ONLY
       for row in ("message expiry", "MQTT 5 properties", "MQTT 5 subscription options",
                   "shared subscriptions", "topic aliases")
       for client in ("paho 3.1", "paho 3.1.1", "mqtt.js 3.1.1", "rumqttc 3.1.1")},
    **{("QoS 2 across reconnect", client): _RAW_ONLY
       for client in ("paho 3.1", "paho 3.1.1", "paho 5", "mosquitto_pub/sub", "mqtt.js 3.1.1",
                      "mqtt.js 5", "rumqttc 3.1.1", "rumqttc 5")},
    **{("bad input", client): "a well-behaved client library only sends valid packets"
       for client in ("paho 3.1", "paho 3.1.1", "paho 5", "mosquitto_pub/sub",
                      "mqtt.js 3.1.1", "mqtt.js 5", "rumqttc 3.1.1", "rumqttc 5",
                      "confluent-kafka", "kafka-python", "kcat", "kafkajs", _RSKAFKA,
                      "pika", "amqp-tools", "amqplib", "lapin")},
    **{("WebSocket transport", client): _NO_RUMQTTC_WS
       for client in ("rumqttc 3.1.1", "rumqttc 5")},
    ("consumer groups & committed offsets", _RSKAFKA): _NO_GROUPS,
    ("consumer-group rebalance", _RSKAFKA): _NO_GROUPS,
    ("idempotence", _RSKAFKA): "rskafka has no idempotent producer (no InitProducerId)",
    ("QoS downgrade", "mosquitto_pub/sub"): "one tool publishes, another subscribes: the pair "
                                            "is already covered by publish/subscribe",
    ("session takeover", "mosquitto_pub/sub"): "the tools cannot watch their own connection "
                                               "being taken over",
    ("confirms", "amqp-tools"): "amqp-publish has no publisher-confirm mode",
    ("transactions", "amqp-tools"): "amqp-tools have no tx.select / commit / rollback",
    ("nack/requeue", "amqp-tools"): "amqp-consume acknowledges or not, it never nacks",
    ("requeue on channel/connection close", "amqp-tools"): "amqp-consume cannot leave a "
                                                           "delivery unacknowledged on purpose",
    ("dead-lettering", "amqp-tools"): _NO_ARGS,
    ("TTL", "amqp-tools"): _NO_ARGS,
    ("max-length", "amqp-tools"): _NO_ARGS,
    ("stream queues", "amqp-tools"): _NO_ARGS,
}

_COMPILED = [(re.compile(p), (r,) if isinstance(r, str) else tuple(r), c) for p, r, c in RULES]
# MQTT clients with one column per protocol version.
_VERSIONS = {"v31": "3.1", "v311": "3.1.1", "v5": "5"}
_VERSIONED = ("paho", "mqtt.js", "rumqttc")


def _short(nodeid: str) -> str:
    """`compat-tests/python/test_x.py::test_y[p]` -> `test_x.py::test_y[p]`."""
    return nodeid.rsplit("/", 1)[-1]


def _versioned(client: str, short: str) -> str:
    """"paho" / "mqtt.js" / "rumqttc" -> its column for the protocol version the test runs at."""
    name, _, params = short.partition("[")
    for token in re.split(r"[-\]]", params):
        if token in _VERSIONS:
            return f"{client} {_VERSIONS[token]}"
    test = name.split("::", 1)[-1]
    if test.startswith("test_v5_"):
        return f"{client} 5"
    return f"{client} 3.1.1"  # mqttkit.Peer's and mqtt.js's default protocol


def file_of(nodeid: str) -> str:
    return _short(nodeid).split("::", 1)[0]


def classify(nodeid: str):
    """-> (section, [rows], client, mapped?) for one test id."""
    short = _short(nodeid)
    protocol, section, default = FILES.get(file_of(nodeid), (None, "Other", "?"))
    for pattern, rows, client in _COMPILED:
        if pattern.search(short):
            break
    else:
        rows, client = ("(unmapped)",), None
    client = client or default
    if client in _VERSIONED:
        client = _versioned(client, short)
    mapped = rows != ("(unmapped)",)
    if mapped and (section, rows[0]) not in ROWS:  # row names may repeat across sections
        section = next((s for s, r in ROWS if r == rows[0]), section)
    return section, list(rows), client, mapped


def files_for(protocols) -> list:
    """Test files of the suite that need an endpoint of one of `protocols`."""
    return [f for f, (p, _, _) in FILES.items() if p in protocols]


def check():
    """Consistency of the table itself: every rule's row is declared."""
    known = {r for _, r in ROWS}
    bad = [r for _, rows, _ in _COMPILED for r in rows if r not in known]
    bad += [r for r, _ in NA if r not in known]
    return bad


if __name__ == "__main__":
    print("undeclared rows:", check() or "none")
