//! The watchdog policy against a simulated device that records every call with its time,
//! played through a leader's life as the agent drives it: race, promote, renewals every
//! second, etcd gone, demotion, a clean stop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgbaton_config::{WatchdogConfig, WatchdogMode};
use pgbaton_core::{HaConfig, WatchdogState};
use tokio::time::Instant;

use super::{Device, Watchdog};

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Arm(u32),
    Keepalive,
    Disarm,
}

/// A device that records calls (with the instant each happened) and fires like a real one:
/// `fired_at` is when its timer would have reset the host.
#[derive(Default)]
struct Log {
    calls: Vec<(Instant, Call)>,
    /// When the timer runs out (while armed).
    due: Option<Instant>,
    timeout: u32,
}

#[derive(Clone)]
struct SimDevice {
    log: Arc<Mutex<Log>>,
    /// The instant the next call happens at (the test's clock).
    clock: Arc<Mutex<Instant>>,
    present: bool,
    /// The timeout the device keeps whatever is asked (a device without WDIOF_SETTIMEOUT).
    fixed_timeout: Option<u32>,
    refuse_timeout: bool,
}

impl SimDevice {
    fn new(start: Instant) -> Self {
        SimDevice {
            log: Default::default(),
            clock: Arc::new(Mutex::new(start)),
            present: true,
            fixed_timeout: None,
            refuse_timeout: false,
        }
    }
    fn now(&self) -> Instant {
        *self.clock.lock().unwrap()
    }
    fn set_now(&self, t: Instant) {
        let log = self.log.lock().unwrap();
        if let Some(due) = log.due {
            assert!(
                t <= due,
                "the simulated watchdog fired (it was due at {due:?})"
            );
        }
        drop(log);
        *self.clock.lock().unwrap() = t;
    }
    fn calls(&self) -> Vec<(Instant, Call)> {
        self.log.lock().unwrap().calls.clone()
    }
    fn due(&self) -> Option<Instant> {
        self.log.lock().unwrap().due
    }
}

impl Device for SimDevice {
    fn describe(&self) -> String {
        "simulated watchdog".into()
    }
    fn probe(&self, _writer: Option<(u32, u32)>) -> Result<(), String> {
        if self.present {
            Ok(())
        } else {
            Err("/dev/watchdog: No such file or directory (os error 2)".into())
        }
    }
    fn arm(&mut self, timeout_s: u32) -> Result<u32, String> {
        if !self.present {
            return Err("cannot open /dev/watchdog: No such file or directory".into());
        }
        if self.refuse_timeout {
            // Opened (recorded), refused the ioctl, closed again by the driver code.
            let now = self.now();
            self.log
                .lock()
                .unwrap()
                .calls
                .push((now, Call::Arm(timeout_s)));
            return Err(format!(
                "the device does not accept a timeout of {timeout_s} s (WDIOC_SETTIMEOUT: Invalid argument)"
            ));
        }
        let now = self.now();
        let mut log = self.log.lock().unwrap();
        log.timeout = self.fixed_timeout.unwrap_or(timeout_s);
        log.due = Some(now + Duration::from_secs(log.timeout.into()));
        log.calls.push((now, Call::Arm(timeout_s)));
        Ok(log.timeout)
    }
    fn keepalive(&mut self) -> Result<(), String> {
        let now = self.now();
        let mut log = self.log.lock().unwrap();
        log.due = Some(now + Duration::from_secs(log.timeout.into()));
        log.calls.push((now, Call::Keepalive));
        Ok(())
    }
    fn disarm(&mut self) -> Result<(), String> {
        let now = self.now();
        let mut log = self.log.lock().unwrap();
        log.due = None;
        log.calls.push((now, Call::Disarm));
        Ok(())
    }
}

/// pgbaton's default timing (ttl 4, loop_wait 1) with safety_margin -1: a 2 s timeout.
fn ha() -> HaConfig {
    HaConfig::with_defaults("node1")
}

fn config(mode: WatchdogMode, safety_margin: i64) -> WatchdogConfig {
    WatchdogConfig {
        mode,
        safety_margin,
        explicit: true,
        ..WatchdogConfig::default()
    }
}

const MS: fn(u64) -> Duration = Duration::from_millis;

