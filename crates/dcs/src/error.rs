//! The errors every DCS operation can return, sorted by what the caller should do:
//! retry later (`Unreachable`), repair the stored value (`Corrupt`), or look at the request
//! (`Rejected`).

/// Why a DCS operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DcsError {
    /// etcd could not be reached or did not answer in time: retry later.
    #[error("etcd unreachable at {endpoints}: {message}")]
    Unreachable { endpoints: String, message: String },
    /// A stored value is not what pgbaton/Patroni writes there.
    #[error("DCS key {key} holds an invalid value: {message}")]
    Corrupt { key: String, message: String },
    /// etcd answered but refused the request.
    #[error("etcd refused the request: {message}")]
    Rejected { message: String },
}

impl DcsError {
    /// True when retrying later may succeed (etcd down, slow or electing a leader).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DcsError::Unreachable { .. })
    }
}
