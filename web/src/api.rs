//! The call-control API, `/api/v1/...`: one JSON route per engine [`Command`], the call
//! log (`GET /cdr`) and a WebSocket stream of call events (`GET /events`). See
//! `docs/api.md` for every route with examples.
//!
//! Authentication is an admin token from the configuration (`Authorization: Bearer ...`,
//! compared in constant time); without one configured every route answers 503 saying how
//! to enable it. Every refusal is JSON `{"error": CODE, "reason": TEXT}` with the status
//! of the engine's [`CommandError::http_status`] or 400/401/503 from here. Handlers only
//! translate: what a command does is the engine's business, so a command the engine does
//! not implement yet answers its 501 and lights up here without a change.

use std::collections::HashMap;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use switchboard_core::command::{CallInfo, ParkedInfo, RoomInfo};
use switchboard_core::{Command, CommandError, CommandReply, Party};
use switchboard_runtime::{CallControl, ControlError};
use switchboard_store::{CallQuery, CallRecord, Store, MAX_CALL_QUERY_LIMIT};
use tokio::sync::{broadcast, watch};

use crate::time::{format_ms, parse_rfc3339_ms};
use crate::AppState;

/// What the API needs besides the metrics: present only when an admin token is set.
#[derive(Clone)]
pub struct ApiState {
    pub control: CallControl,
    pub store: Store,
    /// SHA-256 of the admin token: requests are compared digest to digest, so neither
    /// the token's bytes nor its length show in the comparison's timing.
    token_digest: [u8; 32],
    /// Turns true at shutdown: event streams close.
    pub shutdown: watch::Receiver<bool>,
    /// Reload and status of the dialplan, when one is configured.
    pub dialplan: Option<switchboard_runtime::dialplan::DialplanHandle>,
}

impl ApiState {
    pub fn new(
        control: CallControl,
        store: Store,
        admin_token: &str,
        shutdown: watch::Receiver<bool>,
    ) -> ApiState {
        ApiState {
            control,
            store,
            token_digest: Sha256::digest(admin_token.as_bytes()).into(),
            shutdown,
            dialplan: None,
        }
    }

    pub fn with_dialplan(
        mut self,
        dialplan: Option<switchboard_runtime::dialplan::DialplanHandle>,
    ) -> ApiState {
        self.dialplan = dialplan;
        self
    }

    fn token_matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented
            .iter()
            .zip(self.token_digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Default and largest `limit` of `GET /cdr`.
const DEFAULT_CDR_LIMIT: u32 = 100;
/// Longest user, target, slot or room name accepted.
const MAX_NAME: usize = 128;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/calls", get(list_calls).post(originate))
        .route("/calls/{call}", delete(hangup))
        .route("/calls/{call}/hold", post(hold))
        .route("/calls/{call}/resume", post(resume))
        .route("/calls/{call}/mute", post(mute))
        .route("/calls/{call}/transfer", post(transfer))
        .route("/calls/{call}/park", post(park))
        .route(
            "/calls/{call}/recording",
            post(start_recording).delete(stop_recording),
        )
        .route("/calls/{call}/conference", post(conference))
        .route("/parked", get(list_parked))
        .route("/parked/{slot}/retrieve", post(retrieve))
        .route("/rooms", get(list_rooms))
        .route("/rooms/{room}/participants", post(room_add))
        .route(
            "/rooms/{room}/participants/{participant}",
            delete(room_kick),
        )
        .route(
            "/rooms/{room}/participants/{participant}/mute",
            post(room_mute),
        )
        .route("/cdr", get(call_log))
        .route("/dialplan", get(dialplan_status))
        .route("/dialplan/reload", post(dialplan_reload))
        .route("/events", get(events))
        .fallback(no_such_route)
}

// ---------------------------------------------------------------------------
// Errors

/// A refusal, rendered as `{"error": code, "reason": text}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    reason: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            reason: reason.into(),
        }
    }

    fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = match &e {
            ControlError::Command(c) => match c {
                CommandError::NoSuchCall(_) => "no_such_call",
                CommandError::NoSuchSlot(_) => "no_such_slot",
                CommandError::NoSuchUser(_) => "no_such_user",
                CommandError::NoSuchRoom(_) => "no_such_room",
                CommandError::NoSuchParticipant(_) => "no_such_participant",
                CommandError::NotRegistered(_) => "not_registered",
                CommandError::Conflict(_) => "conflict",
                CommandError::BadRequest(_) => "bad_request",
                CommandError::Unavailable(_) => "unavailable",
                CommandError::NotImplemented(_) => "not_implemented",
                _ => "refused",
            },
            ControlError::Busy => "busy",
            ControlError::Stopped => "unavailable",
            _ => "unavailable",
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"error": self.code, "reason": self.reason})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        }
        response
    }
}

