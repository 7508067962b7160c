//! Bearer keys and what they may do: every route of [`super::ROUTES`] declares its [`Access`],
//! and [`authorize`] checks the presented key against it before the handler runs — so before
//! any I/O, and before the ledger.
//!
//! A key is valid (401 otherwise), then holds the route's scope (403 `forbidden_scope`), then
//! reaches the route's provider and account (403 `forbidden_account`): the path's `{provider}`
//! and `{account}` for most routes; a route spanning every account (the events feed,
//! reconciliation of every entry, `/metrics`) needs a key unlimited by provider and account; a
//! route whose handler keeps to the key's accounts itself ([`Access::KeyFiltered`]: the ledger,
//! the plugin list) checks the entry or the query there, still before any write. The handler
//! then finds the [`Caller`] in the request's extensions: its name is what the ledger records.

use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gatehouse_core::ErrorCode;
use gatehouse_core::access::{Grant, Scope};
use gatehouse_plugin_api::verify::constant_time_eq;

use std::sync::Arc;

use super::key_cache::KeyCache;
use crate::Service;
use crate::error::ApiError;

/// What a route asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No key: health, the OpenAPI document, webhooks (the provider's own signature decides).
    Public,
    /// An API key with `read` unlimited by account, or a scrape key (`api.metrics_keys`, which
    /// opens nothing else): `/metrics`.
    Scrape,
    /// Any valid API key, whatever its scopes (`/v1/whoami`).
    AnyKey,
    /// A key with this scope that reaches the path's `{provider}`/`{account}`; a route with
    /// neither spans every account and needs a key unlimited by provider and account.
    Key(Scope),
    /// A key with this scope; the handler keeps to the key's accounts (it filters a list, or
    /// checks the entry it reads) before any write.
    KeyFiltered(Scope),
}

impl Access {
    /// The scope the route needs, when it needs one.
    pub fn scope(self) -> Option<Scope> {
        match self {
            Self::Key(scope) | Self::KeyFiltered(scope) => Some(scope),
            Self::Scrape => Some(Scope::Read),
            Self::Public | Self::AnyKey => None,
        }
    }
}

/// The caller of an authenticated route: the key's name (never the key) and its grant.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub grant: Grant,
}

impl Caller {
    /// 403 `forbidden_account` unless the key reaches `provider`/`account`.
    pub fn check_account(&self, provider: &str, account: &str) -> Result<(), ApiError> {
        if self.grant.allows_account(provider, account) {
            Ok(())
        } else {
            Err(forbidden_account(
                &self.name,
                &format!("{provider}/{account}"),
            ))
        }
    }
}

fn forbidden_account(name: &str, what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ForbiddenAccount,
        format!("the API key `{name}` does not reach {what}"),
    )
}

/// The middleware of every route that is not [`Access::Public`].
pub async fn authorize(
    State((service, access, key_cache)): State<(Service, Access, Arc<KeyCache>)>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let params = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok();
    let param = |name: &str| {
        params
            .as_ref()
            .and_then(|params| params.iter().find(|(key, _)| *key == name))
            .map(|(_, value)| value.to_string())
    };
    let (provider, account) = (param("provider"), param("account"));
    let mut request = Request::from_parts(parts, body);
    match check(
        &service,
        &key_cache,
        access,
        &request,
        provider.as_deref(),
        account.as_deref(),
    ) {
        Ok(Some(caller)) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Ok(None) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// The caller the key names, checked against `access`; `None` for a scrape key.
fn check(
    service: &Service,
    key_cache: &KeyCache,
    access: Access,
    request: &Request,
    provider: Option<&str>,
    account: Option<&str>,
) -> Result<Option<Caller>, ApiError> {
    let resolved = key_cache.keys(&service.gateway().config());
    let keys = &resolved.keys;
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let scrape_keys: &[gatehouse_plugin_api::Secret] = if access == Access::Scrape {
        &resolved.scrape
    } else {
        &[]
    };
    if keys.is_empty() && scrape_keys.is_empty() {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "no API key is configured (api.keys or [[api.key]] in plugins.toml): every route but webhooks and health is closed",
        ));
    }
    let Some(presented) = presented.filter(|presented| !presented.is_empty()) else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "missing `Authorization: Bearer <key>`",
        ));
    };
    // Compare against every key without stopping at the first match, in constant time each.
    let mut matched = None;
    for (index, key) in keys.iter().enumerate() {
        if constant_time_eq(key.secret.expose().as_bytes(), presented.as_bytes()) {
            matched = Some(index);
        }
    }
    let scrape_matched = scrape_keys.iter().fold(false, |found, key| {
        constant_time_eq(key.expose().as_bytes(), presented.as_bytes()) | found
    });
    let Some(index) = matched else {
        if scrape_matched {
            return Ok(None);
        }
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "the API key is not valid",
        ));
    };
    let key = &keys[index];
    let caller = Caller {
        name: key.name.clone(),
        grant: key.grant.clone(),
    };
    if let Some(scope) = access.scope()
        && !caller.grant.allows_scope(scope)
    {
        return Err(ApiError::new(
            ErrorCode::ForbiddenScope,
            format!(
                "the API key `{}` lacks the `{scope}` scope this route needs (it has: {})",
                caller.name,
                scopes_text(&caller.grant)
            ),
        ));
    }
    match (access, provider, account) {
        (Access::Public | Access::AnyKey | Access::KeyFiltered(_), _, _) => {}
        (Access::Key(_) | Access::Scrape, Some(provider), Some(account)) => {
            caller.check_account(provider, account)?;
        }
        // A route on a provider but no account (installing or rolling back its plugin) acts for
        // every account: the plugin's code runs with each one's credentials.
        (Access::Key(_) | Access::Scrape, Some(provider), None) => {
            if !caller.grant.allows_provider(provider) || !caller.grant.is_unlimited() {
                return Err(forbidden_account(
                    &caller.name,
                    &format!(
                        "every account of provider `{provider}`, which this route acts for (the key is limited to some providers or accounts)"
                    ),
                ));
            }
        }
        (Access::Key(_) | Access::Scrape, None, _) => {
            if !caller.grant.is_unlimited() {
                return Err(forbidden_account(
                    &caller.name,
                    "every account, which this route spans (the key is limited to some providers or accounts)",
                ));
            }
        }
    }
    Ok(Some(caller))
}

fn scopes_text(grant: &Grant) -> String {
    if grant.scopes.is_empty() {
        return "none".into();
    }
    grant
        .scopes
        .iter()
        .map(|scope| scope.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
