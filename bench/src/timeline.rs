//! Throughput over time, for `--plot`: a task samples a run's delivery counter at a fixed period
//! and keeps the rate of each period.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Sampling period: short enough to show a stall of a second, long enough that a run of minutes
/// stays a few hundred points.
const PERIOD: Duration = Duration::from_millis(500);

pub struct Timeline {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    samples: Arc<Mutex<Vec<[f64; 2]>>>,
}

impl Timeline {
    /// Starts sampling `count()` (a counter that only grows) from now on.
    pub fn start(count: impl Fn() -> u64 + Send + 'static) -> Timeline {
        let cancel = CancellationToken::new();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let cancel = cancel.clone();
            let samples = samples.clone();
            async move {
                let start = Instant::now();
                let mut tick = tokio::time::interval(PERIOD);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                tick.tick().await;
                let (mut last_at, mut last) = (start, count());
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    let (now, n) = (Instant::now(), count());
                    let dt = (now - last_at).as_secs_f64();
                    if dt > 0.0
                        && let Ok(mut s) = samples.lock()
                    {
                        let rate = n.saturating_sub(last) as f64 / dt;
                        s.push([(now - start).as_secs_f64(), rate]);
                    }
                    (last_at, last) = (now, n);
                }
            }
        });
        Timeline {
            cancel,
            task,
            samples,
        }
    }

    /// Stops sampling and returns `[seconds since start, msg/s]` per period.
    pub async fn finish(mut self) -> Vec<[f64; 2]> {
        self.cancel.cancel();
        let _ = (&mut self.task).await;
        self.samples
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

/// A run that fails midway drops its timeline: the sampler stops with it.
impl Drop for Timeline {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test(start_paused = true)]
    async fn each_period_gets_the_rate_of_the_counter() {
        let counter = Arc::new(AtomicU64::new(0));
        let timeline = Timeline::start({
            let c = counter.clone();
            move || c.load(Ordering::Relaxed)
        });
        // 50 more in the middle of every period: 100 msg/s at a 500 ms period.
        tokio::time::sleep(PERIOD / 2).await;
        for _ in 0..4 {
            counter.fetch_add(50, Ordering::Relaxed);
            tokio::time::sleep(PERIOD).await;
        }
        let samples = timeline.finish().await;
        assert!(samples.len() >= 3, "{samples:?}");
        assert!(samples.iter().all(|s| s[1] == 100.0), "{samples:?}");
        assert!(samples.windows(2).all(|w| w[0][0] < w[1][0]));
    }
}