async fn no_such_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_route",
        "no such API route (see docs/api.md)",
    )
}

// ---------------------------------------------------------------------------
// Extractors

/// The API's state once the request is authorised: 503 when the API is disabled, 401
/// without the right bearer token.
pub struct Authorized(ApiState);

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(api) = &state.api else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_disabled",
                "the call-control API is disabled: set an admin token with [api] admin_token \
                 in the configuration file, --api-token or SWITCHBOARD_API_TOKEN",
            ));
        };
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing the header Authorization: Bearer <admin token>",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or(v.strip_prefix("bearer ")));
        match token {
            Some(t) if api.token_matches(t.trim()) => Ok(Authorized(api.clone())),
            Some(_) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "wrong admin token",
            )),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the Authorization header must be: Bearer <admin token>",
            )),
        }
    }
}

/// A JSON body; an empty body reads as `{}` (so a missing field is named), anything
/// unreadable is a 400 with serde's reason (which names the field and position).
pub struct Body<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("unreadable body: {}", e.body_text())))?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(Body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

fn parse_call(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
        ApiError::bad_request(format!("call id must be a positive integer, not {s:?}"))
    })
}

fn parse_participant(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "participant id must be a positive integer, not {s:?}"
        ))
    })
}

fn parse_party(s: &str) -> Result<Party, ApiError> {
    Party::parse(s).ok_or_else(|| {
        ApiError::bad_request(format!("party must be \"caller\" or \"callee\", not {s:?}"))
    })
}

/// A user, number, slot or room name: non-empty printable text without spaces.
fn check_name(field: &str, value: &str) -> Result<String, ApiError> {
    if value.is_empty() {
        return Err(ApiError::bad_request(format!("{field} must not be empty")));
    }
    if value.len() > MAX_NAME {
        return Err(ApiError::bad_request(format!(
            "{field} is longer than {MAX_NAME} bytes"
        )));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::bad_request(format!(
            "{field} must not contain spaces or control characters: {value:?}"
        )));
    }
    Ok(value.to_string())
}

// ---------------------------------------------------------------------------
// Replies

fn call_json(c: &CallInfo) -> Value {
    json!({
        "call": c.call,
        "caller": c.caller,
        "callee": c.callee,
        "state": c.state,
        "started_at": format_ms(secs_to_ms(c.started_unix)),
        "started_unix": c.started_unix,
        "answered_unix": c.answered_unix,
        "held": c.held.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "muted": c.muted.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "recording": c.recording,
    })
}

fn parked_json(p: &ParkedInfo) -> Value {
    json!({
        "slot": p.slot,
        "call": p.call,
        "parked": p.parked,
        "parker": p.parker,
        "since_unix": p.since_unix,
        "timeout_unix": p.timeout_unix,
    })
}

fn room_json(r: &RoomInfo) -> Value {
    json!({
        "room": r.room,
        "participants": r.participants.iter().map(|p| json!({
            "participant": p.participant,
            "user": p.user,
            "muted": p.muted,
            "speaker": p.speaker,
        })).collect::<Vec<_>>(),
    })
}

fn secs_to_ms(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / 1000) * 1000
}

