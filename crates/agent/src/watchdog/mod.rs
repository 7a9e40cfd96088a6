//! The host watchdog (`watchdog:` in Patroni's keys): a device that resets the whole host
//! when the agent stops feeding it, so that a leader whose agent (and lease guard) froze is
//! gone before its lease can expire and another member be promoted.
//!
//! [`Watchdog`] is the policy (a handle shared with its feeder task); [`Device`] is the hardware (Linux: [`linux::LinuxDevice`];
//! tests: a simulated one). The agent calls it at four points:
//! - [`Watchdog::state`] for every observation: in `required` mode, whether the device is
//!   usable — the core (`pgbaton_core::watchdog`) never lets the member lead without it;
//! - [`Watchdog::before_primary`] right before it promotes or starts PostgreSQL as a
//!   primary: arms the device (open, `WDIOC_SETTIMEOUT` to the timeout below); in `required`
//!   mode a failure cancels the action and the core gives the key up next cycle;
//! - [`Watchdog::feed`] at every acknowledged lease renewal, and a task every 50 ms while
//!   the device is armed, but only while the lease is confirmed: a keepalive at `now` lets
//!   the host live until `now + timeout`, which must not pass the lease's expiry
//!   (`sent + ttl`, `sent` the send time of the latest acknowledged renewal), so it is sent
//!   only if `now + timeout <= sent + ttl`. A frozen agent (or one whose renewals stop being
//!   acknowledged) gets its host reset by `sent + ttl`: before etcd can expire the lease;
//! - [`Watchdog::disarm`] (magic close) once PostgreSQL no longer runs as a primary: after
//!   a demotion, a switchover, a clean stop, and in maintenance mode.
//!
//! The timeout is Patroni's: `ttl − safety_margin` seconds (`ttl / 2` with a margin of -1),
//! at least 1 s and at least `loop_wait`. While the device is armed a live leader that loses
//! etcd demotes at `sent + ttl − demote_margin − 0.5 s` ([`Watchdog::stop_margin`]: the
//! lease guard stops PostgreSQL); the feeder, which stopped feeding at `sent + ttl −
//! timeout`, disarms the device as soon as the postmaster is gone — before it is due (about
//! `sent + ttl`), without waiting for the HA loop, which may be blocked on the unreachable
//! etcd.

pub mod linux;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgbaton_config::{WatchdogConfig, WatchdogMode};
use pgbaton_core::{HaConfig, WatchdogState};
use tokio::time::Instant;

/// A watchdog device. Arming starts its timer; only `disarm` stops it.
pub trait Device: Send + Sync {
    /// For log lines: what and where the device is.
    fn describe(&self) -> String;
    /// Whether the device can be used without touching it (opening it would start the
    /// timer): it exists and is writable — by `writer` (uid, gid) when given, else by us.
    fn probe(&self, writer: Option<(u32, u32)>) -> Result<(), String>;
    /// Open the device and set its timeout; returns the timeout in force (seconds).
    fn arm(&mut self, timeout_s: u32) -> Result<u32, String>;
    fn keepalive(&mut self) -> Result<(), String>;
    /// Stop the timer and close the device (the magic close).
    fn disarm(&mut self) -> Result<(), String>;
}

/// After a failed arming the device is not tried again for this long (in `required` mode the
/// member reports it unusable meanwhile, so it does not race only to give the key up).
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// The timeout the device is set to, from ttl, loop_wait and safety_margin.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub timeout_s: u32,
    ttl: Duration,
    loop_wait: Duration,
}

impl Timing {
    pub fn new(cfg: &WatchdogConfig, ha: &HaConfig) -> Result<Timing, String> {
        let ttl_s = ha.ttl_ms as f64 / 1000.0;
        let timeout_s = if cfg.safety_margin == -1 {
            (ha.ttl_ms / 2000) as i64
        } else {
            ((ha.ttl_ms as i64) - cfg.safety_margin * 1000).div_euclid(1000)
        };
        if timeout_s < 1 {
            return Err(format!(
                "ttl {ttl_s} s minus watchdog.safety_margin {} s leaves no watchdog timeout (1 s at least): raise ttl or lower safety_margin",
                cfg.safety_margin
            ));
        }
        let timeout_ms = timeout_s as u64 * 1000;
        if timeout_ms < ha.loop_wait_ms {
            return Err(format!(
                "the watchdog timeout {timeout_s} s (ttl − safety_margin) is shorter than loop_wait {} s",
                ha.loop_wait_ms as f64 / 1000.0
            ));
        }
        if ha.ttl_ms.saturating_sub(timeout_ms) < 1000 {
            return Err(format!(
                "watchdog.safety_margin {} leaves no time to feed the watchdog after a lease renewal (use 1 or more, or -1 for ttl/2)",
                cfg.safety_margin
            ));
        }
        Ok(Timing {
            timeout_s: timeout_s as u32,
            ttl: Duration::from_millis(ha.ttl_ms),
            loop_wait: Duration::from_millis(ha.loop_wait_ms),
        })
    }
}

