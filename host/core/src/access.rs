//! Who may do what: the scopes of an API key (`[[api.key]]` in `plugins.toml`) and the providers
//! and accounts it is limited to.
//!
//! A key grants kinds of operation ([`Scope`]) on a set of accounts ([`Grant`]). The HTTP API
//! checks both before any I/O and before the ledger (`gatehouse_service::api`); this module only
//! says what a grant allows, so the API, the console and an embedder read it the same way.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A kind of operation a key may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Look: reports, status, balance, saved accounts, the ledger, events, plugins, metrics.
    Read,
    /// Move money: charges, refunds, payouts, payment pages, saved-account deletion, sandbox
    /// chargebacks.
    MoveMoney,
    /// Act on the host: resume a paused account, reconcile, settle a ledger entry by hand,
    /// install or roll back a plugin.
    Operate,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Self::Read, Self::MoveMoney, Self::Operate];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::MoveMoney => "move_money",
            Self::Operate => "operate",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one key may do: which scopes, on which providers and accounts. Empty `providers` and
/// `accounts` lists mean "every one".
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub scopes: BTreeSet<Scope>,
    /// Only these providers (every account of each), when not empty.
    pub providers: BTreeSet<String>,
    /// Only these `(provider, account)` pairs, when not empty.
    pub accounts: BTreeSet<(String, String)>,
}

impl Grant {
    /// Every scope on every account: what a key of the plain `[api] keys` list grants.
    pub fn full() -> Self {
        Self {
            scopes: Scope::ALL.into_iter().collect(),
            providers: BTreeSet::new(),
            accounts: BTreeSet::new(),
        }
    }

    pub fn allows_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether the key reaches every account (no provider or account list).
    pub fn is_unlimited(&self) -> bool {
        self.providers.is_empty() && self.accounts.is_empty()
    }

    /// Whether the key reaches at least one account of `provider`.
    pub fn allows_provider(&self, provider: &str) -> bool {
        (self.providers.is_empty() || self.providers.contains(provider))
            && (self.accounts.is_empty() || self.accounts.iter().any(|(p, _)| p == provider))
    }

    /// Whether the key reaches `provider`/`account`.
    pub fn allows_account(&self, provider: &str, account: &str) -> bool {
        (self.providers.is_empty() || self.providers.contains(provider))
            && (self.accounts.is_empty()
                || self
                    .accounts
                    .contains(&(provider.to_string(), account.to_string())))
    }

    /// The provider and account filters a query by this key must use: the caller's own, if the
    /// key reaches them, or the only provider (account) the key reaches when the caller gave
    /// none. A limited key that reaches several and was given none cannot list them all in one
    /// query: the error says which filter to give.
    pub fn narrow(
        &self,
        provider: Option<String>,
        account: Option<String>,
    ) -> Result<(Option<String>, Option<String>), String> {
        if self.is_unlimited() {
            return Ok((provider, account));
        }
        let reachable: BTreeSet<&str> = if self.accounts.is_empty() {
            self.providers.iter().map(String::as_str).collect()
        } else {
            self.accounts
                .iter()
                .map(|(provider, _)| provider.as_str())
                .filter(|provider| self.providers.is_empty() || self.providers.contains(*provider))
                .collect()
        };
        let provider = match provider {
            Some(provider) if self.allows_provider(&provider) => provider,
            Some(provider) => return Err(format!("the key does not reach provider `{provider}`")),
            None if reachable.len() == 1 => reachable
                .iter()
                .next()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            None => {
                return Err(format!(
                    "the key is limited to some providers ({}): give `provider`",
                    reachable.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        };
        if self.accounts.is_empty() {
            return Ok((Some(provider), account));
        }
        let accounts: Vec<&str> = self
            .accounts
            .iter()
            .filter(|(p, _)| *p == provider)
            .map(|(_, account)| account.as_str())
            .collect();
        let account = match account {
            Some(account) if self.allows_account(&provider, &account) => account,
            Some(account) => {
                return Err(format!(
                    "the key does not reach account `{provider}/{account}`"
                ));
            }
            None if accounts.len() == 1 => accounts[0].to_string(),
            None => {
                return Err(format!(
                    "the key is limited to some accounts of `{provider}` ({}): give `account`",
                    accounts.join(", ")
                ));
            }
        };
        Ok((Some(provider), Some(account)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(providers: &[&str], accounts: &[(&str, &str)]) -> Grant {
        Grant {
            scopes: [Scope::Read].into_iter().collect(),
            providers: providers.iter().map(|p| p.to_string()).collect(),
            accounts: accounts
                .iter()
                .map(|(p, a)| (p.to_string(), a.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_full_grant_reaches_everything() {
        let grant = Grant::full();
        assert!(Scope::ALL.iter().all(|scope| grant.allows_scope(*scope)));
        assert!(grant.allows_account("any", "where"));
        assert_eq!(grant.narrow(None, None), Ok((None, None)));
    }

    #[test]
    fn providers_and_accounts_limit_a_grant() {
        let grant = limited(&["xsolla"], &[]);
        assert!(grant.allows_account("xsolla", "main") && grant.allows_account("xsolla", "eu"));
        assert!(!grant.allows_account("ccbill", "main"));
        assert!(!grant.allows_scope(Scope::MoveMoney));
        assert_eq!(grant.narrow(None, None), Ok((Some("xsolla".into()), None)));
        assert!(grant.narrow(Some("ccbill".into()), None).is_err());

        let grant = limited(
            &[],
            &[("xsolla", "main"), ("xsolla", "eu"), ("ccbill", "main")],
        );
        assert!(grant.allows_provider("ccbill") && !grant.allows_provider("kolmisoft"));
        assert!(!grant.allows_account("ccbill", "eu"));
        let error = grant.narrow(None, None).expect_err("two providers");
        assert!(error.contains("ccbill, xsolla"), "{error}");
        assert_eq!(
            grant.narrow(Some("ccbill".into()), None),
            Ok((Some("ccbill".into()), Some("main".into())))
        );
        let error = grant
            .narrow(Some("xsolla".into()), None)
            .expect_err("two accounts");
        assert!(error.contains("eu, main"), "{error}");
        assert!(
            grant
                .narrow(Some("xsolla".into()), Some("us".into()))
                .is_err()
        );
    }
}
