//! The timing profiles the benchmarks compare: Patroni's seed settings, pgbaton's defaults
//! (the configuration file says nothing about timing) and the fast profile.

use serde::Serialize;

/// Which ttl / loop_wait / retry_timeout a benchmark cluster runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Patroni's seed settings: ttl 30, loop_wait 10, retry_timeout 10.
    Seed,
    /// pgbaton's defaults: no timing keys in the file (ttl 4, loop_wait 1, retry_timeout 1.5).
    Default,
    /// The fast profile: ttl 2, loop_wait 0.5, retry_timeout 0.5.
    Fast,
    /// ttl 10, loop_wait 2, retry_timeout 3: the tuned Patroni setting the issue compares with.
    Ttl10,
    /// ttl 5, loop_wait 1, retry_timeout 2: the tightest Patroni setting the issue compares with.
    Ttl5,
    /// ttl 3, loop_wait 1, retry_timeout 1: the tightest whole-second timing that keeps
    /// Patroni's rule loop_wait + 2 × retry_timeout <= ttl (Patroni wants integers).
    Ttl3,
}

/// The three timing settings, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Timing {
    pub ttl: f64,
    pub loop_wait: f64,
    pub retry_timeout: f64,
}

impl Profile {
    /// Every profile, in the order summaries list them.
    pub const ALL: [Profile; 6] = [
        Profile::Seed,
        Profile::Ttl10,
        Profile::Ttl5,
        Profile::Ttl3,
        Profile::Default,
        Profile::Fast,
    ];

    /// The timing this profile passes to `pgbaton local up`; None leaves the file silent.
    pub fn explicit_timing(self) -> Option<Timing> {
        match self {
            Profile::Seed => Some(Timing {
                ttl: 30.0,
                loop_wait: 10.0,
                retry_timeout: 10.0,
            }),
            Profile::Default => None,
            Profile::Fast => Some(Timing {
                ttl: 2.0,
                loop_wait: 0.5,
                retry_timeout: 0.5,
            }),
            Profile::Ttl10 => Some(Timing {
                ttl: 10.0,
                loop_wait: 2.0,
                retry_timeout: 3.0,
            }),
            Profile::Ttl5 => Some(Timing {
                ttl: 5.0,
                loop_wait: 1.0,
                retry_timeout: 2.0,
            }),
            Profile::Ttl3 => Some(Timing {
                ttl: 3.0,
                loop_wait: 1.0,
                retry_timeout: 1.0,
            }),
        }
    }

    /// The timing in force (pgbaton's documented defaults when the file is silent).
    pub fn effective_timing(self) -> Timing {
        self.explicit_timing().unwrap_or(Timing {
            ttl: 4.0,
            loop_wait: 1.0,
            retry_timeout: 1.5,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Seed => "seed",
            Profile::Default => "default",
            Profile::Fast => "fast",
            Profile::Ttl10 => "ttl10",
            Profile::Ttl5 => "ttl5",
            Profile::Ttl3 => "ttl3",
        }
    }

    /// "ttl 30 / loop_wait 10 / retry_timeout 10" (with "(file silent)" for the defaults).
    pub fn describe(self) -> String {
        let t = self.effective_timing();
        let silent = if self.explicit_timing().is_none() {
            " (file silent)"
        } else {
            ""
        };
        format!(
            "ttl {} / loop_wait {} / retry_timeout {}{silent}",
            t.ttl, t.loop_wait, t.retry_timeout
        )
    }

    /// Offset of this profile's cluster from `--base-port`, so clusters never share ports.
    pub fn port_offset(self) -> u16 {
        match self {
            Profile::Seed => 0,
            Profile::Default => 40,
            Profile::Fast => 80,
            Profile::Ttl10 => 120,
            Profile::Ttl5 => 160,
            // 200 and 240 are the sync-overhead clusters.
            Profile::Ttl3 => 280,
        }
    }

    /// How long a killed node stays down: long enough that the failover is over before the
    /// supervisor brings it back (2 × ttl + 10 s).
    pub fn restart_delay(self) -> f64 {
        2.0 * self.effective_timing().ttl + 10.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_leaves_timing_to_pgbaton() {
        assert_eq!(Profile::Default.explicit_timing(), None);
        assert_eq!(Profile::Default.effective_timing().ttl, 4.0);
        assert!(Profile::Default.describe().contains("file silent"));
    }

    #[test]
    fn restart_delay_outlasts_the_lease() {
        for p in Profile::ALL {
            let t = p.effective_timing();
            assert!(p.restart_delay() > t.ttl + t.loop_wait + 5.0, "{p:?}");
        }
    }

    #[test]
    fn profiles_use_disjoint_ports() {
        // A local cluster uses 30 ports above its base.
        let mut offsets = Profile::ALL.map(|p| p.port_offset());
        offsets.sort();
        assert!(offsets.windows(2).all(|w| w[1] - w[0] >= 30));
    }
}
