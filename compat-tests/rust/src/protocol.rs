//! The conversation with the Python suite, as compat-tests/node/adapter.js speaks it: one JSON
//! command per line on stdin,
//!   {"id": 7, "op": "publish", ...arguments}
//! and one JSON reply per line on stdout, once the command is done:
//!   {"id": 7, "ok": true, "result": {...}}   or   {"id": 7, "ok": false, "error": "...", "code": ...}
//! Commands run concurrently (a test may wait for messages on one client while another
//! publishes), so replies can come out of order; the id pairs them. stdout carries nothing
//! else: diagnostics go to stderr, which the suite keeps for failure messages. At the end of
//! stdin the pending commands finish, the library closes its connections and the process ends.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::error::AdapterError;
use crate::library::Library;

/// Serves commands from stdin, or the `given` ones (one after the other) when there are any.
pub async fn serve(library: Library, given: Vec<String>) {
    let library = Arc::new(library);
    let replies = Replies::start();
    if given.is_empty() {
        serve_stdin(&library, &replies).await;
    } else {
        for text in given {
            replies.send(run(&library, &text).await);
        }
    }
    library.close().await;
    replies.finish();
}

async fn serve_stdin(library: &Arc<Library>, replies: &Replies) {
    let mut lines = stdin_lines();
    let mut pending = JoinSet::new();
    while let Some(line) = lines.recv().await {
        if line.trim().is_empty() {
            continue;
        }
        let (library, replies) = (Arc::clone(library), replies.clone());
        pending.spawn(async move { replies.send(run(&library, &line).await) });
        // Reap what finished, so a long session does not keep every handle.
        while pending.try_join_next().is_some() {}
    }
    while pending.join_next().await.is_some() {}
}

/// One command line -> its reply.
async fn run(library: &Library, line: &str) -> Value {
    let command = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(command)) => command,
        _ => {
            return json!({"id": null, "ok": false, "error": format!("not JSON: {line}"),
                          "code": "bad-command"});
        }
    };
    let (id, op) = split(command);
    let outcome = match op.as_deref() {
        None | Some("close") => Err(AdapterError::UnknownOp(op.unwrap_or_default())),
        // The arguments are parsed again from the line itself, into the op's own type: a
        // `Value` would sort object keys, and the order of e.g. subscribe's topics matters.
        Some(op) => library.call(op, line).await,
    };
    match outcome {
        Ok(result) => json!({"id": id, "ok": true, "result": result}),
        Err(e) => json!({"id": id, "ok": false, "error": e.to_string(), "code": e.code()}),
    }
}

/// `{id, op, ...args}` -> (id, op).
fn split(mut command: Map<String, Value>) -> (Value, Option<String>) {
    let id = command.remove("id").unwrap_or(Value::Null);
    let op = match command.remove("op") {
        Some(Value::String(op)) => Some(op),
        _ => None,
    };
    (id, op)
}

/// Lines of stdin, read on a thread of their own (tokio's stdin needs a feature the rest of
/// the workspace does not build); the channel closes at the end of input.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    eprintln!("reading stdin: {e}");
                    break;
                }
            }
        }
    });
    rx
}

/// The only writer of stdout: one reply per line, flushed at once, from a thread of its own.
#[derive(Clone)]
struct Replies {
    tx: std_mpsc::Sender<Value>,
    writer: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Replies {
    fn start() -> Self {
        let (tx, rx) = std_mpsc::channel::<Value>();
        let writer = std::thread::spawn(move || {
            let mut out = std::io::stdout().lock();
            for reply in rx {
                let written = writeln!(out, "{reply}").and_then(|()| out.flush());
                if let Err(e) = written {
                    eprintln!("writing a reply: {e}");
                    return;
                }
            }
        });
        Self {
            tx,
            writer: Arc::new(std::sync::Mutex::new(Some(writer))),
        }
    }

    fn send(&self, reply: Value) {
        // Only fails once the writer is gone (stdout closed): nobody reads replies any more.
        let _ = self.tx.send(reply);
    }

    /// Waits until every reply sent so far is written.
    fn finish(self) {
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        drop(self.tx);
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}
