//! `watchdog:` in Patroni's keys: mode, device, safety_margin, their defaults and bad values.

use std::path::Path;

use pgbaton_config::{parse_str, WatchdogMode};

const FILE: &str = "/etc/pgbaton.yml";
const MINIMAL: &str = "scope: demo\nname: m1\npostgresql:\n  data_dir: /d\n";

#[test]
fn defaults_follow_patroni() {
    let cfg = parse_str(MINIMAL, FILE).expect("loads").value;
    assert_eq!(cfg.watchdog.mode, WatchdogMode::Automatic);
    assert_eq!(cfg.watchdog.device, Path::new("/dev/watchdog"));
    assert_eq!(cfg.watchdog.safety_margin, 5);
    assert!(!cfg.watchdog.explicit);
}

#[test]
fn modes_devices_and_margins() {
    for (mode, want) in [
        ("off", WatchdogMode::Off),
        ("'off'", WatchdogMode::Off),
        ("false", WatchdogMode::Off),
        ("disabled", WatchdogMode::Off),
        ("automatic", WatchdogMode::Automatic),
        ("auto", WatchdogMode::Automatic),
        ("required", WatchdogMode::Required),
        ("require", WatchdogMode::Required),
    ] {
        let text = format!(
            "{MINIMAL}watchdog:\n  mode: {mode}\n  device: /dev/watchdog1\n  safety_margin: -1\n"
        );
        let loaded = parse_str(&text, FILE).expect("loads");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let w = loaded.value.watchdog;
        assert_eq!(w.mode, want, "mode: {mode}");
        assert_eq!(w.device, Path::new("/dev/watchdog1"));
        assert_eq!(w.safety_margin, -1);
        assert!(w.explicit);
    }
}

#[test]
fn bad_values_name_the_key() {
    let err = parse_str(&format!("{MINIMAL}watchdog:\n  mode: sometimes\n"), FILE)
        .expect_err("bad mode")
        .to_string();
    assert!(
        err.contains("watchdog.mode") && err.contains("expected off, automatic or required"),
        "{err}"
    );
    let err = parse_str(&format!("{MINIMAL}watchdog:\n  safety_margin: -2\n"), FILE)
        .expect_err("bad margin")
        .to_string();
    assert!(err.contains("watchdog.safety_margin"), "{err}");
    let loaded =
        parse_str(&format!("{MINIMAL}watchdog:\n  devise: /dev/x\n"), FILE).expect("loads");
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("watchdog.devise") && w.contains("device")),
        "{warnings:?}"
    );
}
