//! The HTTP API: JSON over HTTP, one route family per normalized operation and account.
//!
//! The routes are data ([`ROUTES`]): the router is built from the table, and a test checks the
//! table against the checked-in OpenAPI document (`host/openapi.json`), so the two cannot drift.

mod extract;
pub mod observe;

use std::collections::HashMap;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use gatehouse_core::ErrorCode;
use gatehouse_ledger::{EntryState, ListFilter};
use gatehouse_plugin_api::{Command, Operation, verify::constant_time_eq};
use serde::Deserialize;
use serde_json::{Value, json};

use self::extract::{ApiBody, ApiPath, ApiQuery};
use crate::Service;
use crate::error::ApiError;

/// The checked-in OpenAPI document, served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// One route of the API.
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub operation_id: &'static str,
    /// Whether a bearer API key is required (webhooks authenticate by the provider's mechanism).
    pub authenticated: bool,
}

const fn route(
    method: &'static str,
    path: &'static str,
    operation_id: &'static str,
    authenticated: bool,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        operation_id,
        authenticated,
    }
}

/// Every route the API serves.
pub const ROUTES: &[RouteSpec] = &[
    route("GET", "/healthz", "healthz", false),
    route("GET", "/readyz", "readyz", false),
    route("GET", "/openapi.json", "openapi", false),
    route("GET", "/metrics", "metrics", true),
    route("GET", "/v1/plugins", "listPlugins", true),
    route("POST", "/v1/{provider}/{account}/charges", "charge", true),
    route("POST", "/v1/{provider}/{account}/refunds", "refund", true),
    route(
        "POST",
        "/v1/{provider}/{account}/affiliate-payouts",
        "affiliatePayout",
        true,
    ),
    route(
        "POST",
        "/v1/{provider}/{account}/affiliate-refunds",
        "affiliateRefund",
        true,
    ),
    route("POST", "/v1/{provider}/{account}/reports", "report", true),
    route("POST", "/v1/{provider}/{account}/status", "status", true),
    route("GET", "/v1/{provider}/{account}/balance", "balance", true),
    route(
        "POST",
        "/v1/{provider}/{account}/payment-pages",
        "paymentPage",
        true,
    ),
    route(
        "GET",
        "/v1/{provider}/{account}/saved-accounts/{user_id}",
        "savedAccounts",
        true,
    ),
    route(
        "DELETE",
        "/v1/{provider}/{account}/saved-accounts/{user_id}/{account_type}/{account_id}",
        "deleteSavedAccount",
        true,
    ),
    route(
        "POST",
        "/v1/{provider}/{account}/sandbox/chargebacks",
        "sandboxChargeback",
        true,
    ),
    route(
        "POST",
        "/v1/{provider}/{account}/resume",
        "resumeAccount",
        true,
    ),
    route("GET", "/v1/ledger", "listLedger", true),
    route("GET", "/v1/ledger/{id}", "getLedgerEntry", true),
    route("POST", "/v1/reconcile", "reconcile", true),
    route("GET", "/v1/events", "listEvents", true),
    route("POST", "/webhooks/{provider}/{account}", "webhook", false),
];

/// Largest command body accepted.
const MAX_COMMAND_BYTES: usize = 256 * 1024;
/// Largest webhook body accepted.
const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;

/// The API as an axum router (a tower service): mount it in a platform's own app, or serve it.
pub fn router(service: Service) -> Router {
    let mut router = Router::new();
    for spec in ROUTES {
        let handler = handler_for(spec.operation_id);
        let handler = if spec.operation_id == "metrics" {
            handler.layer(middleware::from_fn_with_state(
                service.clone(),
                require_scrape_key,
            ))
        } else if spec.authenticated {
            handler.layer(middleware::from_fn_with_state(
                service.clone(),
                require_api_key,
            ))
        } else {
            handler
        };
        router = router.route(spec.path, handler);
    }
    router
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "the route does not take this method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
        .layer(middleware::from_fn_with_state(
            service.clone(),
            observe::observe,
        ))
        .with_state(service)
}

