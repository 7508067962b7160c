//! Running the HTTP API: bind, serve, and shut down gracefully — on a public address.
//!
//! The listener is an edge an attacker can reach, so it carries its own limits (`[server]` in
//! `plugins.toml`): a connection must send its request headers within `header_read_timeout_ms`
//! (TLS handshake included), one with no request in progress is closed after
//! `idle_timeout_ms`, a request is answered within `request_timeout_ms`, at most
//! `max_concurrent_requests` run at once, and at most `max_connections` are open (capped below
//! the process's descriptor limit). Accept errors such as "too many open files" back off
//! instead of spinning. hyper (through hyper-util's server builder) reads the HTTP; the accept
//! loop and the connection bookkeeping here decide who gets a connection.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gatehouse_core::ErrorCode;
use gatehouse_core::config::ServerSettings;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tower::ServiceExt;

use crate::tls::CertificateFiles;
use crate::{ApiError, Service, api};

/// Descriptors kept for everything but client connections: the ledger's files, provider
/// connections, the plugin folder's watcher, the standard streams.
const RESERVED_DESCRIPTORS: u64 = 64;

/// How many evicted connections may be closing at once before the accept loop waits for them:
/// bounds how far past `max_connections` the descriptor count can go.
const MAX_PENDING_EVICTIONS: usize = 32;

/// The longest the accept loop pauses after an accept error (the first pause is 10 ms, doubled
/// on each further error).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves the API on `listener` until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish within the configured grace period, and returns.
pub async fn serve(
    service: Service,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let gateway = service.gateway().clone();
    let config = gateway.config();
    let settings = config.server.clone();
    let grace = Duration::from_millis(config.host.shutdown_grace_ms);
    let tls = match &settings.tls {
        Some(tls) => {
            let files = CertificateFiles::load(tls).map_err(std::io::Error::other)?;
            let server_config = files.server_config().map_err(std::io::Error::other)?;
            Some((
                files.spawn_reloader(),
                tokio_rustls::TlsAcceptor::from(server_config),
            ))
        }
        None => None,
    };
    let listen_address = listener.local_addr().map_or_else(
        |_| config.host.listen.clone(),
        |address| address.to_string(),
    );
    let registration = crate::fleet::spawn_registration(service.clone(), listen_address).await;
    let reconciler =
        service.spawn_reconciler(Duration::from_secs(config.host.reconcile_interval_secs));
    let forwarder =
        crate::forward::spawn_forwarder(service.clone(), crate::forward::cursor_file(&config));
    let limits = RequestLimits {
        slots: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
        timeout: Duration::from_millis(settings.request_timeout_ms),
    };
    let router = api::router(service)
        .merge(crate::console::router())
        .layer(axum::middleware::from_fn_with_state(limits, limit_requests));
    let max_connections = connection_limit(&settings);
    tracing::info!(
        max_connections,
        max_concurrent_requests = settings.max_concurrent_requests,
        header_read_timeout_ms = settings.header_read_timeout_ms,
        idle_timeout_ms = settings.idle_timeout_ms,
        request_timeout_ms = settings.request_timeout_ms,
        tls = tls.is_some(),
        "listener limits"
    );
    let connections = Arc::new(Connections::new(
        max_connections,
        eviction_grace(Duration::from_millis(settings.header_read_timeout_ms)),
    ));
    let edge = Arc::new(Edge {
        builder: http_builder(&settings),
        router,
        tls: tls.as_ref().map(|(_, acceptor)| acceptor.clone()),
        header_read_timeout: Duration::from_millis(settings.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
        connections: connections.clone(),
    });
    let (drain, draining) = watch::channel(false);

    accept_until(&listener, &edge, &draining, shutdown).await;
    drop(listener);
    gateway.begin_shutdown();
    tracing::info!("shutting down: no new requests; in-flight requests are finishing");
    let _ = drain.send(true);
    let finished = tokio::time::timeout(grace, connections.all_closed()).await;
    reconciler.abort();
    forwarder.abort();
    if let Some(registration) = registration {
        registration.abort();
    }
    if let Some((reloader, _)) = tls {
        reloader.abort();
    }
    if finished.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            open = connections.open(),
            "grace period over; abandoning unfinished requests"
        );
        connections.close_all();
    }
    Ok(())
}

