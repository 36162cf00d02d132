//! Requests the OCS sends first: Re-Auth-Request (RFC 4006 §5.5) and Abort-Session-Request
//! (RFC 6733 §8.5), queued in the ledger's `session_requests` outbox
//! (migrations/postgres/0007_session_requests.sql).
//!
//! Anyone may queue one (the CLI, a node, an operator's script) for a session that is open in
//! the ledger; the node that has that session's client connected claims it under a lease,
//! sends it, and records the answer. A claim whose node died runs out and is claimed again, so
//! a request is sent at least once while its session's client is connected somewhere, and at
//! most `MAX_ATTEMPTS` times.

use crate::store::{Database, Dialect};
use crate::AdminError;
use serde::Serialize;
use sqlx::Row;
use tollgate_ocs::Timestamp;

/// Attempts before a request is given up as `failed` (each one a send that got no answer, or
/// found no connection to the session's client).
pub const MAX_ATTEMPTS: i32 = 5;

/// Which request the OCS sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionRequestKind {
    /// RAR, Re-Auth-Request-Type AUTHORIZE_ONLY: the client asks again (CCR-U).
    Reauth,
    /// ASR: the client ends the session (CCR-T).
    Abort,
}

impl SessionRequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionRequestKind::Reauth => "reauth",
            SessionRequestKind::Abort => "abort",
        }
    }

    fn parse(s: &str) -> Result<Self, sqlx::Error> {
        match s {
            "reauth" => Ok(SessionRequestKind::Reauth),
            "abort" => Ok(SessionRequestKind::Abort),
            other => Err(sqlx::Error::Decode(
                format!("unknown session request kind {other:?}").into(),
            )),
        }
    }
}

/// Which open sessions a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionSelector {
    Session(String),
    Account(String),
}

/// A session open in the ledger (`v_open_sessions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenSession {
    pub session_id: String,
    pub account_id: String,
    /// Origin-Host of the session's client.
    pub peer_host: String,
    pub credits: i64,
    pub pending_amount: i64,
    pub opened_at_ms: i64,
    pub expires_at_ms: i64,
}

/// A claimed request, to be sent now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    pub id: i64,
    pub kind: SessionRequestKind,
    pub session_id: String,
    pub peer_host: String,
    pub reason: String,
    /// Including this one.
    pub attempts: i32,
}

/// How a sent request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The client answered with this Result-Code.
    Answered { result_code: u32, detail: String },
    /// No answer; try again at `at` unless attempts are used up.
    Retry { at: Timestamp, detail: String },
}

const OPEN_SESSION_COLS: &str =
    "session_id, account_id, peer_host, credits, pending_amount, opened_at_ms, expires_at_ms";

fn open_sessions_sql(condition: &str) -> String {
    format!(
        "SELECT {OPEN_SESSION_COLS} FROM v_open_sessions WHERE {condition} \
         ORDER BY opened_at_ms, session_id"
    )
}

