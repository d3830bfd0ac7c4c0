//! Circuit breaker for one target: a pure state machine (closed → open → half-open) over an injected clock.
//!
//! # How it is used
//! Before an attempt the caller asks [`Breaker::admit`]. `Allowed` and `Trial` carry a [`Ticket`]; the
//! caller hands that ticket back with the attempt's outcome to [`Breaker::record`] (or to
//! [`Breaker::cancel`] when the outcome says nothing about the target's health: the client went away,
//! the request was the client's fault). A ticket belongs to the *generation* of the breaker that issued
//! it: every state change starts a new generation, and outcomes of older tickets are ignored, so a slow
//! failure from before the breaker opened cannot be taken for the half-open trial's result, and a slow
//! success from before cannot close a breaker that has since re-opened.
//!
//! # Rules
//! - **Closed**: every admission is allowed. Outcomes are counted in a sliding window
//!   ([`BreakerConfig::window`], in 10 buckets). The breaker opens on a failure when either
//!   `failures / (failures + successes) ≥ failure_ratio` with at least `min_requests` outcomes in the
//!   window, or `consecutive_failures` failures came in a row (a run whose last failure is older than
//!   the window starts over; `consecutive_failures = 0` turns this rule off).
//! - **Open**: every admission is rejected at once until the cool-down ends. The first admission after
//!   that moves the breaker to half-open.
//! - **Half-open**: up to `half_open_trials` trial requests are in flight at a time; others are rejected.
//!   One trial success closes the breaker with a fresh window; one trial failure re-opens it.
//! - **Cool-down**: `cooldown × 2^k`, capped at `max_cooldown`, where `k` counts the openings since the
//!   breaker last stayed closed for a whole window (re-opening from half-open, or opening again soon
//!   after closing, doubles it; a healthy window resets it).
//! - **Evidence** ([`Breaker::vouch`]): an answer from the target outside the breaker's tickets (a
//!   probe sent after the breaker opened) ends the cool-down at once: the next admission is a
//!   half-open trial, so a provider that came back is tried within a probe's interval rather than
//!   after a cool-down grown to `max_cooldown`. If the trial it let in fails, such evidence is not
//!   trusted again until the breaker closes (a target that answers probes but fails real requests
//!   gets no more trials than the cool-downs give).
//! - **Forced** ([`Breaker::force`]): forced open rejects everything; forced closed admits everything and
//!   never trips (outcomes are still counted, for the snapshot). Back to automatic from forced open goes
//!   through half-open (trials first); from forced closed it stays closed with the counts kept.
//! - **Lost tickets**: a trial whose ticket is never recorded nor cancelled would hold its slot for
//!   ever; once every slot has been held for `max_cooldown`, the slots are handed out again.
//!
//! The move from open to half-open happens inside `admit` and shows as the first `Trial`; `record` and
//! `force` return the transitions they cause, for logging.

use std::time::Duration;

use tokio::time::Instant;

use super::window::Window;

/// Longest cool-down or window accepted by [`BreakerConfig::validate`].
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// When a breaker opens, for how long, and how it probes.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Failure share over the window that opens the breaker (0 < ratio ≤ 1). Default 0.5.
    pub failure_ratio: f64,
    /// Sliding window the ratio is computed over. Default 10 s.
    pub window: Duration,
    /// Outcomes needed in the window before the ratio rule applies. Default 10.
    pub min_requests: u32,
    /// Failures in a row that open the breaker regardless of volume (0 = rule off). Default 5.
    pub consecutive_failures: u32,
    /// First cool-down. Default 5 s.
    pub cooldown: Duration,
    /// Longest cool-down after repeated openings. Default 60 s.
    pub max_cooldown: Duration,
    /// Trial requests in flight at once while half-open. Default 1.
    pub half_open_trials: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_ratio: 0.5,
            window: Duration::from_secs(10),
            min_requests: 10,
            consecutive_failures: 5,
            cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(60),
            half_open_trials: 1,
        }
    }
}