/// 200 for what reads state, 202 for what the engine accepted and carries on with.
fn reply(r: CommandReply) -> Response {
    let (status, body) = match &r {
        CommandReply::Accepted => (StatusCode::ACCEPTED, json!({"result": "accepted"})),
        CommandReply::Calls(calls) => (
            StatusCode::OK,
            json!({"calls": calls.iter().map(call_json).collect::<Vec<_>>()}),
        ),
        CommandReply::Parked(parked) => (
            StatusCode::OK,
            json!({"parked": parked.iter().map(parked_json).collect::<Vec<_>>()}),
        ),
        CommandReply::Rooms(rooms) => (
            StatusCode::OK,
            json!({"rooms": rooms.iter().map(room_json).collect::<Vec<_>>()}),
        ),
        CommandReply::Call { call } => (
            StatusCode::ACCEPTED,
            json!({"result": "accepted", "call": call}),
        ),
        CommandReply::Slot { slot } => (
            StatusCode::ACCEPTED,
            json!({"result": "accepted", "slot": slot}),
        ),
        CommandReply::Room { room, participant } => (
            StatusCode::ACCEPTED,
            json!({"result": "accepted", "room": room, "participant": participant}),
        ),
        // A reply kind added to the engine later: still an answer, if a plain one.
        other => (
            StatusCode::OK,
            json!({"result": "accepted", "reply": format!("{other:?}")}),
        ),
    };
    (status, Json(body)).into_response()
}

async fn run(api: &ApiState, command: Command) -> Result<Response, ApiError> {
    Ok(reply(api.control.execute(command).await?))
}

// ---------------------------------------------------------------------------
// Calls

