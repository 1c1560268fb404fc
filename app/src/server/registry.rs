//! A Confluent-compatible schema registry endpoint (read-only) over the sources' schema
//! topics, so standard Avro consumers (Confluent's deserializers, Kafka Connect, ksqlDB,
//! `kcat -s avro`) resolve the schema ids framed in Tributary's messages.
//!
//! Every source's `<prefix>._schemas` topic is followed from its beginning; each schema
//! record becomes a version of its subject (`<topic>-key` / `<topic>-value`) in the order
//! first seen. Ids are Tributary's (derived from the schema text), identical for every
//! reader. Served:
//!
//! - `GET /schemas/ids/{id}` → `{"schema": "..."}`
//! - `GET /schemas/ids/{id}/subjects`, `GET /schemas/ids/{id}/versions`
//! - `GET /schemas/types` → `["AVRO"]`
//! - `GET /subjects`, `GET /subjects/{subject}/versions`
//! - `GET /subjects/{subject}/versions/{version|latest}` (and `.../schema` for the text alone)
//! - `POST /subjects/{subject}` with `{"schema": "..."}`: is this schema registered under
//!   the subject (the lookup serializers do with `auto.register.schemas=false`)
//!
//! Errors use Confluent's codes (40401 subject, 40402 version, 40403 schema not found,
//! 42202 invalid version, 40501 method not allowed: this registry is fed only by captures).

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value as Json_};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tributary_pipeline::PipelineError;
use tributary_schemas::SchemaId;
use tributary_transport::topics::{schema_topic, RegisteredSchema};
use tributary_transport::Consumer;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Default)]
struct Inner {
    /// Schema text by id.
    by_id: HashMap<SchemaId, String>,
    /// Versions of each subject, oldest first (version n is index n-1).
    subjects: BTreeMap<String, Vec<SchemaId>>,
}

/// The schemas seen so far, shared by the followers and the HTTP handlers.
#[derive(Default, Clone)]
pub struct RegistryView(Arc<RwLock<Inner>>);

impl RegistryView {
    /// Records one schema record; a repeated one changes nothing.
    pub fn insert(&self, r: RegisteredSchema) {
        let mut inner = self.0.write().expect("not poisoned");
        inner.by_id.entry(r.id).or_insert(r.schema);
        let versions = inner.subjects.entry(r.subject).or_default();
        if !versions.contains(&r.id) {
            versions.push(r.id);
        }
    }

    /// Number of distinct schemas known.
    pub fn len(&self) -> usize {
        self.0.read().expect("not poisoned").by_id.len()
    }

    /// Whether no schema is known yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Follows `<prefix>._schemas` from its beginning into `view` until `shutdown`.
pub async fn follow(
    consumer: &dyn Consumer,
    prefix: &str,
    view: RegistryView,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    let topic = schema_topic(prefix);
    let mut reader = consumer.reader_from_start(&topic).await?;
    loop {
        let record = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
            r = reader.next(Some(Duration::from_secs(1))) => r?,
        };
        let Some(record) = record else { continue };
        match serde_json::from_slice::<RegisteredSchema>(&record.value) {
            Ok(r) => view.insert(r),
            Err(e) => tracing::warn!(
                topic,
                offset = record.offset,
                error = %e,
                "ignoring malformed schema record"
            ),
        }
    }
}

/// Serves `view` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    view: RegistryView,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "schema registry endpoint listening");
    axum::serve(listener, router(view))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
        .map_err(|e| PipelineError::Io {
            path: format!("schema registry endpoint {addr:?}"),
            message: e.to_string(),
        })
}

/// Binds the registry's listen address, naming it in the error.
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, PipelineError> {
    tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        PipelineError::Config(format!("registry.listen: cannot listen on {listen}: {e}"))
    })
}

/// The HTTP routes.
pub fn router(view: RegistryView) -> Router {
    Router::new()
        .route("/", get(|| async { reply(StatusCode::OK, json!({})) }))
        .route(
            "/schemas/types",
            get(|| async { reply(StatusCode::OK, json!(["AVRO"])) }),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/subjects", get(subjects))
        .route(
            "/subjects/{subject}",
            axum::routing::post(lookup).delete(read_only),
        )
        .route(
            "/subjects/{subject}/versions",
            get(versions).post(read_only),
        )
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, 404, "no such endpoint".to_string()) })
        .with_state(view)
}

fn reply(status: StatusCode, body: Json_) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], Json(body)).into_response()
}

