//! The call log (CDR): one whole call — its row, its legs and its history — written in
//! one transaction when the call ends, and read back by user and time range. The records
//! are built by the runtime from the engine's events; this module only stores them.

use crate::{Pool, Store, StoreError};

/// The most rows one query returns; callers page with `to_ms`.
pub const MAX_CALL_QUERY_LIMIT: u32 = 1000;

/// One finished call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// Unique per call (the engine's number restarts at 1 with the server).
    pub id: String,
    /// The call's number in the API and the event stream while it was live.
    pub engine_call: i64,
    /// The caller leg's SIP Call-ID (what `recordings.call_id` holds).
    pub sip_call_id: String,
    /// `inbound`, `outbound` or `internal`.
    pub direction: String,
    pub caller: String,
    pub callee: String,
    /// Unix milliseconds.
    pub started_at_ms: i64,
    pub answered_at_ms: Option<i64>,
    pub ended_at_ms: i64,
    /// `answered`, `no_answer`, `busy`, `rejected`, `failed` or `cancelled`.
    pub outcome: String,
    /// The final SIP status the caller saw.
    pub final_status: i64,
    /// From answer to end, whole seconds (rounded down); 0 when unanswered.
    pub duration_seconds: i64,
    /// The call's recording, if it was recorded (the first, when there were several).
    pub recording_path: Option<String>,
    pub legs: Vec<CallLegRecord>,
    pub history: Vec<CallHistoryRecord>,
}

/// Who was on one side of a call, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLegRecord {
    /// `caller` or `callee`.
    pub party: String,
    /// A user name or a dialled number.
    pub name: String,
    pub joined_at_ms: i64,
    pub left_at_ms: Option<i64>,
}

/// One step of a call's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallHistoryRecord {
    pub at_ms: i64,
    /// `transferred`, `parked`, `retrieved`, `held`, `resumed`, `muted`, ...
    pub kind: String,
    /// A JSON object with the kind's fields.
    pub detail: String,
}

/// Which calls to read: all filters are optional and combined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallQuery {
    /// Calls where this user (or number) was the caller, the callee or on any leg.
    pub user: Option<String>,
    /// Calls that started at or after this time (unix milliseconds).
    pub from_ms: Option<i64>,
    /// Calls that started before this time (unix milliseconds).
    pub to_ms: Option<i64>,
    /// At most this many, newest first (capped at [`MAX_CALL_QUERY_LIMIT`]).
    pub limit: u32,
}

#[derive(sqlx::FromRow)]
struct CallRow {
    id: String,
    engine_call: i64,
    sip_call_id: String,
    direction: String,
    caller: String,
    callee: String,
    started_at_ms: i64,
    answered_at_ms: Option<i64>,
    ended_at_ms: i64,
    outcome: String,
    final_status: i64,
    duration_seconds: i64,
    recording_path: Option<String>,
}

#[derive(sqlx::FromRow)]
struct LegRow {
    call_record: String,
    party: String,
    name: String,
    joined_at_ms: i64,
    left_at_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    call_record: String,
    at_ms: i64,
    kind: String,
    detail: String,
}

const CALL_COLUMNS: &str = "id, engine_call, sip_call_id, direction, caller, callee, \
     started_at_ms, answered_at_ms, ended_at_ms, outcome, final_status, duration_seconds, \
     recording_path";

fn check_record(r: &CallRecord) -> Result<(), StoreError> {
    let invalid = |field, reason| Err(StoreError::InvalidField { field, reason });
    if r.id.is_empty() {
        return invalid("call id", "it is empty");
    }
    if !matches!(r.direction.as_str(), "inbound" | "outbound" | "internal") {
        return invalid("direction", "it must be inbound, outbound or internal");
    }
    if r.ended_at_ms < r.started_at_ms {
        return invalid("ended_at_ms", "the call ends before it starts");
    }
    // A leg's party is checked by the table (a CHECK constraint), inside the transaction.
    Ok(())
}

impl Store {
    /// Writes a finished call with its legs and history in one transaction: either all of
    /// it is stored or none. Without a `recording_path`, the call's first recording
    /// (matched by SIP Call-ID in `recordings`) is copied in, inside the same transaction.
    /// Returns the recording path stored.
    pub async fn write_call_record(&self, r: &CallRecord) -> Result<Option<String>, StoreError> {
        check_record(r)?;
        let insert_call = format!(
            "INSERT INTO calls ({CALL_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        );
        let insert_leg = "INSERT INTO call_legs \
             (call_record, position, party, name, joined_at_ms, left_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)";
        let insert_history = "INSERT INTO call_history \
             (call_record, position, at_ms, kind, detail) VALUES ($1, $2, $3, $4, $5)";
        let find_recording =
            "SELECT path FROM recordings WHERE call_id = $1 ORDER BY started_at, id LIMIT 1";
        let recording = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let recording: Option<String> = match &r.recording_path {
                Some(p) => Some(p.clone()),
                None => sqlx::query_scalar(find_recording)
                    .bind(&r.sip_call_id)
                    .fetch_optional(&mut *tx)
                    .await?,
            };
            sqlx::query(&insert_call)
                .bind(&r.id)
                .bind(r.engine_call)
                .bind(&r.sip_call_id)
                .bind(&r.direction)
                .bind(&r.caller)
                .bind(&r.callee)
                .bind(r.started_at_ms)
                .bind(r.answered_at_ms)
                .bind(r.ended_at_ms)
                .bind(&r.outcome)
                .bind(r.final_status)
                .bind(r.duration_seconds)
                .bind(&recording)
                .execute(&mut *tx)
                .await
                .map_err(|e| map_call_conflict(e, &r.id))?;
            for (i, leg) in r.legs.iter().enumerate() {
                sqlx::query(insert_leg)
                    .bind(&r.id)
                    .bind(i as i64)
                    .bind(&leg.party)
                    .bind(&leg.name)
                    .bind(leg.joined_at_ms)
                    .bind(leg.left_at_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_leg_error)?;
            }
            for (i, h) in r.history.iter().enumerate() {
                sqlx::query(insert_history)
                    .bind(&r.id)
                    .bind(i as i64)
                    .bind(h.at_ms)
                    .bind(&h.kind)
                    .bind(&h.detail)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            recording
        });
        Ok(recording)
    }