async fn list_calls(Authorized(api): Authorized) -> Result<Response, ApiError> {
    run(&api, Command::ListCalls).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginateBody {
    user: String,
    target: String,
    #[serde(default = "yes")]
    auto_answer: bool,
}

fn yes() -> bool {
    true
}

async fn originate(
    Authorized(api): Authorized,
    Body(b): Body<OriginateBody>,
) -> Result<Response, ApiError> {
    let command = Command::Originate {
        user: check_name("user", &b.user)?,
        target: check_name("target", &b.target)?,
        auto_answer: b.auto_answer,
    };
    run(&api, command).await
}

async fn hangup(
    Authorized(api): Authorized,
    Path(call): Path<String>,
) -> Result<Response, ApiError> {
    let call = parse_call(&call)?;
    run(&api, Command::Hangup { call }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartyBody {
    party: String,
}

async fn hold(
    Authorized(api): Authorized,
    Path(call): Path<String>,
    Body(b): Body<PartyBody>,
) -> Result<Response, ApiError> {
    let call = parse_call(&call)?;
    let party = parse_party(&b.party)?;
    run(&api, Command::Hold { call, party }).await
}

async fn resume(
    Authorized(api): Authorized,
    Path(call): Path<String>,
    Body(b): Body<PartyBody>,
) -> Result<Response, ApiError> {
    let call = parse_call(&call)?;
    let party = parse_party(&b.party)?;
    run(&api, Command::Resume { call, party }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteBody {
    party: String,
    #[serde(default = "yes")]
    muted: bool,
}

async fn mute(
    Authorized(api): Authorized,
    Path(call): Path<String>,
    Body(b): Body<MuteBody>,
) -> Result<Response, ApiError> {
    let call = parse_call(&call)?;
    let party = parse_party(&b.party)?;
    run(
        &api,
        Command::Mute {
            call,
            party,
            muted: b.muted,
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    party: String,
    target: Option<String>,
    consult: Option<u64>,
    consult_party: Option<String>,
}

async fn transfer(
    Authorized(api): Authorized,
    Path(call): Path<String>,
    Body(b): Body<TransferBody>,
) -> Result<Response, ApiError> {
    let call = parse_call(&call)?;
    let party = parse_party(&b.party)?;
    let command = match (b.target, b.consult, b.consult_party) {
        (Some(target), None, None) => Command::BlindTransfer {
            call,
            party,
            target: check_name("target", &target)?,
        },
        (None, Some(consult), Some(consult_party)) => Command::AttendedTransfer {
            call,
            party,
            consult: parse_call(&consult.to_string())?,
            consult_party: parse_party(&consult_party)?,
        },
        _ => {
            return Err(ApiError::bad_request(
                "give either \"target\" (blind transfer) or both \"consult\" and \
                 \"consult_party\" (attended transfer)",
            ))
        }
    };
    run(&api, command).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParkBody {
    party: String,
    slot: Option<String>,
}

async fn park(
    Authorized(api): Authorized,
    Path(call): Path<String>,
    Body(b): Body<ParkBody>,
) -> Result<Response, ApiError> {
    let call = parse_call(&call)?;
    let party = parse_party(&b.party)?;
    let slot = b.slot.map(|s| check_name("slot", &s)).transpose()?;
    run(&api, Command::Park { call, party, slot }).await
}

async fn start_recording(
    Authorized(api): Authorized,
    Path(call): Path<String>,
) -> Result<Response, ApiError> {
    let call = parse_call(&call)?;
    run(&api, Command::StartRecording { call }).await
}

async fn stop_recording(
    Authorized(api): Authorized,
    Path(call): Path<String>,
) -> Result<Response, ApiError> {
    let call = parse_call(&call)?;
    run(&api, Command::StopRecording { call }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConferenceBody {
    room: Option<String>,
}

async fn conference(
    Authorized(api): Authorized,
    Path(call): Path<String>,
    Body(b): Body<ConferenceBody>,
) -> Result<Response, ApiError> {
    let call = parse_call(&call)?;
    let room = b.room.map(|r| check_name("room", &r)).transpose()?;
    run(&api, Command::RoomFromCall { call, room }).await
}

// ---------------------------------------------------------------------------
// Parking and rooms

async fn list_parked(Authorized(api): Authorized) -> Result<Response, ApiError> {
    run(&api, Command::ListParked).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrieveBody {
    user: String,
}

async fn retrieve(
    Authorized(api): Authorized,
    Path(slot): Path<String>,
    Body(b): Body<RetrieveBody>,
) -> Result<Response, ApiError> {
    let command = Command::Retrieve {
        slot: check_name("slot", &slot)?,
        user: check_name("user", &b.user)?,
    };
    run(&api, command).await
}

async fn list_rooms(Authorized(api): Authorized) -> Result<Response, ApiError> {
    run(&api, Command::ListRooms).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomAddBody {
    target: String,
    /// Ask the callee's devices to answer by themselves (off by default: being pulled
    /// into a room unasked is an intercom, not a call).
    #[serde(default)]
    auto_answer: bool,
}

async fn room_add(
    Authorized(api): Authorized,
    Path(room): Path<String>,
    Body(b): Body<RoomAddBody>,
) -> Result<Response, ApiError> {
    let command = Command::RoomAdd {
        room: check_name("room", &room)?,
        target: check_name("target", &b.target)?,
        auto_answer: b.auto_answer,
    };
    run(&api, command).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomMuteBody {
    #[serde(default = "yes")]
    muted: bool,
}

async fn room_mute(
    Authorized(api): Authorized,
    Path((room, participant)): Path<(String, String)>,
    Body(b): Body<RoomMuteBody>,
) -> Result<Response, ApiError> {
    let command = Command::RoomMute {
        room: check_name("room", &room)?,
        participant: parse_participant(&participant)?,
        muted: b.muted,
    };
    run(&api, command).await
}

async fn room_kick(
    Authorized(api): Authorized,
    Path((room, participant)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let command = Command::RoomKick {
        room: check_name("room", &room)?,
        participant: parse_participant(&participant)?,
    };
    run(&api, command).await
}

// ---------------------------------------------------------------------------
// Call log

/// `from`/`to`: unix seconds or an RFC 3339 UTC time.
fn parse_time(field: &str, value: &str) -> Result<i64, ApiError> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value
            .parse::<i64>()
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .ok_or_else(|| ApiError::bad_request(format!("{field}: {value:?} is out of range")));
    }
    parse_rfc3339_ms(value).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
}

pub(crate) fn parse_call_query(params: &HashMap<String, String>) -> Result<CallQuery, ApiError> {
    let mut q = CallQuery {
        limit: DEFAULT_CDR_LIMIT,
        ..CallQuery::default()
    };
    for (key, value) in params {
        match key.as_str() {
            "user" => q.user = Some(check_name("user", value)?),
            "from" => q.from_ms = Some(parse_time("from", value)?),
            "to" => q.to_ms = Some(parse_time("to", value)?),
            "limit" => {
                q.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_CALL_QUERY_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limit must be 1 to {MAX_CALL_QUERY_LIMIT}, not {value:?}"
                        ))
                    })?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {other:?} (user, from, to, limit)"
                )))
            }
        }
    }
    if let (Some(from), Some(to)) = (q.from_ms, q.to_ms) {
        if from > to {
            return Err(ApiError::bad_request("from is after to"));
        }
    }
    Ok(q)
}

fn record_json(r: &CallRecord) -> Value {
    json!({
        "id": r.id,
        "call": r.engine_call,
        "sip_call_id": r.sip_call_id,
        "direction": r.direction,
        "caller": r.caller,
        "callee": r.callee,
        "started_at": format_ms(r.started_at_ms),
        "answered_at": r.answered_at_ms.map(format_ms),
        "ended_at": format_ms(r.ended_at_ms),
        "started_at_ms": r.started_at_ms,
        "answered_at_ms": r.answered_at_ms,
        "ended_at_ms": r.ended_at_ms,
        "outcome": r.outcome,
        "status": r.final_status,
        "duration_seconds": r.duration_seconds,
        "recording_path": r.recording_path,
        "legs": r.legs.iter().map(|l| json!({
            "party": l.party,
            "name": l.name,
            "joined_at_ms": l.joined_at_ms,
            "left_at_ms": l.left_at_ms,
        })).collect::<Vec<_>>(),
        "history": r.history.iter().map(|h| json!({
            "at_ms": h.at_ms,
            "at": format_ms(h.at_ms),
            "kind": h.kind,
            // Stored as JSON text by the server itself; text if it ever is not.
            "detail": serde_json::from_str::<Value>(&h.detail)
                .unwrap_or_else(|_| Value::String(h.detail.clone())),
        })).collect::<Vec<_>>(),
    })
}

async fn call_log(
    Authorized(api): Authorized,
    params: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let q = parse_call_query(&params)?;
    let records = api.store.query_calls(&q).await.map_err(|e| {
        tracing::error!(error = %e, "call log query failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the call log cannot be read right now (database error; see the server log)",
        )
    })?;
    Ok(Json(json!({"calls": records.iter().map(record_json).collect::<Vec<_>>()})).into_response())
}

// ---------------------------------------------------------------------------
// Dialplan

fn dialplan_json(s: &switchboard_runtime::dialplan::DialplanStatus) -> serde_json::Value {
    json!({
        "file": s.file,
        "loaded_at": s.loaded_unix,
        "reloads": s.reloads,
        "failures": s.failures,
        "last_error": s.last_error,
        "warnings": s.warnings,
    })
}

fn no_dialplan() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_dialplan",
        "no dialplan is configured (start with --dialplan FILE or [dialplan] file)",
    )
}

async fn dialplan_status(Authorized(api): Authorized) -> Result<Response, ApiError> {
    let handle = api.dialplan.as_ref().ok_or_else(no_dialplan)?;
    Ok(Json(dialplan_json(&handle.status())).into_response())
}

/// Reloads the plan: 200 with its status when it loaded (new calls use it), 422 with the
/// errors when it did not (the running plan stays).
async fn dialplan_reload(Authorized(api): Authorized) -> Result<Response, ApiError> {
    let handle = api.dialplan.as_ref().ok_or_else(no_dialplan)?;
    match handle.reload().await {
        Ok(status) => Ok(
            Json(json!({"result": "loaded", "dialplan": dialplan_json(&status)})).into_response(),
        ),
        Err(errors) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_dialplan",
            errors,
        )),
    }
}

// ---------------------------------------------------------------------------
// Event stream

async fn events(Authorized(api): Authorized, upgrade: WebSocketUpgrade) -> Response {
    // Subscribed before the handshake completes: nothing after the 101 is missed.
    let rx = api.control.subscribe();
    let shutdown = api.shutdown.clone();
    upgrade.on_upgrade(move |socket| stream_events(socket, rx, shutdown))
}

/// One JSON text message per event; a subscriber that falls behind gets
/// `{"type":"lagged","missed":N}` and continues with the newest events.
async fn stream_events(
    mut socket: WebSocket,
    mut rx: broadcast::Receiver<switchboard_runtime::CallEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let already = *shutdown.borrow();
    if already {
        let _ = socket.send(Message::Close(None)).await;
        return;
    }
    loop {
        tokio::select! {
            event = rx.recv() => {
                let text = match event {
                    Ok(e) => match serde_json::to_string(&e) {
                        Ok(t) => t,
                        Err(err) => {
                            tracing::error!(error = %err, "an event could not be serialised");
                            continue;
                        }
                    },
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        json!({"type": "lagged", "missed": missed}).to_string()
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                // Pings are answered by the library; text from the client is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            changed = shutdown.changed() => {
                let stopping = *shutdown.borrow();
                if changed.is_err() || stopping {
                    break;
                }
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}
