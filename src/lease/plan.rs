//! The deadline arithmetic of a mount's upkeep, pure and clock-free: every function takes `now`
//! and a jitter fraction, so tests run with `tokio::time::pause()` or plain instants.
//!
//! A [`Deadline`] follows one thing that expires (the mount's token, a lease): renew it at about
//! two thirds of its TTL; once it cannot be renewed any further (not renewable, or Vault granted
//! less than asked: its max TTL is near) it is *replaced* — a fresh secret fetched — at about
//! two thirds of what is left, well before it expires.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Grace before a replaced generation's token is revoked (and with it the old leases), so the
/// application can pick up the new files. Never longer than what the old lease has left.
pub const MAX_GRACE: Duration = Duration::from_secs(5);

/// How far ahead a deadline with nothing to do (no TTL) is put. An instant, not a `None`: the
/// schedule, a mount's next action and `status`'s `next_action_in_secs` all take one.
const NOTHING_DUE: Duration = Duration::from_secs(365 * 24 * 3600);

/// How far below the asked TTL a renewal may come back and still count as full (Vault rounds).
const SLACK: Duration = Duration::from_secs(2);

/// What to do with an expiring thing when its time comes (`status` and the metrics show it by
/// its lowercase name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Renew it.
    Renew,
    /// It cannot be renewed any further: fetch a fresh one.
    Replace,
}

impl Action {
    /// Its name in `status` and in the metrics' labels.
    pub fn name(self) -> &'static str {
        match self {
            Action::Renew => "renew",
            Action::Replace => "replace",
        }
    }
}

/// One expiring thing and when to act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// When to do `action`.
    pub act_at: Instant,
    /// When it expires; `None` when it does not.
    pub expires_at: Option<Instant>,
    pub action: Action,
}

impl Deadline {
    /// After an issue or a renewal that granted `granted` when `asked` was asked for.
    /// `jitter` in `[0, 1)` spreads the renewals of many mounts over 10% of the TTL.
    pub fn after_grant(
        now: Instant,
        granted: Duration,
        asked: Duration,
        renewable: bool,
        jitter: f64,
    ) -> Deadline {
        // Bounded, so that no hostile TTL can overflow an instant (Vault's are far below).
        let (granted, asked) =
            (granted.min(crate::vault::MAX_TTL), asked.min(crate::vault::MAX_TTL));
        if granted.is_zero() {
            // No TTL: nothing to renew (a root-derived or non-expiring secret).
            return Deadline { act_at: now + NOTHING_DUE, expires_at: None, action: Action::Renew };
        }
        let capped = granted + SLACK < asked;
        Deadline {
            act_at: now + granted.mul_f64(2.0 / 3.0 - 0.1 * jitter.clamp(0.0, 1.0)),
            expires_at: Some(now + granted),
            action: if !renewable || capped { Action::Replace } else { Action::Renew },
        }
    }

    /// For something just issued: like [`Deadline::after_grant`], but its first renewal falls
    /// anywhere between one third and two thirds of its TTL. Mounts made together (a host
    /// starting its containers, a restart, a burst) would otherwise renew together for as long
    /// as they live: within 10% of the TTL, so 2,000 mounts with `ttl=1m` sent 7× their mean
    /// request rate in single seconds. Spread once at the start, their renewals stay spread.
    pub fn after_issue(
        now: Instant,
        granted: Duration,
        asked: Duration,
        renewable: bool,
        jitter: f64,
    ) -> Deadline {
        let d = Deadline::after_grant(now, granted, asked, renewable, 0.0);
        match d.expires_at {
            Some(expires) if renewable && d.action == Action::Renew => {
                let ttl = expires - now;
                Deadline { act_at: now + ttl.mul_f64((1.0 + jitter.clamp(0.0, 1.0)) / 3.0), ..d }
            }
            _ => Deadline::after_grant(now, granted, asked, renewable, jitter),
        }
    }

    /// Whether it has expired at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    /// Time left before it expires, zero when expired, `None` when it does not.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.expires_at.map(|e| e.saturating_duration_since(now))
    }
}

/// What a source needs over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceTimer {
    /// A static secret (KV), re-read at `refresh_at` (never when `refresh` is 0).
    Static { refresh_at: Option<Instant> },
    /// A leased secret.
    Leased(Deadline),
}

