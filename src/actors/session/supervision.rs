//! Crash supervision: how often a session's browser may crash before the session fails, and how
//! long to wait before each relaunch. Pure functions of the crash history and the clock, so the
//! tests drive them with tokio's paused clock.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Crash handling; values come from `Settings::supervision`.
#[derive(Debug, Clone)]
pub struct Supervision {
    /// The first relaunch delay; it doubles with every recent crash.
    pub backoff_first: Duration,
    /// The longest relaunch delay.
    pub backoff_max: Duration,
    /// More than this many crashes within `crash_window` → `failed`.
    pub max_crashes: usize,
    /// The window crashes are counted in (and how long a session must be healthy to start over).
    pub crash_window: Duration,
}

/// Random spread of each delay, so that browsers that crashed together do not relaunch together.
pub const JITTER: f64 = 0.2;

impl Supervision {
    /// The delay before the relaunch after the `recent`-th crash within the window: the first
    /// delay, doubled per earlier recent crash, ±[`JITTER`], never above the cap.
    pub fn backoff(&self, recent: usize) -> Duration {
        let doublings = recent.saturating_sub(1).min(16) as u32;
        let base = self
            .backoff_first
            .saturating_mul(1 << doublings)
            .min(self.backoff_max);
        let jitter = rand::random_range(1.0 - JITTER..1.0 + JITTER);
        base.mul_f64(jitter).min(self.backoff_max)
    }
}

/// When the recent crashes happened.
#[derive(Debug, Default)]
pub struct Crashes(VecDeque<Instant>);

impl Crashes {
    /// Records a crash now; returns how many fell within the window, this one included.
    pub fn record(&mut self, now: Instant, window: Duration) -> usize {
        self.0.push_back(now);
        self.recent(now, window)
    }

    /// How many crashes fell within the window before `now`.
    pub fn recent(&mut self, now: Instant, window: Duration) -> usize {
        while self
            .0
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.0.pop_front();
        }
        self.0.len()
    }

    /// Forgets every crash (an explicit start is a fresh chance).
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervision() -> Supervision {
        Supervision {
            backoff_first: Duration::from_millis(1000),
            backoff_max: Duration::from_secs(60),
            max_crashes: 5,
            crash_window: Duration::from_secs(600),
        }
    }

    #[test]
    fn backoff_doubles_within_jitter_bounds_and_is_capped() {
        let s = supervision();
        for recent in 1..=12 {
            let nominal = (1000u64 << (recent - 1).min(16)).min(60_000) as f64;
            for _ in 0..200 {
                let d = s.backoff(recent).as_millis() as f64;
                assert!(
                    d >= nominal * (1.0 - JITTER) - 1.0,
                    "{recent}: {d} < {nominal}"
                );
                assert!(
                    d <= (nominal * (1.0 + JITTER)).min(60_000.0) + 1.0,
                    "{recent}: {d}"
                );
            }
        }
        assert!(s.backoff(40) <= s.backoff_max);
    }

    #[tokio::test(start_paused = true)]
    async fn crashes_leave_the_window() {
        let mut c = Crashes::default();
        let window = Duration::from_secs(600);
        assert_eq!(c.record(Instant::now(), window), 1);
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(c.record(Instant::now(), window), 2);
        tokio::time::advance(Duration::from_secs(301)).await;
        assert_eq!(
            c.record(Instant::now(), window),
            2,
            "the first one aged out"
        );
        c.clear();
        assert_eq!(c.record(Instant::now(), window), 1);
    }
}
