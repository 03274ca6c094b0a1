//! `switchboard serve`: binds every listener first (so a taken port is reported before anything
//! starts), opens the metadata store and storage, then runs until SIGINT/SIGTERM and drains.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use switchboard_amqp::{AmqpBroker, AmqpMetrics, AmqpSettings, FlowSettings};
use switchboard_config::{Config, LogFormat};
use switchboard_kafka::{
    ConnLimits, Coordinator, GroupSettings, KafkaContext, KafkaMetrics, KafkaSettings,
};
use switchboard_model::StreamName;
use switchboard_mqtt::broker::{Broker, MqttSettings};
use switchboard_mqtt::conn::Transport;
use switchboard_mqtt::metrics::MqttMetrics;
use switchboard_router::meta::{DEFAULT_NODE_ID, MetaOptions};
use switchboard_router::{
    MetaStore, RetentionDefaults, Router, spawn_retention, spawn_table_backup,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, Admin, StorageMetrics};

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

/// Exit code when a listener cannot bind.
const EXIT_BIND: u8 = 2;

pub fn run(config: Config) -> anyhow::Result<ExitCode> {
    init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("switchboard")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config))
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn bind(name: &str, key: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "{name} listener: port {} on {} is already in use by another process; \
                 choose another with `--set {key}=HOST:PORT`",
                addr.port(),
                addr.ip()
            )
        } else {
            format!("{name} listener: cannot bind {addr}: {e} (set {key})")
        }
    })
}

/// Binds the metadata listener at `addr` ("host:port"; a host name is resolved), named by
/// `key` (`meta.listen`, or this broker's entry in `meta.members`) in errors.
async fn bind_meta(addr: &str, key: &str) -> Result<TcpListener, String> {
    let resolved = tokio::net::lookup_host(addr)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("metadata listener: cannot resolve {addr:?} (set {key})"))?;
    bind("metadata", key, resolved).await.map_err(|msg| {
        if key.starts_with("meta.members.") {
            format!(
                "{msg}; the other members dial this address, so list the new one in every \
                 member's meta.members"
            )
        } else {
            msg
        }
    })
}

