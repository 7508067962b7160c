//! Shared support for the provider simulators.
//!
//! A simulator is an axum [`Router`] that follows one provider's documented wire format. This
//! crate serves it on loopback ([`serve`]), counts the calls that reach it ([`CallLog`]) and
//! injects transport and protocol faults on demand ([`Faults`]), so tests can check how the host
//! behaves when a provider misbehaves.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A simulator serving on `127.0.0.1`. Dropping it stops the server.
pub struct RunningSimulator {
    pub address: SocketAddr,
    pub faults: Faults,
    pub calls: CallLog,
    shutdown: Option<oneshot::Sender<()>>,
}

impl RunningSimulator {
    /// `http://127.0.0.1:PORT`, with no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Serves `router` on an ephemeral loopback port, with fault injection and call logging in front.
pub async fn serve(router: Router) -> std::io::Result<RunningSimulator> {
    serve_on("127.0.0.1:0".parse().expect("loopback address"), router).await
}

/// Serves `router` on `address` (port 0 picks a free one).
pub async fn serve_on(address: SocketAddr, router: Router) -> std::io::Result<RunningSimulator> {
    let listener = TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    let faults = Faults::default();
    let calls = CallLog::default();
    let router = router
        .layer(middleware::from_fn_with_state(
            faults.clone(),
            inject_faults,
        ))
        .layer(middleware::from_fn_with_state(calls.clone(), log_calls));
    let (shutdown, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(RunningSimulator {
        address,
        faults,
        calls,
        shutdown: Some(shutdown),
    })
}

/// A fault the simulator applies to the next request that reaches it.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Wait this long before handling the request (to exceed the host's timeout; the request
    /// never takes effect if the client gives up first).
    Delay(Duration),
    /// Handle the request (it takes effect), then wait this long before answering: the client
    /// sees a timeout although the provider acted.
    DelayAfter(Duration),
    /// Answer with this status and body instead of handling the request.
    Status(u16, String),
    /// Handle the request, then send only the first half of the body.
    TruncateBody,
    /// Handle the request, then claim the body is `text/html`.
    WrongContentType(&'static str),
    /// Answer 200 with this body instead of handling the request (valid JSON of the wrong shape...).
    Body(String),
    /// Answer 200 with a body of this many bytes.
    EnormousBody(usize),
    /// Handle the request, then break the connection in the middle of the body.
    ResetMidBody,
    /// Do not handle the request: break the connection before any answer.
    DropConnection,
}

/// A queue of faults, applied one per request, in order.
#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<VecDeque<Fault>>>);

impl Faults {
    pub fn push(&self, fault: Fault) {
        self.0.lock().expect("faults lock").push_back(fault);
    }

    pub fn clear(&self) {
        self.0.lock().expect("faults lock").clear();
    }

    fn next(&self) -> Option<Fault> {
        self.0.lock().expect("faults lock").pop_front()
    }
}

/// Every request that reached the simulator: method and path (query included).
#[derive(Clone, Default)]
pub struct CallLog(Arc<Mutex<Vec<String>>>);

impl CallLog {
    pub fn all(&self) -> Vec<String> {
        self.0.lock().expect("call log lock").clone()
    }

    /// How many requests had a path starting with `path_prefix`.
    pub fn count(&self, path_prefix: &str) -> usize {
        self.all()
            .iter()
            .filter(|line| {
                line.split_once(' ')
                    .is_some_and(|(_, path)| path.starts_with(path_prefix))
            })
            .count()
    }
}

async fn log_calls(State(calls): State<CallLog>, request: Request, next: Next) -> Response {
    let line = format!(
        "{} {}",
        request.method(),
        request
            .uri()
            .path_and_query()
            .map_or("/", |path| path.as_str())
    );
    calls.0.lock().expect("call log lock").push(line);
    next.run(request).await
}

async fn inject_faults(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    let Some(fault) = faults.next() else {
        return next.run(request).await;
    };
    match fault {
        Fault::Delay(duration) => {
            tokio::time::sleep(duration).await;
            next.run(request).await
        }
        Fault::DelayAfter(duration) => {
            // Run the handler to completion even if the client disconnects meanwhile.
            let response = tokio::spawn(next.run(request)).await;
            tokio::time::sleep(duration).await;
            response.unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Fault::Status(status, body) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response(),
        Fault::Body(body) => (StatusCode::OK, body).into_response(),
        Fault::EnormousBody(size) => (StatusCode::OK, vec![b'x'; size]).into_response(),
        Fault::WrongContentType(content_type) => {
            let mut response = next.run(request).await;
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        Fault::TruncateBody => {
            let response = next.run(request).await;
            let (mut parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let half = bytes.slice(0..bytes.len() / 2);
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(half))
        }
        Fault::ResetMidBody => {
            let response = next.run(request).await;
            let (mut parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let half = bytes.slice(0..bytes.len() / 2);
            // Announce the full length, send half, then fail the stream: the client sees the
            // connection break in the middle of the body.
            parts.headers.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(bytes.len().max(1) as u64 + 16),
            );
            let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
                Ok(half),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected reset",
                )),
            ];
            Response::from_parts(parts, Body::from_stream(futures_util::stream::iter(chunks)))
        }
        Fault::DropConnection => {
            let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected drop",
            ))];
            let mut response = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("100"));
            response
        }
    }
}

/// Answers a request form or JSON body as key/value pairs, whichever the client sent.
pub fn parse_form_or_json(
    content_type: Option<&str>,
    body: &[u8],
) -> Option<Vec<(String, String)>> {
    if content_type.is_some_and(|value| value.starts_with("application/json")) {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let object = value.as_object()?;
        Some(
            object
                .iter()
                .map(|(key, value)| {
                    let text = match value {
                        serde_json::Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    (key.clone(), text)
                })
                .collect(),
        )
    } else {
        Some(
            form_urlencoded::parse(body)
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect(),
        )
    }
}