/// Every deadline of one mount, and its retry state.
#[derive(Debug, Clone, PartialEq)]
pub struct Timers {
    pub token: Deadline,
    pub sources: Vec<SourceTimer>,
    /// Old tokens to revoke once their grace is over.
    pub retiring: Vec<Instant>,
    /// After a failure: not before this.
    pub retry_at: Option<Instant>,
    /// Since when this mount's upkeep has failed, every attempt (none succeeded since).
    pub failing_since: Option<Instant>,
}

/// What is due at a tick.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Due {
    /// A fresh generation: new token, every source read again, files swapped.
    pub replace: bool,
    pub renew_token: bool,
    /// Indexes of the leased sources to renew.
    pub renew_leases: Vec<usize>,
    /// Re-read the static sources.
    pub refresh: bool,
    /// Revoke the retiring tokens whose grace is over.
    pub retire: bool,
}

impl Due {
    pub fn is_empty(&self) -> bool {
        *self == Due::default()
    }
}

impl Timers {
    /// The earliest instant something is due, not before a pending retry.
    pub fn next(&self) -> Instant {
        let mut next = self.token.act_at;
        for source in &self.sources {
            let at = match source {
                SourceTimer::Static { refresh_at } => *refresh_at,
                SourceTimer::Leased(d) => Some(d.act_at),
            };
            if let Some(at) = at {
                next = next.min(at);
            }
        }
        for at in &self.retiring {
            next = next.min(*at);
        }
        match self.retry_at {
            Some(retry) => next.max(retry),
            None => next,
        }
    }

    /// What is due at `now`.
    pub fn due(&self, now: Instant) -> Due {
        let mut due = Due { retire: self.retiring.iter().any(|at| *at <= now), ..Due::default() };
        let token_due = self.token.act_at <= now;
        if token_due && (self.token.action == Action::Replace || self.token.expired(now)) {
            due.replace = true;
        } else {
            due.renew_token = token_due;
        }
        for (i, source) in self.sources.iter().enumerate() {
            match source {
                SourceTimer::Static { refresh_at } => {
                    due.refresh |= refresh_at.is_some_and(|at| at <= now);
                }
                SourceTimer::Leased(d) if d.act_at <= now => {
                    if d.action == Action::Replace || d.expired(now) {
                        due.replace = true;
                    } else {
                        due.renew_leases.push(i);
                    }
                }
                SourceTimer::Leased(_) => {}
            }
        }
        if due.replace {
            // A fresh generation renews and re-reads everything anyway.
            due.renew_token = false;
            due.renew_leases.clear();
            due.refresh = false;
        }
        due
    }

    /// Records a failure: retry after a jittered backoff, but never later than two thirds of the
    /// way to the nearest expiry.
    ///
    /// The backoff grows with how long this mount has been failing (1 s, then as long again as
    /// it has failed so far: 1, 2, 4, 8 … up to 30 s when each retry waits its full backoff) and
    /// with how long Vault has been failing for every mount (`outage`, up to [`MAX_SPREAD`]): a
    /// mount whose renewal first fails late in a long outage waits about as long as those
    /// failing since its start. Each mount's next retry then falls at a random point of a window
    /// as long as the outage, so a returning Vault sees the renewals held up by it spread over
    /// that window, not all of the most recent failures at once. A mount with something expired
    /// already has nothing to spread over: it keeps its own backoff.
    ///
    /// The backoff follows the time spent failing, not the number of failures: retries brought
    /// forward by a nearing expiry (many, close together, in the last seconds of a short lease)
    /// must not leave a mount whose credentials expired meanwhile waiting out the 30 s step
    /// once Vault is back — it is the mount that most needs Vault.
    pub fn failed(&mut self, now: Instant, outage: Duration, jitter: f64) {
        let failing = now.saturating_duration_since(*self.failing_since.get_or_insert(now));
        let remaining: Vec<Duration> = self
            .sources
            .iter()
            .filter_map(|s| match s {
                SourceTimer::Leased(d) => d.remaining(now),
                SourceTimer::Static { .. } => None,
            })
            .chain(self.token.remaining(now))
            .collect();
        self.retry_at = Some(now + retry_wait(failing, outage, &remaining, jitter));
    }

    /// Clears the failure state after a successful tick.
    pub fn succeeded(&mut self) {
        self.failing_since = None;
        self.retry_at = None;
    }
}

