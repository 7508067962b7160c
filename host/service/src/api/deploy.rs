//! The API twins of `gatehouse plugin install` and `rollback`, and the version fields of
//! `GET /v1/plugins`.
//!
//! `POST /v1/plugins/{provider}/install`: the body is the library's bytes
//! (`application/octet-stream`, at most `[plugins] max_install_bytes`, 64 MiB by default); its
//! minisign signature, when it has one, is the `.minisig` file's contents base64-encoded
//! (standard alphabet) in the `X-Gatehouse-Signature` header. The signature is checked first,
//! against `[signatures]`; then the gateway's install check (the conformance check under
//! `gatehouse serve`); then the library is stored in the versions folder, activated by the atomic
//! rename, loaded at once, and the answer says what serves.
//!
//! `POST /v1/plugins/{provider}/rollback`: body empty or `{"to": "1.0.0"}`.
//!
//! Both need a key with the `operate` scope that is unlimited by provider and account (the route
//! table's `OPERATE`; a plugin runs with the credentials of every account of its provider).

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use gatehouse_core::ErrorCode;
use gatehouse_core::Gateway;
use gatehouse_core::registry::LoadFailure;
use gatehouse_core::signature::Signed;
use gatehouse_core::versions::{
    ActivatedBy, Candidate, History, Staged, Via, default_slot, is_provider_id,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::ApiPath;
use crate::Service;
use crate::error::ApiError;

/// The header carrying the library's `.minisig`, base64-encoded.
pub const SIGNATURE_HEADER: &str = "x-gatehouse-signature";

/// Largest signature header accepted (a minisign signature file is ~300 bytes).
const MAX_SIGNATURE_BYTES: usize = 4096;

fn refused(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::PluginRefused, message)
}

pub(super) async fn install_plugin(
    State(service): State<Service>,
    ApiPath(provider): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limit = service.gateway().config().plugins.max_install_bytes;
    let bytes = match read_bounded(body, limit).await {
        Ok(bytes) => bytes,
        Err(BodyProblem::TooLarge) => {
            return ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the library is larger than plugins.max_install_bytes ({limit} bytes)"),
            )
            .into_response();
        }
        Err(BodyProblem::Unreadable(message)) => {
            return ApiError::new(
                ErrorCode::BadRequest,
                format!("the body could not be read: {message}"),
            )
            .into_response();
        }
    };
    let signature = match signature_of(&headers) {
        Ok(signature) => signature,
        Err(error) => return error.into_response(),
    };
    let gateway = service.gateway().clone();
    let answer = tokio::task::spawn_blocking(move || {
        install_blocking(&gateway, &provider, &bytes, signature.as_deref())
    })
    .await;
    match answer {
        Ok(Ok(body)) => axum::Json(body).into_response(),
        Ok(Err(error)) => error.into_response(),
        Err(error) => ApiError::new(
            ErrorCode::InternalError,
            format!("the install did not finish: {error}"),
        )
        .into_response(),
    }
}

enum BodyProblem {
    TooLarge,
    Unreadable(String),
}

/// How much of a body past the limit is read (and dropped) before the 413 is answered: a client
/// still writing when the server answers and closes gets a broken pipe instead of the answer,
/// so a body a little too large is read to its end; a far larger one is cut off.
const DRAIN_PAST_LIMIT: usize = 8 * 1024 * 1024;

/// The body, at most `limit` bytes.
async fn read_bounded(mut body: Body, limit: usize) -> Result<Vec<u8>, BodyProblem> {
    use axum::body::HttpBody as _;
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        let Some(frame) = frame else {
            break;
        };
        let frame = frame.map_err(|error| BodyProblem::Unreadable(error.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > limit.saturating_add(DRAIN_PAST_LIMIT) {
            return Err(BodyProblem::TooLarge);
        }
        if seen <= limit {
            bytes.extend_from_slice(&data);
        }
    }
    if seen > limit {
        return Err(BodyProblem::TooLarge);
    }
    Ok(bytes)
}

/// The `X-Gatehouse-Signature` header, decoded: `None` when absent.
fn signature_of(headers: &HeaderMap) -> Result<Option<Vec<u8>>, ApiError> {
    let mut values = headers.get_all(SIGNATURE_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "two X-Gatehouse-Signature headers",
        ));
    }
    if value.len() > MAX_SIGNATURE_BYTES {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("X-Gatehouse-Signature is longer than {MAX_SIGNATURE_BYTES} bytes"),
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(value.as_bytes())
        .map(Some)
        .map_err(|error| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "X-Gatehouse-Signature is not base64 (the .minisig file, base64-encoded): {error}"
                ),
            )
        })
}

