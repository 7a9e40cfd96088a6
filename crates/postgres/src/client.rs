//! SQL connections to the local server: tokio-postgres over the unix socket in `socket_dir`,
//! as the superuser, every call bounded by a timeout.

use std::future::Future;
use std::time::Duration;
use tracing::Instrument;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::error::PgError;
use crate::run::absolute;
use crate::spec::{Credentials, PgSpec};

/// Runs `fut`, failing with Timeout after `timeout`.
pub(crate) async fn bounded<T, F>(what: &str, timeout: Duration, fut: F) -> Result<T, PgError>
where
    F: Future<Output = Result<T, PgError>>,
{
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(PgError::Timeout {
                what: what.to_string(),
                after: timeout,
            })
        })
}

fn local_config(spec: &PgSpec, timeout: Duration) -> Result<Config, PgError> {
    let mut config = credentials_config(&spec.superuser);
    config
        .host_path(absolute(&spec.socket_dir)?)
        .port(spec.port)
        .connect_timeout(timeout);
    Ok(config)
}

pub(crate) fn credentials_config(credentials: &Credentials) -> Config {
    let mut config = Config::new();
    config
        .user(&credentials.username)
        .dbname("postgres")
        .application_name("pgbaton");
    if let Some(password) = &credentials.password {
        config.password(password);
    }
    config
}

/// Connects with `config` and spawns the connection task.
pub(crate) async fn connect_with(config: &Config, timeout: Duration) -> Result<Client, PgError> {
    let connect = async {
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| PgError::query("connecting to PostgreSQL", e))?;
        tokio::spawn(
            async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "PostgreSQL connection ended");
                }
            }
            .in_current_span(),
        );
        Ok(client)
    };
    bounded("connecting to PostgreSQL", timeout, connect).await
}

/// A superuser connection to the local server through its unix socket.
pub async fn connect(spec: &PgSpec, timeout: Duration) -> Result<Client, PgError> {
    connect_with(&local_config(spec, timeout)?, timeout).await
}

/// The same, to `database` instead of `postgres`.
pub async fn connect_database(
    spec: &PgSpec,
    database: &str,
    timeout: Duration,
) -> Result<Client, PgError> {
    let mut config = local_config(spec, timeout)?;
    config.dbname(database);
    connect_with(&config, timeout).await
}

/// What a connection attempt says about the postmaster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// It accepts connections (even if it rejected ours for another reason, e.g. password).
    Accepting,
    /// Not listening yet, starting up, or in a state that refuses connections.
    NotYet,
}

pub(crate) async fn probe(spec: &PgSpec, timeout: Duration) -> Probe {
    let config = match local_config(spec, timeout) {
        Ok(config) => config,
        Err(_) => return Probe::NotYet,
    };
    match connect_with(&config, timeout).await {
        Ok(_) => Probe::Accepting,
        Err(PgError::Query { source, .. }) => match source.code() {
            Some(code) if *code == SqlState::CANNOT_CONNECT_NOW => Probe::NotYet,
            Some(code) => {
                tracing::warn!(sqlstate = code.code(), error = %source, "postgres accepts connections but refused ours");
                Probe::Accepting
            }
            None => Probe::NotYet,
        },
        Err(_) => Probe::NotYet,
    }
}
