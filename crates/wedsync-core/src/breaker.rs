//! The circuit breaker as a pure state machine. The store persists the state per
//! (organisation, target) so every node sees the same breaker; this module only decides.
//!
//! closed → open after `failure_threshold` consecutive failures → half-open after
//! `cool_down` (one probe is admitted) → closed on the probe's success, open again on its
//! failure. While open, work is deferred until the probe time, never failed.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

/// When a breaker opens and how it recovers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker waits before admitting a probe.
    pub cool_down: TimeDelta,
    /// How long a probe may stay unanswered before another is admitted (the first is
    /// presumed lost with its worker).
    pub probe_timeout: TimeDelta,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down: TimeDelta::minutes(5),
            probe_timeout: TimeDelta::minutes(1),
        }
    }
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerState {
    /// Traffic flows; failures are being counted.
    Closed {
        /// Failures since the last success.
        consecutive_failures: u32,
    },
    /// Traffic is held back until `probe_at`.
    Open {
        /// When it opened.
        opened_at: DateTime<Utc>,
        /// When one probe will be admitted.
        probe_at: DateTime<Utc>,
    },
    /// One probe is in flight; everything else waits for its outcome.
    HalfOpen {
        /// When the probe was admitted.
        probe_started_at: DateTime<Utc>,
    },
}

impl BreakerState {
    /// A fresh, closed breaker.
    pub const CLOSED: BreakerState = BreakerState::Closed {
        consecutive_failures: 0,
    };

    /// `closed`, `open` or `half_open`, for storage and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }
}

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Allow,
    /// Go ahead as the probe; report the outcome.
    Probe,
    /// Do not call the target; try again at `until` (work is deferred, not failed).
    Defer {
        /// When to try again.
        until: DateTime<Utc>,
    },
}

impl BreakerPolicy {
    /// Whether a call may go ahead now, and the state to store if it changed.
    pub fn admit(
        &self,
        state: &BreakerState,
        now: DateTime<Utc>,
    ) -> (Admission, Option<BreakerState>) {
        match *state {
            BreakerState::Closed { .. } => (Admission::Allow, None),
            BreakerState::Open { probe_at, .. } if now >= probe_at => (
                Admission::Probe,
                Some(BreakerState::HalfOpen {
                    probe_started_at: now,
                }),
            ),
            BreakerState::Open { probe_at, .. } => (Admission::Defer { until: probe_at }, None),
            BreakerState::HalfOpen { probe_started_at }
                if now >= probe_started_at + self.probe_timeout =>
            {
                (
                    Admission::Probe,
                    Some(BreakerState::HalfOpen {
                        probe_started_at: now,
                    }),
                )
            }
            BreakerState::HalfOpen { probe_started_at } => (
                Admission::Defer {
                    until: probe_started_at + self.probe_timeout,
                },
                None,
            ),
        }
    }

    /// The state after a successful call: any success proves the target works again.
    pub fn on_success(&self, _state: &BreakerState) -> BreakerState {
        BreakerState::CLOSED
    }

    /// The state after a failed call.
    pub fn on_failure(&self, state: &BreakerState, now: DateTime<Utc>) -> BreakerState {
        let open = BreakerState::Open {
            opened_at: now,
            probe_at: now + self.cool_down,
        };
        match *state {
            BreakerState::Closed {
                consecutive_failures,
            } => {
                let failures = consecutive_failures.saturating_add(1);
                if failures >= self.failure_threshold {
                    open
                } else {
                    BreakerState::Closed {
                        consecutive_failures: failures,
                    }
                }
            }
            BreakerState::HalfOpen { .. } => open,
            // A late failure from a call admitted before the breaker opened changes nothing.
            BreakerState::Open { .. } => *state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_full_cycle_with_a_moved_clock() {
        let policy = BreakerPolicy::default();
        let t0 = Utc
            .with_ymd_and_hms(2026, 6, 13, 12, 0, 0)
            .single()
            .expect("valid");
        let mut state = BreakerState::CLOSED;
        for i in 1..=4 {
            state = policy.on_failure(&state, t0);
            assert_eq!(
                state,
                BreakerState::Closed {
                    consecutive_failures: i
                }
            );
            assert_eq!(policy.admit(&state, t0).0, Admission::Allow);
        }
        state = policy.on_failure(&state, t0);
        let probe_at = t0 + TimeDelta::minutes(5);
        assert_eq!(
            state,
            BreakerState::Open {
                opened_at: t0,
                probe_at
            }
        );
        assert_eq!(
            policy.admit(&state, t0 + TimeDelta::minutes(4)).0,
            Admission::Defer { until: probe_at }
        );
        let (admission, next) = policy.admit(&state, probe_at);
        assert_eq!(admission, Admission::Probe);
        state = next.expect("half-open");
        // While the probe is out, others wait for it.
        assert!(matches!(
            policy.admit(&state, probe_at + TimeDelta::seconds(10)).0,
            Admission::Defer { .. }
        ));
        // The probe fails: open again for a full cool-down.
        state = policy.on_failure(&state, probe_at + TimeDelta::seconds(20));
        assert!(matches!(state, BreakerState::Open { .. }));
        let (_, next) = policy.admit(&state, probe_at + TimeDelta::minutes(6));
        state = next.expect("half-open");
        state = policy.on_success(&state);
        assert_eq!(state, BreakerState::CLOSED);
    }

    #[test]
    fn a_lost_probe_is_replaced_after_its_timeout() {
        let policy = BreakerPolicy::default();
        let t0 = Utc
            .with_ymd_and_hms(2026, 6, 13, 12, 0, 0)
            .single()
            .expect("valid");
        let state = BreakerState::HalfOpen {
            probe_started_at: t0,
        };
        assert_eq!(
            policy.admit(&state, t0 + TimeDelta::seconds(59)).0,
            Admission::Defer {
                until: t0 + TimeDelta::minutes(1)
            }
        );
        assert_eq!(
            policy.admit(&state, t0 + TimeDelta::minutes(1)).0,
            Admission::Probe
        );
    }

    #[test]
    fn a_success_resets_the_count() {
        let policy = BreakerPolicy::default();
        let t0 = Utc
            .with_ymd_and_hms(2026, 6, 13, 12, 0, 0)
            .single()
            .expect("valid");
        let mut state = BreakerState::CLOSED;
        for _ in 0..4 {
            state = policy.on_failure(&state, t0);
        }
        state = policy.on_success(&state);
        state = policy.on_failure(&state, t0);
        assert_eq!(
            state,
            BreakerState::Closed {
                consecutive_failures: 1
            }
        );
    }
}
