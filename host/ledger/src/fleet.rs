//! What several hosts on one shared ledger coordinate through it, beyond the entries: who
//! reconciles which entry, who forwards webhook events and from where, and which hosts run
//! with which plugins (the fleet view).
//!
//! A ledger one process owns (SQLite) has no fleet: it claims nothing (one host reconciles
//! alone), keeps no forwarding lease (the forwarder keeps its position in a file of its own)
//! and registers no host; the [`crate::Ledger`] methods' defaults say so.

use serde::{Deserialize, Serialize};

/// A plugin a host serves: enough to tell a rolling deploy's old and new versions apart.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServedPlugin {
    pub provider: String,
    /// The manifest's `plugin_version`.
    pub version: String,
    /// SHA-256 of the library file, hex: two builds with one version number still differ here.
    pub sha256: String,
}

/// What a host says about itself in the fleet table ([`crate::Ledger::register_host`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRegistration {
    /// Where its HTTP API listens (`127.0.0.1:8080`).
    pub listen_address: String,
    /// The Gatehouse version it runs.
    pub version: String,
    /// The plugins it serves now, sorted by provider.
    pub plugins: Vec<ServedPlugin>,
}

/// One host of the fleet as the shared ledger knows it ([`crate::Ledger::fleet`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetHost {
    pub instance_id: String,
    pub listen_address: String,
    pub version: String,
    pub started_at_unix: i64,
    /// When its lease was last renewed (the ledger's heartbeat thread).
    pub heartbeat_at_unix: i64,
    /// Whether its lease is fresh. A host whose heartbeat stopped (killed, or shut down) is
    /// kept, shown as gone, until its row is a day old.
    pub live: bool,
    pub plugins: Vec<ServedPlugin>,
}

/// What [`crate::Ledger::take_forwarding_lease`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardingLease {
    /// The ledger is one process's: the forwarder keeps its own position and needs no lease.
    NotShared,
    /// This instance holds the lease: forward the events after `position`.
    Held { position: i64 },
    /// Another live instance forwards; try again later.
    HeldByPeer { holder: String },
}

/// Where the fleet's forwarder stands ([`crate::Ledger::forwarding`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarding {
    /// The sequence of the last event delivered (0: none yet).
    pub position: i64,
    /// The instance holding (or last holding) the lease.
    pub holder: Option<String>,
    /// Whether that lease is fresh.
    pub holder_live: bool,
}
