//! The usage database: PostgreSQL (`postgres://…`) or a SQLite file, and its migrations.
//!
//! Both migration sets are embedded in the binary by `sqlx::migrate!` (`migrations/postgres`,
//! `migrations/sqlite`; one schema, each in its own dialect) and run by `tollgate-sidecar
//! migrate` and before `serve` listens. Applied migrations are recorded in the database's
//! `_sqlx_migrations` table, so running them again does nothing; a database migrated by a
//! newer sidecar (a version this binary does not know) is refused rather than guessed at.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use tollgate_sidecar::storage::sql::Database;
//!
//! let database = Database::connect(Some("sqlite::memory:")).await.unwrap();
//! assert_eq!(database.migrate().await.unwrap(), 5); // 0001_usage … 0004_registry, 0008_dashboard
//! assert_eq!(database.migrate().await.unwrap(), 0); // up to date
//! # }
//! ```

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection, Pool};

/// The database used when `TOLLGATE_DATABASE_URL` is unset: `tollgate.db` in the working
/// directory, created if missing.
pub const DEFAULT_URL: &str = "sqlite://tollgate.db?mode=rwc";

/// How long connecting may take before the database counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections a pool opens.
const MAX_CONNECTIONS: u32 = 5;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");

/// A connected usage database.
#[derive(Clone, Debug)]
pub enum Database {
    /// PostgreSQL (`postgres://` or `postgresql://`).
    Postgres(PgPool),
    /// A SQLite file (`sqlite://path`, `sqlite:path`, `sqlite::memory:`).
    Sqlite(SqlitePool),
}

/// Why the usage database cannot be used. Messages show the URL without its password.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no database this sidecar supports, or does not parse.
    #[error(
        "{url} is not a usage database URL (postgres://user[:password]@host[:port]/database \
         or sqlite://path): {reason}"
    )]
    InvalidUrl {
        /// The URL, without its password.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database did not accept a connection.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL, without its password.
        url: String,
        /// The driver's reason (refused, timed out, authentication failed, …).
        reason: String,
    },
    /// A migration failed or the database's migrations do not match this sidecar's.
    #[error("cannot migrate the {database} usage database: {reason}")]
    Migrate {
        /// `PostgreSQL` or `SQLite`.
        database: &'static str,
        /// The failure.
        reason: String,
    },
}

impl Database {
    /// Connects to `url` (`None`: [`DEFAULT_URL`]) and checks that it answers, within
    /// [`CONNECT_TIMEOUT`]. A SQLite file is created if missing.
    pub async fn connect(url: Option<&str>) -> Result<Database, DbError> {
        let url = url.unwrap_or(DEFAULT_URL);
        let shown = redact(url);
        let invalid = |reason: String| DbError::InvalidUrl {
            url: shown.clone(),
            reason,
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(|e| invalid(e.to_string()))?;
            check_connection(&shown, options.connect()).await?;
            Ok(Database::Postgres(
                PgPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect_lazy_with(options),
            ))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| invalid(e.to_string()))?
                .create_if_missing(true);
            check_connection(&shown, options.connect()).await?;
            // `sqlite::memory:` is one database per connection: keep a single one.
            let max = if url.contains(":memory:") {
                1
            } else {
                MAX_CONNECTIONS
            };
            Ok(Database::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(max)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect_lazy_with(options),
            ))
        } else {
            Err(invalid(
                "the scheme must be postgres://, postgresql:// or sqlite:".into(),
            ))
        }
    }

    /// Connects to `url` like [`connect`](Self::connect), applies the pending migrations and
    /// logs how many (or that the database was up to date).
    pub async fn open(url: Option<&str>) -> Result<Database, DbError> {
        let database = Database::connect(url).await?;
        let applied = database.migrate().await?;
        let shown = redact(url.unwrap_or(DEFAULT_URL));
        if applied == 0 {
            tracing::info!(database = %shown, "usage database up to date");
        } else {
            tracing::info!(database = %shown, "applied {applied} migration(s) to the usage database");
        }
        Ok(database)
    }

    /// Applies the migrations not applied yet and returns how many were pending (0: up to
    /// date; a sidecar migrating at the same moment may have applied some of them). Safe to
    /// run from several sidecars at once: PostgreSQL runs take turns (an advisory lock),
    /// SQLite runs that collide retry once.
    pub async fn migrate(&self) -> Result<usize, DbError> {
        match self {
            Database::Postgres(pool) => run(pool, &POSTGRES_MIGRATIONS).await,
            Database::Sqlite(pool) => run(pool, &SQLITE_MIGRATIONS).await,
        }
        .map_err(|error| DbError::Migrate {
            database: self.kind(),
            reason: error.to_string(),
        })
    }

    /// `PostgreSQL` or `SQLite`.
    pub fn kind(&self) -> &'static str {
        match self {
            Database::Postgres(_) => "PostgreSQL",
            Database::Sqlite(_) => "SQLite",
        }
    }

    /// Closes every connection (waiting for those in use to be returned).
    pub async fn close(&self) {
        match self {
            Database::Postgres(pool) => pool.close().await,
            Database::Sqlite(pool) => pool.close().await,
        }
    }
}