impl BreakerConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            return Err(format!(
                "failure_ratio must be greater than 0 and at most 1, got {}",
                self.failure_ratio
            ));
        }
        if self.window.is_zero() || self.window > MAX_DURATION {
            return Err(format!(
                "window must be greater than 0 and at most 24h, got {:?}",
                self.window
            ));
        }
        if self.min_requests == 0 {
            return Err("min_requests must be at least 1".to_owned());
        }
        if self.cooldown.is_zero() || self.cooldown > MAX_DURATION {
            return Err(format!(
                "cooldown must be greater than 0 and at most 24h, got {:?}",
                self.cooldown
            ));
        }
        if self.max_cooldown < self.cooldown || self.max_cooldown > MAX_DURATION {
            return Err(format!(
                "max_cooldown must be at least cooldown ({:?}) and at most 24h, got {:?}",
                self.cooldown, self.max_cooldown
            ));
        }
        if self.half_open_trials == 0 {
            return Err("half_open_trials must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// The breaker's state as the request path sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Traffic flows; outcomes are counted.
    Closed,
    /// Traffic is rejected until the cool-down ends.
    Open,
    /// A few trial requests probe the target.
    HalfOpen,
}

impl State {
    /// Lower-case name for logs and the admin API: `closed`, `open`, `half-open`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }
}

/// A manual override set by an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Forced {
    /// Reject everything.
    Open,
    /// Admit everything, never trip.
    Closed,
}

/// A change of state, for logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
}

/// Proof of an admission; hand it back to [`Breaker::record`] or [`Breaker::cancel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    generation: u64,
    trial: bool,
}

impl Ticket {
    /// Whether this admission is a half-open probe.
    pub fn is_trial(&self) -> bool {
        self.trial
    }
}

/// The answer to [`Breaker::admit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead (closed, or forced closed).
    Allowed(Ticket),
    /// Go ahead as a half-open probe.
    Trial(Ticket),
    /// The circuit is open (or half-open with every trial slot taken): skip this target.
    Rejected {
        /// When the breaker left the closed state (kept across re-openings).
        open_since: Instant,
        /// When the current cool-down ends (in the past while half-open).
        until: Instant,
    },
    /// An operator forced the breaker open.
    ForcedOpen {
        /// When it was forced open.
        since: Instant,
    },
}

impl Admission {
    /// The ticket of an admitted request, `None` when rejected.
    pub fn ticket(&self) -> Option<Ticket> {
        match self {
            Admission::Allowed(t) | Admission::Trial(t) => Some(*t),
            Admission::Rejected { .. } | Admission::ForcedOpen { .. } => None,
        }
    }
}

/// What the admin API and the status page show of a breaker.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerSnapshot {
    /// The state in effect (a forced state shows as `Open` or `Closed`).
    pub state: State,
    /// The operator's override, if any.
    pub forced: Option<Forced>,
    /// Failures counted in the window.
    pub failures: u64,
    /// Successes counted in the window.
    pub successes: u64,
    /// Current run of failures in a row.
    pub consecutive_failures: u32,
    /// When the breaker left the closed state, while it is not closed.
    pub open_since: Option<Instant>,
    /// When the current cool-down ends, while open or half-open.
    pub reopen_at: Option<Instant>,
    /// Automatic openings since the breaker was created.
    pub openings: u32,
    /// Cool-down of the current (or most recent) opening.
    pub cooldown: Duration,
    /// Half-open trials in flight.
    pub trials_in_flight: u32,
}

/// The circuit breaker of one target. See the module documentation for the rules.
#[derive(Clone, Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: State,
    forced: Option<Forced>,
    forced_since: Option<Instant>,
    generation: u64,
    /// `a` = failures, `b` = successes.
    window: Window,
    consecutive: u32,
    last_failure_at: Option<Instant>,
    open_since: Option<Instant>,
    reopen_at: Option<Instant>,
    closed_since: Option<Instant>,
    /// Openings since the breaker last stayed closed for a whole window.
    streak: u32,
    openings: u32,
    cooldown: Duration,
    trials_in_flight: u32,
    last_trial_at: Option<Instant>,
    /// When the current (or most recent) automatic opening happened.
    opened_at: Option<Instant>,
    /// The current cool-down was ended early by [`Breaker::vouch`].
    vouched: bool,
    /// A trial let in by `vouch` failed: no more early ends until the breaker closes.
    vouch_failed: bool,
}

impl Breaker {
    /// A closed breaker. `cfg` should have passed [`BreakerConfig::validate`]; out-of-range values are
    /// tolerated (never a panic) but give odd behaviour.
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            window: Window::new(cfg.window),
            cooldown: cfg.cooldown,
            cfg,
            state: State::Closed,
            forced: None,
            forced_since: None,
            generation: 0,
            consecutive: 0,
            last_failure_at: None,
            open_since: None,
            reopen_at: None,
            closed_since: None,
            streak: 0,
            openings: 0,
            trials_in_flight: 0,
            last_trial_at: None,
            opened_at: None,
            vouched: false,
            vouch_failed: false,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// The state in effect (forced states included), without advancing anything.
    pub fn state(&self) -> State {
        match self.forced {
            Some(Forced::Open) => State::Open,
            Some(Forced::Closed) => State::Closed,
            None => self.state,
        }
    }

