//! A circuit breaker for the shared store: after a failure, the store is left alone for a
//! backoff step (1 s doubling to 60 s), so a dead store costs one timeout per step instead of
//! one per fetch; a write that goes through, or a token adopted, closes it again (a read alone
//! does not: a read-only store would open and close it on every fetch). Its state is the
//! `tower_oauth2_shared_store_failures` gauge (feature `metrics`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::telemetry::Metrics;

const FIRST_STEP: Duration = Duration::from_secs(1);
const LAST_STEP: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(super) struct Breaker {
    state: Mutex<State>,
    metrics: Metrics,
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    /// A closed breaker, reporting with `metrics`' labels.
    pub(super) fn new(metrics: Metrics) -> Self {
        Breaker {
            state: Mutex::default(),
            metrics,
        }
    }

    /// Whether the store may be used now.
    pub(super) fn closed(&self) -> bool {
        self.lock()
            .open_until
            .is_none_or(|until| Instant::now() >= until)
    }

    /// The store failed: leave it alone for the next step.
    pub(super) fn trip(&self, error: &dyn std::fmt::Display) {
        let mut state = self.lock();
        state.failures = state.failures.saturating_add(1);
        let step = FIRST_STEP
            .saturating_mul(1 << state.failures.saturating_sub(1).min(6))
            .min(LAST_STEP);
        state.open_until = Instant::now().checked_add(step);
        self.metrics.store_failures(state.failures);
        tracing::warn!(
            target: "tower_oauth2::shared",
            failures = state.failures,
            retry_in = ?step,
            %error,
            "shared token store failed; fetching alone until it is tried again"
        );
    }

    /// The store answered.
    pub(super) fn reset(&self) {
        let mut state = self.lock();
        if state.failures > 0 {
            tracing::info!(target: "tower_oauth2::shared", "shared token store is back");
            self.metrics.store_failures(0);
        }
        *state = State::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