fn handler_for(operation_id: &str) -> MethodRouter<Service> {
    match operation_id {
        "healthz" => get(|| async { "ok" }),
        "readyz" => get(readyz),
        "openapi" => get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON) }),
        "metrics" => get(metrics),
        "listPlugins" => get(list_plugins),
        "charge" => post(|s, p, h, b| command_route(s, p, h, b, Operation::Charge)),
        "refund" => post(|s, p, h, b| command_route(s, p, h, b, Operation::Refund)),
        "affiliatePayout" => {
            post(|s, p, h, b| command_route(s, p, h, b, Operation::AffiliatePayout))
        }
        "affiliateRefund" => {
            post(|s, p, h, b| command_route(s, p, h, b, Operation::AffiliateRefund))
        }
        "report" => post(|s, p, h, b| command_route(s, p, h, b, Operation::Report)),
        "status" => post(|s, p, h, b| command_route(s, p, h, b, Operation::Status)),
        "balance" => get(balance),
        "paymentPage" => post(|s, p, h, b| command_route(s, p, h, b, Operation::PaymentPage)),
        "savedAccounts" => get(saved_accounts),
        "deleteSavedAccount" => delete(delete_saved_account),
        "sandboxChargeback" => {
            post(|s, p, h, b| command_route(s, p, h, b, Operation::SandboxChargeback))
        }
        "resumeAccount" => post(resume_account),
        "listLedger" => get(list_ledger),
        "getLedgerEntry" => get(get_ledger_entry),
        "reconcile" => post(reconcile),
        "listEvents" => get(list_events),
        "webhook" => post(webhook),
        other => unreachable!("route table names an unknown handler `{other}`"),
    }
}

async fn require_api_key(State(service): State<Service>, request: Request, next: Next) -> Response {
    let config = service.gateway().config();
    match check_bearer(&request, &config.api.keys, &[]) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// `/metrics` opens with an API key or with a scrape key (`api.metrics_keys`), which opens
/// nothing else: monitoring needs no key that can move money.
async fn require_scrape_key(
    State(service): State<Service>,
    request: Request,
    next: Next,
) -> Response {
    let config = service.gateway().config();
    match check_bearer(&request, &config.api.keys, &config.api.metrics_keys) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

fn check_bearer(
    request: &Request,
    keys: &[gatehouse_core::config::SecretValue],
    more_keys: &[gatehouse_core::config::SecretValue],
) -> Result<(), ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let keys: Vec<String> = keys
        .iter()
        .chain(more_keys)
        .filter_map(|key| key.resolve().ok())
        .map(|key| key.value.expose().to_string())
        .collect();
    if keys.is_empty() {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "no API key is configured (api.keys in plugins.toml): every route but webhooks and health is closed",
        ));
    }
    let Some(presented) = presented else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "missing `Authorization: Bearer <key>`",
        ));
    };
    // Compare against every key without stopping at the first match, in constant time each.
    let matched = keys.iter().fold(false, |matched, key| {
        constant_time_eq(key.as_bytes(), presented.as_bytes()) | matched
    });
    if !matched {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "the API key is not valid",
        ));
    }
    Ok(())
}

/// 200 when the host can serve; 503 in the JSON envelope with every reason when it cannot (no
/// plugin loaded, the ledger refusing writes). Both say which configuration is in force.
async fn readyz(State(service): State<Service>) -> Response {
    let readiness = service.readiness().await;
    let details = json!({
        "plugins_loaded": readiness.plugins_loaded,
        "ledger": readiness.ledger_error.as_deref().map_or("writable", |_| "failing"),
        "config_error": readiness.config_error,
    });
    if readiness.problems.is_empty() {
        let mut body = details;
        body["status"] = json!("ready");
        return axum::Json(body).into_response();
    }
    let error = ApiError::new(ErrorCode::NotReady, readiness.problems.join("; "));
    let mut body = error.to_json();
    body["error"]["reasons"] = json!(readiness.problems);
    body["readiness"] = details;
    (error.status(), axum::Json(body)).into_response()
}

