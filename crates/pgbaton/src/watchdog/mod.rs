//! The host watchdog (`watchdog:` in Patroni's keys): a device that resets the whole host
//! when the agent stops feeding it, so that a leader whose agent (and lease guard) froze is
//! gone before its lease can expire and another member be promoted.
//!
//! [`Watchdog`] is the policy; [`Device`] is the hardware (Linux: [`linux::LinuxDevice`];
//! tests: a simulated one). The agent calls it at four points:
//! - [`Watchdog::state`] for every observation: in `required` mode, whether the device is
//!   usable — the core (`pgbaton_core::watchdog`) never lets the member lead without it;
//! - [`Watchdog::before_primary`] right before it promotes or starts PostgreSQL as a
//!   primary: arms the device (open, `WDIOC_SETTIMEOUT` to the timeout below); in `required`
//!   mode a failure cancels the action and the core gives the key up next cycle;
//! - [`Watchdog::feed`] after every acknowledged lease renewal and every cycle while the
//!   member leads, but only when the lease is confirmed: a keepalive at `now` lets the host
//!   live until `now + timeout`, which must not pass the lease's expiry (`sent + ttl`), so it
//!   is sent only if `now + timeout <= sent + ttl`;
//! - [`Watchdog::disarm`] (magic close) once PostgreSQL no longer runs as a primary: after
//!   a demotion, a switchover, a clean shutdown.
//!
//! The timeout is Patroni's: `ttl − safety_margin` seconds (`ttl / 2` with a margin of -1),
//! at least 1 s and at least `loop_wait`. While armed the agent also demotes itself before
//! the device could fire ([`Watchdog::fires_at`] shortens the lease deadline it acts on), so
//! a live agent never gets its host reset for an etcd that answers slowly: only a frozen one.

pub mod linux;

use std::time::Duration;

use pgbaton_config::{WatchdogConfig, WatchdogMode};
use pgbaton_core::{HaConfig, WatchdogState};
use tokio::time::Instant;

/// A watchdog device. Arming starts its timer; only `disarm` stops it.
pub trait Device: Send {
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
    /// Set when renewals may take longer than the watchdog lets the leader wait.
    pub slow_renewal_warning: Option<String>,
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
        let must_renew_within = timeout_ms.saturating_sub(ha.demote_margin_ms);
        let renewal_may_take = ha.renew_interval_ms() + ha.retry_timeout_ms;
        let slow_renewal_warning = (must_renew_within < renewal_may_take).then(|| {
            format!(
                "with the watchdog armed the leader demotes when no renewal was confirmed for {} s, but renewals every {} s bounded by retry_timeout {} s may take {} s: a slow etcd makes it demote (raise ttl or lower safety_margin)",
                must_renew_within as f64 / 1000.0,
                ha.renew_interval_ms() as f64 / 1000.0,
                ha.retry_timeout_ms as f64 / 1000.0,
                renewal_may_take as f64 / 1000.0
            )
        });
        Ok(Timing {
            timeout_s: timeout_s as u32,
            ttl: Duration::from_millis(ha.ttl_ms),
            loop_wait: Duration::from_millis(ha.loop_wait_ms),
            slow_renewal_warning,
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
    /// The confirmation (renewal send time) the last keepalive rested on: each confirmation
    /// feeds once, so a leader that hears nothing more is reset `timeout` after the last one.
    fed_for: Option<Instant>,
}

/// The watchdog policy of one agent (see the module doc).
pub struct Watchdog {
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
}

impl Watchdog {
    /// `writer`: the uid and gid PostgreSQL runs as when the agent runs as root.
    pub fn new(
        cfg: &WatchdogConfig,
        ha: &HaConfig,
        device: Box<dyn Device>,
        writer: Option<(u32, u32)>,
    ) -> Watchdog {
        Watchdog {
            mode: cfg.mode,
            explicit: cfg.explicit,
            writer: (!cfg.explicit).then_some(writer).flatten(),
            device,
            timing: Timing::new(cfg, ha),
            armed: None,
            failed: None,
            warned: None,
        }
    }

    /// The watchdog of an agent's configuration, on the Linux device it names.
    pub fn from_config(cfg: &WatchdogConfig, ha: &HaConfig, run_as: Option<&str>) -> Watchdog {
        let writer = run_as
            .and_then(|name| nix::unistd::User::from_name(name).ok().flatten())
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()));
        let device = Box::new(linux::LinuxDevice::new(&cfg.device));
        let dog = Watchdog::new(cfg, ha, device, writer);
        match (&dog.mode, &dog.timing) {
            (WatchdogMode::Off, _) => tracing::info!("watchdog: mode off"),
            (mode, Ok(t)) => {
                tracing::info!(mode = ?mode, device = %cfg.device.display(), timeout_s = t.timeout_s, "watchdog configured");
                if let Some(w) = &t.slow_renewal_warning {
                    tracing::warn!("watchdog: {w}");
                }
            }
            (WatchdogMode::Required, Err(e)) => {
                tracing::error!("watchdog required but unusable: {e}; this member will not lead")
            }
            (WatchdogMode::Automatic, Err(e)) if dog.explicit => {
                tracing::warn!("watchdog not used: {e}")
            }
            (WatchdogMode::Automatic, Err(e)) => tracing::info!("watchdog not used: {e}"),
        }
        dog
    }

    /// The observation for the core: only `required` mode makes leading depend on it.
    pub fn state(&self, now: Instant) -> WatchdogState {
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

    /// `GET /patroni` `watchdog_failed` (Patroni: required and not usable).
    pub fn failed(&self, now: Instant) -> bool {
        matches!(self.state(now), WatchdogState::Unusable(_))
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

    /// When the armed device fires unless fed: the agent must have demoted before.
    pub fn fires_at(&self) -> Option<Instant> {
        self.armed.map(|a| a.fires_at)
    }

    pub fn is_armed(&self) -> bool {
        self.armed.is_some()
    }

    /// Arm the device before PostgreSQL may become a writable primary. `Err`: `required`
    /// mode and no usable device — do not promote (the next observation says why).
    /// `confirmed`: the send time of the last renewal etcd acknowledged.
    pub fn before_primary(
        &mut self,
        now: Instant,
        confirmed: Option<Instant>,
    ) -> Result<(), String> {
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
        self.armed = Some(Armed {
            timeout: actual_d,
            fires_at: now + actual_d,
            fed_for: None,
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

    /// Keepalive if armed, `confirmed` (the send time of the latest acknowledged renewal) is
    /// newer than the one the last keepalive rested on, and the lease it proves still covers
    /// `now + timeout`; otherwise nothing, and the device fires when it is due.
    pub fn feed(&mut self, now: Instant, confirmed: Option<Instant>) {
        let (Some(armed), Ok(timing)) = (self.armed, &self.timing) else {
            return;
        };
        let Some(sent) = confirmed.filter(|c| armed.fed_for.is_none_or(|f| *c > f)) else {
            return;
        };
        if now + armed.timeout > sent + timing.ttl {
            tracing::debug!("watchdog not fed: the renewal came too late to cover its timeout");
            return;
        }
        match self.device.keepalive() {
            Ok(()) => {
                self.armed = Some(Armed {
                    fires_at: now + armed.timeout,
                    fed_for: Some(sent),
                    ..armed
                })
            }
            Err(e) => tracing::error!(
                "watchdog keepalive failed: {e}; the host may be reset in {} s",
                armed.fires_at.saturating_duration_since(now).as_secs_f64()
            ),
        }
    }

    /// Stop the device (PostgreSQL no longer runs as a primary).
    pub fn disarm(&mut self, why: &str) {
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