    /// May a request go to this target now?
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.forced {
            Some(Forced::Open) => {
                return Admission::ForcedOpen {
                    since: self.forced_since.unwrap_or(now),
                };
            }
            Some(Forced::Closed) => return Admission::Allowed(self.ticket(false)),
            None => {}
        }
        match self.state {
            State::Closed => Admission::Allowed(self.ticket(false)),
            State::Open => {
                let until = self.reopen_at.unwrap_or(now);
                if now >= until {
                    self.state = State::HalfOpen;
                    self.new_generation();
                    self.grant_trial(now)
                } else {
                    self.rejected(now)
                }
            }
            State::HalfOpen => {
                let trials = self.cfg.half_open_trials.max(1);
                if self.trials_in_flight >= trials {
                    let held_since = self.last_trial_at.unwrap_or(now);
                    if now.saturating_duration_since(held_since) >= self.cfg.max_cooldown {
                        // Lost tickets: hand the slots out again.
                        self.trials_in_flight = 0;
                    }
                }
                if self.trials_in_flight < trials {
                    self.grant_trial(now)
                } else {
                    self.rejected(now)
                }
            }
        }
    }

    /// Records the outcome of an admitted request. Outcomes of tickets from an earlier generation are
    /// ignored. Returns the state change it caused, if any.
    pub fn record(&mut self, now: Instant, ticket: Ticket, success: bool) -> Option<Transition> {
        if ticket.generation != self.generation {
            return None;
        }
        match self.forced {
            Some(Forced::Closed) => {
                self.count(now, success);
                return None;
            }
            Some(Forced::Open) => return None,
            None => {}
        }
        match self.state {
            State::Closed => {
                self.count(now, success);
                if !success && self.should_open(now) {
                    Some(self.open(now))
                } else {
                    None
                }
            }
            // Opening starts a new generation, so no current ticket exists while open.
            State::Open => None,
            State::HalfOpen => {
                if !ticket.trial {
                    return None;
                }
                self.trials_in_flight = self.trials_in_flight.saturating_sub(1);
                if success {
                    Some(self.close(now))
                } else {
                    self.vouch_failed |= self.vouched;
                    Some(self.open(now))
                }
            }
        }
    }

    /// Gives a ticket back without an outcome (the attempt said nothing about the target's health).
    /// Frees its half-open trial slot, if it held one.
    pub fn cancel(&mut self, ticket: Ticket) {
        if ticket.generation == self.generation && ticket.trial && self.state == State::HalfOpen {
            self.trials_in_flight = self.trials_in_flight.saturating_sub(1);
        }
    }

    /// Evidence from outside the breaker's tickets that the target works: it answered a request
    /// (a probe) sent at `sent`. An automatically opened breaker whose request went out after the
    /// opening ends its cool-down now, so the next admission is a half-open trial. Ignored while
    /// closed, half-open or forced, for a request sent before the opening, and after a trial let in
    /// this way failed (until the breaker closes again). Returns whether the cool-down was ended.
    pub fn vouch(&mut self, now: Instant, sent: Instant) -> bool {
        if self.forced.is_some() || self.state != State::Open || self.vouch_failed {
            return false;
        }
        let (Some(opened), Some(until)) = (self.opened_at, self.reopen_at) else {
            return false;
        };
        if sent < opened || now >= until {
            return false;
        }
        self.reopen_at = Some(now);
        self.vouched = true;
        true
    }

    /// Sets or clears an operator override. Returns the change of the state in effect, if any.
    pub fn force(&mut self, now: Instant, force: Option<Forced>) -> Option<Transition> {
        if force == self.forced {
            return None;
        }
        self.vouched = false;
        self.vouch_failed = false;
        let before = self.state();
        let previous = self.forced;
        self.forced = force;
        self.forced_since = force.map(|_| now);
        self.new_generation();
        match force {
            Some(Forced::Closed) => {
                self.state = State::Closed;
                self.reset_counts();
                self.closed_since = Some(now);
                self.open_since = None;
                self.reopen_at = None;
            }
            Some(Forced::Open) => {
                if self.state == State::Closed {
                    self.open_since = Some(now);
                }
                self.state = State::Open;
                self.reopen_at = None;
            }
            None => {
                if previous == Some(Forced::Open) {
                    // Probe before letting traffic back.
                    self.state = State::HalfOpen;
                    self.open_since.get_or_insert(now);
                    self.reopen_at = Some(now);
                }
            }
        }
        let after = self.state();
        (before != after).then_some(Transition {
            from: before,
            to: after,
        })
    }

    /// The breaker's state and counters as of `now`.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let (failures, successes) = self.window.totals(now);
        let state = self.state();
        BreakerSnapshot {
            state,
            forced: self.forced,
            failures,
            successes,
            consecutive_failures: if self.run_expired(now) {
                0
            } else {
                self.consecutive
            },
            open_since: if state == State::Closed {
                None
            } else {
                self.open_since
            },
            reopen_at: match (self.forced, self.state) {
                (None, State::Open | State::HalfOpen) => self.reopen_at,
                _ => None,
            },
            openings: self.openings,
            cooldown: self.cooldown,
            trials_in_flight: if self.state == State::HalfOpen {
                self.trials_in_flight
            } else {
                0
            },
        }
    }

    fn ticket(&self, trial: bool) -> Ticket {
        Ticket {
            generation: self.generation,
            trial,
        }
    }

    fn grant_trial(&mut self, now: Instant) -> Admission {
        self.trials_in_flight = self.trials_in_flight.saturating_add(1);
        self.last_trial_at = Some(now);
        Admission::Trial(self.ticket(true))
    }

    fn rejected(&self, now: Instant) -> Admission {
        Admission::Rejected {
            open_since: self.open_since.unwrap_or(now),
            until: self.reopen_at.unwrap_or(now),
        }
    }

    fn new_generation(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.trials_in_flight = 0;
    }

    fn reset_counts(&mut self) {
        self.window.clear();
        self.consecutive = 0;
        self.last_failure_at = None;
    }

    fn run_expired(&self, now: Instant) -> bool {
        self.last_failure_at
            .is_some_and(|at| now.saturating_duration_since(at) >= self.cfg.window)
    }

    fn count(&mut self, now: Instant, success: bool) {
        if success {
            self.window.add(now, 0, 1);
            self.consecutive = 0;
        } else {
            self.window.add(now, 1, 0);
            if self.run_expired(now) {
                self.consecutive = 0;
            }
            self.consecutive = self.consecutive.saturating_add(1);
            self.last_failure_at = Some(now);
        }
    }

    fn should_open(&self, now: Instant) -> bool {
        if self.cfg.consecutive_failures > 0 && self.consecutive >= self.cfg.consecutive_failures {
            return true;
        }
        let (failures, successes) = self.window.totals(now);
        let total = failures.saturating_add(successes);
        total >= u64::from(self.cfg.min_requests.max(1))
            && failures as f64 >= self.cfg.failure_ratio * total as f64
    }

    fn open(&mut self, now: Instant) -> Transition {
        let from = self.state;
        if from == State::Closed {
            let healthy = self
                .closed_since
                .is_none_or(|c| now.saturating_duration_since(c) >= self.cfg.window);
            self.streak = if healthy {
                0
            } else {
                self.streak.saturating_add(1)
            };
            self.open_since = Some(now);
        } else {
            self.streak = self.streak.saturating_add(1);
        }
        self.cooldown = self
            .cfg
            .cooldown
            .saturating_mul(1u32 << self.streak.min(31))
            .min(self.cfg.max_cooldown.max(self.cfg.cooldown));
        self.reopen_at = Some(now.checked_add(self.cooldown).unwrap_or(now));
        self.opened_at = Some(now);
        self.vouched = false;
        self.openings = self.openings.saturating_add(1);
        self.state = State::Open;
        self.new_generation();
        Transition {
            from,
            to: State::Open,
        }
    }

    fn close(&mut self, now: Instant) -> Transition {
        let from = self.state;
        self.state = State::Closed;
        self.reset_counts();
        self.closed_since = Some(now);
        self.open_since = None;
        self.reopen_at = None;
        self.vouched = false;
        self.vouch_failed = false;
        self.new_generation();
        Transition {
            from,
            to: State::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Admits and records one outcome at `now`; panics if the request was not admitted.
    fn outcome(b: &mut Breaker, now: Instant, success: bool) -> Option<Transition> {
        let ticket = b.admit(now).ticket().expect("admitted");
        b.record(now, ticket, success)
    }

    /// Opens a default-shaped breaker with `consecutive_failures` failures at `now`.
    fn trip(b: &mut Breaker, now: Instant) {
        for _ in 0..b.config().consecutive_failures {
            outcome(b, now, false);
        }
        assert_eq!(b.state(), State::Open);
    }

    const OPENED: Option<Transition> = Some(Transition {
        from: State::Closed,
        to: State::Open,
    });

    /// Feeds `seq` (`S` success, `F` failure, 1 ms apart) and checks at which index the breaker opens.
    fn check(cfg: BreakerConfig, seq: &str, opens_at: Option<usize>) {
        let t0 = Instant::now();
        let mut b = Breaker::new(cfg);
        let mut opened = None;
        for (i, c) in seq.chars().enumerate() {
            let t = outcome(&mut b, t0 + ms(i as u64), c == 'S');
            if t == OPENED {
                opened = Some(i);
                break;
            }
            assert_eq!(t, None, "{seq}: unexpected transition at {i}");
        }
        assert_eq!(opened, opens_at, "{seq}");
    }

    #[test]
    fn opens_at_exactly_the_threshold() {
        let ratio_only = BreakerConfig {
            consecutive_failures: 0,
            ..BreakerConfig::default()
        };
        let consecutive_only = BreakerConfig {
            min_requests: 1000,
            ..BreakerConfig::default()
        };
        let cases: &[(&BreakerConfig, &str, Option<usize>)] = &[
            // 5 of 10 = 0.5 at exactly the minimum volume.
            (&ratio_only, "SSSSSFFFFF", Some(9)),
            (&ratio_only, "FSFSFSFSFS", None),
            (&ratio_only, "FSFSFSFSFSF", Some(10)),
            (&ratio_only, "SSSSSSFFFF", None),
            // Below the minimum volume nothing opens, even at 100% failures.
            (&ratio_only, "FFFFFFFFF", None),
            (&ratio_only, "FFFFFFFFFF", Some(9)),
            // The ratio is checked on failures only.
            (&ratio_only, "SSSSSSSSSSSSFFFFFFFFFFFF", Some(23)),
            (&consecutive_only, "FFFFF", Some(4)),
            (&consecutive_only, "FFFF", None),
            (&consecutive_only, "FFFFSFFFF", None),
            (&consecutive_only, "FFFFSFFFFF", Some(9)),
        ];
        for (cfg, seq, expected) in cases {
            check((*cfg).clone(), seq, *expected);
        }
    }

    #[test]
    fn rejects_while_open_without_admitting() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        trip(&mut b, t0);
        for t in [t0, t0 + ms(1), t0 + ms(4_999)] {
            assert_eq!(
                b.admit(t),
                Admission::Rejected {
                    open_since: t0,
                    until: t0 + secs(5)
                }
            );
        }
        let s = b.snapshot(t0 + ms(4_999));
        assert_eq!(s.state, State::Open);
        assert_eq!(s.open_since, Some(t0));
        assert_eq!(s.reopen_at, Some(t0 + secs(5)));
        assert_eq!(s.openings, 1);
        assert_eq!(s.trials_in_flight, 0);
    }

    #[test]
    fn half_open_lets_exactly_n_trials() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig {
            half_open_trials: 3,
            ..BreakerConfig::default()
        });
        trip(&mut b, t0);
        let t = t0 + secs(5);
        let trials: Vec<Ticket> = (0..3)
            .map(|_| match b.admit(t) {
                Admission::Trial(ticket) => ticket,
                other => panic!("expected a trial, got {other:?}"),
            })
            .collect();
        assert!(trials.iter().all(Ticket::is_trial));
        assert_eq!(b.state(), State::HalfOpen);
        assert!(matches!(b.admit(t), Admission::Rejected { .. }));
        assert_eq!(b.snapshot(t).trials_in_flight, 3);
        // A cancelled trial frees its slot for exactly one more.
        b.cancel(trials[0]);
        assert!(matches!(b.admit(t), Admission::Trial(_)));
        assert!(matches!(b.admit(t), Admission::Rejected { .. }));
    }

    #[test]
    fn trial_success_closes_with_a_fresh_window() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        outcome(&mut b, t0, true);
        trip(&mut b, t0);
        let t = t0 + secs(5);
        let ticket = b.admit(t).ticket().expect("trial");
        assert_eq!(
            b.record(t, ticket, true),
            Some(Transition {
                from: State::HalfOpen,
                to: State::Closed
            })
        );
        let s = b.snapshot(t);
        assert_eq!(
            (s.state, s.failures, s.successes, s.consecutive_failures),
            (State::Closed, 0, 0, 0)
        );
        assert_eq!((s.open_since, s.reopen_at), (None, None));
        // Old failures do not count towards the next opening.
        for i in 0..4 {
            assert_eq!(outcome(&mut b, t + ms(i), false), None);
        }
        assert!(matches!(b.admit(t + ms(5)), Admission::Allowed(_)));
    }

    #[test]
    fn trial_failure_reopens_with_doubled_cooldown_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        trip(&mut b, t0);
        let mut t = t0;
        let mut cooldowns = vec![b.snapshot(t).cooldown];
        for _ in 0..6 {
            let until = b.snapshot(t).reopen_at.expect("open");
            // Still rejected just before the cool-down ends.
            assert!(matches!(b.admit(until - ms(1)), Admission::Rejected { .. }));
            t = until;
            let ticket = b.admit(t).ticket().expect("trial");
            assert_eq!(
                b.record(t, ticket, false),
                Some(Transition {
                    from: State::HalfOpen,
                    to: State::Open
                })
            );
            assert_eq!(b.snapshot(t).reopen_at, Some(t + b.snapshot(t).cooldown));
            cooldowns.push(b.snapshot(t).cooldown);
        }
        assert_eq!(
            cooldowns,
            [5, 10, 20, 40, 60, 60, 60].map(secs).to_vec(),
            "cool-downs"
        );
        // The outage start is kept across re-openings.
        assert_eq!(b.snapshot(t).open_since, Some(t0));
        assert_eq!(b.snapshot(t).openings, 7);
    }

    /// Trips, fails one trial (cool-down 10 s next), then closes; returns the closing instant.
    fn flap_then_close(b: &mut Breaker, t0: Instant) -> Instant {
        trip(b, t0);
        let t1 = t0 + secs(5);
        let ticket = b.admit(t1).ticket().expect("trial");
        b.record(t1, ticket, false);
        let t2 = t1 + secs(10);
        let ticket = b.admit(t2).ticket().expect("trial");
        b.record(t2, ticket, true);
        assert_eq!(b.state(), State::Closed);
        t2
    }

    #[test]
    fn cooldown_resets_after_a_healthy_window_but_grows_when_flapping() {
        let t0 = Instant::now();
        // Re-opening within a window of closing keeps doubling.
        let mut b = Breaker::new(BreakerConfig::default());
        let closed = flap_then_close(&mut b, t0);
        trip(&mut b, closed + secs(9));
        assert_eq!(b.snapshot(closed + secs(9)).cooldown, secs(20));
        // After a whole window closed, the next opening starts from the base cool-down again.
        let mut b = Breaker::new(BreakerConfig::default());
        let closed = flap_then_close(&mut b, t0);
        trip(&mut b, closed + secs(10));
        assert_eq!(b.snapshot(closed + secs(10)).cooldown, secs(5));
    }

    #[test]
    fn stale_outcomes_do_not_corrupt_the_state() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        // Requests admitted while closed, still in flight when the breaker opens.
        let slow_failure = b.admit(t0).ticket().expect("allowed");
        let slow_success = b.admit(t0).ticket().expect("allowed");
        trip(&mut b, t0);
        // A late success from before the opening does not close it.
        assert_eq!(b.record(t0 + secs(1), slow_success, true), None);
        assert_eq!(b.state(), State::Open);
        // Half-open: a late failure from the closed era is not the trial's result.
        let t = t0 + secs(5);
        let trial = b.admit(t).ticket().expect("trial");
        assert_eq!(b.record(t, slow_failure, false), None);
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.snapshot(t).trials_in_flight, 1);
        // Cancelling a stale ticket frees nothing.
        b.cancel(slow_failure);
        assert_eq!(b.snapshot(t).trials_in_flight, 1);
        // A trial ticket from an earlier half-open round is ignored in a later one.
        assert_eq!(b.record(t, trial, false).map(|tr| tr.to), Some(State::Open));
        let t = t + secs(10);
        let second_trial = b.admit(t).ticket().expect("trial");
        assert_eq!(b.record(t, trial, true), None);
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(
            b.record(t, second_trial, true).map(|tr| tr.to),
            Some(State::Closed)
        );
        // Recording the same ticket twice counts once: the second belongs to an older generation.
        assert_eq!(b.record(t, second_trial, false), None);
        assert_eq!(b.snapshot(t).failures, 0);
    }

    #[test]
    fn forced_open_rejects_everything_and_releases_through_half_open() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        let in_flight = b.admit(t0).ticket().expect("allowed");
        assert_eq!(
            b.force(t0, Some(Forced::Open)),
            Some(Transition {
                from: State::Closed,
                to: State::Open
            })
        );
        assert_eq!(b.force(t0, Some(Forced::Open)), None);
        for t in [t0, t0 + secs(3_600)] {
            assert_eq!(b.admit(t), Admission::ForcedOpen { since: t0 });
        }
        assert_eq!(b.record(t0, in_flight, true), None);
        let s = b.snapshot(t0);
        assert_eq!((s.state, s.forced), (State::Open, Some(Forced::Open)));
        assert_eq!((s.open_since, s.reopen_at), (Some(t0), None));
        // Back to automatic: probe first.
        let t1 = t0 + secs(60);
        assert_eq!(
            b.force(t1, None),
            Some(Transition {
                from: State::Open,
                to: State::HalfOpen
            })
        );
        let trial = b.admit(t1);
        assert!(matches!(trial, Admission::Trial(_)));
        assert!(matches!(b.admit(t1), Admission::Rejected { .. }));
        assert_eq!(
            b.record(t1, trial.ticket().expect("trial"), true)
                .map(|tr| tr.to),
            Some(State::Closed)
        );
        // Forced openings are not automatic openings.
        assert_eq!(b.snapshot(t1).openings, 0);
    }

    #[test]
    fn forced_closed_admits_everything_and_never_trips() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        trip(&mut b, t0);
        assert_eq!(
            b.force(t0, Some(Forced::Closed)),
            Some(Transition {
                from: State::Open,
                to: State::Closed
            })
        );
        for i in 0..100 {
            let a = b.admit(t0 + ms(i));
            assert!(matches!(a, Admission::Allowed(_)), "{a:?}");
            assert_eq!(
                b.record(t0 + ms(i), a.ticket().expect("allowed"), false),
                None
            );
        }
        let s = b.snapshot(t0 + ms(100));
        assert_eq!((s.state, s.forced), (State::Closed, Some(Forced::Closed)));
        assert_eq!((s.failures, s.consecutive_failures), (100, 100));
        // Back to automatic: counts are kept, so the next failure trips it.
        assert_eq!(b.force(t0 + ms(100), None), None);
        assert_eq!(outcome(&mut b, t0 + ms(101), false), OPENED);
    }

    #[test]
    fn the_window_forgets_old_failures() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig {
            consecutive_failures: 0,
            ..BreakerConfig::default()
        });
        for _ in 0..9 {
            outcome(&mut b, t0, false);
        }
        assert_eq!(b.snapshot(t0 + ms(9_999)).failures, 9);
        assert_eq!(b.snapshot(t0 + secs(10)).failures, 0);
        // The tenth failure arrives after the first nine left the window: still closed.
        assert_eq!(outcome(&mut b, t0 + secs(10), false), None);

        // A run of failures older than the window starts over.
        let mut b = Breaker::new(BreakerConfig {
            min_requests: 1000,
            ..BreakerConfig::default()
        });
        for _ in 0..4 {
            outcome(&mut b, t0, false);
        }
        assert_eq!(b.snapshot(t0 + ms(9_999)).consecutive_failures, 4);
        assert_eq!(b.snapshot(t0 + secs(10)).consecutive_failures, 0);
        assert_eq!(outcome(&mut b, t0 + secs(10), false), None);
        assert_eq!(b.snapshot(t0 + secs(10)).consecutive_failures, 1);
    }

    #[test]
    fn lost_trial_tickets_do_not_wedge_half_open() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        trip(&mut b, t0);
        let t = t0 + secs(5);
        assert!(matches!(b.admit(t), Admission::Trial(_))); // never recorded
        assert!(matches!(b.admit(t + secs(59)), Admission::Rejected { .. }));
        assert!(matches!(b.admit(t + secs(60)), Admission::Trial(_)));
    }

    #[test]
    fn an_answer_after_the_opening_ends_the_cooldown_at_once() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        // Grow the cool-down to its cap: 5, 10, 20, 40, 60 s.
        trip(&mut b, t0);
        let mut t = t0;
        for _ in 0..4 {
            t = b.snapshot(t).reopen_at.expect("open");
            let ticket = b.admit(t).ticket().expect("trial");
            b.record(t, ticket, false);
        }
        assert_eq!(b.snapshot(t).cooldown, secs(60));
        let opened = t;
        // Nothing while closed-era evidence, or before the opening.
        assert!(!b.vouch(opened + secs(1), opened - ms(1)));
        assert!(matches!(
            b.admit(opened + secs(1)),
            Admission::Rejected { .. }
        ));
        // A probe sent after the opening answered: the next admission is a trial.
        let now = opened + secs(7);
        assert!(b.vouch(now, opened + secs(6)));
        assert_eq!(b.snapshot(now).reopen_at, Some(now));
        let trial = b.admit(now);
        assert!(matches!(trial, Admission::Trial(_)), "{trial:?}");
        // Nothing to end while half-open.
        assert!(!b.vouch(now, now));
        assert_eq!(
            b.record(now + secs(1), trial.ticket().expect("trial"), true)
                .map(|tr| tr.to),
            Some(State::Closed)
        );
        // Closed: nothing to vouch for.
        assert!(!b.vouch(now + secs(2), now + secs(1)));
    }

    #[test]
    fn a_vouched_trial_that_fails_stops_trusting_evidence_until_closed() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        trip(&mut b, t0);
        assert!(b.vouch(t0 + secs(1), t0));
        let t1 = t0 + secs(1);
        let ticket = b.admit(t1).ticket().expect("trial");
        assert_eq!(
            b.record(t1, ticket, false).map(|tr| tr.to),
            Some(State::Open)
        );
        // The probes say yes, the requests say no: the cool-down (doubled) runs out as usual.
        assert_eq!(b.snapshot(t1).reopen_at, Some(t1 + secs(10)));
        assert!(!b.vouch(t1 + secs(2), t1 + secs(1)));
        assert!(matches!(b.admit(t1 + secs(2)), Admission::Rejected { .. }));
        // A trial at the end of the cool-down closes it; evidence counts again next time.
        let t2 = t1 + secs(10);
        let ticket = b.admit(t2).ticket().expect("trial");
        assert_eq!(
            b.record(t2, ticket, true).map(|tr| tr.to),
            Some(State::Closed)
        );
        let t3 = t2 + secs(60);
        trip(&mut b, t3);
        assert!(b.vouch(t3 + secs(1), t3 + ms(500)));
    }

    #[test]
    fn evidence_does_not_override_an_operator() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        b.force(t0, Some(Forced::Open));
        assert!(!b.vouch(t0 + secs(1), t0 + secs(1)));
        assert_eq!(b.admit(t0 + secs(1)), Admission::ForcedOpen { since: t0 });
    }

    #[test]
    fn validate_names_the_bad_field() {
        assert_eq!(BreakerConfig::default().validate(), Ok(()));
        let d = BreakerConfig::default;
        let cases = [
            (
                BreakerConfig {
                    failure_ratio: 0.0,
                    ..d()
                },
                "failure_ratio",
            ),
            (
                BreakerConfig {
                    failure_ratio: 1.5,
                    ..d()
                },
                "failure_ratio",
            ),
            (
                BreakerConfig {
                    failure_ratio: f64::NAN,
                    ..d()
                },
                "failure_ratio",
            ),
            (
                BreakerConfig {
                    window: Duration::ZERO,
                    ..d()
                },
                "window",
            ),
            (
                BreakerConfig {
                    min_requests: 0,
                    ..d()
                },
                "min_requests",
            ),
            (
                BreakerConfig {
                    cooldown: Duration::ZERO,
                    ..d()
                },
                "cooldown",
            ),
            (
                BreakerConfig {
                    max_cooldown: secs(1),
                    ..d()
                },
                "max_cooldown",
            ),
            (
                BreakerConfig {
                    max_cooldown: secs(100_000),
                    ..d()
                },
                "max_cooldown",
            ),
            (
                BreakerConfig {
                    half_open_trials: 0,
                    ..d()
                },
                "half_open_trials",
            ),
        ];
        for (cfg, field) in cases {
            let err = cfg.validate().expect_err(field);
            assert!(err.starts_with(field), "{err}");
        }
        // Consecutive failures 0 turns the rule off; it is valid.
        assert_eq!(
            BreakerConfig {
                consecutive_failures: 0,
                ..d()
            }
            .validate(),
            Ok(())
        );
    }
}