async fn metrics(State(service): State<Service>) -> Response {
    let gateway = service.gateway();
    gateway.refresh_metric_gauges();
    // Counted now, by one query, so the figure is the ledger's and not a running tally.
    match service.ledger().count_by_state().await {
        Ok(counts) => {
            for state in EntryState::ALL {
                let count = counts
                    .iter()
                    .find(|(counted, _)| *counted == state)
                    .map_or(0, |(_, count)| *count);
                gateway.metrics().set_gauge(
                    "gatehouse_ledger_entries",
                    &[("state", state.as_str())],
                    i64::try_from(count).unwrap_or(i64::MAX),
                );
            }
        }
        Err(error) => tracing::warn!(%error, "ledger entries not counted for /metrics"),
    }
    (
        [(header::CONTENT_TYPE, gatehouse_core::metrics::CONTENT_TYPE)],
        gateway.metrics().render(),
    )
        .into_response()
}

async fn list_plugins(State(service): State<Service>) -> Response {
    axum::Json(plugins_listing(service.gateway())).into_response()
}

/// What `GET /v1/plugins` answers: the plugins served, the files refused, the paused accounts,
/// and the fingerprint of the configuration file this host serves (so `gatehouse plugins` can
/// tell that the server it reached is the one running *its* configuration). `gatehouse plugins`
/// builds the same listing from the disk when no server answers.
pub fn plugins_listing(gateway: &gatehouse_core::Gateway) -> Value {
    let pauses: Vec<Value> = gateway
        .paused_accounts()
        .into_iter()
        .map(|(provider, account, pause)| {
            json!({"provider": provider, "account": account, "reason": pause.reason, "until_unix": pause.until_unix})
        })
        .collect();
    json!({
        "plugins_dir": gateway.registry().plugins_dir().display().to_string(),
        "config_fingerprint": gateway.config().fingerprint(),
        "plugins": gateway.registry().statuses(),
        "load_errors": gateway.registry().failures(),
        "paused_accounts": pauses,
        "config_error": gateway.config_error(),
        "libraries_loaded": gateway.registry().libraries_loaded(),
        "plugin_threads": gateway.plugin_threads(),
    })
}

async fn command_route(
    State(service): State<Service>,
    ApiPath((provider, account)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
    operation: Operation,
) -> Response {
    match command_from_body(&body, operation)
        .and_then(|command| idempotency_key(&headers).map(|key| (command, key)))
    {
        Ok((command, key)) => run(&service, &provider, &account, command, key).await,
        Err(error) => error.into_response(),
    }
}

/// The command a route's body describes: the body's fields plus the route's operation.
fn command_from_body(body: &[u8], operation: Operation) -> Result<Command, ApiError> {
    if body.len() > MAX_COMMAND_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            "the command body is larger than 256 KiB",
        ));
    }
    let mut fields: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|error| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("the body is not JSON: {error}"),
            )
        })?
    };
    let Some(object) = fields.as_object_mut() else {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "the body must be a JSON object",
        ));
    };
    if object.contains_key("operation") {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "`operation` is given by the route, not the body",
        ));
    }
    object.insert("operation".into(), Value::String(operation.as_str().into()));
    serde_json::from_value(fields).map_err(|error| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("not a valid `{operation}` command: {error}"),
        )
    })
}

/// The `Idempotency-Key` header: at most one, text.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        // Which one would the caller mean? Using either could charge twice on a later retry.
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "more than one Idempotency-Key header",
        ));
    }
    value
        .to_str()
        .map(|key| Some(key.to_string()))
        .map_err(|_| {
            ApiError::new(
                ErrorCode::BadRequest,
                "invalid Idempotency-Key: an idempotency key is 1 to 255 printable ASCII characters without spaces",
            )
        })
}