fn install_blocking(
    gateway: &Gateway,
    provider: &str,
    bytes: &[u8],
    signature: Option<&[u8]>,
) -> Result<Value, ApiError> {
    if !is_provider_id(provider) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("`{provider}` is not a provider id (lower case letters, digits, `-`, `_`)"),
        ));
    }
    let config = gateway.config();
    let versions = gateway.versions();
    let upload = format!("the library uploaded for `{provider}`");
    let refuse = |reason: String| {
        versions.record_refusal(provider, &upload, &reason, Via::Api);
        refused(format!("{upload}: refused: {reason}"))
    };
    let internal = |message: String| ApiError::new(ErrorCode::InternalError, message);
    let staged = Staged::new(&default_slot(provider), bytes, signature)
        .map_err(|error| internal(error.to_string()))?;
    // The signature first: a library that fails it is never mapped, not even to be checked.
    let signed = config
        .signatures
        .policy()
        .check(&staged.library, bytes)
        .map_err(|reason| refuse(reason.to_string()))?;
    let checked = (gateway.install_check())(&staged.library).map_err(&refuse)?;
    if checked.provider != provider {
        return Err(refuse(format!(
            "it is the plugin for `{}`, not for `{provider}`",
            checked.provider
        )));
    }
    let previous = versions
        .history(provider)
        .map_err(|error| internal(error.to_string()))?
        .and_then(|history| history.active().map(|active| active.entry.clone()));
    let first_slot = gateway.registry().get(provider).map_or_else(
        || default_slot(provider),
        |plugin| {
            plugin.file.file_name().map_or_else(
                || default_slot(provider),
                |name| name.to_string_lossy().into_owned(),
            )
        },
    );
    let installed = versions
        .install(
            &Candidate {
                provider,
                version: &checked.version,
                bytes,
                signature: matches!(signed, Signed::By { .. })
                    .then_some(signature)
                    .flatten(),
                signed_by: match signed {
                    Signed::By { key_id } => Some(key_id),
                    Signed::Unsigned => None,
                },
                first_slot,
            },
            Via::Api,
        )
        .map_err(|error| {
            if error.is_refusal() {
                refuse(error.to_string())
            } else {
                internal(error.to_string())
            }
        })?;
    // Loaded now rather than at the watcher's next scan, so the answer can say what serves.
    gateway.reload_plugins();
    if let Err(reason) = serving(gateway, provider, &installed.stored.sha256) {
        // The host refused what the checks passed (the library bound, say): the previous version
        // goes back into the slot, and the refusal is the answer.
        if let Some(previous) = previous {
            let _ = versions.rollback(
                provider,
                Some(&previous),
                &config.signatures.policy(),
                ActivatedBy::Reverted,
                Via::Api,
            );
            gateway.reload_plugins();
        }
        return Err(refuse(format!("the host did not load it: {reason}")));
    }
    Ok(json!({
        "provider": provider,
        "activation": installed.activation,
        "stored": installed.stored,
        "dropped": installed.dropped,
        "already_kept": installed.already_kept,
    }))
}