#[test]
fn a_leader_arms_before_promoting_feeds_on_renewals_and_starves_without_them() {
    let t0 = Instant::now();
    let dev = SimDevice::new(t0);
    let dog = Watchdog::new(
        &config(WatchdogMode::Required, -1),
        &ha(),
        Box::new(dev.clone()),
        None,
    );
    assert_eq!(dog.state(t0), WatchdogState::Ready);
    assert!(dev.calls().is_empty(), "probing must not open the device");

    // The race was won and acknowledged at t0; the agent arms right before the promotion.
    let renewal = t0;
    let promote_at = t0 + MS(20);
    dev.set_now(promote_at);
    dog.before_primary(promote_at, Some(renewal))
        .expect("armed");
    let calls = dev.calls();
    assert_eq!(calls[0], (promote_at, Call::Arm(2)), "{calls:?}");
    assert!(calls.iter().all(|(at, _)| *at <= promote_at));

    // Renewals every second, each acknowledged 30 ms after it was sent: fed each time, and
    // the deadline the agent acts on follows the device.
    let mut sent = t0;
    for _ in 0..5 {
        sent += MS(1_000);
        let ack = sent + MS(30);
        dev.set_now(ack);
        dog.feed(ack, Some(sent));
        assert_eq!(dev.calls().last(), Some(&(ack, Call::Keepalive)));
        assert_eq!(dog.fires_at(), Some(ack + MS(2_000)));
        assert_eq!(dev.due(), dog.fires_at());
    }
    let fed = dev.calls().len();

    // etcd stops answering: the process still runs (the feeder every 200 ms, the loop) but
    // nothing is confirmed past `sent`. Keepalives go on only while `now + 2 s` stays within
    // the lease `sent` proved (`sent + 4 s`), i.e. until `sent + 2 s`; none after.
    let mut feeds_after = Vec::new();
    for later in (1..=20).map(|i| MS(200 * i)) {
        let now = sent + later;
        dev.set_now(now);
        let before = dev.calls().len();
        dog.feed(now, Some(sent));
        if dev.calls().len() > before {
            feeds_after.push(later);
        }
    }
    assert_eq!(feeds_after.last(), Some(&MS(2_000)), "{feeds_after:?}");
    assert!(dev.calls().len() > fed);
    // The device is due before the lease can expire in etcd (sent + ttl): a frozen agent's
    // host is reset before any other member may take the key.
    let due = dev.due().expect("armed");
    assert!(
        due <= sent + MS(4_000),
        "due {due:?} after the lease expiry"
    );
    // A live agent demotes first (its lease deadline is the earlier of the lease and the
    // device): it stopped PostgreSQL before and disarms with the magic close.
    assert_eq!(dog.fires_at(), Some(due));
    let demoted = sent + MS(3_600);
    *dev.clock.lock().unwrap() = demoted;
    dog.disarm("demoted");
    assert_eq!(dev.calls().last(), Some(&(demoted, Call::Disarm)));
    assert_eq!(dev.due(), None);
    assert_eq!(dog.fires_at(), None);
}

#[test]
fn a_slow_acknowledgement_is_not_enough_to_feed() {
    let t0 = Instant::now();
    let dev = SimDevice::new(t0);
    let dog = Watchdog::new(
        &config(WatchdogMode::Automatic, -1),
        &ha(),
        Box::new(dev.clone()),
        None,
    );
    dog.before_primary(t0, Some(t0)).expect("armed");
    // A renewal sent at t0 + 1 s but acknowledged 2.5 s later: the lease it proves ends at
    // t0 + 5 s, a keepalive at t0 + 3.5 s would let the host live until t0 + 5.5 s.
    let sent = t0 + MS(1_000);
    let ack = sent + MS(2_500);
    // (the simulated device would have fired at t0 + 2 s already; only the policy is checked)
    *dev.clock.lock().unwrap() = ack;
    let before = dev.calls().len();
    dog.feed(ack, Some(sent));
    assert_eq!(dev.calls().len(), before);
}

#[test]
fn a_clean_stop_disarms_and_a_disarmed_device_is_never_fed() {
    let t0 = Instant::now();
    let dev = SimDevice::new(t0);
    let dog = Watchdog::new(
        &config(WatchdogMode::Required, 2),
        &ha(),
        Box::new(dev.clone()),
        None,
    );
    dog.before_primary(t0, Some(t0)).expect("armed");
    dev.set_now(t0 + MS(300));
    dog.disarm("clean shutdown");
    dog.feed(t0 + MS(400), Some(t0 + MS(350)));
    dog.disarm("again");
    let kinds: Vec<Call> = dev.calls().into_iter().map(|(_, c)| c).collect();
    // ttl 4 − safety_margin 2 = 2 s; the arming feeds once (covered by the renewal at t0).
    assert_eq!(kinds, [Call::Arm(2), Call::Keepalive, Call::Disarm]);
}

#[test]
fn required_without_a_device_refuses_and_says_why() {
    let t0 = Instant::now();
    let mut dev = SimDevice::new(t0);
    dev.present = false;
    let dog = Watchdog::new(
        &config(WatchdogMode::Required, -1),
        &ha(),
        Box::new(dev.clone()),
        None,
    );
    let state = dog.state(t0);
    assert!(
        matches!(&state, WatchdogState::Unusable(why) if why.contains("No such file")),
        "{state:?}"
    );
    assert!(dog.failed(t0));
    let err = dog.before_primary(t0, Some(t0)).expect_err("refused");
    assert!(err.contains("No such file"), "{err}");
    assert!(dev.calls().is_empty());
}

