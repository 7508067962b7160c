//! axum's extractors with their rejections answered in the API's JSON envelope: a bad query
//! (`?limit=abc`), a bad path segment, a body over the limit or unreadable all get a stable code
//! instead of axum's plain text.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use gatehouse_core::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `Path<T>`, rejected as `bad_request`.
pub struct ApiPath<T>(pub T);

/// `Query<T>`, rejected as `bad_request`.
pub struct ApiQuery<T>(pub T);

/// The raw body, rejected as `payload_too_large` past the router's limit.
pub struct ApiBody(pub Bytes);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|rejection: PathRejection| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!("bad path: {}", rejection.body_text()),
                )
            })
    }
}

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!("bad query string: {}", rejection.body_text()),
                )
            })
    }
}

impl<S> FromRequest<S> for ApiBody
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(request, state)
            .await
            .map(Self)
            .map_err(|rejection: BytesRejection| {
                let code = if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ErrorCode::PayloadTooLarge
                } else {
                    ErrorCode::BadRequest
                };
                ApiError::new(
                    code,
                    format!("the body cannot be read: {}", rejection.body_text()),
                )
            })
    }
}
