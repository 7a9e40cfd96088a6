//! The etcd3 section of a member configuration as the DCS adapter takes it: TLS files and
//! etcd's own credentials.

use pgbaton_config::DcsConfig;
use pgbaton_dcs::{EtcdAccess, EtcdTls};

pub fn from_config(dcs: &DcsConfig) -> EtcdAccess {
    EtcdAccess {
        tls: dcs.https.then(|| EtcdTls {
            cacert: dcs.cacert.as_ref().map(Into::into),
            cert: dcs.cert.as_ref().map(Into::into),
            key: dcs.key.as_ref().map(Into::into),
        }),
        user: dcs
            .username
            .clone()
            .map(|user| (user, dcs.password.clone().unwrap_or_default())),
    }
}