async fn run(
    service: &Service,
    provider: &str,
    account: &str,
    command: Command,
    key: Option<String>,
) -> Response {
    match service.execute(provider, account, command, key).await {
        Ok(answer) => {
            let replayed = answer.replayed;
            let outcome = observe::AnswerOutcome(answer.outcome.status.as_str());
            let mut response = axum::Json(answer).into_response();
            response.extensions_mut().insert(outcome);
            if replayed {
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            response
        }
        Err(error) => ApiError::from(error).into_response(),
    }
}

async fn balance(
    State(service): State<Service>,
    ApiPath((provider, account)): ApiPath<(String, String)>,
) -> Response {
    run(
        &service,
        &provider,
        &account,
        Command::Balance {
            extra: Default::default(),
        },
        None,
    )
    .await
}

async fn saved_accounts(
    State(service): State<Service>,
    ApiPath((provider, account, user_id)): ApiPath<(String, String, String)>,
) -> Response {
    let command = Command::SavedAccounts {
        user_id,
        extra: Default::default(),
    };
    run(&service, &provider, &account, command, None).await
}

async fn delete_saved_account(
    State(service): State<Service>,
    ApiPath((provider, account, user_id, account_type, account_id)): ApiPath<(
        String,
        String,
        String,
        String,
        String,
    )>,
) -> Response {
    let command = Command::DeleteSavedAccount {
        user_id,
        account_type,
        account_id,
        extra: Default::default(),
    };
    run(&service, &provider, &account, command, None).await
}

async fn resume_account(
    State(service): State<Service>,
    ApiPath((provider, account)): ApiPath<(String, String)>,
) -> Response {
    let was_paused = service.gateway().resume_account(&provider, &account);
    axum::Json(json!({"provider": provider, "account": account, "was_paused": was_paused}))
        .into_response()
}

#[derive(Deserialize)]
struct LedgerQuery {
    provider: Option<String>,
    account: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
    /// The id of the last entry of the previous page.
    starting_after: Option<String>,
}

/// Entries per page unless `limit` says otherwise, and the most one page holds.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// `GET /v1/ledger`: newest first, Stripe-style cursor paging (`limit`, `starting_after` = the
/// last id of the previous page, `has_more`). The cursor is a keyset over the insertion order,
/// so entries inserted while a client pages appear before its first page, never twice.
async fn list_ledger(
    State(service): State<Service>,
    ApiQuery(query): ApiQuery<LedgerQuery>,
) -> Response {
    let state = match query.state.as_deref().map(parse_state).transpose() {
        Ok(state) => state,
        Err(message) => return ApiError::new(ErrorCode::BadRequest, message).into_response(),
    };
    let limit = match page_limit(query.limit) {
        Ok(limit) => limit,
        Err(error) => return error.into_response(),
    };
    // `?provider=` is a filter on nothing, not "no filter": refused rather than read as absent.
    for (name, value) in [
        ("provider", &query.provider),
        ("account", &query.account),
        ("starting_after", &query.starting_after),
    ] {
        if value.as_deref() == Some("") {
            return ApiError::new(ErrorCode::BadRequest, format!("{name} must not be empty"))
                .into_response();
        }
    }
    let filter = ListFilter {
        provider: query.provider,
        account: query.account,
        state,
        // One more than asked tells whether another page follows.
        limit: limit + 1,
        starting_after: query.starting_after.clone(),
    };
    match service.ledger().list(filter).await {
        Ok(mut entries) => {
            let has_more = entries.len() > limit;
            entries.truncate(limit);
            let entries: Vec<Value> = entries.iter().map(with_times).collect();
            axum::Json(json!({ "entries": entries, "has_more": has_more })).into_response()
        }
        // A cursor naming no entry is a reference to nothing: 404, like `GET /v1/ledger/{id}`.
        Err(gatehouse_ledger::LedgerError::NotFound { id }) => ApiError::new(
            ErrorCode::NotFound,
            format!("starting_after: no ledger entry `{id}`"),
        )
        .into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// A `limit` outside 1..=1000 is refused, not clamped: a client asking for 5 000 must learn that
/// it gets 1 000 per page rather than silently miss the rest.
fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        limit @ 1..=MAX_PAGE => Ok(limit),
        _ => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("limit must be 1 to {MAX_PAGE}"),
        )),
    }
}

