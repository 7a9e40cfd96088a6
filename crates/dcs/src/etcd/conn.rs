//! A lazily connected etcd client with a deadline on every call, and the mapping of
//! etcd-client's errors onto `DcsError` (retry later / refused) plus "lease not found",
//! which the adapter handles itself by granting a new lease.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::error::DcsError;
use crate::etcd::access::LoadedAccess;

/// Between two HTTP/2 pings: above etcd's default `--grpc-keepalive-min-time` (5 s), with a
/// margin for timers.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(6);

/// Why one etcd call failed, before the adapter decides what the caller sees.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The lease the request referred to has expired or never existed.
    LeaseNotFound,
    Dcs(DcsError),
}

impl From<DcsError> for Failure {
    fn from(e: DcsError) -> Self {
        Failure::Dcs(e)
    }
}

impl Failure {
    /// For calls that do not involve our lease: "lease not found" is just a refusal.
    pub(crate) fn into_dcs(self) -> DcsError {
        match self {
            Failure::Dcs(e) => e,
            Failure::LeaseNotFound => DcsError::Rejected {
                message: "requested lease not found".to_string(),
            },
        }
    }
}

/// Connection settings shared by request clients and the watch task.
///
/// A client talks to one etcd endpoint at a time and moves to the next one when a call
/// finds it unreachable: handing all endpoints to one balanced client kept picking a dead
/// member after every reconnect (found by the chaos suite: one etcd member down out of three
/// made the leader lose its lease).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub endpoints: Vec<String>,
    pub request_timeout: Duration,
    /// Index (modulo the number of endpoints) of the endpoint in use; shared by the clones.
    pub current: Arc<AtomicUsize>,
    /// TLS and credentials.
    pub access: LoadedAccess,
}

impl Target {
    pub(crate) fn new(endpoints: Vec<String>, request_timeout: Duration) -> Self {
        Target::with_access(endpoints, request_timeout, LoadedAccess::plain())
    }

    pub(crate) fn with_access(
        endpoints: Vec<String>,
        request_timeout: Duration,
        access: LoadedAccess,
    ) -> Self {
        Target {
            endpoints,
            request_timeout,
            current: Arc::new(AtomicUsize::new(0)),
            access,
        }
    }

