//! PostgreSQL: the quota alerts' outbox ([`crate::storage::sql::alerts`]).

crate::storage::sql::alerts::statements::alert_statements!(sqlx::Postgres);
