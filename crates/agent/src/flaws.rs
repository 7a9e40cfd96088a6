//! Deliberate faults the simulator can switch on in the agent (cargo feature `flaws`, enabled
//! only by `pgbaton-sim`), to show its checker catches what each duty of the runtime prevents.
//! Without the feature no switch exists and every check below is a constant `false`.

/// A duty of the agent runtime left undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// Carry out Promote / StartPrimary without checking again, right before, that the lease
    /// is still certainly valid (the agent may have been stopped since it decided).
    NoRecheckBeforePrimary,
    /// Wait for a DCS request as long as `retry_timeout` even when a leader's demotion
    /// deadline comes earlier.
    UncappedDcsTimeout,
    /// Failsafe mode: accept a leader's `POST /failsafe` but decide as if no promise had been
    /// given (race for the leader key, promote).
    FailsafeForgetsPromise,
}

/// The flaws switched on in one agent.
#[derive(Debug, Clone, Default)]
pub(crate) struct Flaws {
    #[cfg(feature = "flaws")]
    on: Vec<Flaw>,
}

impl Flaws {
    #[cfg(feature = "flaws")]
    pub(crate) fn new(on: Vec<Flaw>) -> Self {
        Flaws { on }
    }

    /// Whether `flaw` is switched on (never without the `flaws` feature).
    #[inline]
    pub(crate) fn has(&self, flaw: Flaw) -> bool {
        #[cfg(feature = "flaws")]
        {
            self.on.contains(&flaw)
        }
        #[cfg(not(feature = "flaws"))]
        {
            let _ = flaw;
            false
        }
    }
}
