-- The SQLite twin of migrations/postgres/0002_usage_flushes.sql (read its comments).
CREATE TABLE usage_flushes (
    flush_id   TEXT NOT NULL PRIMARY KEY,
    flushed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE TABLE api_active_users_daily (
    tenant_id  TEXT    NOT NULL,
    date       TEXT    NOT NULL
        CHECK (date GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
    users      INTEGER NOT NULL DEFAULT 0 CHECK (users >= 0),
    updated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (tenant_id, date)
) STRICT;