fn error(status: StatusCode, code: u32, message: String) -> Response {
    reply(status, json!({"error_code": code, "message": message}))
}

fn schema_not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        40403,
        format!("Schema {id} not found"),
    )
}

fn subject_not_found(subject: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        40401,
        format!("Subject '{subject}' not found."),
    )
}

async fn read_only() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        40501,
        "this registry is read-only: schemas are registered by Tributary's captures".into(),
    )
}

async fn schema_by_id(State(view): State<RegistryView>, Path(id): Path<String>) -> Response {
    let inner = view.0.read().expect("not poisoned");
    match id.parse().ok().and_then(|i: SchemaId| inner.by_id.get(&i)) {
        Some(text) => reply(StatusCode::OK, json!({ "schema": text })),
        None => schema_not_found(&id),
    }
}

/// `(subject, version)` pairs holding schema `id`.
fn uses_of(inner: &Inner, id: SchemaId) -> Vec<(&str, usize)> {
    inner
        .subjects
        .iter()
        .filter_map(|(s, v)| v.iter().position(|&x| x == id).map(|i| (s.as_str(), i + 1)))
        .collect()
}

async fn subjects_of_id(State(view): State<RegistryView>, Path(id): Path<String>) -> Response {
    let inner = view.0.read().expect("not poisoned");
    let Some(id_n) = id.parse().ok().filter(|i| inner.by_id.contains_key(i)) else {
        return schema_not_found(&id);
    };
    let subjects: BTreeSet<&str> = uses_of(&inner, id_n).into_iter().map(|(s, _)| s).collect();
    reply(StatusCode::OK, json!(subjects))
}

async fn versions_of_id(State(view): State<RegistryView>, Path(id): Path<String>) -> Response {
    let inner = view.0.read().expect("not poisoned");
    let Some(id_n) = id.parse().ok().filter(|i| inner.by_id.contains_key(i)) else {
        return schema_not_found(&id);
    };
    let uses: Vec<Json_> = uses_of(&inner, id_n)
        .into_iter()
        .map(|(s, v)| json!({"subject": s, "version": v}))
        .collect();
    reply(StatusCode::OK, json!(uses))
}

async fn subjects(State(view): State<RegistryView>) -> Response {
    let inner = view.0.read().expect("not poisoned");
    let names: Vec<&String> = inner.subjects.keys().collect();
    reply(StatusCode::OK, json!(names))
}

async fn versions(State(view): State<RegistryView>, Path(subject): Path<String>) -> Response {
    let inner = view.0.read().expect("not poisoned");
    match inner.subjects.get(&subject) {
        Some(v) => reply(StatusCode::OK, json!((1..=v.len()).collect::<Vec<_>>())),
        None => subject_not_found(&subject),
    }
}

/// Resolves `version` (a number, `latest` or `-1`) of `subject` to `(version, id, text)`.
fn resolve(
    inner: &Inner,
    subject: &str,
    version: &str,
) -> Result<(usize, SchemaId, String), Box<Response>> {
    let versions = inner
        .subjects
        .get(subject)
        .ok_or_else(|| Box::new(subject_not_found(subject)))?;
    let n = match version {
        "latest" | "-1" => versions.len(),
        v => match v.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(Box::new(error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    42202,
                    format!("The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""),
                )))
            }
        },
    };
    let id = *versions.get(n - 1).ok_or_else(|| {
        Box::new(error(
            StatusCode::NOT_FOUND,
            40402,
            format!("Version {version} not found."),
        ))
    })?;
    Ok((n, id, inner.by_id.get(&id).cloned().unwrap_or_default()))
}

async fn version(
    State(view): State<RegistryView>,
    Path((subject, version)): Path<(String, String)>,
) -> Response {
    let inner = view.0.read().expect("not poisoned");
    match resolve(&inner, &subject, &version) {
        Ok((n, id, text)) => reply(
            StatusCode::OK,
            json!({"subject": subject, "version": n, "id": id, "schema": text}),
        ),
        Err(r) => *r,
    }
}

async fn version_schema(
    State(view): State<RegistryView>,
    Path((subject, version)): Path<(String, String)>,
) -> Response {
    let inner = view.0.read().expect("not poisoned");
    match resolve(&inner, &subject, &version) {
        Ok((_, _, text)) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
        }
        Err(r) => *r,
    }
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
}

