//! Running the HTTP API: bind, serve, and shut down gracefully.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::{Service, api};

/// Serves the API on `listener` until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish within the configured grace period, and returns.
pub async fn serve(
    service: Service,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let gateway = service.gateway().clone();
    let grace = Duration::from_millis(gateway.config().host.shutdown_grace_ms);
    let reconciler = service.spawn_reconciler(Duration::from_secs(60));
    let mut cursor_file = gateway.config().host.ledger.clone().into_os_string();
    cursor_file.push(".forwarded");
    let forwarder = crate::forward::spawn_forwarder(service.clone(), cursor_file.into());
    let router = api::router(service);
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let draining_gateway = gateway.clone();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        draining_gateway.begin_shutdown();
        tracing::info!("shutting down: no new requests; in-flight requests are finishing");
        let _ = stopping.send(());
    });
    let server = tokio::spawn(async move { server.await });
    // Wait for the server to finish by itself, or for the grace period after shutdown began.
    let mut server = server;
    tokio::select! {
        result = &mut server => {
            reconciler.abort();
            forwarder.abort();
            return result.unwrap_or_else(|error| Err(std::io::Error::other(error.to_string())));
        }
        _ = stopped => {}
    }
    let finished = tokio::time::timeout(grace, &mut server).await;
    reconciler.abort();
    forwarder.abort();
    match finished {
        Ok(result) => result.unwrap_or_else(|error| Err(std::io::Error::other(error.to_string()))),
        Err(_) => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "grace period over; abandoning unfinished requests"
            );
            server.abort();
            Ok(())
        }
    }
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
