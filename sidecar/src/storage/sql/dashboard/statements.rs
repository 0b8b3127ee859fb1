//! The dashboard's statements, one text for both dialects (see [`super`]).

/// Expands the dashboard's functions for the database `$db`.
macro_rules! dashboard_statements {
    ($db:ty) => {
        type Pool = sqlx::Pool<$db>;
        use sqlx::Row as _;

        use crate::storage::sql::dashboard::{LinkUse, SessionRecord, SessionRole};
        use crate::storage::sql::registry::{signed, unsigned};

        /// Links expired this long ago are forgotten by `purge`.
        const LINK_KEPT_SECONDS: u64 = 86_400;

        pub(super) async fn insert_link(
            pool: &Pool,
            link_id: &str,
            tenant: &str,
            now: u64,
            expires_at: u64,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(
                "INSERT INTO dashboard_links (link_id, tenant_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(link_id)
            .bind(tenant)
            .bind(signed(now))
            .bind(signed(expires_at))
            .execute(pool)
            .await?;
            Ok(())
        }

        pub(super) async fn use_link(
            pool: &Pool,
            link_id: &str,
            now: u64,
        ) -> Result<LinkUse, sqlx::Error> {
            // One statement decides: of two concurrent uses, one updates the row, the other
            // finds used_at set.
            let used = sqlx::query(
                "UPDATE dashboard_links SET used_at = $2 \
                 WHERE link_id = $1 AND used_at IS NULL AND expires_at > $2 RETURNING tenant_id",
            )
            .bind(link_id)
            .bind(signed(now))
            .fetch_optional(pool)
            .await?;
            if let Some(row) = used {
                return Ok(LinkUse::Signed(row.try_get("tenant_id")?));
            }
            let found = sqlx::query("SELECT used_at FROM dashboard_links WHERE link_id = $1")
                .bind(link_id)
                .fetch_optional(pool)
                .await?;
            Ok(match found {
                None => LinkUse::Unknown,
                Some(row) => match row.try_get::<Option<i64>, _>("used_at")? {
                    Some(_) => LinkUse::AlreadyUsed,
                    None => LinkUse::Expired,
                },
            })
        }

        pub(super) async fn insert_session(
            pool: &Pool,
            sha256: &str,
            role: &SessionRole,
            now: u64,
            expires_at: u64,
        ) -> Result<(), sqlx::Error> {
            let (role, tenant) = match role {
                SessionRole::Tenant(tenant) => ("tenant", Some(tenant.as_str())),
                SessionRole::Operator => ("operator", None),
            };
            sqlx::query(
                "INSERT INTO dashboard_sessions (sha256, role, tenant_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(sha256)
            .bind(role)
            .bind(tenant)
            .bind(signed(now))
            .bind(signed(expires_at))
            .execute(pool)
            .await?;
            Ok(())
        }

        pub(super) async fn session(
            pool: &Pool,
            sha256: &str,
            now: u64,
        ) -> Result<Option<SessionRecord>, sqlx::Error> {
            let row = sqlx::query(
                "SELECT role, tenant_id, created_at, expires_at FROM dashboard_sessions \
                 WHERE sha256 = $1 AND expires_at > $2",
            )
            .bind(sha256)
            .bind(signed(now))
            .fetch_optional(pool)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let role: String = row.try_get("role")?;
            let tenant: Option<String> = row.try_get("tenant_id")?;
            let role = match (role.as_str(), tenant) {
                ("tenant", Some(tenant)) => SessionRole::Tenant(tenant),
                ("operator", None) => SessionRole::Operator,
                _ => {
                    return Err(sqlx::Error::Protocol(
                        "dashboard_sessions: a role without its tenant".into(),
                    ));
                }
            };
            Ok(Some(SessionRecord {
                role,
                created_at: unsigned(row.try_get("created_at")?),
                expires_at: unsigned(row.try_get("expires_at")?),
            }))
        }

        pub(super) async fn delete_session(pool: &Pool, sha256: &str) -> Result<bool, sqlx::Error> {
            let done = sqlx::query("DELETE FROM dashboard_sessions WHERE sha256 = $1")
                .bind(sha256)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() > 0)
        }

        pub(super) async fn purge(pool: &Pool, now: u64) -> Result<u64, sqlx::Error> {
            let sessions = sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
                .bind(signed(now))
                .execute(pool)
                .await?;
            let links = sqlx::query("DELETE FROM dashboard_links WHERE expires_at <= $1")
                .bind(signed(now.saturating_sub(LINK_KEPT_SECONDS)))
                .execute(pool)
                .await?;
            Ok(sessions.rows_affected() + links.rows_affected())
        }
    };
}

pub(super) use dashboard_statements;