/// Whether the registry serves `sha256` for `provider`; the refusal if not.
fn serving(gateway: &Gateway, provider: &str, sha256: &str) -> Result<(), String> {
    let plugin = gateway.registry().get(provider);
    if plugin
        .as_ref()
        .is_some_and(|plugin| plugin.sha256 == sha256)
    {
        return Ok(());
    }
    let slot = gateway
        .versions()
        .history(provider)
        .ok()
        .flatten()
        .map(|history| gateway.registry().plugins_dir().join(history.slot));
    Err(gateway
        .registry()
        .failures()
        .into_iter()
        .find(|failure| {
            slot.as_ref()
                .is_some_and(|slot| failure.file == slot.display().to_string())
        })
        .map_or_else(
            || "another version serves (it changed meanwhile)".to_string(),
            |failure| failure.error,
        ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    to: Option<String>,
}

pub(super) async fn rollback_plugin(
    State(service): State<Service>,
    ApiPath(provider): ApiPath<String>,
    super::extract::ApiBody(body): super::extract::ApiBody,
) -> Response {
    let request: RollbackBody = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(error) => {
                return ApiError::new(
                    ErrorCode::BadRequest,
                    format!("the body is not `{{\"to\": \"<version>\"}}`: {error}"),
                )
                .into_response();
            }
        }
    };
    let gateway = service.gateway().clone();
    let answer = tokio::task::spawn_blocking(move || {
        rollback_blocking(&gateway, &provider, request.to.as_deref())
    })
    .await;
    match answer {
        Ok(Ok(body)) => axum::Json(body).into_response(),
        Ok(Err(error)) => error.into_response(),
        Err(error) => ApiError::new(
            ErrorCode::InternalError,
            format!("the rollback did not finish: {error}"),
        )
        .into_response(),
    }
}

fn rollback_blocking(
    gateway: &Gateway,
    provider: &str,
    to: Option<&str>,
) -> Result<Value, ApiError> {
    if !is_provider_id(provider) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("`{provider}` is not a provider id (lower case letters, digits, `-`, `_`)"),
        ));
    }
    let versions = gateway.versions();
    let activation = versions
        .rollback(
            provider,
            to,
            &gateway.config().signatures.policy(),
            ActivatedBy::Rollback,
            Via::Api,
        )
        .map_err(|error| {
            if error.is_refusal() {
                versions.record_refusal(
                    provider,
                    &format!("rollback to {}", to.unwrap_or("the previous version")),
                    &error.to_string(),
                    Via::Api,
                );
                refused(error.to_string())
            } else {
                ApiError::new(ErrorCode::InternalError, error.to_string())
            }
        })?;
    gateway.reload_plugins();
    serving(gateway, provider, &activation.sha256).map_err(|reason| {
        refused(format!(
            "`{provider}` {} was put in place but the host did not load it: {reason}",
            activation.entry
        ))
    })?;
    Ok(json!({"provider": provider, "activation": activation}))
}

/// The version fields `GET /v1/plugins` adds: for each plugin entry, `active_version` (the
/// versions folder's active entry, `null` for a provider never installed through it),
/// `kept_versions` and `last_refusal` (the newest of the host's refusal of its file and an
/// install or rollback refused); and `versions`, every installed provider's history.
pub(super) fn with_versions(gateway: &Gateway, plugins: Value, failures: &[LoadFailure]) -> Value {
    let histories = gateway.versions().histories();
    let history_of =
        |provider: &str| -> Option<&History> { histories.iter().find(|h| h.provider == provider) };
    let plugins = match plugins {
        Value::Array(entries) => Value::Array(
            entries
                .into_iter()
                .map(|mut entry| {
                    let provider = entry["provider"].as_str().unwrap_or_default().to_string();
                    let file = entry["file"].as_str().unwrap_or_default().to_string();
                    let history = history_of(&provider);
                    let host_refusal = failures
                        .iter()
                        .find(|failure| failure.file == file)
                        .map(|failure| {
                            json!({"at_unix": failure.at_unix, "file": failure.file, "reason": failure.error, "via": "host"})
                        });
                    let install_refusal = history
                        .and_then(|history| history.last_refusal.as_ref())
                        .map(|refusal| json!(refusal));
                    let last_refusal = match (host_refusal, install_refusal) {
                        (Some(host), Some(install)) => {
                            if host["at_unix"].as_u64() >= install["at_unix"].as_u64() {
                                Some(host)
                            } else {
                                Some(install)
                            }
                        }
                        (host, install) => host.or(install),
                    };
                    if let Value::Object(fields) = &mut entry {
                        fields.insert(
                            "active_version".into(),
                            json!(history.and_then(|h| h.active()).map(|a| &a.entry)),
                        );
                        fields.insert(
                            "kept_versions".into(),
                            json!(
                                history
                                    .map(|h| h.versions.iter().map(|v| v.entry.clone()).collect())
                                    .unwrap_or_else(Vec::<String>::new)
                            ),
                        );
                        fields.insert("last_refusal".into(), json!(last_refusal));
                    }
                    entry
                })
                .collect(),
        ),
        other => other,
    };
    json!({"plugins": plugins, "versions": histories})
}
