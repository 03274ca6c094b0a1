//! `switchboard serve`: binds every listener first (so a taken port is reported before anything
//! starts), opens the metadata store and storage, then runs until SIGINT/SIGTERM and drains.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use switchboard_config::{Config, LogFormat};
use switchboard_kafka::{
    ConnLimits, Coordinator, GroupSettings, KafkaContext, KafkaMetrics, KafkaSettings,
};
use switchboard_router::{MetaStore, RetentionDefaults, Router, spawn_retention};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, Admin};

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
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let kafka_listener = if config.kafka.enabled {
        match bind("kafka", "kafka.listen", config.kafka.listen).await {
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

    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    let meta = MetaStore::open(&config.meta_dir()).await.with_context(|| {
        format!(
            "opening the metadata store in {}",
            config.meta_dir().display()
        )
    })?;
    let storage = crate::storage::open(&config).await?;
    tracing::info!(storage = storage.kind(), url = %config.storage_url(), "storage ready");
    let router = Router::new(meta.clone(), storage);

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
    if let Some(listener) = admin_listener {
        tracing::info!(addr = %listener.local_addr()?, "admin HTTP listening");
        let admin = Arc::new(Admin {
            router: router.clone(),
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
