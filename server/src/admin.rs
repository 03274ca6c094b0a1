//! Admin HTTP: `/healthz`, `/metrics` (Prometheus text) and a small JSON API for topics.
//!
//! A deliberately tiny HTTP/1.1 server (one request per connection, bounded header and body
//! sizes): it serves operators and the CLI, not the data path, and avoids a web framework in
//! every fresh build.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{Encoder, IntCounter, Registry, TextEncoder};
use serde::Deserialize;
use switchboard_model::{StreamName, TopicPartition};
use switchboard_router::{Router, RouterError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;

pub struct Admin {
    pub router: Arc<Router>,
    pub registry: Registry,
    pub storage: StorageMetrics,
}

/// Storage counters kept by the backends themselves, copied into the registry when it is read.
pub struct StorageMetrics {
    fsyncs: IntCounter,
    /// One refresh at a time: two scrapes adding the same difference would overcount.
    refreshing: std::sync::Mutex<()>,
}

impl StorageMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let fsyncs = IntCounter::new(
            "switchboard_storage_fsyncs_total",
            "Data fsyncs of native log segments (acknowledgements, early writeback, sealing)",
        )?;
        registry.register(Box::new(fsyncs.clone()))?;
        Ok(Self {
            fsyncs,
            refreshing: std::sync::Mutex::new(()),
        })
    }

    fn refresh(&self) {
        let _one = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        let (now, seen) = (switchboard_log::fsyncs_total(), self.fsyncs.get());
        if now > seen {
            self.fsyncs.inc_by(now - seen);
        }
    }
}

struct HttpRequest {
    method: String,
    path: String,
    body: Vec<u8>,
}

struct HttpResponse {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl HttpResponse {
    fn json(status: u16, v: serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
        }
    }
    fn error(status: u16, msg: impl std::fmt::Display) -> Self {
        Self::json(status, serde_json::json!({ "error": msg.to_string() }))
    }
}

pub async fn serve(
    admin: Arc<Admin>,
    listener: TcpListener,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admin = admin.clone();
        tracker.spawn(async move {
            match tokio::time::timeout(Duration::from_secs(30), handle_conn(&admin, stream)).await {
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "admin connection failed"),
                Err(_) => tracing::debug!(%peer, "admin connection timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

async fn handle_conn(admin: &Admin, mut stream: TcpStream) -> std::io::Result<()> {
    let resp = match read_request(&mut stream).await? {
        Ok(req) => route(admin, req).await,
        Err(msg) => HttpResponse::error(400, msg),
    };
    let reason = match resp.status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        resp.status,
        resp.content_type,
        resp.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&resp.body).await?;
    stream.shutdown().await
}

async fn read_request(stream: &mut TcpStream) -> std::io::Result<Result<HttpRequest, String>> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Ok(Err("request head too large".into()));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Err("connection closed mid-request".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut parts = lines.next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Ok(Err("malformed request line".into()));
    };
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if length > MAX_BODY {
        return Ok(Err("request body too large".into()));
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Err("connection closed mid-body".into()));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Ok(HttpRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        body,
    }))
}

#[derive(Deserialize)]
struct CreateTopic {
    name: String,
    #[serde(default = "one")]
    partitions: u32,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

async fn route(admin: &Admin, req: HttpRequest) -> HttpResponse {
    let path = req.path.split('?').next().unwrap_or_default().to_owned();
    match (req.method.as_str(), path.as_str()) {
        ("GET", "/healthz") => HttpResponse {
            status: 200,
            content_type: "text/plain",
            body: b"ok\n".to_vec(),
        },
        ("GET", "/metrics") => {
            admin.storage.refresh();
            metrics(&admin.registry)
        }
        ("GET", "/api/topics") => {
            let topics: Vec<_> = admin
                .router
                .streams()
                .into_iter()
                .map(|m| serde_json::json!({ "name": m.name.as_str(), "partitions": m.partitions, "config": m.config }))
                .collect();
            HttpResponse::json(200, serde_json::Value::Array(topics))
        }
        ("POST", "/api/topics") => create_topic(admin, &req.body).await,
        (method, p) if p.starts_with("/api/topics/") => {
            let Ok(name) = StreamName::new(&p["/api/topics/".len()..]) else {
                return HttpResponse::error(400, "invalid topic name");
            };
            match method {
                "GET" => describe_topic(admin, &name).await,
                "DELETE" => match admin.router.delete_stream(&name).await {
                    Ok(()) => {
                        HttpResponse::json(200, serde_json::json!({ "deleted": name.as_str() }))
                    }
                    Err(e) => router_error(e),
                },
                _ => HttpResponse::error(404, "no such route"),
            }
        }
        _ => HttpResponse::error(404, "no such route"),
    }
}

fn metrics(registry: &Registry) -> HttpResponse {
    let mut body = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut body) {
        return HttpResponse::error(500, e);
    }
    HttpResponse {
        status: 200,
        content_type: "text/plain; version=0.0.4",
        body,
    }
}

async fn create_topic(admin: &Admin, body: &[u8]) -> HttpResponse {
    let req: CreateTopic = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return HttpResponse::error(400, format!("bad JSON: {e}")),
    };
    let name = match StreamName::new(&req.name) {
        Ok(n) => n,
        Err(e) => return HttpResponse::error(400, e),
    };
    match admin
        .router
        .create_stream(name, req.partitions, req.config)
        .await
    {
        Ok(m) => HttpResponse::json(
            201,
            serde_json::json!({ "name": m.name.as_str(), "partitions": m.partitions }),
        ),
        Err(e) => router_error(e),
    }
}

async fn describe_topic(admin: &Admin, name: &StreamName) -> HttpResponse {
    let Some(meta) = admin.router.stream(name) else {
        return HttpResponse::error(404, format!("topic {name} does not exist"));
    };
    let mut partitions = Vec::new();
    for p in 0..meta.partitions {
        let tp = TopicPartition::new(name.clone(), p);
        match admin.router.bounds(&tp).await {
            Ok(b) => partitions.push(serde_json::json!({
                "partition": p, "log_start": b.log_start, "high_watermark": b.high_watermark
            })),
            Err(e) => {
                partitions.push(serde_json::json!({ "partition": p, "error": e.to_string() }))
            }
        }
    }
    HttpResponse::json(
        200,
        serde_json::json!({ "name": name.as_str(), "partitions": partitions, "config": meta.config }),
    )
}

fn router_error(e: RouterError) -> HttpResponse {
    let status = match &e {
        RouterError::Rejected(switchboard_router::Rejection::StreamExists(_)) => 409,
        RouterError::Rejected(switchboard_router::Rejection::UnknownStream(_))
        | RouterError::UnknownStream(_) => 404,
        RouterError::Rejected(_) => 400,
        _ => 500,
    };
    HttpResponse::error(status, e)
}

/// The CLI side: one blocking request, the answer's body on success.
pub mod client {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use anyhow::{Context, bail};

    pub fn request(
        addr: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut s = TcpStream::connect(addr).with_context(|| {
            format!("cannot reach the admin API at {addr} (is `switchboard serve` running?)")
        })?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("malformed HTTP answer")?;
        if !(200..300).contains(&status) {
            let msg = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| body.to_owned());
            bail!("{msg} (HTTP {status})");
        }
        Ok(body.to_owned())
    }
}