/// Waits for one connection (at most [`CONNECT_TIMEOUT`]) and closes it: a pool would retry a
/// refused connection until its timeout and then only say that it timed out.
async fn check_connection<C: Connection>(
    shown: &str,
    connecting: impl Future<Output = Result<C, sqlx::Error>>,
) -> Result<(), DbError> {
    let failed = |reason: String| DbError::Connect {
        url: shown.to_owned(),
        reason,
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => Err(failed(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        Ok(Err(error)) => Err(failed(error.to_string())),
        Ok(Ok(connection)) => {
            // Closing politely is a courtesy; the check already succeeded.
            let _ = connection.close().await;
            Ok(())
        }
    }
}

/// Runs `migrator` on `pool`, counting the migrations it had to apply.
async fn run<DB>(pool: &Pool<DB>, migrator: &Migrator) -> Result<usize, MigrateError>
where
    DB: sqlx::Database,
    DB::Connection: Migrate,
{
    let pending = {
        let mut connection = pool.acquire().await?;
        connection.ensure_migrations_table().await?;
        let applied: HashSet<i64> = connection
            .list_applied_migrations()
            .await?
            .into_iter()
            .map(|migration| migration.version)
            .collect();
        migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
            .count()
    };
    // SQLite has no migration lock: sidecars starting on one file can both find a migration
    // pending, and the later one fails on what the first created. Trying again finds it
    // applied (and checks its checksum); with several migrations and several sidecars a retry
    // can collide on the next one, so a few tries, a little apart. A real error fails each time.
    let mut result = migrator.run(pool).await.map(|()| pending);
    for attempt in 1..=RETRIES {
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25 * attempt)).await;
        result = migrator.run(pool).await.map(|()| 0);
    }
    result
}

/// Further attempts of a SQLite migration run that collided with another sidecar's.
const RETRIES: u64 = 5;

/// `url` without its password (the user name stays) and with any `password=` query parameter
/// masked: `postgres://tollgate:secret@db:5432/x` → `postgres://tollgate@db:5432/x`. Text that
/// is not a URL is not shown at all.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // `sqlite:path` and `sqlite::memory:` carry no credentials.
        return if url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            "<not a URL>".to_owned()
        };
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<&str> = query
                .split('&')
                .map(|pair| {
                    let key = pair.split_once('=').map_or(pair, |(key, _)| key);
                    if key.eq_ignore_ascii_case("password") {
                        "password=<redacted>"
                    } else {
                        pair
                    }
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        for (url, shown) in [
            (
                "postgres://tollgate:s3cret@db:5432/x",
                "postgres://tollgate@db:5432/x",
            ),
            ("postgres://tollgate@db/x", "postgres://tollgate@db/x"),
            ("postgresql://db/x", "postgresql://db/x"),
            (
                "postgres://db/x?user=u&password=s3cret&sslmode=disable",
                "postgres://db/x?user=u&password=<redacted>&sslmode=disable",
            ),
            ("postgres://u:p@w@db", "postgres://u@db"),
            (DEFAULT_URL, DEFAULT_URL),
            ("sqlite::memory:", "sqlite::memory:"),
            ("user:s3cret@db", "<not a URL>"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[tokio::test]
    async fn refuses_other_schemes() {
        let error = Database::connect(Some("mysql://root:s3cret@db/x"))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "mysql://root@db/x is not a usage database URL \
             (postgres://user[:password]@host[:port]/database or sqlite://path): \
             the scheme must be postgres://, postgresql:// or sqlite:"
        );
    }

    #[tokio::test]
    async fn in_memory_sqlite_migrates_once() {
        let database = Database::connect(Some("sqlite::memory:")).await.unwrap();
        assert_eq!(database.kind(), "SQLite");
        assert_eq!(database.migrate().await.unwrap(), 5);
        assert_eq!(database.migrate().await.unwrap(), 0);
        database.close().await;
    }
}
