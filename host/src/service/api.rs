//! The HTTP API: JSON over HTTP, one route family per normalized operation and account.
//!
//! The routes are data ([`ROUTES`]): the router is built from the table, and a test checks the
//! table against the checked-in OpenAPI document (`host/openapi.json`), so the two cannot drift.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use gatehouse_plugin_api::{Command, Operation, verify::constant_time_eq};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Service, ServiceError};
use crate::ledger::{EntryState, ListFilter};

/// The checked-in OpenAPI document, served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

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
        let handler = if spec.authenticated {
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
        .fallback(|| async { api_error(StatusCode::NOT_FOUND, "not_found", "no such route", None) })
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
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

/// An error answer: `{"error": {"code", "message", ...}}` with a stable machine code.
pub fn api_error(status: StatusCode, code: &str, message: &str, extra: Option<Value>) -> Response {
    let mut body = json!({"code": code, "message": message});
    if let Some(Value::Object(fields)) = extra {
        for (key, value) in fields {
            body[key] = value;
        }
    }
    (status, axum::Json(json!({ "error": body }))).into_response()
}

fn service_error(error: &ServiceError) -> Response {
    let status =
        StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let extra = match error {
        ServiceError::Dispatch(dispatch) => dispatch.provider_error().map(|provider_error| {
            json!({
                "kind": provider_error.kind,
                "provider_code": provider_error.provider_code,
                "provider_message": provider_error.provider_message,
                "fields": provider_error.fields,
            })
        }),
        _ => None,
    };
    let code = match error {
        // A replayed refusal answers with the code the first request got.
        ServiceError::RecordedRefusal { code, .. } => code.as_str(),
        other => other.code(),
    };
    api_error(status, code, &error.to_string(), extra)
}

async fn require_api_key(State(service): State<Service>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_string);
    let config = service.gateway.config();
    let keys: Vec<String> = config
        .api
        .keys
        .iter()
        .filter_map(|key| key.resolve().ok())
        .map(|key| key.value.expose().to_string())
        .collect();
    if keys.is_empty() {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no API key is configured (api.keys in plugins.toml): every route but webhooks and health is closed",
            None,
        );
    }
    let Some(presented) = presented else {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <key>`",
            None,
        );
    };
    // Compare against every key without stopping at the first match, in constant time each.
    let matched = keys.iter().fold(false, |matched, key| {
        constant_time_eq(key.as_bytes(), presented.as_bytes()) | matched
    });
    if !matched {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the API key is not valid",
            None,
        );
    }
    next.run(request).await
}

async fn readyz(State(service): State<Service>) -> Response {
    if service.gateway.registry().active().is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "no plugin loaded").into_response()
    } else {
        "ready".into_response()
    }
}

async fn metrics(State(service): State<Service>) -> Response {
    let mut text = service.gateway.metrics().render();
    text.push_str(&format!(
        "# TYPE gatehouse_plugin_libraries_loaded gauge\ngatehouse_plugin_libraries_loaded {}\n",
        service.gateway.registry().libraries_loaded()
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn list_plugins(State(service): State<Service>) -> Response {
    let pauses: Vec<Value> = service
        .gateway
        .paused_accounts()
        .into_iter()
        .map(|(provider, account, pause)| {
            json!({"provider": provider, "account": account, "reason": pause.reason, "until_unix": pause.until_unix})
        })
        .collect();
    axum::Json(json!({
        "plugins": service.gateway.registry().statuses(),
        "load_errors": service.gateway.registry().failures(),
        "paused_accounts": pauses,
        "config_error": service.gateway.config_error(),
        "libraries_loaded": service.gateway.registry().libraries_loaded(),
    }))
    .into_response()
}

async fn command_route(
    State(service): State<Service>,
    Path((provider, account)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
    operation: Operation,
) -> Response {
    if body.len() > MAX_COMMAND_BYTES {
        return api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the command body is larger than 256 KiB",
            None,
        );
    }
    let mut fields: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(error) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    &format!("the body is not JSON: {error}"),
                    None,
                );
            }
        }
    };
    let Some(object) = fields.as_object_mut() else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be a JSON object",
            None,
        );
    };
    if object.contains_key("operation") {
        return api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "`operation` is given by the route, not the body",
            None,
        );
    }
    object.insert("operation".into(), Value::String(operation.as_str().into()));
    let command: Command = match serde_json::from_value(fields) {
        Ok(command) => command,
        Err(error) => {
            return api_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                &format!("not a valid `{operation}` command: {error}"),
                None,
            );
        }
    };
    if let Some(problem) = command_problem(&command) {
        return api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            &problem,
            None,
        );
    }
    let key = headers.get("idempotency-key").map(|value| {
        value
            .to_str()
            .map(str::to_string)
            .unwrap_or_else(|_| "\u{0}".into())
    });
    run(&service, &provider, &account, command, key).await
}

/// Checks that apply to every provider: amounts are positive.
fn command_problem(command: &Command) -> Option<String> {
    match command.amount() {
        Some(amount) if amount.minor_units <= 0 => Some(format!(
            "amount.minor_units must be positive, got {}",
            amount.minor_units
        )),
        _ => None,
    }
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
            let mut response = axum::Json(answer).into_response();
            if replayed {
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            response
        }
        Err(error) => service_error(&error),
    }
}

async fn balance(
    State(service): State<Service>,
    Path((provider, account)): Path<(String, String)>,
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
    Path((provider, account, user_id)): Path<(String, String, String)>,
) -> Response {
    let command = Command::SavedAccounts {
        user_id,
        extra: Default::default(),
    };
    run(&service, &provider, &account, command, None).await
}

async fn delete_saved_account(
    State(service): State<Service>,
    Path((provider, account, user_id, account_type, account_id)): Path<(
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
    Path((provider, account)): Path<(String, String)>,
) -> Response {
    let was_paused = service.gateway.resume_account(&provider, &account);
    axum::Json(json!({"provider": provider, "account": account, "was_paused": was_paused}))
        .into_response()
}

#[derive(Deserialize)]
struct LedgerQuery {
    provider: Option<String>,
    account: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
}

async fn list_ledger(State(service): State<Service>, Query(query): Query<LedgerQuery>) -> Response {
    let state = match query.state.as_deref().map(parse_state).transpose() {
        Ok(state) => state,
        Err(message) => {
            return api_error(StatusCode::BAD_REQUEST, "invalid_request", &message, None);
        }
    };
    let filter = ListFilter {
        provider: query.provider,
        account: query.account,
        state,
        limit: query.limit.unwrap_or(100).min(1000),
    };
    match service.ledger.list(&filter) {
        Ok(entries) => axum::Json(json!({ "entries": entries })).into_response(),
        Err(error) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ledger_error",
            &error.to_string(),
            None,
        ),
    }
}

fn parse_state(text: &str) -> Result<EntryState, String> {
    serde_json::from_value(Value::String(text.to_string())).map_err(|_| {
        format!("state `{text}` is not one of sending, succeeded, pending, failed, unknown, needs_operator")
    })
}

async fn get_ledger_entry(State(service): State<Service>, Path(id): Path<String>) -> Response {
    match (service.ledger.get(&id), service.ledger.history(&id)) {
        (Ok(Some(entry)), Ok(history)) => {
            axum::Json(json!({ "entry": entry, "history": history })).into_response()
        }
        (Ok(None), _) => api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no ledger entry `{id}`"),
            None,
        ),
        (Err(error), _) | (_, Err(error)) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ledger_error",
            &error.to_string(),
            None,
        ),
    }
}

async fn reconcile(State(service): State<Service>) -> Response {
    axum::Json(service.reconcile(1000).await).into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<i64>,
    limit: Option<usize>,
}

async fn list_events(State(service): State<Service>, Query(query): Query<EventsQuery>) -> Response {
    match service.ledger.events(
        query.after.unwrap_or(0),
        query.limit.unwrap_or(100).min(1000),
    ) {
        Ok(events) => axum::Json(json!({ "events": events })).into_response(),
        Err(error) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ledger_error",
            &error.to_string(),
            None,
        ),
    }
}

async fn webhook(
    State(service): State<Service>,
    Path((provider, account)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
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
        Err(error) => service_error(&error),
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