/// Opens the listening socket for `listen` (`host:port`; a name is resolved and its first
/// address that binds is used) with `[server] listen_backlog` as its accept queue.
/// `TcpListener::bind` would fix the queue at 1 024: 2 000 connections arriving at once then
/// overflow it, and the kernel's dropped handshakes are retried by the clients seconds later.
pub async fn bind(listen: &str, settings: &ServerSettings) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for address in tokio::net::lookup_host(listen).await? {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a restarted host can listen again at once while the
        // previous process's connections are in TIME_WAIT.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket
            .bind(address)
            .and_then(|()| socket.listen(settings.listen_backlog))
        {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{listen} resolves to no address"),
        )
    }))
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `max_connections`, lowered to what the descriptor limit allows: a connection the process
/// cannot open a descriptor for would fail in `accept` anyway, and descriptors the ledger needs
/// must not be taken by clients.
fn connection_limit(settings: &ServerSettings) -> usize {
    #[cfg(unix)]
    {
        if let Ok((soft, _hard)) = rlimit::Resource::NOFILE.get() {
            let allowed = soft
                .saturating_sub(RESERVED_DESCRIPTORS + MAX_PENDING_EVICTIONS as u64)
                .max(1);
            let allowed = usize::try_from(allowed).unwrap_or(usize::MAX);
            if allowed < settings.max_connections {
                tracing::warn!(
                    configured = settings.max_connections,
                    allowed,
                    descriptor_limit = soft,
                    "server.max_connections lowered to fit the descriptor limit"
                );
                return allowed;
            }
        }
    }
    settings.max_connections
}

/// How long a new connection is safe from eviction once its task has first run (a connection
/// whose task has not run yet is never evicted: see [`ConnectionState::started_ms`]): long
/// enough for an honest client's headers to arrive and be read even on a busy machine, short
/// against the header timeout. 10 ms from the accept was too short: on a loaded 2-core machine
/// a health check's connection, accepted amid 2 000 attackers, was evicted before its task had
/// read the request; at load 8, 40 ms from the accept still was (its task waited in a
/// preempted worker's queue), hence the clock now starts when the task runs. Longer is not better: the grace also bounds how fast a
/// flood cycles through the connection slots (each slot at most once per grace period), so at
/// 100 ms 2 000 attackers waited in the accept queue 5.5 s before being closed.
fn eviction_grace(header_read_timeout: Duration) -> Duration {
    (header_read_timeout / 50).clamp(Duration::ZERO, Duration::from_millis(40))
}

fn http_builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper restarts this timer whenever a connection waits for its next request's head, and
    // does not reset it on partial reads: a client trickling header lines is cut off in time.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(settings.header_read_timeout_ms));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(Some(
            u32::try_from(settings.max_concurrent_requests).unwrap_or(u32::MAX),
        ));
    builder
}

/// What every connection task shares.
struct Edge {
    builder: auto::Builder<TokioExecutor>,
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    connections: Arc<Connections>,
}

async fn accept_until(
    listener: &TcpListener,
    edge: &Arc<Edge>,
    draining: &watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff: Option<Duration> = None;
    let mut failed_accepts: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                if failed_accepts > 0 {
                    tracing::info!(failed_accepts, "accepting connections again");
                    failed_accepts = 0;
                }
                backoff = None;
                let _ = stream.set_nodelay(true);
                let Some(state) = edge.connections.admit(&mut shutdown).await else {
                    return;
                };
                tokio::spawn(run_connection(
                    stream,
                    state,
                    edge.clone(),
                    draining.clone(),
                ));
                // Let the new connection's task read what its client already sent before the
                // next accept can displace it: under a flood, accepts are always ready.
                tokio::task::yield_now().await;
            }
            // The client gave up between its handshake and our accept: nothing to wait for.
            Err(error) if is_connection_error(&error) => {}
            Err(error) => {
                // Out of descriptors (or memory): accepting again at once would fail the same
                // way and spin a core. Pause, doubling, and make room by closing an idle
                // connection; log once per run of failures.
                failed_accepts += 1;
                let pause = backoff.map_or(Duration::from_millis(10), |pause| {
                    (pause * 2).min(MAX_ACCEPT_BACKOFF)
                });
                if backoff.is_none() {
                    tracing::warn!(%error, "accept failed; backing off");
                }
                backoff = Some(pause);
                edge.connections.evict_one();
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// One connection: the TLS handshake if any, then HTTP until the client leaves, the connection
/// is evicted, it idles out, or the server drains.
async fn run_connection(
    stream: TcpStream,
    state: Arc<ConnectionState>,
    edge: Arc<Edge>,
    mut draining: watch::Receiver<bool>,
) {
    let _open = OpenConnection {
        connections: edge.connections.clone(),
        state: state.clone(),
    };
    state
        .started_ms
        .store(millis_since(state.epoch), Ordering::SeqCst);
    match &edge.tls {
        None => serve_http(TokioIo::new(stream), &state, &edge, &mut draining).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(edge.header_read_timeout, acceptor.accept(stream));
            let stream = tokio::select! {
                result = handshake => match result {
                    Ok(Ok(stream)) => stream,
                    // A failed or too slow handshake: the client is told by rustls or not at all.
                    _ => return,
                },
                _ = state.close.notified() => return,
                _ = draining.changed() => return,
            };
            serve_http(TokioIo::new(stream), &state, &edge, &mut draining).await;
        }
    }
}