/// The longest wait after a failure that the length of an outage alone brings (see
/// [`Timers::failed`]).
pub const MAX_SPREAD: Duration = Duration::from_secs(120);

/// How long to wait after a failure (see [`Timers::failed`]): the backoff of `failing` (how
/// long this one has been failing) or the outage's spread, whichever is longer, never past two
/// thirds of the nearest of `remaining` (what its token and leases have left; zero: expired).
pub fn retry_wait(
    failing: Duration,
    outage: Duration,
    remaining: &[Duration],
    jitter: f64,
) -> Duration {
    // Something already expired: broken until it is replaced, and there is no margin left to
    // spread over: its own backoff only.
    let spread = if remaining.iter().any(Duration::is_zero) {
        Duration::ZERO
    } else {
        outage.min(MAX_SPREAD).mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
    };
    let wait = failing_backoff(failing, jitter).max(spread);
    match remaining.iter().filter(|r| !r.is_zero()).min() {
        Some(left) => wait.min(left.mul_f64(2.0 / 3.0)).max(Duration::from_millis(200)),
        None => wait,
    }
}

/// The longest backoff of a mount's own failures (see [`Timers::failed`]).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The backoff of a mount that has been failing for `failing`: one second more than that, up to
/// [`MAX_BACKOFF`], shortened by up to half at random. Retries that each wait it out come at 1,
/// 2, 4, 8 … s after the first failure.
pub fn failing_backoff(failing: Duration, jitter: f64) -> Duration {
    (failing + Duration::from_secs(1)).min(MAX_BACKOFF).mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

/// 1 s, 2 s, 4 s … up to 30 s, each shortened by up to half at random.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let base = Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(MAX_BACKOFF);
    base.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

/// The grace before revoking a replaced generation: at most [`MAX_GRACE`], never past the
/// old lease's own expiry.
pub fn grace(old_remaining: Option<Duration>) -> Duration {
    old_remaining.map_or(MAX_GRACE, |r| r.min(MAX_GRACE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_is_shown_by_its_name() {
        for (action, name) in [(Action::Renew, "renew"), (Action::Replace, "replace")] {
            assert_eq!(action.name(), name);
            assert_eq!(serde_json::to_value(action).unwrap(), name);
            assert_eq!(serde_json::from_value::<Action>(name.into()).unwrap(), action);
        }
    }

    #[test]
    fn a_hostile_ttl_cannot_overflow_a_deadline() {
        let now = Instant::now();
        let d = Deadline::after_grant(now, Duration::MAX, Duration::MAX, true, 0.5);
        assert!(d.expires_at.is_some_and(|e| e > now && e <= now + crate::vault::MAX_TTL));
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn timers(now: Instant, token: Deadline, sources: Vec<SourceTimer>) -> Timers {
        let _ = now;
        Timers { token, sources, retiring: vec![], retry_at: None, failing_since: None }
    }

    #[test]
    fn renewal_at_two_thirds_with_jitter_and_replacement_when_capped() {
        let now = Instant::now();
        let d = Deadline::after_grant(now, S(60), S(60), true, 0.0);
        assert_eq!(d.act_at, now + S(40));
        assert_eq!(d.action, Action::Renew);
        let d = Deadline::after_grant(now, S(60), S(60), true, 0.999);
        assert!(d.act_at > now + S(33) && d.act_at < now + S(40));
        let capped = Deadline::after_grant(now, S(3), S(4), true, 0.0);
        assert_eq!(capped.action, Action::Renew, "within the slack");
        let capped = Deadline::after_grant(now, S(1), S(4), true, 0.0);
        assert!(capped.action == Action::Replace && capped.expires_at == Some(now + S(1)));
        assert_eq!(Deadline::after_grant(now, S(4), S(4), false, 0.0).action, Action::Replace);
        let never = Deadline::after_grant(now, Duration::ZERO, S(4), false, 0.0);
        assert_eq!(never.expires_at, None);
        assert_eq!(never.action, Action::Renew);
    }

    #[test]
    fn a_first_renewal_falls_between_a_third_and_two_thirds_of_the_ttl() {
        let now = Instant::now();
        let at = |j| Deadline::after_issue(now, S(60), S(60), true, j).act_at - now;
        assert_eq!(at(0.0), S(20));
        assert!(at(0.5) > S(29) && at(0.5) < S(31));
        assert!(at(0.999) > S(39) && at(0.999) <= S(40));
        assert_eq!(
            Deadline::after_issue(now, S(60), S(60), true, 0.5).expires_at,
            Some(now + S(60))
        );
        // What is replaced rather than renewed keeps its two thirds (less jitter): replacing
        // early costs a fresh secret, not a renewal.
        let capped = Deadline::after_issue(now, S(30), S(60), true, 0.0);
        assert!(capped.action == Action::Replace && capped.act_at == now + S(20));
        let fixed = Deadline::after_issue(now, S(60), S(60), false, 0.0);
        assert!(fixed.action == Action::Replace && fixed.act_at == now + S(40));
        let never = Deadline::after_issue(now, Duration::ZERO, S(60), true, 0.3);
        assert_eq!(never.expires_at, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_renews_then_is_replaced_before_it_expires() {
        let start = Instant::now();
        let token = Deadline::after_grant(start, S(3600), S(3600), true, 0.0);
        let lease = Deadline::after_grant(start, S(4), S(4), true, 0.0);
        let mut t = timers(start, token, vec![SourceTimer::Leased(lease)]);
        assert!(t.due(start).is_empty());
        tokio::time::sleep_until(t.next()).await;
        let now = Instant::now();
        assert_eq!((now - start).as_millis(), 2667, "two thirds of 4 s (tokio rounds to ms)");
        assert_eq!(t.due(now), Due { renew_leases: vec![0], ..Due::default() });
        // Vault grants only 1 s more: the max TTL is near.
        t.sources[0] = SourceTimer::Leased(Deadline::after_grant(now, S(1), S(4), true, 0.0));
        tokio::time::sleep_until(t.next()).await;
        let now = Instant::now();
        assert_eq!(t.due(now), Due { replace: true, ..Due::default() });
        assert!(now < start + S(4), "replaced before the lease expires");
    }

    #[tokio::test(start_paused = true)]
    async fn static_sources_refresh_and_replacement_supersedes_the_rest() {
        let start = Instant::now();
        let token = Deadline::after_grant(start, S(10), S(10), true, 0.0);
        let mut t =
            timers(start, token, vec![SourceTimer::Static { refresh_at: Some(start + S(2)) }]);
        assert_eq!(t.next(), start + S(2));
        tokio::time::advance(S(2)).await;
        assert_eq!(t.due(Instant::now()), Due { refresh: true, ..Due::default() });
        t.token.action = Action::Replace;
        tokio::time::advance(S(10)).await;
        assert_eq!(t.due(Instant::now()), Due { replace: true, ..Due::default() });
        t.retiring.push(start + S(1));
        assert!(t.due(Instant::now()).retire);
        let off = timers(start, token, vec![SourceTimer::Static { refresh_at: None }]);
        assert_eq!(off.next(), token.act_at, "refresh 0 never fires");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_but_not_past_the_nearest_expiry() {
        let start = Instant::now();
        let token = Deadline::after_grant(start, S(3600), S(3600), true, 0.0);
        let lease = Deadline::after_grant(start, S(60), S(60), true, 0.0);
        let mut t = timers(start, token, vec![SourceTimer::Leased(lease)]);
        tokio::time::advance(S(40)).await;
        let mut at = Instant::now();
        let mut waits = vec![];
        for _ in 0..7 {
            t.failed(at, Duration::ZERO, 0.0);
            let retry = t.retry_at.unwrap();
            waits.push(retry - at);
            at = retry;
        }
        assert_eq!(waits[..4], [S(1), S(2), S(4), S(8)]);
        let left = (start + S(60)).saturating_duration_since(at - waits[6]);
        assert!(waits[6] <= left.mul_f64(2.0 / 3.0).max(Duration::from_millis(200)), "{waits:?}");
        assert_eq!(t.next(), t.retry_at.unwrap(), "a due renewal waits for the retry");
        t.succeeded();
        assert_eq!(t.retry_at, None);
        assert_eq!(t.failing_since, None);
    }

    /// A short lease nearing its expiry during an outage brings many retries close together;
    /// once it has expired the mount waits as long as it has been failing, not the longest
    /// backoff those retries would have counted up to.
    #[tokio::test(start_paused = true)]
    async fn retries_near_an_expiry_do_not_lengthen_the_backoff_after_it() {
        let start = Instant::now();
        let token = Deadline::after_grant(start, S(3600), S(3600), true, 0.0);
        let lease = Deadline::after_grant(start, S(4), S(60), true, 0.0);
        let mut t = timers(start, token, vec![SourceTimer::Leased(lease)]);
        let mut at = start + S(2);
        let mut retries = 0;
        while at < start + S(4) {
            t.failed(at, at - start, 0.0);
            at = t.retry_at.unwrap();
            retries += 1;
        }
        assert!(retries >= 4, "retries close together before the expiry: {retries}");
        let expired = start + S(8);
        t.failed(expired, S(8), 0.0);
        assert_eq!(t.retry_at, Some(expired + S(7)), "failing for 6 s: 7 s, not 30 s");
    }

    /// A mount failing for the first time late in an outage waits about as long as the outage
    /// has lasted (not 1 s), never past two thirds of what its lease has left; one whose lease
    /// has expired already retries on its own backoff.
    #[tokio::test(start_paused = true)]
    async fn a_late_first_failure_waits_as_long_as_the_outage() {
        let start = Instant::now();
        let token = Deadline::after_grant(start, S(3600), S(3600), true, 0.0);
        let mut t = timers(start, token, vec![]);
        t.failed(start, S(20), 0.0);
        assert_eq!(t.retry_at, Some(start + S(20)));
        t.failed(start, S(20), 1.0);
        assert_eq!(t.retry_at, Some(start + S(10)), "shortened by up to half");
        t.failed(start, S(3600), 0.0);
        assert_eq!(t.retry_at, Some(start + MAX_SPREAD));
        let lease = Deadline::after_grant(start, S(30), S(30), true, 0.0);
        let mut t = timers(start, token, vec![SourceTimer::Leased(lease)]);
        t.failed(start, S(60), 0.0);
        assert_eq!(t.retry_at, Some(start + S(20)), "two thirds of the 30 s left");
        let expired = start + S(31);
        t.failing_since = None;
        t.failed(expired, S(60), 0.0);
        assert_eq!(t.retry_at, Some(expired + S(1)), "expired: its own backoff only");
    }

    /// 600 mounts whose renewals fall due evenly through a 30 s outage retry as they would
    /// (each with its own jitter, the outage's age as the plugin sees it): once Vault is back,
    /// their first retries are spread over the following seconds, none of which carries more
    /// than twice the mean of those seconds.
    #[test]
    fn retries_after_an_outage_are_spread_over_its_length() {
        let mut rng = fastrand::Rng::with_seed(13);
        let start = Instant::now();
        let outage = S(30);
        let back = start + outage;
        let mut first_after = Vec::new();
        for i in 0..600u32 {
            let token = Deadline::after_grant(start, S(3600), S(3600), true, 0.0);
            let mut t = timers(start, token, vec![]);
            let mut at = start + outage.mul_f64(f64::from(i) / 600.0);
            while at < back {
                t.failed(at, at - start, rng.f64());
                at = t.retry_at.unwrap();
            }
            first_after.push((at - back).as_secs());
        }
        let mut per_second = std::collections::BTreeMap::<u64, usize>::new();
        for s in &first_after {
            *per_second.entry(*s).or_default() += 1;
        }
        let span = *per_second.keys().last().unwrap() + 1;
        let mean = 600.0 / span as f64;
        let peak = *per_second.values().max().unwrap();
        assert!(span >= 20, "the retries come within {span} s of the return: {per_second:?}");
        assert!(peak as f64 <= 2.0 * mean, "{peak} retries in one second: {per_second:?}");
    }

    #[test]
    fn backoff_and_grace() {
        assert_eq!(failing_backoff(Duration::ZERO, 0.0), S(1));
        assert_eq!(failing_backoff(S(3), 0.0), S(4));
        assert_eq!(failing_backoff(S(3), 1.0), S(2));
        assert_eq!(failing_backoff(S(600), 0.0), MAX_BACKOFF);
        assert_eq!(backoff(1, 0.0), S(1));
        assert_eq!(backoff(6, 0.0), S(30));
        assert_eq!(backoff(60, 0.0), S(30));
        assert_eq!(backoff(2, 1.0), S(1));
        assert_eq!(grace(None), MAX_GRACE);
        assert_eq!(grace(Some(S(1))), S(1));
    }
}
