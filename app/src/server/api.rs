//! The control plane's HTTP server: `/healthz` and `/readyz` for anyone, everything else
//! (`/metrics`, and the schema registry's Confluent paths) behind a bearer token.
//!
//! Without any `[[api.tokens]]` the server listens on loopback only, and lets every
//! request through. A token's role decides what it may do: `read` tokens only read (GET and HEAD), every
//! other method needs an `operate` token. A request without a valid token gets 401; a
//! `read` token on a route that changes state gets 403. Secrets are compared in constant
//! time. A request body larger than `api.max_body_bytes` gets 413, whether announced by
//! its `Content-Length` or found while reading it (a chunked body is read up to the
//! limit before the route sees it).

use crate::board::{RestartRefused, State as TaskState};
use crate::config::{ApiConfig, Role, Token};
use crate::server::metrics::{self, MetricsView};
use axum::extract::Path;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tributary_pipeline::PipelineError;

/// What the handlers share.
#[derive(Clone)]
struct Shared {
    metrics: MetricsView,
    tokens: Arc<Vec<Token>>,
    max_body_bytes: usize,
}

/// Binds `api.listen`, naming it in the error.
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, PipelineError> {
    tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        PipelineError::Config(format!(
            "api.listen: cannot listen on {listen}: {e} (set [api] listen to a free address)"
        ))
    })
}

/// The routes: the health checks, and `/metrics` and `behind_tokens` (merged in) behind
/// the tokens.
pub fn router(
    config: &ApiConfig,
    metrics: MetricsView,
    behind_tokens: Router,
) -> Result<Router, PipelineError> {
    let shared = Shared {
        metrics,
        tokens: Arc::new(config.tokens().map_err(PipelineError::Config)?),
        max_body_bytes: config.max_body_bytes,
    };
    // Unknown paths are behind the tokens too: nothing is told apart without one.
    let guarded = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/api/v1/tasks", get(tasks))
        .route("/api/v1/tasks/{task}/restart", post(restart_task))
        .with_state(shared.clone())
        .merge(behind_tokens)
        .fallback(|| async { refuse(StatusCode::NOT_FOUND, "no such route") })
        .layer(middleware::from_fn_with_state(shared.clone(), authorize))
        .layer(DefaultBodyLimit::max(config.max_body_bytes));
    Ok(Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .with_state(shared)
        .merge(guarded))
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "control plane listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
        .map_err(|e| PipelineError::Io {
            path: format!("control plane {addr:?}"),
            message: e.to_string(),
        })
}

/// 200 when every task runs; 503 naming the others.
async fn readyz(State(shared): State<Shared>) -> Response {
    // Names and states only: the errors (which may quote row data or host names) are
    // behind the tokens, in /api/v1/tasks.
    let waiting: std::collections::BTreeMap<String, TaskState> = shared
        .metrics
        .board
        .not_running()
        .into_iter()
        .map(|(name, task)| (name, task.state))
        .collect();
    if waiting.is_empty() {
        return (StatusCode::OK, Json(json!({"ready": true}))).into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"ready": false, "tasks": waiting})),
    )
        .into_response()
}

/// The run's metrics in the Prometheus text format.
async fn metrics_text(State(shared): State<Shared>) -> Response {
    match metrics::render(&shared.metrics) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the metrics could not be encoded: {e}"),
        ),
    }
}

/// Every task with its state.
async fn tasks(State(shared): State<Shared>) -> Response {
    Json(shared.metrics.board.snapshot()).into_response()
}

/// Starts failed (or retrying) task `task` again now.
async fn restart_task(
    State(shared): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(task): Path<String>,
) -> Response {
    match shared.metrics.board.restart(&task) {
        Ok(()) => {
            tracing::info!(task, by = caller.0, "task restart requested");
            (
                StatusCode::ACCEPTED,
                Json(json!({"task": task, "restart": "requested", "by": caller.0})),
            )
                .into_response()
        }
        Err(RestartRefused::Unknown) => refuse(
            StatusCode::NOT_FOUND,
            &format!("no task {task:?}; GET /api/v1/tasks lists them"),
        ),
        Err(RestartRefused::NotFailed(state)) => refuse(
            StatusCode::CONFLICT,
            &format!("task {task:?} is {state:?}, not failed or retrying: nothing to restart"),
        ),
    }
}

/// The caller's name when no token is configured.
const LOCAL: &str = "local (no [[api.tokens]] configured)";

/// The name of the token a request came with.
#[derive(Debug, Clone)]
struct Caller(String);

/// Lets a request through with a valid token of a sufficient role.
async fn authorize(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let too_large = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > shared.max_body_bytes as u64);
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, secret)| secret.trim());
    // Without any token configured the server listens on loopback only (the
    // configuration refuses anything else): whoever can reach it is on this machine.
    let (name, role) = match presented.and_then(|p| holder(&shared.tokens, p)) {
        Some(token) => (token.name.clone(), token.role),
        None if shared.tokens.is_empty() => (LOCAL.to_string(), Role::Operate),
        None => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "give a valid token: Authorization: Bearer <secret> (see [[api.tokens]])",
            )
        }
    };
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if !reads && role < Role::Operate {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!("token {name:?} may only read; this needs an operate token"),
        );
    }
    let too_large_response = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the request body is larger than api.max_body_bytes ({})",
                shared.max_body_bytes
            ),
        )
    };
    if too_large {
        return too_large_response();
    }
    // A body sent without its length (chunked) is read here, up to the limit, so every
    // route answers 413 past it whether or not it reads its body.
    let mut request = if reads {
        request
    } else {
        let (parts, body) = request.into_parts();
        match axum::body::to_bytes(body, shared.max_body_bytes).await {
            Ok(bytes) => Request::from_parts(parts, axum::body::Body::from(bytes)),
            Err(_) => return too_large_response(),
        }
    };
    request.extensions_mut().insert(Caller(name));
    next.run(request).await
}

/// The token whose secret is `presented`, compared in constant time with every one.
/// Both sides are hashed first, so neither the comparison's time nor its early exit on a
/// length difference tells anything about a secret.
fn holder<'a>(tokens: &'a [Token], presented: &str) -> Option<&'a Token> {
    let presented = Sha256::digest(presented.as_bytes());
    let mut found = None;
    for t in tokens {
        let secret = Sha256::digest(t.secret.expose().as_bytes());
        if bool::from(secret.as_slice().ct_eq(presented.as_slice())) && found.is_none() {
            found = Some(t);
        }
    }
    found
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut response = (status, Json(json!({"error": message}))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}
