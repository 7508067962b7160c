//! Forwarding stored webhook events to the embedding platform: in order, at least once, with
//! retries and exponential backoff.
//!
//! Where the position is kept depends on the ledger:
//! - **A ledger this process owns (SQLite)**: in a file beside it (`<ledger>.forwarded`), so a
//!   restart resumes where it stopped.
//! - **A shared ledger (PostgreSQL)**: in the database, under the fleet's one forwarding lease
//!   (`Ledger::take_forwarding_lease`): exactly one host forwards at a time; the others wait
//!   for the lease. The holder renews it with every event it records as delivered (and while it
//!   retries one); a host that is killed stops renewing it, and another takes over from the
//!   recorded position once it lapsed ([`FORWARDING_LEASE`]).
//!
//! Either way an event may be delivered twice around a crash or a takeover (the one delivered
//! but not yet recorded): receivers deduplicate by `event.event_id` or `sequence`.

use std::path::PathBuf;
use std::time::Duration;

use gatehouse_ledger::{ForwardingLease, StoredEvent};
use serde_json::json;

use crate::Service;

const BATCH: usize = 100;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long the forwarding lease lasts without renewal: how long a killed forwarder holds up
/// the fleet's forwarding before another host takes over.
pub const FORWARDING_LEASE: Duration = Duration::from_secs(5);

/// How often a host that does not hold the lease asks for it.
const LEASE_POLL: Duration = Duration::from_millis(500);

/// Where the forwarder keeps its position with a ledger it owns: `<ledger file>.forwarded`.
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

/// Where the forwarder's position lives and who may move it.
enum Position {
    /// A file of this process's (SQLite ledger).
    File { file: PathBuf, sequence: i64 },
    /// The shared ledger, while this instance holds the forwarding lease.
    Shared { sequence: i64 },
}

/// Why forwarding stopped before the batch's end.
enum Stop {
    /// Another host holds the lease now (ours lapsed): ask for it again.
    LeaseLost,
}

/// Runs until the task is aborted.
pub fn spawn_forwarder(service: Service, cursor_file: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = gatehouse_core::transport::build_client();
        loop {
            let config = service.gateway().config();
            if config.webhooks.forward_url.is_none() {
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            let Some(mut position) = take_position(&service, &cursor_file).await else {
                tokio::time::sleep(LEASE_POLL).await;
                continue;
            };
            let after = match &position {
                Position::File { sequence, .. } | Position::Shared { sequence } => *sequence,
            };
            let events = match service.ledger().events(after, BATCH).await {
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
                if let Err(Stop::LeaseLost) =
                    forward_one(&service, &client, &stored, &mut position).await
                {
                    tracing::warn!(
                        sequence = stored.sequence,
                        "the forwarding lease passed to another host; this one stops forwarding"
                    );
                    break;
                }
            }
        }
    })
}

/// The position to forward from: the file's, or the shared ledger's when this instance holds
/// (or takes) the lease; `None` while another host forwards or the ledger cannot be asked.
async fn take_position(service: &Service, cursor_file: &std::path::Path) -> Option<Position> {
    match service
        .ledger()
        .call(|ledger| ledger.take_forwarding_lease(FORWARDING_LEASE))
        .await
    {
        Ok(ForwardingLease::NotShared) => Some(Position::File {
            file: cursor_file.to_path_buf(),
            sequence: read_cursor(cursor_file),
        }),
        Ok(ForwardingLease::Held { position }) => Some(Position::Shared { sequence: position }),
        Ok(ForwardingLease::HeldByPeer { .. }) => None,
        Err(error) => {
            tracing::error!(%error, "cannot take the forwarding lease");
            None
        }
    }
}

/// Delivers one event (retrying until the receiver takes it) and records it as delivered.
async fn forward_one(
    service: &Service,
    client: &reqwest::Client,
    stored: &StoredEvent,
    position: &mut Position,
) -> Result<(), Stop> {
    set_lag(service, Some(stored.received_at_unix));
    let body = json!({
        "sequence": stored.sequence,
        "provider": stored.provider,
        "account": stored.account,
        "received_at_unix": stored.received_at_unix,
        "event": stored.event,
    });
    let mut backoff = Duration::from_millis(250);
    loop {
        // Read each try: an operator may change the receiver while one is refused.
        let config = service.gateway().config();
        let Some(url) = config.webhooks.forward_url.clone() else {
            return Ok(());
        };
        let key = config
            .webhooks
            .forward_key
            .as_ref()
            .and_then(|key| key.resolve().ok())
            .map(|key| key.value);
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
        // A long retry must not let the lease lapse under it (another host would start
        // forwarding behind this one, out of order).
        if let Position::Shared { .. } = position
            && !matches!(
                service
                    .ledger()
                    .call(|ledger| ledger.take_forwarding_lease(FORWARDING_LEASE))
                    .await,
                Ok(ForwardingLease::Held { .. })
            )
        {
            return Err(Stop::LeaseLost);
        }
    }
    service.gateway().metrics().increment(
        "gatehouse_webhook_forwarded_total",
        &[("provider", &stored.provider)],
    );
    match position {
        Position::File { file, sequence } => {
            *sequence = stored.sequence;
            let temporary = file.with_extension("tmp");
            if std::fs::write(&temporary, sequence.to_string()).is_ok() {
                let _ = std::fs::rename(&temporary, &*file);
            }
            Ok(())
        }
        Position::Shared { sequence } => {
            *sequence = stored.sequence;
            let delivered = stored.sequence;
            match service
                .ledger()
                .call(move |ledger| ledger.record_forwarded(delivered, FORWARDING_LEASE))
                .await
            {
                Ok(true) => Ok(()),
                Ok(false) => Err(Stop::LeaseLost),
                Err(error) => {
                    // Not recorded: the next holder (this host or another) delivers it again.
                    tracing::error!(%error, sequence = delivered, "forwarded event not recorded");
                    Err(Stop::LeaseLost)
                }
            }
        }
    }
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