fn open_sessions_from(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<OpenSession>, AdminError> {
    let mut sessions = Vec::with_capacity(rows.len());
    for r in rows {
        sessions.push(OpenSession {
            session_id: r.try_get("session_id")?,
            account_id: r.try_get("account_id")?,
            peer_host: r.try_get("peer_host")?,
            credits: r.try_get("credits")?,
            pending_amount: r.try_get("pending_amount")?,
            opened_at_ms: r.try_get("opened_at_ms")?,
            expires_at_ms: r.try_get("expires_at_ms")?,
        });
    }
    Ok(sessions)
}

/// Open sessions, of one account or all.
pub async fn open_sessions(
    db: &Database,
    account: Option<&str>,
) -> Result<Vec<OpenSession>, AdminError> {
    let sql = open_sessions_sql("($1 IS NULL OR account_id = $1)");
    open_sessions_from(sqlx::query(&sql).bind(account).fetch_all(&db.pool).await?)
}

/// Open sessions of `account` that hold a final grant: a credit whose price buys not one
/// unit with the `available` money the account had (its grant took what was left, which is
/// when a Final-Unit-Indication was sent, `crates/tollgate-ocs/src/tariff.rs`). A top-up
/// re-authorises these (RFC 4006 §5.5), so their clients need not wait to run dry.
pub async fn sessions_with_final_grant(
    db: &Database,
    account: &str,
    available_minor: i64,
) -> Result<Vec<OpenSession>, AdminError> {
    let sql = open_sessions_sql(
        "session_id IN (SELECT session_ref FROM session_credits WHERE account_id = $1 \
         AND price_minor > 0 AND $2 * price_per_units < price_minor)",
    );
    let q = sqlx::query(&sql).bind(account).bind(available_minor.max(0));
    open_sessions_from(q.fetch_all(&db.pool).await?)
}

/// Open sessions with a credit rated in `service_context` (or a more specific context under
/// it, `crates/tollgate-ocs/src/tariff.rs`), for one rating group or all.
pub async fn sessions_rated_in(
    db: &Database,
    service_context: &str,
    rating_group: Option<u32>,
) -> Result<Vec<OpenSession>, AdminError> {
    let sql = open_sessions_sql(
        "session_id IN (SELECT session_ref FROM session_credits \
         WHERE (service_context = $1 OR service_context LIKE $2) \
         AND ($3 IS NULL OR rating_group = $3))",
    );
    let q = sqlx::query(&sql)
        .bind(service_context)
        .bind(format!("%.{service_context}"))
        .bind(rating_group.map(i64::from));
    open_sessions_from(q.fetch_all(&db.pool).await?)
}

/// Queues `kind` for every open session `selector` names; returns the request ids. A session
/// or account with nothing open is an input error that says so.
pub async fn enqueue(
    db: &Database,
    kind: SessionRequestKind,
    selector: &SessionSelector,
    reason: &str,
    now: Timestamp,
) -> Result<Vec<i64>, AdminError> {
    let sessions = match selector {
        SessionSelector::Account(a) => open_sessions(db, Some(a)).await?,
        SessionSelector::Session(s) => {
            let sql = open_sessions_sql("session_id = $1");
            open_sessions_from(sqlx::query(&sql).bind(s).fetch_all(&db.pool).await?)?
        }
    };
    if sessions.is_empty() {
        return Err(AdminError::NotFound(match selector {
            SessionSelector::Session(s) => format!("no open session {s}"),
            SessionSelector::Account(a) => format!("account {a} has no open session"),
        }));
    }
    enqueue_sessions(db, kind, &sessions, reason, now).await
}

/// Queues `kind` for each of `sessions`; returns the request ids.
pub async fn enqueue_sessions(
    db: &Database,
    kind: SessionRequestKind,
    sessions: &[OpenSession],
    reason: &str,
    now: Timestamp,
) -> Result<Vec<i64>, AdminError> {
    let mut ids = Vec::with_capacity(sessions.len());
    for s in sessions {
        let id: i64 = sqlx::query(
            "INSERT INTO session_requests (kind, session_id, peer_host, reason, \
             next_attempt_at_ms, created_at_ms) VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
        )
        .bind(kind.as_str())
        .bind(&s.session_id)
        .bind(&s.peer_host)
        .bind(reason)
        .bind(now.0)
        .fetch_one(&db.pool)
        .await?
        .try_get("id")?;
        ids.push(id);
    }
    Ok(ids)
}

/// Claims up to `limit` due requests for the clients in `peers` (Origin-Hosts this node has
/// open), for `lease_ms`. Case does not matter in a DiameterIdentity (RFC 6733 §4.3.1).
pub async fn claim(
    db: &Database,
    node: &str,
    peers: &[String],
    now: Timestamp,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<SessionRequest>, AdminError> {
    if peers.is_empty() {
        return Ok(Vec::new());
    }
    let hosts: Vec<String> = (0..peers.len()).map(|i| format!("${}", i + 5)).collect();
    let skip_locked = match db.dialect {
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        Dialect::Sqlite => "",
    };
    let sql = format!(
        "UPDATE session_requests SET claimed_by = $1, claimed_until_ms = $2, \
         attempts = attempts + 1 WHERE id IN (SELECT id FROM session_requests \
         WHERE state = 'queued' AND next_attempt_at_ms <= $3 AND attempts < {MAX_ATTEMPTS} \
         AND (claimed_until_ms IS NULL OR claimed_until_ms < $3) \
         AND lower(peer_host) IN ({}) ORDER BY id LIMIT $4{skip_locked}) \
         RETURNING id, kind, session_id, peer_host, reason, attempts",
        hosts.join(", ")
    );
    let mut q = sqlx::query(&sql)
        .bind(node)
        .bind(now.0 + lease_ms)
        .bind(now.0)
        .bind(limit);
    for p in peers {
        q = q.bind(p.to_ascii_lowercase());
    }
    let rows = q.fetch_all(&db.pool).await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for r in rows {
        let kind: String = r.try_get("kind")?;
        claimed.push(SessionRequest {
            id: r.try_get("id")?,
            kind: SessionRequestKind::parse(&kind)?,
            session_id: r.try_get("session_id")?,
            peer_host: r.try_get("peer_host")?,
            reason: r.try_get("reason")?,
            attempts: r.try_get("attempts")?,
        });
    }
    claimed.sort_by_key(|c| c.id);
    Ok(claimed)
}

/// Records how a claimed request ended: `answered`, queued again, or `failed` after
/// [`MAX_ATTEMPTS`]. Only the claiming node may record it.
pub async fn finish(
    db: &Database,
    request: &SessionRequest,
    node: &str,
    outcome: &RequestOutcome,
    now: Timestamp,
) -> Result<(), AdminError> {
    let (state, next_attempt, result_code, detail) = match outcome {
        RequestOutcome::Answered {
            result_code,
            detail,
        } => ("answered", None, Some(i64::from(*result_code)), detail),
        RequestOutcome::Retry { at, detail } if request.attempts < MAX_ATTEMPTS => {
            ("queued", Some(at.0), None, detail)
        }
        RequestOutcome::Retry { detail, .. } => ("failed", None, None, detail),
    };
    sqlx::query(
        "UPDATE session_requests SET state = $1, \
         next_attempt_at_ms = COALESCE($2, next_attempt_at_ms), result_code = $3, detail = $4, \
         finished_at_ms = CASE WHEN $1 = 'queued' THEN NULL ELSE $5 END, \
         claimed_until_ms = NULL WHERE id = $6 AND claimed_by = $7",
    )
    .bind(state)
    .bind(next_attempt)
    .bind(result_code)
    .bind(detail)
    .bind(now.0)
    .bind(request.id)
    .bind(node)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// The state of one request (for the CLI and tests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestState {
    pub id: i64,
    pub kind: SessionRequestKind,
    pub session_id: String,
    /// Why it was queued: operator, topup, blocked, closed, active (unblocked), tariff.
    pub reason: String,
    pub state: String,
    pub attempts: i32,
    pub result_code: Option<i64>,
    pub detail: Option<String>,
    /// The node that sent it last (its Origin-Host and Origin-State-Id).
    pub claimed_by: Option<String>,
}

pub async fn requests(db: &Database, ids: &[i64]) -> Result<Vec<RequestState>, AdminError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let r = sqlx::query(
            "SELECT id, kind, session_id, reason, state, attempts, result_code, detail, claimed_by \
             FROM session_requests WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&db.pool)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no session request {id}")))?;
        let kind: String = r.try_get("kind")?;
        out.push(RequestState {
            id: r.try_get("id")?,
            kind: SessionRequestKind::parse(&kind)?,
            session_id: r.try_get("session_id")?,
            reason: r.try_get("reason")?,
            state: r.try_get("state")?,
            attempts: r.try_get("attempts")?,
            result_code: r.try_get("result_code")?,
            detail: r.try_get("detail")?,
            claimed_by: r.try_get("claimed_by")?,
        });
    }
    Ok(out)
}
