//! Error type of the registry crate.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Registry errors. Backend errors are carried as text so that no backend crate type leaks into
/// the public API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry URL could not be parsed or names an unknown scheme.
    #[error("invalid registry url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A registry option given in code is invalid or unusable (e.g. a TLS file cannot be read).
    #[error("invalid registry configuration: {0}")]
    InvalidConfig(String),
    /// The URL names a backend whose cargo feature is not enabled.
    #[error("registry backend {0:?} is not compiled in (enable the cargo feature `{0}`)")]
    FeatureDisabled(&'static str),
    /// The instance lacks a required field or has an invalid one.
    #[error("invalid service instance: {0}")]
    InvalidInstance(String),
    /// The query is invalid (e.g. an empty service name).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// The backend does not support the operation (e.g. `register` on `static://`).
    #[error("unsupported by this registry: {0}")]
    Unsupported(String),
    /// The backend could not be reached in time.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with an error.
    #[error("registry backend error: {0}")]
    Backend(String),
    /// A stored value is not valid JSON of a [`ServiceInstance`](crate::ServiceInstance).
    #[error("invalid stored instance: {0}")]
    Codec(#[from] serde_json::Error),
    /// The registration or registry has been shut down.
    #[error("registry closed")]
    Closed,
}
