//! The HTTP API: JSON over HTTP, one route family per normalized operation and account.
//!
//! The routes are data ([`ROUTES`]): the router is built from the table, and a test checks the
//! table against the checked-in OpenAPI document (`host/openapi.json`), so the two cannot drift.

pub mod auth;
mod deploy;
mod extract;
mod key_cache;
pub mod observe;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use gatehouse_core::ErrorCode;
use gatehouse_ledger::{EntryState, ListFilter};
use gatehouse_plugin_api::{Command, Operation};
use serde::Deserialize;
use serde_json::{Value, json};

pub use self::auth::{Access, Caller};
use self::extract::{ApiBody, ApiPath, ApiQuery};
use crate::Service;
use crate::error::ApiError;
use axum::Extension;
use gatehouse_core::access::Scope;

/// The checked-in OpenAPI document, served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// One route of the API.
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub operation_id: &'static str,
    /// Who may call it: no key, or an API key with a scope (see [`Access`]). Declared here for
    /// every route, so none can be served without saying.
    pub access: Access,
}

impl RouteSpec {
    /// Whether a bearer key is required (webhooks authenticate by the provider's mechanism).
    pub fn authenticated(&self) -> bool {
        self.access != Access::Public
    }
}

const fn route(
    method: &'static str,
    path: &'static str,
    operation_id: &'static str,
    access: Access,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        operation_id,
        access,
    }
}

/// `read` on the path's account (or on every account, for a route without one).
pub const READ: Access = Access::Key(Scope::Read);
/// `move_money` on the path's account.
pub const MOVE_MONEY: Access = Access::Key(Scope::MoveMoney);
/// `operate` on the path's account (or on every account, for a route without one).
pub const OPERATE: Access = Access::Key(Scope::Operate);
/// No key.
pub const PUBLIC: Access = Access::Public;

/// Every route the API serves.
pub const ROUTES: &[RouteSpec] = &[
    route("GET", "/healthz", "healthz", PUBLIC),
    route("GET", "/readyz", "readyz", PUBLIC),
    route("GET", "/openapi.json", "openapi", PUBLIC),
    route("GET", "/metrics", "metrics", Access::Scrape),
    route("GET", "/v1/whoami", "whoami", Access::AnyKey),
    route(
        "GET",
        "/v1/plugins",
        "listPlugins",
        Access::KeyFiltered(Scope::Read),
    ),
    // Deploying code into the host: `operate` on every account (no account in the path).
    route(
        "POST",
        "/v1/plugins/{provider}/install",
        "installPlugin",
        OPERATE,
    ),
    route(
        "POST",
        "/v1/plugins/{provider}/rollback",
        "rollbackPlugin",
        OPERATE,
    ),
    route(
        "POST",
        "/v1/{provider}/{account}/charges",
        "charge",
        MOVE_MONEY,
    ),
    route(
        "POST",
        "/v1/{provider}/{account}/refunds",
        "refund",
        MOVE_MONEY,
    ),
    route(
        "POST",
        "/v1/{provider}/{account}/affiliate-payouts",
        "affiliatePayout",
        MOVE_MONEY,
    ),
    route(
        "POST",
        "/v1/{provider}/{account}/affiliate-refunds",
        "affiliateRefund",
        MOVE_MONEY,
    ),
    route("POST", "/v1/{provider}/{account}/reports", "report", READ),
    route("POST", "/v1/{provider}/{account}/status", "status", READ),
    route("GET", "/v1/{provider}/{account}/balance", "balance", READ),
    route(
        "POST",
        "/v1/{provider}/{account}/payment-pages",
        "paymentPage",
        MOVE_MONEY,
    ),
    route(
        "GET",
        "/v1/{provider}/{account}/saved-accounts/{user_id}",
        "savedAccounts",
        READ,
    ),
    route(
        "DELETE",
        "/v1/{provider}/{account}/saved-accounts/{user_id}/{account_type}/{account_id}",
        "deleteSavedAccount",
        MOVE_MONEY,
    ),
    route(
        "POST",
        "/v1/{provider}/{account}/sandbox/chargebacks",
        "sandboxChargeback",
        MOVE_MONEY,
    ),
    route(
        "POST",
        "/v1/{provider}/{account}/resume",
        "resumeAccount",
        OPERATE,
    ),
    route(
        "GET",
        "/v1/ledger",
        "listLedger",
        Access::KeyFiltered(Scope::Read),
    ),
    route(
        "GET",
        "/v1/ledger/{id}",
        "getLedgerEntry",
        Access::KeyFiltered(Scope::Read),
    ),
    route(
        "POST",
        "/v1/ledger/{id}/settle",
        "settleLedgerEntry",
        Access::KeyFiltered(Scope::Operate),
    ),
    route(
        "POST",
        "/v1/ledger/{id}/reconcile",
        "reconcileLedgerEntry",
        Access::KeyFiltered(Scope::Operate),
    ),
    route("POST", "/v1/reconcile", "reconcile", OPERATE),
    route("GET", "/v1/events", "listEvents", READ),
    route("GET", "/v1/events/forwarder", "forwarder", READ),
    route("GET", "/v1/fleet", "listFleet", READ),
    route("POST", "/webhooks/{provider}/{account}", "webhook", PUBLIC),
];