async fn serve_http<I>(
    io: TokioIo<I>,
    state: &Arc<ConnectionState>,
    edge: &Edge,
    draining: &mut watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = edge.router.clone();
    let requests = state.clone();
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let in_progress = RequestInProgress::begin(requests.clone());
            let router = router.clone();
            async move {
                let response = router.oneshot(request.map(axum::body::Body::new)).await;
                drop(in_progress);
                response
            }
        });
    let connection = edge.builder.serve_connection(io, service);
    tokio::pin!(connection);
    let check_every = (edge.header_read_timeout.min(edge.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut checks = tokio::time::interval(check_every);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain_started = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            // Evicted to make room: it had no request in progress, so nothing is lost.
            _ = state.close.notified() => return,
            _ = draining.changed(), if !drain_started => {
                drain_started = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = checks.tick() => {
                if state.in_progress.load(Ordering::SeqCst) == 0 {
                    let quiet = edge.connections.since(state.last_active_ms.load(Ordering::SeqCst));
                    // The first request's headers must arrive within the header timeout
                    // whatever the protocol (hyper's own timer covers HTTP/1 afterwards).
                    let first_request_late = state.requests.load(Ordering::SeqCst) == 0
                        && quiet >= edge.header_read_timeout;
                    if first_request_late || quiet >= edge.idle_timeout {
                        return;
                    }
                }
            }
        }
    }
}

/// [`ConnectionState::started_ms`] of a connection whose task has not run yet.
const NOT_STARTED: u64 = u64::MAX;

/// The open connections, for the limit and for eviction.
struct Connections {
    open: std::sync::Mutex<HashMap<u64, Arc<ConnectionState>>>,
    next_id: AtomicU64,
    limit: usize,
    /// See [`eviction_grace`].
    grace_ms: u64,
    closed: Notify,
    epoch: Instant,
}

struct ConnectionState {
    id: u64,
    /// Requests whose headers were read and whose answer is not finished.
    in_progress: AtomicUsize,
    /// Requests started on this connection so far.
    requests: AtomicU64,
    /// When its task first ran, that is when the host could first read what the client sent
    /// (milliseconds since [`Connections::epoch`]); [`NOT_STARTED`] until then. The eviction
    /// grace counts from here, not from the accept: on a loaded machine a just-spawned task can
    /// wait in a preempted worker's queue while hundreds of newer connections are accepted, and
    /// a client whose request was never read must not be evicted as "idle".
    started_ms: AtomicU64,
    /// When the connection was accepted or a request on it last started or ended
    /// (milliseconds since [`Connections::epoch`]).
    last_active_ms: AtomicU64,
    evicted: AtomicBool,
    close: Notify,
    /// The same instant as [`Connections::epoch`].
    epoch: Instant,
}

impl Connections {
    fn new(limit: usize, grace: Duration) -> Self {
        Self {
            open: std::sync::Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            limit,
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            closed: Notify::new(),
            epoch: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnectionState>>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now_ms(&self) -> u64 {
        millis_since(self.epoch)
    }

    fn since(&self, then_ms: u64) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(then_ms))
    }

    fn open(&self) -> usize {
        self.lock().len()
    }

