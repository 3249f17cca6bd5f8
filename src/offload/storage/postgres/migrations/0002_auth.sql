-- API tokens (stored hashed) and the audit log of state-changing calls.

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'user', 'agent')),
    token_hash   TEXT NOT NULL UNIQUE,
    name         TEXT,
    created_at   DOUBLE PRECISION NOT NULL,
    last_used_at DOUBLE PRECISION,
    revoked_at   DOUBLE PRECISION
);

CREATE TABLE audit_log (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      DOUBLE PRECISION NOT NULL,
    actor   TEXT,
    role    TEXT,
    action  TEXT NOT NULL,
    target  TEXT,
    status  INTEGER,
    details TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
