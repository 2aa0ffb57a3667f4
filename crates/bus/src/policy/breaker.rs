//! The circuit breaker of an edge: closed, open, half-open, on the failure and slow-call rates
//! of its last calls.
//!
//! [`Machine`] is the state machine alone, a pure function of the calls it is told about and
//! of the instants it is given, so a property test can hold it against a plain reference
//! model. [`Breaker`] shares one between the callers of an edge and releases a probe that
//! was admitted but never finished (its caller gave up), so half-open cannot stick.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The breaker's settings (`[bus.policy.breaker]`, or an edge's override).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    pub enabled: bool,
    /// How many of the latest calls the rates are taken over.
    pub window: u32,
    /// Calls needed in the window before a rate counts (a first failure alone opens nothing).
    pub min_calls: u32,
    /// Opens when at least this share of the window failed.
    pub failure_rate_percent: u32,
    /// A call that took at least this long is slow, whatever it answered.
    pub slow_call_ms: u64,
    /// Opens when at least this share of the window was slow.
    pub slow_rate_percent: u32,
    /// How long it stays open (answering at once) before it lets probes through.
    pub open_ms: u64,
    /// Probes let through half-open; all must succeed to close, one failure opens again.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: 20,
            min_calls: 10,
            failure_rate_percent: 50,
            slow_call_ms: 2_000,
            slow_rate_percent: 80,
            open_ms: 5_000,
            half_open_probes: 3,
        }
    }
}

impl BreakerConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.window == 0 || self.min_calls == 0 || self.half_open_probes == 0 {
            return Err((
                "breaker.window",
                "window, min_calls and half_open_probes must be greater than 0".into(),
            ));
        }
        if self.min_calls > self.window {
            return Err(("breaker.min_calls", "must not exceed breaker.window".into()));
        }
        for (key, percent) in [
            ("breaker.failure_rate_percent", self.failure_rate_percent),
            ("breaker.slow_rate_percent", self.slow_rate_percent),
        ] {
            if !(1..=100).contains(&percent) {
                return Err((key, "must be between 1 and 100".into()));
            }
        }
        if self.open_ms == 0 {
            return Err(("breaker.open_ms", "must be greater than 0".into()));
        }
        Ok(())
    }
}

/// Where a breaker is, as `GET /api/v1/services` and the logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// How a call that the breaker let through ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The callee did not answer, or answered that it failed.
    pub failed: bool,
    /// It took at least the breaker's `slow_call_ms`.
    pub slow: bool,
}

/// A call the breaker let through, to be reported with [`Machine::record`]. It names the
/// phase it was let through in: a call of an earlier phase (admitted closed, ending after the
/// breaker opened) changes nothing when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    generation: u64,
    probe: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

/// The breaker's state machine.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    config: BreakerConfig,
    phase: Phase,
    /// Bumped on every change of phase.
    generation: u64,
    /// The latest calls while closed, oldest first, at most `window` of them.
    window: VecDeque<Outcome>,
    failed: u32,
    slow: u32,
}

