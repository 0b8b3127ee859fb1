-- The dashboard's sign-in state: the SQLite twin of migrations/postgres/0008_dashboard.sql
-- (read its comments).
CREATE TABLE dashboard_links (
    link_id     TEXT    PRIMARY KEY,
    tenant_id   TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
) STRICT;
CREATE INDEX dashboard_links_expires ON dashboard_links (expires_at);

CREATE TABLE dashboard_sessions (
    sha256      TEXT    PRIMARY KEY CHECK (length(sha256) = 64),
    role        TEXT    NOT NULL CHECK (role IN ('tenant', 'operator')),
    tenant_id   TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    CHECK ((role = 'tenant') = (tenant_id IS NOT NULL))
) STRICT;
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_at);
