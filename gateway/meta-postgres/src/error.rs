//! What can go wrong between the gateway and its metadata database.

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

pub type Result<T, E = PgError> = std::result::Result<T, E>;

/// A failed call to the metadata database.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    /// No connection within the connect timeout, or the pool is closed.
    #[error("PostgreSQL connection pool: {0}")]
    Pool(String),
    #[error("PostgreSQL: {}", describe(.0))]
    Db(#[source] tokio_postgres::Error),
    /// The database was migrated by a newer release.
    #[error(
        "the metadata schema is at version {found}, newer than the {known} this build knows: run a release at least as new as the one that migrated it"
    )]
    NewerSchema { found: i32, known: i32 },
    /// Every attempt of a transaction conflicted with others.
    #[error("a metadata transaction conflicted {attempts} times in a row: {last}")]
    Contended { attempts: u32, last: Box<PgError> },
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

impl PgError {
    pub(crate) fn from_pool(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => Self::Db(e),
            other => Self::Pool(other.to_string()),
        }
    }

    /// The database's SQLSTATE, when the database answered with an error.
    pub fn sqlstate(&self) -> Option<&SqlState> {
        match self {
            Self::Db(e) => e.code(),
            _ => None,
        }
    }

    /// A serialization failure or a deadlock: the transaction may be run
    /// again.
    pub fn is_conflict(&self) -> bool {
        self.sqlstate().is_some_and(|c| {
            *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
        })
    }
}

/// The server's message and SQLSTATE, or the client's error and its cause.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}