impl Machine {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Self {
            window: VecDeque::with_capacity(config.window as usize),
            config,
            phase: Phase::Closed,
            generation: 0,
            failed: 0,
            slow: 0,
        }
    }

    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Lets a call through, or says how long until it might be let through.
    pub(crate) fn admit(&mut self, now: Instant) -> Result<Admission, Duration> {
        if !self.config.enabled {
            return Ok(self.admission(false));
        }
        if let Phase::Open { until } = self.phase {
            if now < until {
                return Err(until - now);
            }
            self.enter(Phase::HalfOpen {
                admitted: 0,
                succeeded: 0,
            });
        }
        match &mut self.phase {
            Phase::Closed => Ok(self.admission(false)),
            Phase::HalfOpen { admitted, .. } if *admitted < self.config.half_open_probes => {
                *admitted += 1;
                Ok(self.admission(true))
            }
            // Every probe is out: the others wait for their verdict.
            Phase::HalfOpen { .. } | Phase::Open { .. } => {
                Err(Duration::from_millis(self.config.open_ms.min(1_000)))
            }
        }
    }

    /// Reports how an admitted call ended.
    pub(crate) fn record(&mut self, now: Instant, admission: Admission, outcome: Outcome) {
        if !self.config.enabled || admission.generation != self.generation {
            return;
        }
        let bad = outcome.failed || outcome.slow;
        match &mut self.phase {
            Phase::Closed => {
                if self.window.len() == self.config.window as usize
                    && let Some(oldest) = self.window.pop_front()
                {
                    self.failed -= u32::from(oldest.failed);
                    self.slow -= u32::from(oldest.slow);
                }
                self.window.push_back(outcome);
                self.failed += u32::from(outcome.failed);
                self.slow += u32::from(outcome.slow);
                let calls = self.window.len() as u32;
                let over = |count: u32, percent: u32| count * 100 >= percent * calls;
                if calls >= self.config.min_calls
                    && (over(self.failed, self.config.failure_rate_percent)
                        || over(self.slow, self.config.slow_rate_percent))
                {
                    self.open(now);
                }
            }
            Phase::HalfOpen { .. } if bad => self.open(now),
            Phase::HalfOpen { succeeded, .. } => {
                *succeeded += 1;
                if *succeeded >= self.config.half_open_probes {
                    self.enter(Phase::Closed);
                }
            }
            Phase::Open { .. } => {}
        }
    }

    /// Gives back the slot of a probe that will never be reported (its caller gave up).
    pub(crate) fn release(&mut self, admission: Admission) {
        if admission.probe
            && admission.generation == self.generation
            && let Phase::HalfOpen { admitted, .. } = &mut self.phase
        {
            *admitted = admitted.saturating_sub(1);
        }
    }

    fn admission(&self, probe: bool) -> Admission {
        Admission {
            generation: self.generation,
            probe,
        }
    }

    fn open(&mut self, now: Instant) {
        let until = now + Duration::from_millis(self.config.open_ms);
        self.enter(Phase::Open { until });
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation += 1;
        self.window.clear();
        self.failed = 0;
        self.slow = 0;
    }
}

/// One edge's breaker, shared by its callers (the bus's edges, and main's gateway routes per
/// module).
#[derive(Debug)]
pub struct Breaker {
    machine: Mutex<Machine>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Arc<Self> {
        Arc::new(Self {
            machine: Mutex::new(Machine::new(config)),
        })
    }

    fn machine(&self) -> std::sync::MutexGuard<'_, Machine> {
        // A panic while holding the lock leaves counts, never a broken invariant worth dying for.
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn state(&self) -> BreakerState {
        self.machine().state(Instant::now())
    }

    /// Lets a call through (the returned pass reports how it ended), or says how long until
    /// one might be let through.
    pub fn admit(self: &Arc<Self>) -> Result<Pass, Duration> {
        self.admit_at(Instant::now())
    }

    /// [`Breaker::admit`] at `now`, for a caller that has read the clock already.
    pub fn admit_at(self: &Arc<Self>, now: Instant) -> Result<Pass, Duration> {
        let admission = self.machine().admit(now)?;
        Ok(Pass {
            breaker: self.clone(),
            admission: Some(admission),
        })
    }
}

/// A call the breaker let through. Dropped without [`Pass::report`], it reports nothing and
/// frees its probe slot.
#[derive(Debug)]
pub struct Pass {
    breaker: Arc<Breaker>,
    admission: Option<Admission>,
}

impl Pass {
    pub fn report(self, outcome: Outcome) {
        self.report_at(Instant::now(), outcome);
    }