/// Opens the metadata store: this broker alone, or its node of the group in `meta.members`,
/// serving its peers on `listener`.
async fn open_meta(config: &Config, listener: Option<TcpListener>) -> anyhow::Result<MetaStore> {
    let members = &config.meta.members;
    let options = MetaOptions {
        // Alone, the store keeps the id it always had, whatever `node_id` says, so that a
        // broker's existing metadata opens after a change of `node_id`. In a group the Raft
        // node id is the broker id, as in Kafka's combined KRaft mode.
        node_id: if members.is_empty() {
            DEFAULT_NODE_ID
        } else {
            config.node_id
        },
        members: members.clone(),
        cluster: config.cluster_id.clone(),
        ready_timeout: config.meta.ready_timeout.0,
        ..MetaOptions::default()
    };
    if let Some(listener) = &listener {
        tracing::info!(
            addr = %listener.local_addr()?,
            node_id = options.node_id,
            members = ?members,
            ready_timeout = ?options.ready_timeout,
            "metadata listening; waiting for the group to elect a leader"
        );
    }
    let dir = config.meta_dir();
    let meta = match listener {
        Some(listener) => MetaStore::open_with_listener(&dir, options, listener).await?,
        None => MetaStore::open_with_options(&dir, options).await?,
    };
    Ok(meta)
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let kafka_listener = if config.kafka.enabled {
        match bind("kafka", "kafka.listen", config.kafka.listen).await {
            Ok(l) => Some(l),
            Err(msg) => return Ok(bind_failed(&msg)),
        }
    } else {
        None
    };
    let mqtt_listener = if config.mqtt.enabled {
        match bind("mqtt", "mqtt.listen", config.mqtt.listen).await {
            Ok(l) => Some(l),
            Err(msg) => return Ok(bind_failed(&msg)),
        }
    } else {
        None
    };
    let ws_listener = if config.mqtt.enabled && config.mqtt.ws_enabled {
        match bind("mqtt websocket", "mqtt.ws_listen", config.mqtt.ws_listen).await {
            Ok(l) => Some(l),
            Err(msg) => return Ok(bind_failed(&msg)),
        }
    } else {
        None
    };
    let amqp_listener = if config.amqp.enabled {
        match bind("amqp", "amqp.listen", config.amqp.listen).await {
            Ok(l) => Some(l),
            Err(msg) => return Ok(bind_failed(&msg)),
        }
    } else {
        None
    };
    let admin_listener = if config.admin.enabled {
        match bind("admin", "admin.listen", config.admin.listen).await {
            Ok(l) => Some(l),
            Err(msg) => return Ok(bind_failed(&msg)),
        }
    } else {
        None
    };

    let meta_listener = match config.meta_listen() {
        Some((addr, key)) => match bind_meta(&addr, &key).await {
            Ok(l) => Some(l),
            Err(msg) => return Ok(bind_failed(&msg)),
        },
        None => None,
    };

    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    let meta = open_meta(&config, meta_listener).await.with_context(|| {
        format!(
            "opening the metadata store in {}",
            config.meta_dir().display()
        )
    })?;
    let storage = crate::storage::open(&config).await?;
    tracing::info!(storage = storage.kind(), url = %config.storage_url(), "storage ready");
    let router = Router::new(meta.clone(), storage);
    let recovered = router
        .recover_from_storage()
        .await
        .context("recovering the routing table and streams from storage")?;
    if recovered.restored_table {
        tracing::info!("routing table restored from the copy saved in storage");
    }
    if !recovered.adopted.is_empty() {
        tracing::info!(
            streams = ?recovered.adopted,
            "storage holds streams the routing table did not know; serving them"
        );
    }

    let registry = Registry::new();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();

    let retention = RetentionDefaults {
        max_age_ms: config
            .retention
            .max_age
            .get()
            .map(|d| d.0.as_millis() as i64),
        max_bytes: config.retention.max_size.get().map(|s| s.0),
    };
    tracker.spawn(spawn_table_backup(
        router.clone(),
        config.storage.object.table_save_interval.0,
        cancel.clone(),
    ));
    tracker.spawn(spawn_retention(
        router.clone(),
        retention,
        config.retention.check_interval.0,
        cancel.clone(),
    ));

    if let Some(listener) = kafka_listener {
        let local = listener.local_addr()?;
        let ctx = Arc::new(KafkaContext {
            router: router.clone(),
            coordinator: Arc::new(Coordinator::new(GroupSettings {
                initial_rebalance_delay: config.kafka.group_initial_rebalance_delay.0,
                min_session_timeout: config.kafka.group_min_session_timeout.0,
                max_session_timeout: config.kafka.group_max_session_timeout.0,
            })),
            settings: KafkaSettings {
                node_id: i32::try_from(config.node_id).unwrap_or(1),
                cluster_id: config.cluster_id.clone(),
                advertised_host: config.kafka.advertised_host(),
                advertised_port: local.port(),
                auto_create_topics: config.kafka.auto_create_topics,
                default_partitions: config.kafka.default_partitions.max(1),
                max_frame_size: config.kafka.max_frame_size.as_usize(),
                idle_timeout: config.kafka.idle_timeout.0,
                ..KafkaSettings::default()
            },
            metrics: KafkaMetrics::new(&registry).context("registering kafka metrics")?,
        });
        let coordinator = ctx.coordinator.clone();
        let c = cancel.clone();
        tracker.spawn(async move { coordinator.run_timers(c).await });
        let limits = ConnLimits {
            max_connections: config.kafka.max_connections,
        };
        tracing::info!(addr = %local, advertised = %format!("{}:{}", ctx.settings.advertised_host, local.port()), "kafka listening");
        tracker.spawn(switchboard_kafka::serve_listener(
            ctx,
            listener,
            limits,
            cancel.clone(),
            tracker.clone(),
        ));
    }
    let mut mqtt_broker = None;
    if mqtt_listener.is_some() || ws_listener.is_some() {
        let broker = Broker::start(
            router.clone(),
            mqtt_settings(&config)?,
            MqttMetrics::new(&registry).context("registering mqtt metrics")?,
            cancel.clone(),
            tracker.clone(),
        )
        .await
        .context("starting the MQTT front end")?;
        mqtt_broker = Some(broker.clone());
        let listeners = [
            (mqtt_listener, Transport::Tcp),
            (
                ws_listener,
                Transport::WebSocket {
                    path: config.mqtt.ws_path.clone(),
                },
            ),
        ];
        for (listener, transport) in listeners {
            let Some(listener) = listener else { continue };
            tracing::info!(addr = %listener.local_addr()?, ?transport, "mqtt listening");
            tracker.spawn(switchboard_mqtt::conn::serve_listener(
                broker.clone(),
                listener,
                transport,
                config.mqtt.max_connections,
                cancel.clone(),
                tracker.clone(),
            ));
        }
    }
    if let Some(listener) = amqp_listener {
        let broker = AmqpBroker::start(
            router.clone(),
            amqp_settings(&config),
            AmqpMetrics::new(&registry).context("registering amqp metrics")?,
            cancel.clone(),
            tracker.clone(),
        )
        .await
        .context("starting the AMQP front end")?;
        tracing::info!(addr = %listener.local_addr()?, "amqp listening");
        if let Some(mqtt) = &mqtt_broker {
            crate::bridge::link(
                router.clone(),
                mqtt.clone(),
                broker.clone(),
                cancel.clone(),
                &tracker,
            );
        }
        tracker.spawn(switchboard_amqp::conn::serve_listener(
            broker,
            listener,
            config.amqp.max_connections,
            cancel.clone(),
            tracker.clone(),
        ));
    }
    if let Some(listener) = admin_listener {
        tracing::info!(addr = %listener.local_addr()?, "admin HTTP listening");
        let admin = Arc::new(Admin {
            router: router.clone(),
            storage: StorageMetrics::new(&registry).context("registering storage metrics")?,
            registry: registry.clone(),
        });
        tracker.spawn(admin::serve(
            admin,
            listener,
            cancel.clone(),
            tracker.clone(),
        ));
    }
    tracing::info!(data_dir = %config.data_dir.display(), "switchboard ready");

    wait_for_signal().await;
    tracing::info!("shutting down");
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!(after = ?DRAIN, "some connections did not finish in time; aborting them");
    }
    if let Err(e) = router.flush().await {
        tracing::error!(error = %e, "final flush failed");
    }
    meta.shutdown().await.ok();
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn amqp_settings(config: &Config) -> AmqpSettings {
    let a = &config.amqp;
    AmqpSettings {
        users: config
            .users
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        vhosts: a.vhosts.clone(),
        frame_max: u32::try_from(a.frame_max.bytes()).unwrap_or(u32::MAX),
        channel_max: a.channel_max,
        heartbeat: a.heartbeat.0,
        max_message_size: a.max_message_size.as_usize(),
        connect_timeout: a.connect_timeout.0,
        loopback_only_users: a.loopback_only_users.clone(),
        flow: FlowSettings {
            high_messages: a.flow_high_messages,
            low_messages: a.flow_low_messages,
            high_bytes: a.flow_high_bytes.bytes(),
            low_bytes: a.flow_low_bytes.bytes(),
            max_pause: a.flow_max_pause.0,
        },
    }
}

