//! What a use case can answer besides success: a refusal the caller can act on, or an
//! infrastructure failure. HTTP crates map these to their own envelopes.

use tollgate_core::ledger::InsufficientCredit;
use tollgate_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The named thing does not exist (or is not visible to the caller).
    #[error("{0}")]
    NotFound(String),
    /// The input is wrong; the message says how.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    InsufficientCredit(#[from] InsufficientCredit),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<E: Into<ServiceError>> From<tollgate_store::TxError<E>> for ServiceError {
    fn from(error: tollgate_store::TxError<E>) -> ServiceError {
        match error {
            tollgate_store::TxError::Rejected(rejection) => rejection.into(),
            tollgate_store::TxError::Store(store) => ServiceError::Store(store),
        }
    }
}

impl From<tollgate_store::NameTaken> for ServiceError {
    fn from(taken: tollgate_store::NameTaken) -> ServiceError {
        ServiceError::Invalid(taken.to_string())
    }
}

impl From<tollgate_store::GrantRejection> for ServiceError {
    fn from(rejection: tollgate_store::GrantRejection) -> ServiceError {
        ServiceError::Invalid(rejection.to_string())
    }
}
