-- The call log (issue 4, item 9): one row per call, its legs and its history, written by
-- the server in one transaction when the call ends. Keep in step with the other set.
--
-- Times here are unix MILLISECONDS (the `_ms` columns), unlike the seconds elsewhere: two
-- calls in the same second must still sort, and a short call's ring time matters.
CREATE TABLE calls (
    id               TEXT PRIMARY KEY NOT NULL, -- unique per call, made by the server
    engine_call      BIGINT NOT NULL,           -- the call's number in the API and events (restarts at 1)
    sip_call_id      TEXT NOT NULL,             -- the caller leg's Call-ID (recordings.call_id)
    direction        TEXT NOT NULL,             -- inbound | outbound | internal
    caller           TEXT NOT NULL,
    callee           TEXT NOT NULL,
    started_at_ms    BIGINT NOT NULL,
    answered_at_ms   BIGINT,
    ended_at_ms      BIGINT NOT NULL,
    outcome          TEXT NOT NULL,             -- answered | no_answer | busy | rejected | failed | cancelled
    final_status     BIGINT NOT NULL,           -- the SIP status the caller saw
    duration_seconds BIGINT NOT NULL,           -- answered to ended, 0 when unanswered
    recording_path   TEXT                       -- copied from recordings when the call was recorded
);
CREATE INDEX calls_started_at ON calls (started_at_ms);
CREATE INDEX calls_caller ON calls (caller, started_at_ms);
CREATE INDEX calls_callee ON calls (callee, started_at_ms);
CREATE INDEX calls_sip_call_id ON calls (sip_call_id);

-- Who was on each side and when: the original parties, then whoever a transfer, a park
-- or a retrieval put there.
CREATE TABLE call_legs (
    call_record  TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    position     BIGINT NOT NULL,               -- order within the call, from 0
    party        TEXT NOT NULL CHECK (party IN ('caller', 'callee')),
    name         TEXT NOT NULL,                 -- a user name or a dialled number
    joined_at_ms BIGINT NOT NULL,
    left_at_ms   BIGINT,
    PRIMARY KEY (call_record, position)
);
CREATE INDEX call_legs_name ON call_legs (name);

-- What happened during the call: transfers, parks, holds, mutes, recordings.
CREATE TABLE call_history (
    call_record TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    position    BIGINT NOT NULL,
    at_ms       BIGINT NOT NULL,
    kind        TEXT NOT NULL,                  -- transferred, parked, held, muted, ...
    detail      TEXT NOT NULL,                  -- a JSON object with the kind's fields
    PRIMARY KEY (call_record, position)
);
