//! The loader seen from the binary: defaults, then a file, then the environment, then flags.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use switchboard_config::{
    Config, ConfigError, DEFAULT_TOML, FsyncPolicy, HumanDuration, Limit, LogFormat, OPTIONAL_KEYS,
    Origin, Size, load,
};
use tempfile::NamedTempFile;

fn config_file(text: &str) -> NamedTempFile {
    let mut file = NamedTempFile::new().expect("temporary file");
    file.write_all(text.as_bytes())
        .expect("write temporary file");
    file
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

fn sets(flags: &[&str]) -> Vec<String> {
    flags.iter().map(|flag| (*flag).to_owned()).collect()
}

fn defaults() -> Config {
    load(None, [], &[]).expect("the defaults load")
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("a socket address")
}

fn load_err(file: Option<&Path>, vars: &[(&str, &str)], flags: &[&str]) -> ConfigError {
    load(file, env(vars), &sets(flags)).expect_err("the load fails")
}

#[test]
fn defaults_are_the_documented_values() {
    let config = defaults();

    assert_eq!(config.data_dir, PathBuf::from("./data"));
    assert_eq!(config.node_id, 1);
    assert_eq!(config.cluster_id, "switchboard");

    let kafka = &config.kafka;
    assert!(kafka.enabled);
    assert_eq!(kafka.listen, addr("0.0.0.0:9092"));
    assert_eq!(kafka.advertised_host, None);
    assert!(kafka.auto_create_topics);
    assert_eq!(kafka.default_partitions, 1);
    assert_eq!(kafka.max_frame_size, Size(100 * 1024 * 1024));
    assert_eq!(kafka.max_connections, 10_000);
    assert_eq!(kafka.idle_timeout, HumanDuration::from_secs(600));
    assert_eq!(
        kafka.group_initial_rebalance_delay,
        HumanDuration::from_millis(500)
    );
    assert_eq!(kafka.group_min_session_timeout, HumanDuration::from_secs(6));
    assert_eq!(
        kafka.group_max_session_timeout,
        HumanDuration::from_secs(1800)
    );

    assert!(config.admin.enabled);
    assert_eq!(config.admin.listen, addr("0.0.0.0:8080"));

    assert_eq!(config.storage.url, "");
    let log = &config.storage.log;
    assert_eq!(log.segment_size, Size(1 << 30));
    assert_eq!(log.segment_age, HumanDuration::from_secs(7 * 86_400));
    assert_eq!(log.index_interval, Size(4096));
    assert_eq!(log.fsync, FsyncPolicy::OnAckAll);
    assert_eq!(log.fsync_interval, HumanDuration::from_secs(1));

    assert_eq!(
        config.retention.max_age,
        Limit::Limited(HumanDuration::from_secs(7 * 86_400))
    );
    assert_eq!(config.retention.max_size, Limit::Unlimited);
    assert_eq!(
        config.retention.check_interval,
        HumanDuration::from_secs(60)
    );

    assert_eq!(config.meta.dir, None);
    assert_eq!(config.meta.listen, None);
    assert!(config.meta.members.is_empty());
    assert_eq!(config.meta.ready_timeout, HumanDuration::from_secs(30));
    assert_eq!(config.log.level, "info,openraft=warn");
    assert_eq!(config.log.format, LogFormat::Text);

    assert_eq!(Config::default(), config);
}

#[test]
fn derived_values_resolve_their_defaults() {
    let config = defaults();
    assert_eq!(config.storage_url(), "file://./data/streams");
    assert_eq!(config.meta_dir(), PathBuf::from("./data/meta"));
    assert_eq!(config.kafka.advertised_host(), "127.0.0.1");

    let config = load(
        None,
        [],
        &sets(&["data_dir=/var/lib/sb", "kafka.listen=10.1.2.3:9092"]),
    )
    .unwrap();
    assert_eq!(config.storage_url(), "file:///var/lib/sb/streams");
    assert_eq!(config.meta_dir(), PathBuf::from("/var/lib/sb/meta"));
    assert_eq!(config.kafka.advertised_host(), "10.1.2.3");

    let config = load(
        None,
        [],
        &sets(&[
            "storage.url=memory://",
            "meta.dir=/fast/meta",
            "kafka.advertised_host=broker-1.example.com",
        ]),
    )
    .unwrap();
    assert_eq!(config.storage_url(), "memory://");
    assert_eq!(config.meta_dir(), PathBuf::from("/fast/meta"));
    assert_eq!(config.kafka.advertised_host(), "broker-1.example.com");
}

#[test]
fn a_file_overrides_only_the_keys_it_gives() {
    let file = config_file(
        r#"
        node_id = 7

        [kafka]
        listen = "127.0.0.1:19092"
        max_frame_size = "8 MiB"

        [storage.log]
        fsync = "interval"
        fsync_interval = "250ms"

        [retention]
        max_size = "10 GiB"
        "#,
    );
    let config = load(Some(file.path()), [], &[]).unwrap();

    let mut expected = defaults();
    expected.node_id = 7;
    expected.kafka.listen = addr("127.0.0.1:19092");
    expected.kafka.max_frame_size = Size(8 << 20);
    expected.storage.log.fsync = FsyncPolicy::Interval;
    expected.storage.log.fsync_interval = HumanDuration::from_millis(250);
    expected.retention.max_size = Limit::Limited(Size(10 << 30));
    assert_eq!(config, expected);
}

#[test]
fn environment_variables_override_the_file() {
    let file = config_file("data_dir = \"/from/file\"\n[kafka]\nlisten = \"127.0.0.1:1\"\n");
    let config = load(
        Some(file.path()),
        env(&[
            ("SWITCHBOARD_DATA_DIR", "/x"),
            ("SWITCHBOARD_KAFKA__LISTEN", "127.0.0.1:19092"),
            ("SWITCHBOARD_STORAGE__LOG__FSYNC", "always"),
            ("SWITCHBOARD_KAFKA__ENABLED", "false"),
            ("SWITCHBOARD_NODE_ID", "3"),
            ("SWITCHBOARD_RETENTION__MAX_AGE", "unlimited"),
            ("PATH", "/usr/bin"),
        ]),
        &[],
    )
    .unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/x"));
    assert_eq!(config.kafka.listen, addr("127.0.0.1:19092"));
    assert_eq!(config.storage.log.fsync, FsyncPolicy::Always);
    assert!(!config.kafka.enabled);
    assert_eq!(config.node_id, 3);
    assert_eq!(config.retention.max_age, Limit::Unlimited);
}

#[test]
fn set_flags_override_the_environment_and_the_file() {
    let file = config_file("[log]\nlevel = \"warn\"\nformat = \"json\"\n");
    let config = load(
        Some(file.path()),
        env(&[("SWITCHBOARD_LOG__LEVEL", "debug")]),
        &sets(&["log.level=trace,switchboard_kafka=debug"]),
    )
    .unwrap();
    assert_eq!(config.log.level, "trace,switchboard_kafka=debug");
    assert_eq!(config.log.format, LogFormat::Json);
}

#[test]
fn each_source_wins_over_the_ones_below_it() {
    let file = config_file(
        "[kafka]\nidle_timeout = \"1m\"\nmax_connections = 10\ndefault_partitions = 2\n",
    );
    let vars = [
        ("SWITCHBOARD_KAFKA__MAX_CONNECTIONS", "20"),
        ("SWITCHBOARD_KAFKA__DEFAULT_PARTITIONS", "3"),
    ];
    let config = load(
        Some(file.path()),
        env(&vars),
        &sets(&["kafka.default_partitions=4"]),
    )
    .unwrap();
    // Only the default: 10m. Default < file: 1m. File < env: 20. Env < flag: 4.
    assert_eq!(
        config.kafka.group_max_session_timeout,
        HumanDuration::from_secs(1800)
    );
    assert_eq!(config.kafka.idle_timeout, HumanDuration::from_secs(60));
    assert_eq!(config.kafka.max_connections, 20);
    assert_eq!(config.kafka.default_partitions, 4);
}

#[test]
fn string_keys_take_override_values_verbatim() {
    let config = load(
        None,
        env(&[("SWITCHBOARD_CLUSTER_ID", "123")]),
        &sets(&["kafka.advertised_host=\"10.0.0.1\"", "log.level=true"]),
    )
    .unwrap();
    assert_eq!(config.cluster_id, "123");
    assert_eq!(config.kafka.advertised_host.as_deref(), Some("10.0.0.1"));
    assert_eq!(config.log.level, "true");
}

#[test]
fn sizes_accept_integers_from_every_source() {
    let file = config_file("[kafka]\nmax_frame_size = 1048576\n");
    let config = load(
        Some(file.path()),
        env(&[("SWITCHBOARD_RETENTION__MAX_SIZE", "4096")]),
        &sets(&["storage.log.index_interval=\"8 KiB\""]),
    )
    .unwrap();
    assert_eq!(config.kafka.max_frame_size, Size(1 << 20));
    assert_eq!(config.retention.max_size, Limit::Limited(Size(4096)));
    assert_eq!(config.storage.log.index_interval, Size(8192));
}

#[test]
fn a_bad_unit_in_the_environment_names_the_key_and_the_variable() {
    let err = load_err(
        None,
        &[("SWITCHBOARD_KAFKA__IDLE_TIMEOUT", "10 parsecs")],
        &[],
    );
    let ConfigError::Invalid { key, origin, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(key, "kafka.idle_timeout");
    assert_eq!(
        origin,
        &Origin::Env("SWITCHBOARD_KAFKA__IDLE_TIMEOUT".into())
    );
    let message = err.to_string();
    assert!(message.contains("kafka.idle_timeout"), "{message}");
    assert!(
        message.contains("SWITCHBOARD_KAFKA__IDLE_TIMEOUT"),
        "{message}"
    );
    assert!(message.contains("parsecs"), "{message}");
}

#[test]
fn a_bad_unit_in_the_file_names_the_key_and_the_file() {
    let file = config_file("[storage.log]\nsegment_size = \"1 GB of logs\"\n");
    let err = load_err(Some(file.path()), &[], &[]);
    let ConfigError::Invalid { key, origin, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(key, "storage.log.segment_size");
    assert_eq!(origin, &Origin::File(file.path().to_owned()));
    let message = err.to_string();
    assert!(
        message.contains(&file.path().display().to_string()),
        "{message}"
    );
}

#[test]
fn a_bad_value_in_a_flag_names_the_key_and_the_flag() {
    let err = load_err(None, &[], &["kafka.enabled=yes"]);
    let message = err.to_string();
    assert!(
        message.contains("`kafka.enabled` in flag --set kafka.enabled=yes"),
        "{message}"
    );

    let err = load_err(None, &[], &["kafka.listen=localhost"]);
    assert!(err.to_string().contains("`kafka.listen`"), "{err}");

    let err = load_err(None, &[], &["storage.log.fsync=sometimes"]);
    assert!(err.to_string().contains("`storage.log.fsync`"), "{err}");
    assert!(err.to_string().contains("on-ack-all"), "{err}");
}

#[test]
fn an_unknown_key_in_the_file_is_named_with_a_suggestion() {
    let file = config_file("[kafka]\nlistn = \"127.0.0.1:1\"\n");
    let err = load_err(Some(file.path()), &[], &[]);
    let ConfigError::UnknownKey {
        key,
        origin,
        suggestion,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(key, "kafka.listn");
    assert_eq!(origin, &Origin::File(file.path().to_owned()));
    assert_eq!(suggestion.as_deref(), Some("kafka.listen"));

    let file = config_file("[nats]\nlisten = \"0.0.0.0:4222\"\n");
    let err = load_err(Some(file.path()), &[], &[]);
    assert!(
        err.to_string().contains("unknown config key `nats`"),
        "{err}"
    );
}

#[test]
fn users_are_names_chosen_by_the_operator() {
    let file = config_file("[users]\nalice = \"secret\"\n");
    let config = load(Some(file.path()), env(&[]), &sets(&["users.bob=hunter2"])).unwrap();
    assert_eq!(
        config.users.get("alice").map(String::as_str),
        Some("secret")
    );
    assert_eq!(config.users.get("bob").map(String::as_str), Some("hunter2"));
    let err = load_err(None, &[], &["users.a.b=x"]);
    assert!(err.to_string().contains("users.a.b"), "{err}");
}

#[test]
fn meta_members_come_from_every_source_keyed_by_node_id() {
    let file = config_file(
        "node_id = 2\n[meta]\nmembers = { 1 = \"10.0.0.1:9093\", 2 = \"10.0.0.2:9093\" }\n",
    );
    let config = load(
        Some(file.path()),
        env(&[("SWITCHBOARD_META__MEMBERS__3", "10.0.0.3:9093")]),
        &sets(&["meta.members.10=meta-10.example.com:9093"]),
    )
    .unwrap();
    let ids: Vec<u64> = config.meta.members.keys().copied().collect();
    assert_eq!(ids, [1, 2, 3, 10]);
    assert_eq!(config.meta.members[&10], "meta-10.example.com:9093");
}

#[test]
fn the_meta_listener_is_the_own_member_address_unless_set() {
    assert_eq!(defaults().meta_listen(), None);
    let group = [
        "meta.members.1=127.0.0.1:9301",
        "meta.members.2=127.0.0.1:9302",
        "meta.members.3=127.0.0.1:9303",
    ];
    let config = load(None, [], &sets(&group)).unwrap();
    assert_eq!(
        config.meta_listen(),
        Some(("127.0.0.1:9301".into(), "meta.members.1".into()))
    );
    let mut flags = sets(&group);
    flags.push("meta.listen=0.0.0.0:9301".into());
    let config = load(None, [], &flags).unwrap();
    assert_eq!(
        config.meta_listen(),
        Some(("0.0.0.0:9301".into(), "meta.listen".into()))
    );
    // A list of this broker alone needs no listener.
    let config = load(None, [], &sets(&["meta.members.1=127.0.0.1:9301"])).unwrap();
    assert_eq!(config.meta_listen(), None);
}

#[test]
fn meta_members_that_cannot_form_a_group_are_refused() {
    let err = load_err(
        None,
        &[],
        &[
            "meta.members.2=10.0.0.2:9093",
            "meta.members.3=10.0.0.3:9093",
        ],
    );
    assert!(
        err.to_string().contains("not this broker's node_id 1"),
        "{err}"
    );

    let err = load_err(None, &[], &["meta.members.1=10.0.0.1"]);
    assert!(err.to_string().contains("host:port"), "{err}");

    let err = load_err(None, &[], &["meta.members.one=10.0.0.1:9093"]);
    assert!(err.to_string().contains("not a node id"), "{err}");

    let err = load_err(None, &[], &["meta.ready_timeout=0s"]);
    assert!(err.to_string().contains("`meta.ready_timeout`"), "{err}");
}

#[test]
fn an_unknown_environment_variable_is_an_error_naming_it() {
    // One underscore instead of two: the classic mistake.
    let err = load_err(None, &[("SWITCHBOARD_KAFKA_LISTEN", "127.0.0.1:1")], &[]);
    let ConfigError::UnknownKey {
        origin, suggestion, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(origin, &Origin::Env("SWITCHBOARD_KAFKA_LISTEN".into()));
    assert_eq!(suggestion.as_deref(), Some("SWITCHBOARD_KAFKA__LISTEN"));
    assert!(
        err.to_string().contains("SWITCHBOARD_KAFKA_LISTEN"),
        "{err}"
    );
}

#[test]
fn a_section_is_not_a_key() {
    let err = load_err(None, &[("SWITCHBOARD_KAFKA", "on")], &[]);
    assert!(matches!(err, ConfigError::NotAKey { .. }), "{err}");
    assert!(err.to_string().contains("SWITCHBOARD_KAFKA__"), "{err}");
}

#[test]
fn the_config_file_variable_is_not_a_key() {
    let config = load(
        None,
        env(&[("SWITCHBOARD_CONFIG", "/etc/switchboard.toml")]),
        &[],
    );
    assert_eq!(config.unwrap(), defaults());
}

#[test]
fn an_unknown_flag_key_or_a_flag_without_value_is_an_error() {
    let err = load_err(None, &[], &["kafka.max_conections=5"]);
    let ConfigError::UnknownKey { suggestion, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(suggestion.as_deref(), Some("kafka.max_connections"));

    let err = load_err(None, &[], &["kafka.listen"]);
    assert!(matches!(err, ConfigError::BadFlag { .. }), "{err}");
}

#[test]
fn a_missing_or_malformed_file_is_an_error_naming_it() {
    let err = load_err(Some(Path::new("/nonexistent/switchboard.toml")), &[], &[]);
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/switchboard.toml"),
        "{err}"
    );

    let file = config_file("[kafka\n");
    let err = load_err(Some(file.path()), &[], &[]);
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
}

#[test]
fn inconsistent_values_are_refused() {
    let err = load_err(None, &[], &["kafka.default_partitions=0"]);
    assert!(
        err.to_string().contains("`kafka.default_partitions`"),
        "{err}"
    );

    let err = load_err(
        None,
        &[],
        &[
            "kafka.group_min_session_timeout=1h",
            "kafka.group_max_session_timeout=1m",
        ],
    );
    assert!(
        err.to_string().contains("group_max_session_timeout"),
        "{err}"
    );

    let err = load_err(
        None,
        &[],
        &[
            "storage.log.fsync=interval",
            "storage.log.fsync_interval=0s",
        ],
    );
    assert!(
        err.to_string().contains("`storage.log.fsync_interval`"),
        "{err}"
    );
}

#[test]
fn optional_keys_are_documented_commented_out_in_the_default_file() {
    for key in OPTIONAL_KEYS {
        let (section, name) = key.split_once('.').unwrap();
        let section_start = DEFAULT_TOML.find(&format!("\n[{section}]\n")).unwrap();
        let section_text = &DEFAULT_TOML[section_start..];
        assert!(section_text.contains(&format!("\n# {name} = ")), "{key}");
    }
}

#[test]
fn the_embedded_default_round_trips() {
    let config = defaults();
    let printed = config.to_toml();
    let reloaded = load(Some(config_file(&printed).path()), [], &[]).unwrap();
    assert_eq!(reloaded, config);

    // With every optional key set and non-default units too.
    let flags = sets(&[
        "kafka.advertised_host=h",
        "meta.dir=/m",
        "meta.listen=0.0.0.0:9301",
        "meta.members.1=127.0.0.1:9301",
        "meta.members.10=meta-10.example.com:9310",
        "meta.members.2=127.0.0.1:9302",
        "retention.max_size=1500",
        "kafka.idle_timeout=1h30m",
    ]);
    let config = load(None, [], &flags).unwrap();
    let printed = config.to_toml();
    assert!(printed.contains("idle_timeout = \"90m\""), "{printed}");
    let reloaded = load(Some(config_file(&printed).path()), [], &[]).unwrap();
    assert_eq!(reloaded, config);
    assert_eq!(reloaded.kafka.idle_timeout.get(), Duration::from_secs(5400));
}

#[test]
fn every_key_in_the_default_file_is_explained_by_a_comment() {
    // Keys are documented by the comment lines of the paragraph they stand in.
    for paragraph in DEFAULT_TOML.split("\n\n") {
        let lines: Vec<&str> = paragraph.lines().map(str::trim).collect();
        let is_key = |line: &&str| !line.starts_with('#') && !line.starts_with('[');
        if lines.iter().any(is_key) {
            assert!(
                lines.iter().any(|line| line.starts_with('#')),
                "undocumented: {paragraph}"
            );
        }
    }
}

#[test]
fn amqp_flow_control_defaults_and_marks() {
    let amqp = defaults().amqp;
    assert_eq!(amqp.flow_high_messages, 400);
    assert_eq!(amqp.flow_low_messages, 200);
    assert_eq!(amqp.flow_high_bytes, Size(16 * 1024 * 1024));
    assert_eq!(amqp.flow_low_bytes, Size(8 * 1024 * 1024));
    assert_eq!(amqp.flow_max_pause, HumanDuration::from_secs(1));

    let err = load_err(None, &[], &["amqp.flow_low_messages=401"]);
    assert!(
        err.to_string().contains("`amqp.flow_low_messages`"),
        "{err}"
    );
    let err = load_err(None, &[], &["amqp.flow_low_bytes=17 MiB"]);
    assert!(err.to_string().contains("`amqp.flow_low_bytes`"), "{err}");

    // A high mark of 0 is off, so its low mark does not matter; 0s turns flow control off.
    let config = load(
        None,
        [],
        &sets(&["amqp.flow_high_messages=0", "amqp.flow_max_pause=0s"]),
    )
    .unwrap();
    assert_eq!(config.amqp.flow_high_messages, 0);
    assert!(config.amqp.flow_max_pause.get().is_zero());
}

#[test]
fn mqtt_flow_control_defaults_and_marks() {
    let mqtt = defaults().mqtt;
    assert_eq!(mqtt.flow_high_messages, 1000);
    assert_eq!(mqtt.flow_low_messages, 500);
    assert_eq!(mqtt.flow_max_pause, HumanDuration::from_secs(1));

    let err = load_err(None, &[], &["mqtt.flow_low_messages=1001"]);
    assert!(
        err.to_string().contains("`mqtt.flow_low_messages`"),
        "{err}"
    );
    let config = load(None, [], &sets(&["mqtt.flow_high_messages=0"])).unwrap();
    assert_eq!(config.mqtt.flow_high_messages, 0);
}
