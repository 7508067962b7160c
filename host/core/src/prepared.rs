//! The one door: a command checked once, and the only ways to dispatch it.
//!
//! [`Gateway::prepare`](crate::Gateway::prepare) makes every check that needs no I/O (plugin
//! loaded, operation and `extra` fields in its manifest, report name, account configured and
//! satisfying the manifest, amount positive, account not paused) and returns a [`Prepared`]
//! command holding what dispatch needs: the plugin version, the configuration, the resolved
//! account and its runtime. Dispatch never checks again, and never against another
//! configuration than the one the checks saw.
//!
//! Architecture Invariant: a command the ledger must record (money-moving operations and payment
//! pages, see [`records`]) can only be dispatched as a [`RecordedCommand`] together with a
//! [`Reservation`], and a reservation is only made by [`gatehouse_ledger::reserve`] once the
//! command's entry is durable. No surface — HTTP, CLI or a platform's own code — can send money
//! past the ledger, because the types offer no other way.

use std::sync::Arc;

use gatehouse_ledger::{NewEntry, Reservation, request_hash};
use gatehouse_plugin_api::{Command, Operation};

use crate::accounts::AccountRuntime;
use crate::config::Config;
use crate::loader::LoadedPlugin;
use crate::resolve::ResolvedAccount;

/// Whether the ledger records commands of `operation` before they are sent: the money-moving
/// ones, and payment pages, which become charges a platform reconciles its orders against (a
/// `payment` webhook finds its entry by the host-made reference the page carries).
pub fn records(operation: Operation) -> bool {
    operation.moves_money() || operation == Operation::PaymentPage
}

/// A command that passed every check the gateway makes before any I/O.
pub struct Prepared {
    pub(crate) provider: String,
    pub(crate) account: String,
    pub(crate) command: Command,
    pub(crate) plugin: Arc<LoadedPlugin>,
    pub(crate) config: Arc<Config>,
    pub(crate) resolved: Arc<crate::resolve::ResolvedAccount>,
    pub(crate) runtime: Arc<AccountRuntime>,
    pub(crate) inbound_body: Vec<u8>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The resolved account holds secrets: only say what the command is.
        f.debug_struct("Prepared")
            .field("provider", &self.provider)
            .field("account", &self.account)
            .field("operation", &self.command.operation())
            .field("plugin_version", &self.plugin.manifest.plugin_version)
            .finish_non_exhaustive()
    }
}

/// Which door a prepared command goes through.
#[derive(Debug)]
pub enum Door {
    /// Reads, webhooks, sandbox tests: nothing to record first.
    Direct(DirectCommand),
    /// Money-moving commands and payment pages: the ledger records them before they are sent.
    Recorded(RecordedCommand),
}

/// A prepared command that needs no ledger entry.
#[derive(Debug)]
pub struct DirectCommand(pub(crate) Prepared);

/// A prepared command the ledger must record before it is sent. The request hash is computed
/// once, here; the reservation must carry the same one.
#[derive(Debug)]
pub struct RecordedCommand {
    pub(crate) prepared: Prepared,
    pub(crate) request_hash: String,
}

impl Prepared {
    pub fn provider(&self) -> &str {
        &self.provider
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    pub fn command(&self) -> &Command {
        &self.command
    }

    pub fn operation(&self) -> Operation {
        self.command.operation()
    }

    /// The version of the plugin that will serve the whole flow.
    /// The manifest of the plugin version that will serve the command.
    pub fn manifest(&self) -> &gatehouse_plugin_api::Manifest {
        &self.plugin.manifest
    }

    pub fn plugin_version(&self) -> &str {
        &self.plugin.manifest.plugin_version
    }

    /// The resolved account (secrets included: never log it).
    pub fn resolved_account(&self) -> &ResolvedAccount {
        &self.resolved
    }

    /// Sorts the command to its door.
    pub fn into_door(self) -> Door {
        if records(self.operation()) {
            let request_hash = request_hash(&self.provider, &self.account, &self.command);
            Door::Recorded(RecordedCommand {
                prepared: self,
                request_hash,
            })
        } else {
            Door::Direct(DirectCommand(self))
        }
    }
}

impl DirectCommand {
    pub fn prepared(&self) -> &Prepared {
        &self.0
    }

    /// The raw body of the inbound webhook this command verifies.
    pub fn with_inbound_body(mut self, body: Vec<u8>) -> Self {
        self.0.inbound_body = body;
        self
    }
}

impl RecordedCommand {
    pub fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    /// The canonical hash of the command, for idempotency comparison.
    pub fn request_hash(&self) -> &str {
        &self.request_hash
    }

    /// The ledger entry to reserve for this command under the host-made reference `id`.
    pub fn new_entry(&self, id: String, idempotency_key: Option<String>) -> NewEntry {
        NewEntry {
            id,
            provider: self.prepared.provider.clone(),
            account: self.prepared.account.clone(),
            operation: self.prepared.operation(),
            idempotency_key,
            request_hash: self.request_hash.clone(),
            command: self.prepared.command.clone(),
            actor: None,
        }
    }

    /// Whether `reservation` was made for this very command.
    pub(crate) fn matches(&self, reservation: &Reservation) -> bool {
        reservation.provider() == self.prepared.provider
            && reservation.account() == self.prepared.account
            && reservation.request_hash() == self.request_hash
    }
}