    /// Finished calls matching `q`, newest first (by start, then id), with their legs and
    /// history in order.
    pub async fn query_calls(&self, q: &CallQuery) -> Result<Vec<CallRecord>, StoreError> {
        // The filters are put together here rather than written as `($1 IS NULL OR ...)`:
        // PostgreSQL cannot type a parameter that is only compared with NULL.
        let mut conditions = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if q.user.is_some() {
            let p = next();
            conditions.push(format!(
                "(caller = {p} OR callee = {p} OR EXISTS (SELECT 1 FROM call_legs l \
                 WHERE l.call_record = calls.id AND l.name = {p}))"
            ));
        }
        if q.from_ms.is_some() {
            conditions.push(format!("started_at_ms >= {}", next()));
        }
        if q.to_ms.is_some() {
            conditions.push(format!("started_at_ms < {}", next()));
        }
        let limit = next();
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let select = format!(
            "SELECT {CALL_COLUMNS} FROM calls {filter} \
             ORDER BY started_at_ms DESC, id DESC LIMIT {limit}"
        );
        let limit = i64::from(q.limit.min(MAX_CALL_QUERY_LIMIT));
        let rows: Vec<CallRow> = on_pool!(self, pool => {
            let mut query = sqlx::query_as(&select);
            if let Some(u) = &q.user {
                query = query.bind(u);
            }
            if let Some(v) = q.from_ms {
                query = query.bind(v);
            }
            if let Some(v) = q.to_ms {
                query = query.bind(v);
            }
            query.bind(limit).fetch_all(pool).await?
        });
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=rows.len()).map(|i| format!("${i}")).collect();
        let legs_sql = format!(
            "SELECT call_record, party, name, joined_at_ms, left_at_ms FROM call_legs \
             WHERE call_record IN ({}) ORDER BY call_record, position",
            placeholders.join(", ")
        );
        let history_sql = format!(
            "SELECT call_record, at_ms, kind, detail FROM call_history \
             WHERE call_record IN ({}) ORDER BY call_record, position",
            placeholders.join(", ")
        );
        let (legs, history): (Vec<LegRow>, Vec<HistoryRow>) = on_pool!(self, pool => {
            let mut lq = sqlx::query_as(&legs_sql);
            let mut hq = sqlx::query_as(&history_sql);
            for r in &rows {
                lq = lq.bind(&r.id);
                hq = hq.bind(&r.id);
            }
            (lq.fetch_all(pool).await?, hq.fetch_all(pool).await?)
        });
        let mut records: Vec<CallRecord> = rows
            .into_iter()
            .map(|r| CallRecord {
                id: r.id,
                engine_call: r.engine_call,
                sip_call_id: r.sip_call_id,
                direction: r.direction,
                caller: r.caller,
                callee: r.callee,
                started_at_ms: r.started_at_ms,
                answered_at_ms: r.answered_at_ms,
                ended_at_ms: r.ended_at_ms,
                outcome: r.outcome,
                final_status: r.final_status,
                duration_seconds: r.duration_seconds,
                recording_path: r.recording_path,
                legs: Vec::new(),
                history: Vec::new(),
            })
            .collect();
        let index: std::collections::HashMap<String, usize> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        for l in legs {
            if let Some(&i) = index.get(&l.call_record) {
                records[i].legs.push(CallLegRecord {
                    party: l.party,
                    name: l.name,
                    joined_at_ms: l.joined_at_ms,
                    left_at_ms: l.left_at_ms,
                });
            }
        }
        for h in history {
            if let Some(&i) = index.get(&h.call_record) {
                records[i].history.push(CallHistoryRecord {
                    at_ms: h.at_ms,
                    kind: h.kind,
                    detail: h.detail,
                });
            }
        }
        Ok(records)
    }
}

fn map_leg_error(err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        if matches!(db.kind(), sqlx::error::ErrorKind::CheckViolation) {
            return StoreError::InvalidField {
                field: "leg party",
                reason: "it must be caller or callee",
            };
        }
    }
    StoreError::Database(err)
}

fn map_call_conflict(err: sqlx::Error, id: &str) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        if db.is_unique_violation() {
            return StoreError::Conflict(format!("call record {id:?} already exists"));
        }
    }
    StoreError::Database(err)
}
