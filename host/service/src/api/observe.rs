//! What operators see of each API request: its id, its span, its access-log line, its metric.
//!
//! Every request gets an id: the caller's `X-Request-Id` when it is a sensible token, a new one
//! otherwise. The id is echoed in the answer's `X-Request-Id` header and in error bodies
//! (`error.request_id`), and the request runs inside a `request` span carrying it, so every line
//! logged for it — the plugin steps, the provider requests, the ledger writes — names it. When
//! the answer is ready one access-log line (target `gatehouse::access`) records the method, the
//! route template, the status, the duration, the provider, the account, the outcome and the
//! ledger entry's reference; never a header, a body or a query string, so never a secret. The
//! ledger's own lines per charge (`ledger entry reserved`, `ledger outcome recorded`) are at
//! `debug`: at `info` they cost 2 of a charge's 4 log lines, and the access line and the entry's
//! history say the same.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::Service;
use crate::error::ApiError;

/// The request header (and answer header) carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the request being answered, in its extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// What a command's answer carries, for the access log: its outcome status and, for a recorded
/// command, the ledger entry's reference (the line an operator searches for a payment by).
#[derive(Clone, Debug)]
pub struct AnswerOutcome {
    pub status: &'static str,
    pub reference: Option<String>,
}

/// A caller's request id is kept when it is 1 to 128 characters of letters, digits and
/// `-_.:/+=`: enough for UUIDs, ULIDs and tracing ids, nothing that could break a log line.
pub fn valid_request_id(text: &str) -> bool {
    (1..=128).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:/+=".contains(&byte))
}

pub async fn observe(State(service): State<Service>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|text| valid_request_id(text))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_string);
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_string();
    let (provider, account) = provider_and_account(&route, request.uri().path());
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        route = %route,
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();

    let error_code = match response.extensions_mut().remove::<ApiError>() {
        Some(error) => {
            let mut body = error.to_json();
            body["error"]["request_id"] = serde_json::Value::String(request_id.clone());
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            response.headers_mut().remove(header::CONTENT_LENGTH);
            *response.body_mut() = Body::from(bytes);
            Some(error.code.as_str())
        }
        None => None,
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status().as_u16();
    let answered = response.extensions_mut().remove::<AnswerOutcome>();
    let outcome = answered
        .as_ref()
        .map(|outcome| outcome.status)
        .or(error_code)
        .unwrap_or("");
    let reference = answered
        .as_ref()
        .and_then(|outcome| outcome.reference.as_deref())
        .unwrap_or("");
    let status_text = status.to_string();
    service.gateway().metrics().observe(
        "gatehouse_http_request_duration_seconds",
        &[
            ("method", &method),
            ("route", &route),
            ("status", &status_text),
        ],
        elapsed,
    );
    span.in_scope(|| {
        tracing::info!(
            target: "gatehouse::access",
            request_id = %request_id,
            method = %method,
            route = %route,
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            provider = provider.as_deref().unwrap_or(""),
            account = account.as_deref().unwrap_or(""),
            outcome,
            reference,
            "request"
        );
    });
    response
}

/// The `{provider}` and `{account}` segments of `path` under the route template `route`.
fn provider_and_account(route: &str, path: &str) -> (Option<String>, Option<String>) {
    let (mut provider, mut account) = (None, None);
    for (template, segment) in route.split('/').zip(path.split('/')) {
        match template {
            "{provider}" => provider = Some(segment.to_string()),
            "{account}" => account = Some(segment.to_string()),
            _ => {}
        }
    }
    (provider, account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_tokens() {
        assert!(valid_request_id("3f2b8c1e-9d7a-4e5b-8c3d-2a1b0c9d8e7f"));
        assert!(valid_request_id("req_01HZX"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("has space"));
        assert!(!valid_request_id("line\nbreak"));
        assert!(!valid_request_id(&"a".repeat(129)));
    }

    #[test]
    fn provider_and_account_come_from_the_template() {
        assert_eq!(
            provider_and_account(
                "/v1/{provider}/{account}/charges",
                "/v1/xsolla/main/charges"
            ),
            (Some("xsolla".into()), Some("main".into()))
        );
        assert_eq!(
            provider_and_account("/v1/ledger", "/v1/ledger"),
            (None, None)
        );
    }
}