/// A JSON answer with an RFC 3339 time beside every `*_unix` field (`created_at` beside
/// `created_at_unix`), recursively.
fn with_times(value: &impl serde::Serialize) -> Value {
    let mut value = serde_json::to_value(value).unwrap_or(Value::Null);
    add_times(&mut value);
    value
}

fn add_times(value: &mut Value) {
    match value {
        Value::Object(object) => {
            let times: Vec<(String, Value)> = object
                .iter()
                .filter_map(|(key, field)| {
                    let name = key.strip_suffix("_unix")?;
                    let seconds = field.as_i64()?;
                    let time = time::OffsetDateTime::from_unix_timestamp(seconds).ok()?;
                    let text = time
                        .format(&time::format_description::well_known::Rfc3339)
                        .ok()?;
                    Some((name.to_string(), Value::String(text)))
                })
                .collect();
            for field in object.values_mut() {
                add_times(field);
            }
            for (name, text) in times {
                object.entry(name).or_insert(text);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(add_times),
        _ => {}
    }
}

fn parse_state(text: &str) -> Result<EntryState, String> {
    serde_json::from_value(Value::String(text.to_string())).map_err(|_| {
        format!("state `{text}` is not one of sending, succeeded, pending, failed, unknown, needs_operator")
    })
}

async fn get_ledger_entry(
    State(service): State<Service>,
    ApiPath(id): ApiPath<String>,
) -> Response {
    match service.ledger().entry_with_history(&id).await {
        Ok(Some((entry, history))) => {
            axum::Json(with_times(&json!({ "entry": entry, "history": history }))).into_response()
        }
        Ok(None) => {
            ApiError::new(ErrorCode::NotFound, format!("no ledger entry `{id}`")).into_response()
        }
        Err(error) => ApiError::from(error).into_response(),
    }
}

async fn reconcile(State(service): State<Service>) -> Response {
    axum::Json(service.reconcile(1000).await).into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    /// The sequence number of the last event of the previous page (`after` is the older name).
    starting_after: Option<i64>,
    after: Option<i64>,
    limit: Option<usize>,
}

/// `GET /v1/events`: the feed, oldest first, paged by sequence number (`starting_after`,
/// `has_more`); sequence numbers are assigned in commit order, so no event is skipped.
async fn list_events(
    State(service): State<Service>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Response {
    let limit = match page_limit(query.limit) {
        Ok(limit) => limit,
        Err(error) => return error.into_response(),
    };
    let after = query.starting_after.or(query.after).unwrap_or(0);
    if after < 0 {
        return ApiError::new(
            ErrorCode::BadRequest,
            "starting_after is an event's sequence number: 0 or more",
        )
        .into_response();
    }
    match service.ledger().events(after, limit + 1).await {
        Ok(mut events) => {
            let has_more = events.len() > limit;
            events.truncate(limit);
            let events: Vec<Value> = events.iter().map(with_times).collect();
            axum::Json(json!({ "events": events, "has_more": has_more })).into_response()
        }
        Err(error) => ApiError::from(error).into_response(),
    }
}

async fn webhook(
    State(service): State<Service>,
    ApiPath((provider, account)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Response {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    match service
        .webhook(&provider, &account, headers, body.to_vec())
        .await
    {
        Ok(handling) => {
            let status = StatusCode::from_u16(handling.reply.status).unwrap_or(StatusCode::OK);
            let mut response = (status, handling.reply.body).into_response();
            if let Some(content_type) = handling
                .reply
                .content_type
                .and_then(|value| HeaderValue::from_str(&value).ok())
            {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
            }
            response
        }
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// Lists route paths and methods, for the OpenAPI drift test.
pub fn route_table() -> HashMap<String, Vec<String>> {
    let mut table: HashMap<String, Vec<String>> = HashMap::new();
    for spec in ROUTES {
        table
            .entry(spec.path.to_string())
            .or_default()
            .push(spec.method.to_ascii_lowercase());
    }
    table
}