async fn lookup(
    State(view): State<RegistryView>,
    Path(subject): Path<String>,
    body: Result<Json<SchemaBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            "the body must be {\"schema\": \"<schema text>\"}".into(),
        );
    };
    let inner = view.0.read().expect("not poisoned");
    let Some(versions) = inner.subjects.get(&subject) else {
        return subject_not_found(&subject);
    };
    // Compared as parsed JSON, so whitespace and key order do not matter.
    let wanted: Option<Json_> = serde_json::from_str(&body.schema).ok();
    let found = versions.iter().enumerate().find(|(_, id)| {
        inner.by_id.get(id).is_some_and(|text| {
            *text == body.schema
                || (wanted.is_some() && serde_json::from_str::<Json_>(text).ok() == wanted)
        })
    });
    match found {
        Some((i, id)) => reply(
            StatusCode::OK,
            json!({"subject": subject, "version": i + 1, "id": id, "schema": inner.by_id[id]}),
        ),
        None => schema_not_found("(the given schema)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> RegistryView {
        let v = RegistryView::default();
        for (id, subject, schema) in [
            (
                7,
                "p.public.t-value",
                r#"{"type":"record","name":"V1","fields":[]}"#,
            ),
            (
                9,
                "p.public.t-value",
                r#"{"type":"record","name":"V2","fields":[]}"#,
            ),
            (
                7,
                "p.public.t-value",
                r#"{"type":"record","name":"V1","fields":[]}"#,
            ),
            (3, "p.public.t-key", r#""long""#),
        ] {
            v.insert(RegisteredSchema {
                id,
                subject: subject.into(),
                schema: schema.into(),
            });
        }
        v
    }

    async fn get(path: &str) -> (StatusCode, Json_) {
        request(axum::http::Method::GET, path, "").await
    }

    async fn request(method: axum::http::Method, path: &str, body: &str) -> (StatusCode, Json_) {
        use tower::ServiceExt;
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        let resp = router(view()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Json_::String(String::from_utf8_lossy(&bytes).into()));
        (status, body)
    }

    #[tokio::test]
    async fn serves_the_confluent_read_api() {
        let (s, b) = get("/schemas/ids/9").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b["schema"], r#"{"type":"record","name":"V2","fields":[]}"#);
        let (s, b) = get("/schemas/ids/10").await;
        assert_eq!(
            (s, b["error_code"].as_u64()),
            (StatusCode::NOT_FOUND, Some(40403))
        );
        assert_eq!(
            get("/subjects").await.1,
            json!(["p.public.t-key", "p.public.t-value"])
        );
        assert_eq!(
            get("/subjects/p.public.t-value/versions").await.1,
            json!([1, 2])
        );
        let (_, b) = get("/subjects/p.public.t-value/versions/latest").await;
        assert_eq!(
            (b["version"].as_u64(), b["id"].as_u64()),
            (Some(2), Some(9))
        );
        let (_, b) = get("/subjects/p.public.t-value/versions/1").await;
        assert_eq!(b["id"].as_u64(), Some(7));
        let (s, b) = get("/subjects/p.public.t-value/versions/3").await;
        assert_eq!(
            (s, b["error_code"].as_u64()),
            (StatusCode::NOT_FOUND, Some(40402))
        );
        let (s, b) = get("/subjects/p.public.t-value/versions/zero").await;
        assert_eq!(
            (s, b["error_code"].as_u64()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(42202))
        );
        let (s, b) = get("/subjects/nope/versions").await;
        assert_eq!(
            (s, b["error_code"].as_u64()),
            (StatusCode::NOT_FOUND, Some(40401))
        );
        assert_eq!(
            get("/schemas/ids/7/subjects").await.1,
            json!(["p.public.t-value"])
        );
        assert_eq!(
            get("/subjects/p.public.t-key/versions/1/schema").await.1,
            json!("long")
        );
    }

    #[tokio::test]
    async fn lookup_finds_a_schema_whatever_its_formatting() {
        let body = json!({"schema": "{ \"name\": \"V2\", \"type\": \"record\", \"fields\": [] }"});
        let (s, b) = request(
            axum::http::Method::POST,
            "/subjects/p.public.t-value",
            &body.to_string(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            (b["version"].as_u64(), b["id"].as_u64()),
            (Some(2), Some(9))
        );
        let (s, b) = request(
            axum::http::Method::POST,
            "/subjects/p.public.t-value/versions",
            &body.to_string(),
        )
        .await;
        assert_eq!(
            (s, b["error_code"].as_u64()),
            (StatusCode::METHOD_NOT_ALLOWED, Some(40501))
        );
    }
}