/// Largest command body accepted.
const MAX_COMMAND_BYTES: usize = 256 * 1024;
/// Largest webhook body accepted.
const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;

/// The API as an axum router (a tower service): mount it in a platform's own app, or serve it.
pub fn router(service: Service) -> Router {
    let mut router = Router::new();
    // One cache of resolved API keys for every route (see `key_cache.rs`).
    let key_cache = Arc::new(key_cache::KeyCache::default());
    for spec in ROUTES {
        let handler = handler_for(spec.operation_id);
        let handler = match spec.access {
            Access::Public => handler,
            access => handler.layer(middleware::from_fn_with_state(
                (service.clone(), access, key_cache.clone()),
                auth::authorize,
            )),
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
        "whoami" => get(whoami),
        "charge" => post(|s, c, p, h, b| command_route(s, c, p, h, b, Operation::Charge)),
        "refund" => post(|s, c, p, h, b| command_route(s, c, p, h, b, Operation::Refund)),
        "installPlugin" => post(deploy::install_plugin),
        "rollbackPlugin" => post(deploy::rollback_plugin),
        "affiliatePayout" => {
            post(|s, c, p, h, b| command_route(s, c, p, h, b, Operation::AffiliatePayout))
        }
        "affiliateRefund" => {
            post(|s, c, p, h, b| command_route(s, c, p, h, b, Operation::AffiliateRefund))
        }
        "report" => post(|s, c, p, h, b| command_route(s, c, p, h, b, Operation::Report)),
        "status" => post(|s, c, p, h, b| command_route(s, c, p, h, b, Operation::Status)),
        "balance" => get(balance),
        "paymentPage" => post(|s, c, p, h, b| command_route(s, c, p, h, b, Operation::PaymentPage)),
        "savedAccounts" => get(saved_accounts),
        "deleteSavedAccount" => delete(delete_saved_account),
        "sandboxChargeback" => {
            post(|s, c, p, h, b| command_route(s, c, p, h, b, Operation::SandboxChargeback))
        }
        "resumeAccount" => post(resume_account),
        "listLedger" => get(list_ledger),
        "getLedgerEntry" => get(get_ledger_entry),
        "settleLedgerEntry" => post(settle_ledger_entry),
        "reconcileLedgerEntry" => post(reconcile_ledger_entry),
        "reconcile" => post(reconcile),
        "listEvents" => get(list_events),
        "forwarder" => get(forwarder),
        "listFleet" => get(fleet),
        "webhook" => post(webhook),
        other => unreachable!("route table names an unknown handler `{other}`"),
    }
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

/// `GET /v1/whoami`: the key's name and what it may do (the console shows only that).
async fn whoami(Extension(caller): Extension<Caller>) -> Response {
    axum::Json(json!({
        "name": caller.name,
        "scopes": caller.grant.scopes,
        "providers": caller.grant.providers,
        "accounts": caller
            .grant
            .accounts
            .iter()
            .map(|(provider, account)| format!("{provider}/{account}"))
            .collect::<Vec<_>>(),
        "unlimited": caller.grant.is_unlimited(),
    }))
    .into_response()
}

/// The listing, kept to what the key reaches: a limited key sees its providers' plugins and its
/// accounts' pauses, and no load error (a refused file names no provider it could be checked
/// against).
async fn list_plugins(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let mut listing = plugins_listing(service.gateway());
    if !caller.grant.is_unlimited() {
        let grant = &caller.grant;
        let keep = |listing: &mut Value, field: &str, reaches: &dyn Fn(&Value) -> bool| {
            if let Some(items) = listing[field].as_array_mut() {
                items.retain(|item| reaches(item));
            }
        };
        keep(&mut listing, "plugins", &|plugin| {
            plugin["provider"]
                .as_str()
                .is_some_and(|provider| grant.allows_provider(provider))
        });
        keep(&mut listing, "paused_accounts", &|pause| match (
            pause["provider"].as_str(),
            pause["account"].as_str(),
        ) {
            (Some(provider), Some(account)) => grant.allows_account(provider, account),
            _ => false,
        });
        listing["load_errors"] = json!([]);
    }
    axum::Json(listing).into_response()
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
    let failures = gateway.registry().failures();
    let versions = deploy::with_versions(gateway, json!(gateway.registry().statuses()), &failures);
    json!({
        "plugins_dir": gateway.registry().plugins_dir().display().to_string(),
        "config_fingerprint": gateway.config().fingerprint(),
        "plugins": versions["plugins"],
        "versions": versions["versions"],
        "load_errors": failures,
        "paused_accounts": pauses,
        "config_error": gateway.config_error(),
        "libraries_loaded": gateway.registry().libraries_loaded(),
        "plugin_threads": gateway.plugin_threads(),
    })
}

async fn command_route(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
    ApiPath((provider, account)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
    operation: Operation,
) -> Response {
    match command_from_body(&body, operation)
        .and_then(|command| idempotency_key(&headers).map(|key| (command, key)))
    {
        Ok((command, key)) => {
            // Boxed: axum moves the handler's future into a box of its own; this one holds
            // the whole command's run, which is large, and is better made in place once.
            Box::pin(run(
                &service.acting_as(&caller.name),
                &provider,
                &account,
                command,
                key,
            ))
            .await
        }
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
            let outcome = observe::AnswerOutcome {
                status: answer.outcome.status.as_str(),
                reference: answer.reference.clone(),
            };
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
    Extension(caller): Extension<Caller>,
    ApiPath((provider, account)): ApiPath<(String, String)>,
) -> Response {
    // Resuming an account that is not configured is a mistake to name, not a quiet no-op.
    let config = service.gateway().config();
    let Some(section) = config.providers.get(&provider) else {
        return ApiError::new(
            ErrorCode::UnknownProvider,
            format!("no provider `{provider}` in the configuration"),
        )
        .into_response();
    };
    if !section.accounts.contains_key(&account) {
        return ApiError::new(
            ErrorCode::UnknownAccount,
            format!("provider `{provider}` has no account `{account}`"),
        )
        .into_response();
    }
    // On a shared ledger the pause is lifted on every host (within a second on the others).
    let was_paused = match service
        .gateway()
        .resume_account_everywhere(&provider, &account)
        .await
    {
        Ok(was_paused) => was_paused,
        Err(error) => return ApiError::from(error).into_response(),
    };
    tracing::info!(%provider, %account, was_paused, actor = %caller.name, "account resumed by an operator");
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
    /// Only entries created at or after this time (Unix seconds or RFC 3339).
    created_after: Option<String>,
    /// Only entries created before this time (Unix seconds or RFC 3339).
    created_before: Option<String>,
}

/// Entries per page unless `limit` says otherwise, and the most one page holds.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// `GET /v1/ledger`: newest first, Stripe-style cursor paging (`limit`, `starting_after` = the
/// last id of the previous page, `has_more`). The cursor is a keyset over the insertion order,
/// so entries inserted while a client pages appear before its first page, never twice.
async fn list_ledger(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
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
    let times = query
        .created_after
        .as_deref()
        .map(|text| parse_time("created_after", text))
        .transpose()
        .and_then(|after| {
            let before = query
                .created_before
                .as_deref()
                .map(|text| parse_time("created_before", text))
                .transpose()?;
            Ok((after, before))
        });
    let (created_after_unix, created_before_unix) = match times {
        Ok(times) => times,
        Err(message) => return ApiError::new(ErrorCode::BadRequest, message).into_response(),
    };
    // A limited key lists only what it reaches, decided before the ledger is read.
    let (provider, account) = match caller.grant.narrow(query.provider, query.account) {
        Ok(narrowed) => narrowed,
        Err(message) => {
            return ApiError::new(
                ErrorCode::ForbiddenAccount,
                format!("the API key `{}`: {message}", caller.name),
            )
            .into_response();
        }
    };
    let filter = ListFilter {
        provider,
        account,
        state,
        created_after_unix,
        created_before_unix,
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

/// A time in a query: Unix seconds, or RFC 3339 (`2026-01-01T00:00:00Z`).
fn parse_time(name: &str, text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|time| time.unix_timestamp())
        .map_err(|_| format!("{name} `{text}` is neither Unix seconds nor an RFC 3339 time"))
}

fn parse_state(text: &str) -> Result<EntryState, String> {
    serde_json::from_value(Value::String(text.to_string())).map_err(|_| {
        format!("state `{text}` is not one of sending, succeeded, pending, failed, unknown, needs_operator")
    })
}

/// The answer about one entry: the entry, its history, and why it needs an operator if it does.
fn entry_answer(
    entry: &gatehouse_ledger::Entry,
    history: &[gatehouse_ledger::HistoryEvent],
) -> Value {
    with_times(&json!({
        "entry": entry,
        "history": history,
        "needs_operator": entry.operator_flag.as_ref().map(|reason| json!({
            "reason": reason,
            "settleable": entry.state.is_settleable(),
        })),
    }))
}

async fn get_ledger_entry(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Response {
    match service.ledger().entry_with_history(&id).await {
        Ok(Some((entry, history))) => match caller.check_account(&entry.provider, &entry.account) {
            Ok(()) => axum::Json(entry_answer(&entry, &history)).into_response(),
            Err(error) => error.into_response(),
        },
        Ok(None) => {
            ApiError::new(ErrorCode::NotFound, format!("no ledger entry `{id}`")).into_response()
        }
        Err(error) => ApiError::from(error).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleBody {
    /// `succeeded` or `failed`.
    state: String,
    provider_reference: Option<String>,
    reason: String,
}

/// Reads the entry and checks the key reaches its account: the step before any operator
/// action on it.
async fn reachable_entry(
    service: &Service,
    caller: &Caller,
    id: &str,
) -> Result<gatehouse_ledger::Entry, ApiError> {
    let entry = service
        .ledger()
        .get(id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no ledger entry `{id}`")))?;
    caller.check_account(&entry.provider, &entry.account)?;
    Ok(entry)
}

/// `POST /v1/ledger/{id}/settle`: an operator's decision, in the entry's history with the key's
/// name. 409 `entry_not_settleable` for an entry final already or still `sending`.
async fn settle_ledger_entry(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiBody(body): ApiBody,
) -> Response {
    let settle = async {
        reachable_entry(&service, &caller, &id).await?;
        let body: SettleBody = serde_json::from_slice(&body).map_err(|error| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "the body must be {{\"state\": \"succeeded\"|\"failed\", \"reason\": text, \"provider_reference\"?: text}}: {error}"
                ),
            )
        })?;
        let state = match body.state.as_str() {
            "succeeded" => EntryState::Succeeded,
            "failed" => EntryState::Failed,
            other => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("state `{other}`: an operator settles an entry as succeeded or failed"),
                ));
            }
        };
        let entry = service
            .acting_as(&caller.name)
            .settle(&id, state, body.provider_reference, &body.reason)
            .await?;
        let history = service.ledger().call({
            let id = id.clone();
            move |ledger| ledger.history(&id)
        });
        Ok::<_, ApiError>(entry_answer(&entry, &history.await?))
    };
    match settle.await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `POST /v1/ledger/{id}/reconcile`: reconciliation of this one entry, now.
async fn reconcile_ledger_entry(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Response {
    let reconcile = async {
        reachable_entry(&service, &caller, &id).await?;
        let (entry, report) = service
            .acting_as(&caller.name)
            .reconcile_one(&id, std::time::Duration::ZERO)
            .await?;
        let history = service.ledger().call({
            let id = id.clone();
            move |ledger| ledger.history(&id)
        });
        let mut answer = entry_answer(&entry, &history.await?);
        answer["report"] = json!(report);
        Ok::<_, ApiError>(answer)
    };
    match reconcile.await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn reconcile(
    State(service): State<Service>,
    Extension(caller): Extension<Caller>,
) -> Response {
    tracing::info!(actor = %caller.name, "reconciliation pass asked");
    axum::Json(service.reconcile(1000).await).into_response()
}

/// `GET /v1/events/forwarder`: where the event forwarder stands (the last sequence it
/// delivered, read from its cursor file) and how many stored events wait behind it.
async fn forwarder(State(service): State<Service>) -> Response {
    let config = service.gateway().config();
    // A shared ledger keeps the fleet's position (and who forwards); a SQLite one, the file.
    let shared = match service.ledger().call(|ledger| ledger.forwarding()).await {
        Ok(shared) => shared,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let position = match &shared {
        Some(forwarding) => forwarding.position,
        None => crate::forward::read_cursor(&crate::forward::cursor_file(&config)),
    };
    let waiting = match service
        .ledger()
        .events(position, FORWARDER_WAITING_CAP + 1)
        .await
    {
        Ok(events) => events.len(),
        Err(error) => return ApiError::from(error).into_response(),
    };
    axum::Json(json!({
        "configured": config.webhooks.forward_url.is_some(),
        "position": position,
        "waiting": waiting.min(FORWARDER_WAITING_CAP),
        "waiting_capped": waiting > FORWARDER_WAITING_CAP,
        "holder": shared.as_ref().and_then(|forwarding| forwarding.holder.clone()),
        "holder_live": shared.as_ref().is_some_and(|forwarding| forwarding.holder_live),
    }))
    .into_response()
}

/// `GET /v1/fleet`: the hosts sharing this ledger, live or gone, and which instance serves which
/// version of each plugin (`fleet.rs`); with a SQLite ledger, this host alone.
async fn fleet(State(service): State<Service>) -> Response {
    match crate::fleet::view(&service).await {
        Ok(view) => axum::Json(view).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// Counted up to this many: a long backlog reads "1000 or more".
const FORWARDER_WAITING_CAP: usize = 1000;

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