fn mqtt_settings(config: &Config) -> anyhow::Result<MqttSettings> {
    let m = &config.mqtt;
    let stream = |name: &str, key: &str| {
        StreamName::new(name)
            .map_err(|e| anyhow::anyhow!("{key}: {name:?} is not a valid stream name: {e}"))
    };
    let mut routes = Vec::new();
    for r in &m.routes {
        switchboard_mqtt::topic::validate_filter(&r.filter)
            .map_err(|e| anyhow::anyhow!("mqtt.routes: filter {:?}: {e}", r.filter))?;
        routes.push((r.filter.clone(), stream(&r.stream, "mqtt.routes")?));
    }
    Ok(MqttSettings {
        allow_anonymous: m.allow_anonymous,
        users: config
            .users
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        max_packet_size: u32::try_from(m.max_packet_size.bytes()).unwrap_or(u32::MAX),
        receive_maximum: m.receive_maximum,
        max_keep_alive: u16::try_from(m.max_keep_alive.0.as_secs()).unwrap_or(u16::MAX),
        topic_alias_maximum: m.topic_alias_maximum,
        max_queued_messages: m.max_queued_messages,
        max_session_expiry: m.max_session_expiry.get().map_or(u32::MAX, |d| {
            u32::try_from(d.0.as_secs()).unwrap_or(u32::MAX)
        }),
        connect_timeout: m.connect_timeout.0,
        checkpoint_interval: m.checkpoint_interval.0,
        dormant_after: m.dormant_after.0,
        flow: switchboard_mqtt::broker::MqttFlow {
            high: m.flow_high_messages as usize,
            low: m.flow_low_messages as usize,
            max_pause: m.flow_max_pause.0,
        },
        default_stream: stream(&m.default_stream, "mqtt.default_stream")?,
        stream_partitions: m.stream_partitions,
        routes,
    })
}

fn bind_failed(msg: &str) -> ExitCode {
    tracing::error!("{msg}");
    eprintln!("switchboard: {msg}");
    ExitCode::from(EXIT_BIND)
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
