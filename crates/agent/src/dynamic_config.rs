//! The dynamic configuration (the DCS `config` key) put in force when the core decides it
//! (`AgentAction::ApplyDynamicConfig`, once per revision of the key).

use pgbaton_config::DynamicConfig;
use pgbaton_dcs::Dcs;

use super::{settings, Agent};
use crate::peers::Peers;
use crate::ports::{Host, Postgres};

impl<D: Dcs, P: Peers, G: Postgres, H: Host> Agent<D, P, G, H> {
    /// `AgentAction::ApplyDynamicConfig`: the `config` key of this cycle's read in force (it wins
    /// over `bootstrap.dcs` once the cluster exists).
    pub(super) fn apply_dynamic_config(&mut self) {
        let Some(config) = self.cluster.as_ref().and_then(|c| c.config.as_ref()) else {
            return;
        };
        match DynamicConfig::from_dcs_json(&config.value, &self.cfg.bootstrap.dcs) {
            Ok(loaded) => {
                if loaded.value != self.dynamic {
                    tracing::info!("dynamic configuration changed in the DCS");
                    if settings::pg_parameters(&self.cfg, &loaded.value)
                        != settings::pg_parameters(&self.cfg, &self.dynamic)
                    {
                        self.parameters_changed = true;
                    }
                    self.dynamic = loaded.value;
                    self.ha = settings::ha_config(&self.cfg, &self.dynamic);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "ignoring invalid dynamic configuration in the DCS")
            }
        }
    }
}
