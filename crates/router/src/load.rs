//! Loading router.yml: the keys read (`config.rs`), then the checks that span keys and the
//! files the configuration names, read now so that a wrong path fails at start (TLS
//! certificates and keys, etcd's client certificates).

use std::path::Path;
use std::time::Duration;

use crate::config::{RouterConfig, TlsMode};
use crate::error::RouterConfigError;
use crate::yaml::invalid;

impl RouterConfig {
    pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<Self, RouterConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| RouterConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml_str(&text)
    }

    /// `from_yaml_file` of a text already read.
    pub fn from_yaml_str(text: &str) -> Result<Self, RouterConfigError> {
        let cfg = Self::parse(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that span keys: `tls: terminate` needs a readable certificate and key in PEM
    /// (they are loaded here), `tls_required` needs a mode that speaks TLS.
    pub fn validate(&self) -> Result<(), RouterConfigError> {
        if self.tls_required && self.tls == TlsMode::Refuse {
            return Err(invalid(
                "tls_required",
                "needs `tls: terminate` (or `passthrough`): with `tls: refuse` no client could connect",
            ));
        }
        if self.tls_cafile.is_some() && self.tls != TlsMode::Terminate {
            return Err(invalid(
                "tls_cafile",
                "needs `tls: terminate`: the router checks client certificates only where it runs TLS itself",
            ));
        }
        if let Some(auth) = &self.auth {
            let credentials = crate::credentials::Credentials::load(auth)?;
            if credentials.use_client_certificates(auth.auth_type) && self.tls_cafile.is_none() {
                return Err(RouterConfigError::Missing {
                    key: "tls_cafile".into(),
                    hint: "the auth rules ask for client certificates (`cert`, `clientcert=`): give the CA that signs them, with `tls: terminate`",
                });
            }
        }
        // The certificate files are read now, so that a wrong path fails at start.
        pgbaton_dcs::EtcdDcs::new(
            self.etcd_hosts.clone(),
            pgbaton_dcs::ClusterPath::new(&self.namespace, &self.scope),
            "pgbaton-router",
            Duration::from_secs(30),
            Duration::from_secs(2),
        )
        .with_access(&self.etcd_access)
        .map_err(|e| invalid("etcd3", &e.to_string()))?;
        crate::tls::rest_roots(self)?;
        crate::tls::acceptor(self).map(|_| ())
    }
}