    /// [`Pass::report`] at `now`, for a caller that has read the clock already.
    pub fn report_at(mut self, now: Instant, outcome: Outcome) {
        if let Some(admission) = self.admission.take() {
            self.breaker.machine().record(now, admission, outcome);
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            self.breaker.machine().release(admission);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    const OK: Outcome = Outcome {
        failed: false,
        slow: false,
    };
    const FAILED: Outcome = Outcome {
        failed: true,
        slow: false,
    };

    fn config() -> BreakerConfig {
        BreakerConfig {
            window: 4,
            min_calls: 2,
            failure_rate_percent: 50,
            slow_rate_percent: 100,
            open_ms: 100,
            half_open_probes: 2,
            ..BreakerConfig::default()
        }
    }

    #[test]
    fn it_opens_on_failures_answers_at_once_then_probes_and_closes() {
        let t0 = Instant::now();
        let mut m = Machine::new(config());
        let a = m.admit(t0).unwrap();
        m.record(t0, a, FAILED);
        assert_eq!(
            m.state(t0),
            BreakerState::Closed,
            "one call is under min_calls"
        );
        let a = m.admit(t0).unwrap();
        m.record(t0, a, OK);
        assert_eq!(m.state(t0), BreakerState::Open, "1 of 2 failed: 50 %");
        let retry_after = m.admit(t0 + Duration::from_millis(30)).unwrap_err();
        assert_eq!(retry_after, Duration::from_millis(70));

        let later = t0 + Duration::from_millis(100);
        let p1 = m.admit(later).unwrap();
        let p2 = m.admit(later).unwrap();
        assert!(m.admit(later).is_err(), "only two probes at a time");
        m.record(later, p1, OK);
        assert_eq!(m.state(later), BreakerState::HalfOpen);
        m.record(later, p2, OK);
        assert_eq!(m.state(later), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_opens_again_and_a_call_of_an_earlier_phase_counts_for_nothing() {
        let t0 = Instant::now();
        let mut m = Machine::new(config());
        let stale = m.admit(t0).unwrap();
        for _ in 0..2 {
            let a = m.admit(t0).unwrap();
            m.record(t0, a, FAILED);
        }
        assert_eq!(m.state(t0), BreakerState::Open);
        let later = t0 + Duration::from_millis(100);
        let probe = m.admit(later).unwrap();
        m.record(later, stale, FAILED);
        assert_eq!(
            m.state(later),
            BreakerState::HalfOpen,
            "the stale call is ignored"
        );
        m.record(later, probe, FAILED);
        assert_eq!(m.state(later), BreakerState::Open);
    }

    #[test]
    fn a_probe_given_up_frees_its_slot() {
        let t0 = Instant::now();
        let breaker = Breaker::new(BreakerConfig {
            open_ms: 1,
            half_open_probes: 1,
            ..config()
        });
        for _ in 0..2 {
            breaker.admit().unwrap().report(FAILED);
        }
        std::thread::sleep(Duration::from_millis(2));
        let probe = breaker.admit().unwrap();
        assert!(breaker.admit().is_err());
        drop(probe);
        assert!(
            breaker.admit().is_ok(),
            "the abandoned probe's slot is free"
        );
        let _ = t0;
    }

    /// A plain model of the same rules: it keeps every outcome since the breaker last closed
    /// and takes the rates over the last `window` of them each time, with no running counts.
    #[derive(Debug)]
    struct Model {
        config: BreakerConfig,
        state: BreakerState,
        history: Vec<Outcome>,
        open_until: Instant,
        probes_out: u32,
        probes_ok: u32,
        epoch: u64,
    }

    impl Model {
        fn state(&self, now: Instant) -> BreakerState {
            if self.state == BreakerState::Open && now >= self.open_until {
                BreakerState::HalfOpen
            } else {
                self.state
            }
        }

        fn admit(&mut self, now: Instant) -> Option<u64> {
            if self.state == BreakerState::Open {
                if now < self.open_until {
                    return None;
                }
                self.state = BreakerState::HalfOpen;
                self.probes_out = 0;
                self.probes_ok = 0;
                self.epoch += 1;
            }
            if self.state == BreakerState::HalfOpen {
                if self.probes_out == self.config.half_open_probes {
                    return None;
                }
                self.probes_out += 1;
            }
            Some(self.epoch)
        }

        fn record(&mut self, now: Instant, epoch: u64, outcome: Outcome) {
            if epoch != self.epoch {
                return;
            }
            match self.state {
                BreakerState::Closed => {
                    self.history.push(outcome);
                    let window = self.config.window as usize;
                    let last = &self.history[self.history.len().saturating_sub(window)..];
                    let n = last.len() as f64;
                    let failed = last.iter().filter(|o| o.failed).count() as f64;
                    let slow = last.iter().filter(|o| o.slow).count() as f64;
                    if last.len() >= self.config.min_calls as usize
                        && (failed / n * 100.0 >= f64::from(self.config.failure_rate_percent)
                            || slow / n * 100.0 >= f64::from(self.config.slow_rate_percent))
                    {
                        self.trip(now);
                    }
                }
                BreakerState::HalfOpen if outcome.failed || outcome.slow => self.trip(now),
                BreakerState::HalfOpen => {
                    self.probes_ok += 1;
                    if self.probes_ok == self.config.half_open_probes {
                        self.state = BreakerState::Closed;
                        self.history.clear();
                        self.epoch += 1;
                    }
                }
                BreakerState::Open => {}
            }
        }

        fn trip(&mut self, now: Instant) {
            self.state = BreakerState::Open;
            self.open_until = now + Duration::from_millis(self.config.open_ms);
            self.history.clear();
            self.epoch += 1;
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Admit,
        /// Ends the call admitted `n`-th among those still out (modulo their number).
        Finish(usize, bool, bool),
        Wait(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Admit),
            4 => (0usize..8, any::<bool>(), any::<bool>()).prop_map(|(i, f, s)| Step::Finish(i, f, s)),
            1 => (0u64..150).prop_map(Step::Wait),
        ]
    }

    fn breaker_config() -> impl Strategy<Value = BreakerConfig> {
        (1u32..8, 1u32..8, 1u32..=100, 1u32..=100, 1u64..200, 1u32..4).prop_map(
            |(window, min, failure, slow, open_ms, probes)| BreakerConfig {
                enabled: true,
                window,
                min_calls: min.min(window),
                failure_rate_percent: failure,
                slow_call_ms: 1,
                slow_rate_percent: slow,
                open_ms,
                half_open_probes: probes,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn the_machine_behaves_as_the_reference_model(
            config in breaker_config(),
            steps in prop::collection::vec(step(), 1..120),
        ) {
            let mut now = Instant::now();
            let mut machine = Machine::new(config.clone());
            let mut model = Model {
                config,
                state: BreakerState::Closed,
                history: Vec::new(),
                open_until: now,
                probes_out: 0,
                probes_ok: 0,
                epoch: 0,
            };
            let mut out: Vec<(Admission, u64)> = Vec::new();
            for step in steps {
                match step {
                    Step::Admit => {
                        let got = machine.admit(now);
                        let expected = model.admit(now);
                        prop_assert_eq!(got.is_ok(), expected.is_some());
                        if let (Ok(admission), Some(epoch)) = (got, expected) {
                            out.push((admission, epoch));
                        }
                    }
                    Step::Finish(i, failed, slow) if !out.is_empty() => {
                        let (admission, epoch) = out.remove(i % out.len());
                        let outcome = Outcome { failed, slow };
                        machine.record(now, admission, outcome);
                        model.record(now, epoch, outcome);
                    }
                    Step::Finish(..) => {}
                    Step::Wait(ms) => now += Duration::from_millis(ms),
                }
                prop_assert_eq!(machine.state(now), model.state(now));
            }
        }
    }
}