    /// Registers a just-accepted connection. At the limit, the connection that has gone longest
    /// without a request in progress (one still sending its headers, or idle between requests)
    /// is closed to make room: a client that holds connections without using them cannot keep
    /// others out. When every connection has a request in progress, waits for one to close
    /// (new clients meanwhile wait in the kernel's queue). `None`: shutdown came first.
    async fn admit(
        &self,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Option<Arc<ConnectionState>> {
        loop {
            let closed = self.closed.notified();
            {
                let mut open = self.lock();
                let pending_evictions = open
                    .values()
                    .filter(|state| state.evicted.load(Ordering::SeqCst))
                    .count();
                let room = open.len() - pending_evictions < self.limit
                    || (pending_evictions < MAX_PENDING_EVICTIONS && self.evict_oldest_idle(&open));
                if room && open.len() < self.limit + MAX_PENDING_EVICTIONS {
                    let id = self.next_id.fetch_add(1, Ordering::SeqCst);
                    let state = Arc::new(ConnectionState {
                        id,
                        in_progress: AtomicUsize::new(0),
                        requests: AtomicU64::new(0),
                        started_ms: AtomicU64::new(NOT_STARTED),
                        last_active_ms: AtomicU64::new(self.now_ms()),
                        evicted: AtomicBool::new(false),
                        close: Notify::new(),
                        epoch: self.epoch,
                    });
                    open.insert(id, state.clone());
                    return Some(state);
                }
            }
            tokio::select! {
                _ = closed => {}
                // A busy connection may become idle (evictable) without closing.
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = &mut *shutdown => return None,
            }
        }
    }

    /// Closes the connection longest without a request in progress, if there is one.
    fn evict_one(&self) {
        self.evict_oldest_idle(&self.lock());
    }

    /// Closes the connection that has gone longest without a request in progress, among those
    /// past their eviction grace; `false` if there is none.
    fn evict_oldest_idle(&self, open: &HashMap<u64, Arc<ConnectionState>>) -> bool {
        let now = self.now_ms();
        let victim = open
            .values()
            .filter(|state| {
                !state.evicted.load(Ordering::SeqCst)
                    && state.in_progress.load(Ordering::SeqCst) == 0
                    && state.started_ms.load(Ordering::SeqCst) != NOT_STARTED
                    && now.saturating_sub(state.started_ms.load(Ordering::SeqCst)) >= self.grace_ms
            })
            .min_by_key(|state| state.last_active_ms.load(Ordering::SeqCst));
        match victim {
            Some(victim) => {
                victim.evicted.store(true, Ordering::SeqCst);
                // `notify_one` keeps the wake-up if the task is not waiting yet.
                victim.close.notify_one();
                true
            }
            None => false,
        }
    }

    /// Closes every connection, busy or not (the grace period is over).
    fn close_all(&self) {
        for state in self.lock().values() {
            state.evicted.store(true, Ordering::SeqCst);
            state.close.notify_one();
        }
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
        self.closed.notify_waiters();
    }

    async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            if self.lock().is_empty() {
                return;
            }
            closed.await;
        }
    }
}

/// Removes its connection from [`Connections`] when the connection's task ends, however it ends.
struct OpenConnection {
    connections: Arc<Connections>,
    state: Arc<ConnectionState>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.connections.remove(self.state.id);
    }
}

/// Marks a request in progress on its connection (so the connection is not evicted or idled
/// out under it) until dropped.
struct RequestInProgress {
    state: Arc<ConnectionState>,
}

impl RequestInProgress {
    fn begin(state: Arc<ConnectionState>) -> Self {
        state.in_progress.fetch_add(1, Ordering::SeqCst);
        state.requests.fetch_add(1, Ordering::SeqCst);
        state.touch();
        Self { state }
    }
}

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        self.state.touch();
        self.state.in_progress.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ConnectionState {
    fn touch(&self) {
        self.last_active_ms
            .store(millis_since(self.epoch), Ordering::SeqCst);
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The bound on concurrent requests and on each request's time.
#[derive(Clone)]
struct RequestLimits {
    slots: Arc<Semaphore>,
    timeout: Duration,
}

/// Runs a request once a slot is free, within the request timeout (the wait for a slot and the
/// reading of the body included). A money-moving command the request started is not cancelled
/// by its answer timing out: the service runs dispatches on tasks of their own and records them.
async fn limit_requests(
    State(limits): State<RequestLimits>,
    request: Request,
    next: Next,
) -> Response {
    let run = async {
        let _slot = limits.slots.acquire().await;
        next.run(request).await
    };
    match tokio::time::timeout(limits.timeout, run).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request did not finish within {} ms (server.request_timeout_ms); a command it started goes on and a retry with the same Idempotency-Key gets its outcome",
                limits.timeout.as_millis()
            ),
        )
        .into_response(),
    }
}
