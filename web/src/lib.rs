//! The HTTP side of Switchboard (axum): `/healthz` for supervisors and orchestration,
//! `/metrics` in the Prometheus text format, and the call-control API under `/api/v1`
//! (see [`api`] and docs/api.md). Later issues add the agent and supervisor panels here.

pub mod api;
mod time;

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use switchboard_runtime::Metrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    /// The call-control API; `None` when no admin token is configured (its routes then
    /// answer 503 saying how to enable it).
    pub api: Option<api::ApiState>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api::routes())
        .with_state(state)
}

/// 200 while the SIP service is up and taking calls; 503 while starting or shutting down.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    if state.metrics.is_ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::with_capacity(2048);
    for (name, kind, help, value) in state.metrics.samples() {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_text(app: Router, path: &str) -> (StatusCode, String) {
        let resp = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn healthz_follows_readiness() {
        let metrics = Arc::new(Metrics::new());
        let app = router(AppState {
            metrics: metrics.clone(),
            api: None,
        });
        assert_eq!(
            get_text(app.clone(), "/healthz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        metrics.set_ready(true);
        assert_eq!(get_text(app, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let metrics = Arc::new(Metrics::new());
        metrics
            .registrations
            .store(3, std::sync::atomic::Ordering::Relaxed);
        let (status, body) = get_text(router(AppState { metrics, api: None }), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("# TYPE switchboard_registrations gauge\nswitchboard_registrations 3\n")
        );
        assert!(body.contains("switchboard_sip_parse_errors_total 0"));
    }
}
