//! Stall detection: every wait of a run has a bound, so a broker that stops answering fails the
//! run with a message instead of hanging it.

use std::time::Duration;

use anyhow::{Result, bail};
use tokio::time::Instant;

/// A counter that must keep moving: fails when it has not changed for `limit`.
pub struct Watch {
    what: &'static str,
    limit: Duration,
    last: u64,
    since: Instant,
}

impl Watch {
    pub fn new(what: &'static str, limit: Duration) -> Watch {
        Watch {
            what,
            limit,
            last: 0,
            since: Instant::now(),
        }
    }

    /// Notes the counter's current `value`; fails, describing the run with `state()`, when it
    /// has not changed for the limit.
    pub fn check(&mut self, value: u64, state: impl FnOnce() -> String) -> Result<()> {
        if value != self.last {
            self.last = value;
            self.since = Instant::now();
            return Ok(());
        }
        if self.since.elapsed() >= self.limit {
            bail!(
                "stalled: {} for {:?}; the broker stopped answering? ({})",
                self.what,
                self.limit,
                state()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_counter_that_stops_moving_fails_after_the_limit() {
        let mut w = Watch::new("nothing received", Duration::from_secs(10));
        w.check(5, String::new).expect("moved");
        tokio::time::advance(Duration::from_secs(9)).await;
        w.check(5, String::new).expect("still within the limit");
        tokio::time::advance(Duration::from_secs(1)).await;
        let err = w.check(5, || "received 5".into()).expect_err("stalled");
        assert!(err.to_string().contains("nothing received"), "{err}");
        assert!(err.to_string().contains("received 5"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn movement_restarts_the_clock() {
        let mut w = Watch::new("x", Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(9)).await;
        w.check(1, String::new).expect("moved");
        tokio::time::advance(Duration::from_secs(9)).await;
        w.check(1, String::new).expect("within the limit again");
    }
}