/// The device while it is armed.
#[derive(Debug, Clone, Copy)]
struct Armed {
    /// The timeout the device reported.
    timeout: Duration,
    /// When it fires unless fed again.
    fires_at: Instant,
    /// Which arming this is (the feeder task of an earlier one stops).
    generation: u64,
}

/// The watchdog of one agent (see the module doc): a handle shared with the task that feeds
/// the armed device every [`FEED_EVERY`] while the latest confirmation covers it.
#[derive(Clone)]
pub struct Watchdog {
    policy: Arc<Mutex<Policy>>,
}

/// How often the feeder task looks at an armed device: it feeds it while the lease covers
/// it (a slow HA cycle does not starve it, only an unconfirmed lease or a frozen process
/// does), and disarms it once the lease no longer covers it and PostgreSQL has stopped.
const FEED_EVERY: Duration = Duration::from_millis(50);

/// See [`Watchdog::stop_margin`] (on top of `pgbaton.demote_margin`).
const STOP_MARGIN: Duration = Duration::from_millis(500);

/// Whether PostgreSQL may still run (as the agent's postmaster handle says).
pub type PostgresProbe = Arc<dyn Fn() -> bool + Send + Sync>;

/// The state and rules behind [`Watchdog`].
struct Policy {
    mode: WatchdogMode,
    /// The file has a `watchdog` section; without one the device is used only when
    /// `writer` may write it (Patroni runs as that user and uses what it can open).
    explicit: bool,
    writer: Option<(u32, u32)>,
    device: Box<dyn Device>,
    timing: Result<Timing, String>,
    armed: Option<Armed>,
    /// `required`: the last arming failure and when it happened.
    failed: Option<(Instant, String)>,
    /// `automatic`: the last problem logged (each one once).
    warned: Option<String>,
    /// The send time of the latest renewal (or failsafe round) acknowledged while leading.
    confirmed: Option<Instant>,
    generation: u64,
    /// Lets the feeder disarm as soon as PostgreSQL is gone once the lease ran out, without
    /// waiting for the HA loop (which may be blocked on an unreachable etcd).
    postgres_running: Option<PostgresProbe>,
}

