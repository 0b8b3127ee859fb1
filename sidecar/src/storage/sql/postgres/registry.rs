//! PostgreSQL: the registry's statements ([`crate::storage::sql::registry`]), `date` typed.

crate::storage::sql::registry::statements::registry_statements!(
    sqlx::Postgres,
    "SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM api_usage_daily \
     WHERE tenant_id = $1 AND date >= CAST($2 AS date) AND date < CAST($3 AS date)"
);

crate::storage::sql::registry::removal::registry_removal!(sqlx::Postgres);
