-- The dashboard's sign-in state: operator-minted links (single use) and browser sessions.
--
-- Times are Unix seconds (UTC). A link row is written when the operator mints it; its id is
-- the random nonce inside the signed token, and used_at is set once, by the first exchange
-- (a second one finds it set and is refused). A session keeps only the SHA-256 (hex) of the
-- cookie's token; role 'tenant' reads tenant_id's dashboard, 'operator' the overview.
-- tenant_id is not a foreign key: tenants of the filter configuration (not in the registry)
-- sign in with their API keys too.
CREATE TABLE dashboard_links (
    link_id     text    PRIMARY KEY,
    tenant_id   text    NOT NULL,
    created_at  bigint  NOT NULL,
    expires_at  bigint  NOT NULL,
    used_at     bigint
);
CREATE INDEX dashboard_links_expires ON dashboard_links (expires_at);

CREATE TABLE dashboard_sessions (
    sha256      text    PRIMARY KEY CHECK (length(sha256) = 64),
    role        text    NOT NULL CHECK (role IN ('tenant', 'operator')),
    tenant_id   text,
    created_at  bigint  NOT NULL,
    expires_at  bigint  NOT NULL,
    CHECK ((role = 'tenant') = (tenant_id IS NOT NULL))
);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_at);