impl Watchdog {
    /// `writer`: the uid and gid PostgreSQL runs as when the agent runs as root.
    pub fn new(
        cfg: &WatchdogConfig,
        ha: &HaConfig,
        device: Box<dyn Device>,
        writer: Option<(u32, u32)>,
    ) -> Watchdog {
        let policy = Policy {
            mode: cfg.mode,
            explicit: cfg.explicit,
            writer: (!cfg.explicit).then_some(writer).flatten(),
            device,
            timing: Timing::new(cfg, ha),
            armed: None,
            failed: None,
            warned: None,
            confirmed: None,
            generation: 0,
            postgres_running: None,
        };
        Watchdog {
            policy: Arc::new(Mutex::new(policy)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Policy> {
        self.policy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The watchdog of an agent's configuration, on the Linux device it names.
    pub fn from_config(cfg: &WatchdogConfig, ha: &HaConfig, run_as: Option<&str>) -> Watchdog {
        let writer = run_as
            .and_then(|name| nix::unistd::User::from_name(name).ok().flatten())
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()));
        let device = Box::new(linux::LinuxDevice::new(&cfg.device));
        let dog = Watchdog::new(cfg, ha, device, writer);
        let policy = dog.lock();
        match (&policy.mode, &policy.timing) {
            (WatchdogMode::Off, _) => tracing::info!("watchdog: mode off"),
            (mode, Ok(t)) => {
                tracing::info!(mode = ?mode, device = %cfg.device.display(), timeout_s = t.timeout_s, "watchdog configured");
            }
            (WatchdogMode::Required, Err(e)) => {
                tracing::error!("watchdog required but unusable: {e}; this member will not lead")
            }
            (WatchdogMode::Automatic, Err(e)) if policy.explicit => {
                tracing::warn!("watchdog not used: {e}")
            }
            (WatchdogMode::Automatic, Err(e)) => tracing::info!("watchdog not used: {e}"),
        }
        drop(policy);
        dog
    }

    /// The observation for the core: only `required` mode makes leading depend on it.
    pub fn state(&self, now: Instant) -> WatchdogState {
        self.lock().state(now)
    }

    /// `GET /patroni` `watchdog_failed` (Patroni: required and not usable).
    pub fn failed(&self, now: Instant) -> bool {
        matches!(self.state(now), WatchdogState::Unusable(_))
    }

    /// When the armed device fires unless fed.
    #[cfg(test)]
    pub fn fires_at(&self) -> Option<Instant> {
        self.lock().armed.map(|a| a.fires_at)
    }

    pub fn is_armed(&self) -> bool {
        self.lock().armed.is_some()
    }

    /// While armed, the leader demotes this much earlier than its lease alone requires: the
    /// device is due when the lease ends, and is disarmed only once PostgreSQL is gone, so
    /// an immediate stop (and the feeder seeing it) must fit in before.
    pub fn stop_margin(&self) -> Duration {
        if self.is_armed() {
            STOP_MARGIN
        } else {
            Duration::ZERO
        }
    }

    /// Arm the device before PostgreSQL may become a writable primary. `Err`: `required`
    /// mode and no usable device — do not promote (the next observation says why).
    /// `confirmed`: the send time of the last renewal etcd acknowledged.
    pub fn before_primary(&self, now: Instant, confirmed: Option<Instant>) -> Result<(), String> {
        let mut policy = self.lock();
        let was = policy.armed.map(|a| a.generation);
        let result = policy.before_primary(now, confirmed);
        let armed_now = policy.armed.map(|a| a.generation);
        drop(policy);
        if let Some(generation) = armed_now.filter(|g| Some(*g) != was) {
            self.spawn_feeder(generation);
        }
        result
    }

    /// A new confirmation (`confirmed`: the send time of the acknowledged renewal): feed now
    /// if armed and covered; the feeder task keeps feeding while it covers the timeout.
    pub fn feed(&self, now: Instant, confirmed: Option<Instant>) {
        self.lock().feed(now, confirmed);
    }

    /// Stop the device (PostgreSQL no longer runs as a primary).
    pub fn disarm(&self, why: &str) {
        self.lock().disarm(why);
    }

    /// Tell the feeder how to see that PostgreSQL is gone (set once by the agent).
    pub fn set_postgres_probe(&self, probe: PostgresProbe) {
        let mut policy = self.lock();
        if policy.postgres_running.is_none() {
            policy.postgres_running = Some(probe);
        }
    }

    /// Feed the device of this arming every [`FEED_EVERY`] (within a tokio runtime; the
    /// agent's loop feeds at every renewal anyway) until it is disarmed.
    fn spawn_feeder(&self, generation: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let policy = Arc::downgrade(&self.policy);
        let span = tracing::Span::current();
        runtime.spawn(tracing::Instrument::instrument(
            async move {
                loop {
                    tokio::time::sleep(FEED_EVERY).await;
                    let Some(policy) = policy.upgrade() else {
                        return;
                    };
                    let mut policy = policy.lock().unwrap_or_else(|p| p.into_inner());
                    if policy.armed.is_none_or(|a| a.generation != generation) {
                        return;
                    }
                    let now = Instant::now();
                    let confirmed = policy.confirmed;
                    if policy.covered(now, confirmed) {
                        policy.feed(now, confirmed);
                    } else if policy
                        .postgres_running
                        .as_ref()
                        .is_some_and(|running| !running())
                    {
                        // The lease ran out and PostgreSQL is stopped (the lease guard stopped
                        // it at ttl − demote_margin): nothing left to guard, before it is due.
                        policy.disarm("PostgreSQL stopped after the lease ran out");
                        return;
                    }
                }
            },
            span,
        ));
    }
}

impl Policy {
    /// The observation for the core: only `required` mode makes leading depend on it.
    fn state(&self, now: Instant) -> WatchdogState {
        if self.mode != WatchdogMode::Required {
            return WatchdogState::NotRequired;
        }
        if self.armed.is_some() {
            return WatchdogState::Ready;
        }
        match self.usable(now) {
            Ok(()) => WatchdogState::Ready,
            Err(why) => WatchdogState::Unusable(why),
        }
    }

    fn usable(&self, now: Instant) -> Result<(), String> {
        self.timing.as_ref().map_err(Clone::clone)?;
        if let Some((at, why)) = &self.failed {
            if now.saturating_duration_since(*at) < RETRY_AFTER {
                return Err(why.clone());
            }
        }
        self.device.probe(self.writer)
    }

    fn before_primary(&mut self, now: Instant, confirmed: Option<Instant>) -> Result<(), String> {
        if self.mode == WatchdogMode::Off {
            return Ok(());
        }
        if self.armed.is_none() {
            // A failure less than RETRY_AFTER ago stands (and keeps its time); else try.
            let recent = self
                .failed
                .as_ref()
                .filter(|(at, _)| now.saturating_duration_since(*at) < RETRY_AFTER);
            let result = match recent {
                Some((_, why)) => Err((why.clone(), false)),
                None => self.try_arm(now).map_err(|why| (why, true)),
            };
            if let Err((why, fresh)) = result {
                if fresh {
                    self.failed = Some((now, why.clone()));
                }
                return match self.mode {
                    WatchdogMode::Required => {
                        if fresh {
                            tracing::error!(
                                "watchdog required but not usable: {why}; not leading (retrying in {} s)",
                                RETRY_AFTER.as_secs()
                            );
                        }
                        Err(why)
                    }
                    _ => {
                        self.note_once(&why);
                        Ok(())
                    }
                };
            }
        }
        self.feed(now, confirmed);
        Ok(())
    }

    fn try_arm(&mut self, now: Instant) -> Result<(), String> {
        self.usable(now)?;
        let timing = self.timing.clone()?;
        let actual = self.device.arm(timing.timeout_s)?;
        let actual_d = Duration::from_secs(actual.into());
        if actual > timing.timeout_s || actual_d < timing.loop_wait {
            let why = format!(
                "{} kept a timeout of {actual} s, not the {} s asked for (ttl − safety_margin, at least loop_wait)",
                self.device.describe(),
                timing.timeout_s
            );
            if let Err(e) = self.device.disarm() {
                tracing::error!("watchdog: {e}");
            }
            return Err(why);
        }
        self.generation += 1;
        self.armed = Some(Armed {
            timeout: actual_d,
            fires_at: now + actual_d,
            generation: self.generation,
        });
        self.failed = None;
        tracing::info!(
            "watchdog armed: {} with a {actual} s timeout (ttl {} s)",
            self.device.describe(),
            timing.ttl.as_secs_f64()
        );
        Ok(())
    }

    fn note_once(&mut self, why: &str) {
        if self.warned.as_deref() == Some(why) {
            return;
        }
        if self.explicit {
            tracing::warn!("watchdog (automatic) not used: {why}; leading without it");
        } else {
            tracing::info!("no watchdog used ({why}); set watchdog.mode to configure one");
        }
        self.warned = Some(why.to_string());
    }

    /// Keepalive if armed and the lease proven by `confirmed` (the send time of the latest
    /// acknowledged renewal) still covers `now + timeout`; otherwise nothing, and the device
    /// fires when it is due — by `confirmed + ttl` at the latest.
    /// Whether the lease `confirmed` proves lasts past `now + timeout`.
    fn covered(&self, now: Instant, confirmed: Option<Instant>) -> bool {
        match (self.armed, &self.timing, confirmed) {
            (Some(armed), Ok(timing), Some(sent)) => now + armed.timeout <= sent + timing.ttl,
            _ => false,
        }
    }

    fn feed(&mut self, now: Instant, confirmed: Option<Instant>) {
        self.confirmed = confirmed.max(self.confirmed);
        let (Some(armed), Ok(timing)) = (self.armed, &self.timing) else {
            return;
        };
        let Some(sent) = confirmed else {
            return;
        };
        if now + armed.timeout > sent + timing.ttl {
            tracing::debug!("watchdog not fed: the lease is not confirmed for its timeout");
            return;
        }
        match self.device.keepalive() {
            Ok(()) => {
                self.armed = Some(Armed {
                    fires_at: now + armed.timeout,
                    ..armed
                })
            }
            Err(e) => tracing::error!(
                "watchdog keepalive failed: {e}; the host may be reset in {} s",
                armed.fires_at.saturating_duration_since(now).as_secs_f64()
            ),
        }
    }

    fn disarm(&mut self, why: &str) {
        self.confirmed = None;
        if self.armed.take().is_none() {
            return;
        }
        match self.device.disarm() {
            Ok(()) => tracing::info!("watchdog disarmed ({why})"),
            Err(e) => tracing::error!("watchdog could not be disarmed ({why}): {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
