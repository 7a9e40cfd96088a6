//! Shared by the soak and the replay: the configuration of a seed, with the exploration
//! overrides from the environment.

use pgbaton_sim::SimConfig;

pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={s:?} is not a number: {e}")),
        Err(_) => default,
    }
}

/// The configuration of one seed, with the exploration overrides.
pub fn config(seed: u64) -> SimConfig {
    let mut cfg = SimConfig::new(seed);
    if let Ok(rate) = std::env::var("PGBATON_SIM_RATE") {
        cfg.fault_rate = rate
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("PGBATON_SIM_RATE={rate:?}: {e}"));
    }
    cfg.members = env_u64("PGBATON_SIM_MEMBERS", 3) as usize;
    cfg
}