    /// The endpoint in use.
    fn endpoint(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed) % self.endpoints.len().max(1);
        &self.endpoints[i]
    }

    /// Move to the next endpoint (after a failure).
    pub(crate) fn rotate(&self) {
        if self.endpoints.len() > 1 {
            self.current.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn endpoints_text(&self) -> String {
        self.endpoints.join(",")
    }

    pub(crate) fn unreachable(&self, message: impl Into<String>) -> DcsError {
        let mut message = message.into();
        if let Some(hint) = self.access.unreachable_hint() {
            if !message.contains("TLS:") {
                message = format!("{message} ({hint})");
            }
        }
        DcsError::Unreachable {
            endpoints: self.endpoints_text(),
            message,
        }
    }

    /// Options for a client. `per_request_timeout` must be off for long-lived streams (watch).
    ///
    /// HTTP/2 pings find a dead connection under a long-lived stream (a watch on a
    /// partitioned etcd) within `KEEPALIVE_INTERVAL` + the request timeout. etcd counts a
    /// ping sooner than `--grpc-keepalive-min-time` (5 s by default) after the last one, or
    /// any ping on a connection without a stream, as abuse and closes the connection after
    /// three: so pings go no more often than that, and only while a stream is open.
    pub(crate) fn options(&self, per_request_timeout: bool) -> ConnectOptions {
        let ack = self.request_timeout.max(Duration::from_millis(500));
        let options = self.access.apply(
            ConnectOptions::new()
                .with_connect_timeout(self.request_timeout)
                .with_keep_alive(KEEPALIVE_INTERVAL, ack)
                .with_keep_alive_while_idle(false),
        );
        if per_request_timeout {
            options.with_timeout(self.request_timeout)
        } else {
            options
        }
    }

    /// Connect (lazily on etcd-client's side: this does not wait for etcd).
    pub(crate) async fn connect(&self, per_request_timeout: bool) -> Result<Client, DcsError> {
        if self.endpoints.is_empty() {
            return Err(DcsError::Rejected {
                message: "no etcd endpoint configured; set etcd3.hosts".to_string(),
            });
        }
        let endpoint = [format!("{}://{}", self.access.scheme(), self.endpoint())];
        let connecting = Client::connect(endpoint, Some(self.options(per_request_timeout)));
        match tokio::time::timeout(self.request_timeout, connecting).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(self.classify(e).into_dcs()),
            Err(_) => {
                Err(self.unreachable(format!("no connection within {:?}", self.request_timeout)))
            }
        }
    }

    pub(crate) fn classify(&self, error: etcd_client::Error) -> Failure {
        use etcd_client::Error as E;
        use tonic::Code;
        match error {
            E::GRpcStatus(status) => {
                let message = status.message().to_string();
                match status.code() {
                    Code::NotFound if message.contains("lease not found") => Failure::LeaseNotFound,
                    Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Cancelled
                    | Code::Unknown
                    | Code::Aborted => {
                        Failure::Dcs(self.unreachable(with_tls_hint(format!(
                            "{:?}: {message}",
                            status.code()
                        ))))
                    }
                    Code::InvalidArgument | Code::Unauthenticated | Code::PermissionDenied
                        if message.contains("authentic")
                            || message.contains("permission denied")
                            || message.contains("user") =>
                    {
                        Failure::Dcs(DcsError::Rejected {
                            message: format!("{message} (check etcd3.username and etcd3.password, and the user's role in etcd)"),
                        })
                    }
                    code => Failure::Dcs(DcsError::Rejected {
                        message: format!("{code:?}: {message}"),
                    }),
                }
            }
            E::LeaseKeepAliveError(m) if m.contains("lease not found") => Failure::LeaseNotFound,
            e @ (E::TransportError(_)
            | E::IoError(_)
            | E::LeaseKeepAliveError(_)
            | E::WatchError(_)) => Failure::Dcs(self.unreachable(with_causes(&e))),
            e => Failure::Dcs(DcsError::Rejected {
                message: e.to_string(),
            }),
        }
    }
}

/// An error with its causes: tonic's transport error alone says only "transport error",
/// the cause says which certificate check failed or which connection was refused.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    with_tls_hint(text)
}

/// What to check when a message speaks of certificates.
fn with_tls_hint(mut text: String) -> String {
    let lower = text.to_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") || lower.contains("tls") {
        text.push_str(" (TLS: check etcd3.cacert against the CA that signed etcd's certificate, the certificates' validity dates, and etcd3.cert/key if etcd requires client certificates)");
    }
    text
}

/// The request client of one `EtcdDcs`: connected on first use, dropped and rebuilt after a
/// call finds etcd unreachable.
pub(crate) struct Conn {
    pub target: Target,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub(crate) fn new(target: Target) -> Self {
        Conn {
            target,
            client: Mutex::new(None),
        }
    }

    fn cached(&self) -> Option<Client> {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn store(&self, client: Option<Client>) {
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = client;
    }

    /// Run one etcd request with the request timeout covering connect and answer.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, request: F) -> Result<T, Failure>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let timeout = self.target.request_timeout;
        let attempt = async {
            let client = match self.cached() {
                Some(c) => c,
                None => {
                    let c = self.target.connect(true).await?;
                    self.store(Some(c.clone()));
                    c
                }
            };
            request(client).await.map_err(|e| self.target.classify(e))
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Dcs(
                self.target
                    .unreachable(format!("{what}: no answer within {timeout:?}")),
            )),
        };
        if let Err(Failure::Dcs(DcsError::Unreachable { message, .. })) = &result {
            tracing::debug!(what, %message, "etcd call failed; reconnecting (next endpoint) on next use");
            self.store(None);
            self.target.rotate();
        }
        result
    }
}
