//! A live status line on stderr: rewritten in place on a terminal, one line every few seconds
//! otherwise (so a log file stays readable).

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

type Status = Box<dyn Fn() -> String + Send + Sync>;

pub struct Progress {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    status: Arc<Mutex<Status>>,
    tty: bool,
}

impl Progress {
    /// Starts printing `status()` with the elapsed time in front.
    pub fn start(status: impl Fn() -> String + Send + Sync + 'static) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let period = if tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        };
        let cancel = CancellationToken::new();
        let status: Arc<Mutex<Status>> = Arc::new(Mutex::new(Box::new(status)));
        let task = tokio::spawn({
            let cancel = cancel.clone();
            let status = status.clone();
            async move {
                let start = Instant::now();
                let mut tick = tokio::time::interval(period);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => print(tty, start.elapsed(), &status),
                    }
                }
            }
        });
        Progress {
            cancel,
            task,
            status,
            tty,
        }
    }

    /// Replaces what the line shows (e.g. when the run enters another phase).
    pub fn set(&self, status: impl Fn() -> String + Send + Sync + 'static) {
        if let Ok(mut s) = self.status.lock() {
            *s = Box::new(status);
        }
    }

    /// Stops the line and moves the cursor past it.
    pub async fn finish(self) {
        self.cancel.cancel();
        let _ = self.task.await;
        if self.tty {
            eprintln!();
        }
    }
}

fn print(tty: bool, elapsed: Duration, status: &Mutex<Status>) {
    let text = match status.lock() {
        Ok(s) => s(),
        Err(_) => return,
    };
    let mut err = std::io::stderr().lock();
    let secs = elapsed.as_secs_f64();
    let _ = if tty {
        // \x1b[K clears what a longer previous line left behind.
        write!(err, "\r{secs:6.1}s  {text}\x1b[K")
    } else {
        writeln!(err, "{secs:6.1}s  {text}")
    };
    let _ = err.flush();
}
