//! The dashboard's sign-in state ([`DashboardStore`]): operator-minted links, each usable
//! once, and browser sessions kept as SHA-256 hashes of their cookie tokens
//! (`migrations/*/0008_dashboard.sql`). Times are Unix seconds (UTC).
//!
//! PostgreSQL and SQLite take the same statement texts (`$N` parameters, `RETURNING`), so
//! [`statements`] expands them once per dialect.

mod statements;

use std::future::Future;

use super::Database;

/// Who a session signs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionRole {
    /// One tenant: its own dashboard only.
    Tenant(String),
    /// The operator (admin token): the overview of every tenant.
    Operator,
}

/// A live session as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Who it signs in.
    pub role: SessionRole,
    /// Created.
    pub created_at: u64,
    /// Ends.
    pub expires_at: u64,
}

/// What using a link found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkUse {
    /// The link was live and is now used: its tenant.
    Signed(String),
    /// It was used before.
    AlreadyUsed,
    /// It expired unused.
    Expired,
    /// No such link.
    Unknown,
}

/// The dashboard's tables.
pub trait DashboardStore: Send + Sync + 'static {
    /// Records a new link `link_id` for `tenant`, live until `expires_at`.
    fn insert_link(
        &self,
        link_id: &str,
        tenant: &str,
        now: u64,
        expires_at: u64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Uses link `link_id` at `now`: exactly one caller ever gets [`LinkUse::Signed`], and
    /// only before the link expires.
    fn use_link(
        &self,
        link_id: &str,
        now: u64,
    ) -> impl Future<Output = Result<LinkUse, sqlx::Error>> + Send;

    /// Records a session whose token hashes to `sha256`.
    fn insert_session(
        &self,
        sha256: &str,
        role: &SessionRole,
        now: u64,
        expires_at: u64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// The session whose token hashes to `sha256`, if it is live at `now`.
    fn session(
        &self,
        sha256: &str,
        now: u64,
    ) -> impl Future<Output = Result<Option<SessionRecord>, sqlx::Error>> + Send;

    /// Ends the session whose token hashes to `sha256` (`false`: there was none).
    fn delete_session(
        &self,
        sha256: &str,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

    /// Forgets sessions ended by `now` and links expired a day before `now` (used or not;
    /// kept that long so a late second use is told "already used"). Returns the rows deleted.
    fn purge(&self, now: u64) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
}

mod postgres {
    super::statements::dashboard_statements!(sqlx::Postgres);
}

mod sqlite {
    super::statements::dashboard_statements!(sqlx::Sqlite);
}

macro_rules! by_database {
    ($database:expr, $function:ident ( $($arg:expr),* )) => {
        match $database {
            Database::Postgres(pool) => postgres::$function(pool, $($arg),*).await,
            Database::Sqlite(pool) => sqlite::$function(pool, $($arg),*).await,
        }
    };
}

impl DashboardStore for Database {
    async fn insert_link(
        &self,
        link_id: &str,
        tenant: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<(), sqlx::Error> {
        by_database!(self, insert_link(link_id, tenant, now, expires_at))
    }

    async fn use_link(&self, link_id: &str, now: u64) -> Result<LinkUse, sqlx::Error> {
        by_database!(self, use_link(link_id, now))
    }

    async fn insert_session(
        &self,
        sha256: &str,
        role: &SessionRole,
        now: u64,
        expires_at: u64,
    ) -> Result<(), sqlx::Error> {
        by_database!(self, insert_session(sha256, role, now, expires_at))
    }

    async fn session(&self, sha256: &str, now: u64) -> Result<Option<SessionRecord>, sqlx::Error> {
        by_database!(self, session(sha256, now))
    }

    async fn delete_session(&self, sha256: &str) -> Result<bool, sqlx::Error> {
        by_database!(self, delete_session(sha256))
    }

    async fn purge(&self, now: u64) -> Result<u64, sqlx::Error> {
        by_database!(self, purge(now))
    }
}
