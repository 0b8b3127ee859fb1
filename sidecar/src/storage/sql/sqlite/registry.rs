//! SQLite: the registry's statements ([`crate::storage::sql::registry`]), dates as text.

crate::storage::sql::registry::statements::registry_statements!(
    sqlx::Sqlite,
    "SELECT CAST(COALESCE(SUM(requests), 0) AS INTEGER) FROM api_usage_daily \
     WHERE tenant_id = $1 AND date >= $2 AND date < $3"
);

crate::storage::sql::registry::removal::registry_removal!(sqlx::Sqlite);
