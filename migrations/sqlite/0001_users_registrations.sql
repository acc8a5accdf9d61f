-- Users (SIP accounts), registrations (bindings) and the users revision counter.
-- Keep in step with ../postgres/0001_users_registrations.sql: same tables, same columns.

-- Passwords are never stored: only HA1 = H(name:realm:password) for MD5 and SHA-256.
CREATE TABLE users (
    name         TEXT PRIMARY KEY NOT NULL,   -- the SIP user name (digest username)
    extension    TEXT UNIQUE,                 -- dialable number, optional
    display_name TEXT,
    realm        TEXT NOT NULL,               -- the realm the HA1 values were made for
    ha1_md5      TEXT NOT NULL,
    ha1_sha256   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,             -- unix seconds
    updated_at   BIGINT NOT NULL
);

-- One row per (address of record, Contact URI), RFC 3261 §10.3.
CREATE TABLE registrations (
    aor        TEXT NOT NULL,                 -- the user name
    contact    TEXT NOT NULL,                 -- the Contact URI
    instance   TEXT,                          -- +sip.instance (RFC 5626), if any
    call_id    TEXT NOT NULL,
    cseq       BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,               -- unix seconds
    received   TEXT NOT NULL,                 -- "transport:ip:port" the REGISTER came from
    path       TEXT,                          -- Path header value (RFC 3327), if any
    user_agent TEXT,
    PRIMARY KEY (aor, contact)
);

CREATE INDEX registrations_expires_at ON registrations (expires_at);

-- Small counters. users_revision is bumped in the same transaction as every change to
-- users, so a running server polls one row to learn that the user list changed.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL
);

INSERT INTO meta (key, value) VALUES ('users_revision', 0);
