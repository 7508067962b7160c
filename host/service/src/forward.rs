//! Forwarding stored webhook events to the embedding platform: in order, at least once, with
//! retries and exponential backoff. The position reached is kept in a file beside the ledger, so
//! a restart resumes where it stopped (an event may be delivered twice around a crash: receivers
//! deduplicate by `event.event_id`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::Service;

const BATCH: usize = 100;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where the forwarder keeps its position: `<ledger file>.forwarded`.
pub fn cursor_file(config: &gatehouse_core::Config) -> PathBuf {
    let mut file = config.host.ledger.clone().into_os_string();
    file.push(".forwarded");
    file.into()
}

/// The sequence of the last event delivered (0: none yet, or no cursor file).
pub fn read_cursor(cursor_file: &std::path::Path) -> i64 {
    std::fs::read_to_string(cursor_file)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs until the task is aborted.
pub fn spawn_forwarder(service: Service, cursor_file: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = gatehouse_core::transport::build_client();
        let mut cursor: i64 = read_cursor(&cursor_file);
        loop {
            let config = service.gateway().config();
            let Some(url) = config.webhooks.forward_url.clone() else {
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            };
            let key = config
                .webhooks
                .forward_key
                .as_ref()
                .and_then(|key| key.resolve().ok())
                .map(|key| key.value);
            let events = match service.ledger().events(cursor, BATCH).await {
                Ok(events) => events,
                Err(error) => {
                    tracing::error!(%error, "cannot read events to forward");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            if events.is_empty() {
                set_lag(&service, None);
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            for stored in events {
                set_lag(&service, Some(stored.received_at_unix));
                let body = json!({
                    "sequence": stored.sequence,
                    "provider": stored.provider,
                    "account": stored.account,
                    "received_at_unix": stored.received_at_unix,
                    "event": stored.event,
                });
                let mut backoff = Duration::from_millis(250);
                loop {
                    let mut request = client
                        .post(&url)
                        .json(&body)
                        .timeout(Duration::from_secs(10));
                    if let Some(key) = &key {
                        request = request.bearer_auth(key.expose());
                    }
                    match request.send().await {
                        Ok(response) if response.status().is_success() => break,
                        Ok(response) => {
                            tracing::warn!(
                                status = response.status().as_u16(),
                                sequence = stored.sequence,
                                "event forward refused; retrying"
                            )
                        }
                        Err(error) => {
                            tracing::warn!(error = %error.without_url(), sequence = stored.sequence, "event forward failed; retrying")
                        }
                    }
                    service
                        .gateway()
                        .metrics()
                        .increment("gatehouse_webhook_forward_retries_total", &[]);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                cursor = stored.sequence;
                service.gateway().metrics().increment(
                    "gatehouse_webhook_forwarded_total",
                    &[("provider", &stored.provider)],
                );
                let temporary = cursor_file.with_extension("tmp");
                if std::fs::write(&temporary, cursor.to_string()).is_ok() {
                    let _ = std::fs::rename(&temporary, &cursor_file);
                }
            }
        }
    })
}

/// Sets the forwarder's lag: the age of the oldest event waiting (`received_at_unix`), or zero.
fn set_lag(service: &Service, oldest_waiting: Option<i64>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        });
    let lag = oldest_waiting.map_or(0, |received| now.saturating_sub(received).max(0));
    service
        .gateway()
        .metrics()
        .set_gauge("gatehouse_webhook_forward_lag_seconds", &[], lag);
}