#[test]
fn automatic_without_a_device_leads_without_it() {
    let t0 = Instant::now();
    let mut dev = SimDevice::new(t0);
    dev.present = false;
    let dog = Watchdog::new(
        &config(WatchdogMode::Automatic, -1),
        &ha(),
        Box::new(dev.clone()),
        None,
    );
    assert_eq!(dog.state(t0), WatchdogState::NotRequired);
    assert!(!dog.failed(t0));
    dog.before_primary(t0, Some(t0)).expect("leads anyway");
    dog.feed(t0 + MS(100), Some(t0 + MS(90)));
    assert!(dev.calls().is_empty());
    assert_eq!(dog.fires_at(), None);
}

#[test]
fn off_never_touches_the_device() {
    let t0 = Instant::now();
    let dev = SimDevice::new(t0);
    let dog = Watchdog::new(
        &config(WatchdogMode::Off, -1),
        &ha(),
        Box::new(dev.clone()),
        None,
    );
    assert_eq!(dog.state(t0), WatchdogState::NotRequired);
    dog.before_primary(t0, Some(t0)).expect("ok");
    dog.feed(t0, Some(t0));
    dog.disarm("x");
    assert!(dev.calls().is_empty());
}

#[test]
fn a_timeout_the_device_does_not_take_is_said() {
    let t0 = Instant::now();
    // Refused outright.
    let mut dev = SimDevice::new(t0);
    dev.refuse_timeout = true;
    let dog = Watchdog::new(
        &config(WatchdogMode::Required, -1),
        &ha(),
        Box::new(dev.clone()),
        None,
    );
    let err = dog.before_primary(t0, Some(t0)).expect_err("refused");
    assert!(err.contains("does not accept a timeout of 2 s"), "{err}");
    // The failure is remembered: the member reports itself unusable instead of racing again.
    assert!(matches!(
        dog.state(t0 + MS(1_000)),
        WatchdogState::Unusable(_)
    ));
    // Kept a longer timeout than asked (a fixed hardware timer): not safe, disarmed again.
    let mut dev = SimDevice::new(t0);
    dev.fixed_timeout = Some(60);
    let dog = Watchdog::new(
        &config(WatchdogMode::Required, -1),
        &ha(),
        Box::new(dev.clone()),
        None,
    );
    let err = dog
        .before_primary(t0, Some(t0))
        .expect_err("unsafe timeout");
    assert!(err.contains("kept a timeout of 60 s"), "{err}");
    let kinds: Vec<Call> = dev.calls().into_iter().map(|(_, c)| c).collect();
    assert_eq!(kinds, [Call::Arm(2), Call::Disarm]);
}

#[test]
fn ttl_too_short_for_the_safety_margin_is_unusable() {
    let t0 = Instant::now();
    let dev = SimDevice::new(t0);
    // pgbaton's ttl 4 with Patroni's default margin 5: no timeout is left.
    let dog = Watchdog::new(
        &config(WatchdogMode::Required, 5),
        &ha(),
        Box::new(dev.clone()),
        None,
    );
    let state = dog.state(t0);
    assert!(
        matches!(&state, WatchdogState::Unusable(why) if why.contains("safety_margin")),
        "{state:?}"
    );
    // safety_margin 0: nothing could ever feed it in time.
    let dog = Watchdog::new(
        &config(WatchdogMode::Required, 0),
        &ha(),
        Box::new(dev),
        None,
    );
    assert!(matches!(dog.state(t0), WatchdogState::Unusable(_)));
}

#[test]
fn a_failed_arming_is_not_retried_every_cycle() {
    let t0 = Instant::now();
    let mut dev = SimDevice::new(t0);
    dev.refuse_timeout = true;
    let dog = Watchdog::new(
        &config(WatchdogMode::Automatic, -1),
        &ha(),
        Box::new(dev.clone()),
        None,
    );
    // Each cycle of a leader without the device asks again; only the first reaches it.
    for i in 0..5 {
        let now = t0 + MS(1_000 * i);
        dog.before_primary(now, Some(now))
            .expect("automatic leads anyway");
    }
    let kinds: Vec<Call> = dev.calls().into_iter().map(|(_, c)| c).collect();
    assert_eq!(kinds, [Call::Arm(2)]);
    assert_eq!(dog.fires_at(), None);
    // After RETRY_AFTER it is tried again.
    let later = t0 + super::RETRY_AFTER + MS(1);
    dog.before_primary(later, Some(later)).expect("automatic");
    assert_eq!(dev.calls().len(), 2);
}
