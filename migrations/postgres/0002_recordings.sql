-- Call recordings (issue 3): one row per recorded call, written when recording starts and
-- completed when the file is closed. The path is relative to the data directory when the
-- recording lives there.
CREATE TABLE recordings (
    id          TEXT PRIMARY KEY,           -- the file name's stem, unique per recording
    call_id     TEXT NOT NULL,              -- the caller leg's SIP Call-ID
    caller      TEXT NOT NULL,
    callee      TEXT NOT NULL,
    path        TEXT NOT NULL,
    started_at  BIGINT NOT NULL,            -- unix seconds
    ended_at    BIGINT,
    seconds     BIGINT
);
CREATE INDEX recordings_call_id ON recordings (call_id);
