//! Resilience policies as pure state machines: breaker, retry budget, backoff, balancer, response cache.
//!
//! Nothing here does I/O, reads a clock or draws its own randomness: time comes in as `now:
//! tokio::time::Instant` (wall-clock time, where needed, as `SystemTime`), randomness as a
//! `&mut fastrand::Rng`, so every decision can be replayed in a test. Nothing takes a lock either: the
//! request path keeps each piece's state behind its own short-held mutex.
//!
//! # How the request path composes them
//! For each tier of a route, in order:
//! 1. **Choose** a target among the tier's eligible ones (not disabled, breaker not open, bulkhead not
//!    full) with [`pick_weighted`] or [`pick_p2c`] (latency from each target's [`Ewma`]).
//! 2. **Breaker**: [`Breaker::admit`]; a `Rejected`/`ForcedOpen` target is skipped at once, with no
//!    connection and no wait.
//! 3. **Bulkhead**: the caller's per-target in-flight cap (a semaphore; full means skip).
//! 4. **Budget**: a first attempt is counted with [`RetryBudget::record_request`] on the target's and the
//!    gateway-wide budgets; any later attempt of the same request — a retry on the same target or a
//!    fallback to another — needs [`RetryBudget::can_withdraw`] from both, then
//!    [`RetryBudget::withdraw`] from both. No budget: the request stops trying and answers with the
//!    errors so far.
//! 5. **Backoff** between retries on the same target: [`BackoffConfig::next_delay`], replaced by the
//!    provider's [`parse_retry_after`] when given, and only if [`plan_wait`] says it fits before the
//!    deadline (else fall over).
//! 6. **Record** each attempt: [`Breaker::record`] with the admission's ticket (success, or a failure
//!    that is the target's fault) or [`Breaker::cancel`] (client's fault, client gone); the latency into
//!    the target's [`Ewma`].
//! 7. **Cache**: a key from [`CacheKeyer::key`]; [`ResponseCache::get`] before step 1 for `on` routes
//!    (fresh hits only) and after every target failed for `stale-on-error`; [`ResponseCache::insert`]
//!    after a complete success.
//!
//! Classifying errors (retryable, fall over, client's fault) is the server's job, not this module's.

pub mod backoff;
pub mod balance;
pub mod breaker;
pub mod budget;
pub mod cache;
mod window;

pub use backoff::{BackoffConfig, parse_retry_after, plan_wait};
pub use balance::{Ewma, P2cCandidate, pick_p2c, pick_weighted};
pub use breaker::{
    Admission, Breaker, BreakerConfig, BreakerSnapshot, Forced, State, Ticket, Transition,
};
pub use budget::{BudgetSnapshot, RetryBudget, RetryBudgetConfig};
pub use cache::{CacheKeyer, CachedAnswer, Lookup, ResponseCache};

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    /// What a full outage of the primary costs, with the pieces composed as above: a two-tier route
    /// (dead primary → healthy secondary), 50 requests a second for 30 s, each allowed one retry per
    /// target and a fallback. Failures are instant (connection refused), so time only moves between
    /// requests.
    #[test]
    fn full_outage_of_the_primary_costs_it_only_probes() {
        let t0 = Instant::now();
        let mut rng = fastrand::Rng::with_seed(9);
        let backoff = BackoffConfig::default();
        let mut breakers = [
            Breaker::new(BreakerConfig::default()),
            Breaker::new(BreakerConfig::default()),
        ];
        let mut budgets = [
            RetryBudget::new(RetryBudgetConfig::default()),
            RetryBudget::new(RetryBudgetConfig::default()),
        ];
        let mut global = RetryBudget::new(RetryBudgetConfig::default());
        let healthy = [false, true];
        let retries_per_target = 1;
        let (mut requests, mut answered, mut attempts, mut primary_attempts) = (0u32, 0, 0, 0);
        for i in 0..1_500u64 {
            let now = t0 + Duration::from_millis(i * 20);
            requests += 1;
            // The target whose failure the next attempt is charged to; `None` before any attempt.
            let mut failed: Option<usize> = None;
            'targets: for target in 0..2 {
                let mut previous_wait = None;
                for try_no in 0..=retries_per_target {
                    // Skipping an open breaker costs nothing: no attempt, no budget.
                    let Some(ticket) = breakers[target].admit(now).ticket() else {
                        continue 'targets;
                    };
                    match failed {
                        None => {
                            budgets[target].record_request(now);
                            global.record_request(now);
                        }
                        Some(charged) => {
                            if !(budgets[charged].can_withdraw(now) && global.can_withdraw(now)) {
                                breakers[target].cancel(ticket);
                                continue 'targets;
                            }
                            budgets[charged].withdraw(now);
                            global.withdraw(now);
                            if try_no > 0 {
                                previous_wait = Some(backoff.next_delay(previous_wait, &mut rng));
                            }
                        }
                    }
                    attempts += 1;
                    if target == 0 {
                        primary_attempts += 1;
                    }
                    breakers[target].record(now, ticket, healthy[target]);
                    if healthy[target] {
                        answered += 1;
                        break 'targets;
                    }
                    failed = Some(target);
                }
            }
        }
        let end = t0 + Duration::from_secs(30);
        let per_request = f64::from(attempts) / f64::from(requests);
        let primary_per_request = f64::from(primary_attempts) / f64::from(requests);
        println!(
            "outage: {requests} requests, {answered} answered, {attempts} upstream attempts \
             ({per_request:.3}/request), {primary_attempts} at the dead primary \
             ({primary_per_request:.4}/request), primary breaker {:?}; a naive client retrying 5 times \
             with 1 s sleeps: 6 attempts/request at the dead primary and 5 s of waiting",
            breakers[0].snapshot(end)
        );
        assert_eq!(answered, requests, "every request answered by the fallback");
        // The breaker opens after 5 consecutive failures; then only half-open probes reach the primary
        // (at 5 s, then 15 s, then 35 s: the cool-down doubles).
        assert!(primary_attempts <= 10, "{primary_attempts}");
        assert_eq!(breakers[0].snapshot(end).openings, 3);
        assert!(per_request < 1.02, "{per_request}");
        assert_eq!(breakers[1].state(), State::Closed);
    }
}
