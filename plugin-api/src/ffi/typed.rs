//! The typed boundary of `start_v3`/`resume_v3`: the hot types laid out for the ABI instead of
//! crossing as JSON.
//!
//! A charge command crosses as [`FfiCharge`], borrowed from the host's own [`Command`] (no text
//! made per dispatch, none parsed by the plugin), and an outcome without an error or details
//! crosses as [`FfiOutcome`]'s typed fields. Everything else keeps the JSON of its type, in the
//! same call: any other command in [`FfiInvocationV3::command`], an outcome the typed fields cannot
//! carry in [`FfiOutcome::json`]. abi_stable checks every type here at load, like the rest of the
//! root module.
//!
//! Architecture Invariant: these layouts never change within a `0.MINOR`. A field the JSON types
//! gain in a later minor version is one these mirrors lack; a host or plugin of that version
//! sends such a value as JSON (`command` instead of `charge`, `json` instead of the typed fields),
//! which every reader of this layout already reads.

use abi_stable::StableAbi;
use abi_stable::std_types::{ROption, RStr, RString};

use crate::command::{Command, Customer, Extra};
use crate::error::{ErrorKind, ProviderError};
use crate::money::{Currency, Money};
use crate::outcome::{Details, Outcome, OutcomeStatus};

use super::{FfiHttpRequest, HostStep};

/// Who pays, as [`Customer`] holds it.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq)]
pub struct FfiCustomer<'a> {
    pub id: ROption<RStr<'a>>,
    pub name: ROption<RStr<'a>>,
    pub email: ROption<RStr<'a>>,
    pub phone: ROption<RStr<'a>>,
    pub ip: ROption<RStr<'a>>,
    pub country: ROption<RStr<'a>>,
}

/// A [`Command::Charge`], field for field.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq)]
pub struct FfiCharge<'a> {
    pub minor_units: i64,
    /// The ISO 4217 code.
    pub currency: RStr<'a>,
    pub description: ROption<RStr<'a>>,
    pub customer: FfiCustomer<'a>,
    pub payment_method: ROption<RStr<'a>>,
    pub saved_account_id: ROption<RStr<'a>>,
    /// JSON of `extra`; empty when `extra` is.
    pub extra: RStr<'a>,
}

/// The invocation as `start_v3` and `resume_v3` take it: [`super::FfiInvocation`]'s pieces, with
/// a charge typed.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct FfiInvocationV3<'a> {
    /// The command, when it is a charge.
    pub charge: ROption<FfiCharge<'a>>,
    /// JSON of the [`Command`] when `charge` is absent; empty when it is set.
    pub command: RStr<'a>,
    /// JSON of the [`crate::AccountConfig`], the same text for every dispatch until it changes.
    pub account: RStr<'a>,
    pub reference: ROption<RStr<'a>>,
    pub now_unix: i64,
}

/// An amount in an outcome.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FfiMoney {
    pub minor_units: i64,
    /// The ISO 4217 code's three letters.
    pub currency: [u8; 3],
}

/// A finished flow's [`Outcome`]: typed when it has no error and no details (a charge's usual
/// answer), else its JSON.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct FfiOutcome {
    /// JSON of the whole outcome when it has an error or details (then the fields below are not
    /// read); empty otherwise.
    pub json: RString,
    /// [`OutcomeStatus`]: 0 succeeded, 1 pending, 2 failed, 3 unknown.
    pub status: u8,
    pub provider_reference: ROption<RString>,
    pub amount: ROption<FfiMoney>,
}

/// One step of a flow driven through `start_v3`/`resume_v3`: [`super::FfiStep`] with the
/// outcome typed.
#[repr(u8)]
#[derive(StableAbi, Debug)]
pub enum FfiStepV3 {
    /// Send this request, then call `resume_v3` with the answer and this state.
    Send {
        request: FfiHttpRequest,
        state: RString,
    },
    Done {
        outcome: FfiOutcome,
    },
    /// Finished without a result: JSON of a [`ProviderError`].
    Failed {
        error: RString,
    },
}

fn borrowed(text: &Option<String>) -> ROption<RStr<'_>> {
    text.as_deref().map(RStr::from_str).into()
}

fn owned(text: ROption<RStr<'_>>) -> Option<String> {
    text.into_option().map(|text| text.as_str().to_string())
}

impl<'a> FfiCharge<'a> {
    /// `command` as the typed charge, when it is a charge; `extra` is the JSON of its `extra`
    /// (empty when that is).
    pub fn of(command: &'a Command, extra: &'a str) -> Option<Self> {
        let Command::Charge {
            amount,
            description,
            customer,
            payment_method,
            saved_account_id,
            ..
        } = command
        else {
            return None;
        };
        Some(Self {
            minor_units: amount.minor_units,
            currency: RStr::from_str(amount.currency.code()),
            description: borrowed(description),
            customer: FfiCustomer {
                id: borrowed(&customer.id),
                name: borrowed(&customer.name),
                email: borrowed(&customer.email),
                phone: borrowed(&customer.phone),
                ip: borrowed(&customer.ip),
                country: borrowed(&customer.country),
            },
            payment_method: borrowed(payment_method),
            saved_account_id: borrowed(saved_account_id),
            extra: RStr::from_str(extra),
        })
    }

    /// The [`Command`] this describes, checked as reading its JSON would check it: a currency
    /// that is not an ISO 4217 code and an `extra` that is not a JSON object are refused.
    pub fn to_command(&self) -> Result<Command, ProviderError> {
        let unreadable = |problem: String| {
            ProviderError::invalid_request(format!("the plugin cannot read the command: {problem}"))
        };
        let currency = Currency::from_code(self.currency.as_str())
            .map_err(|error| unreadable(error.to_string()))?;
        let extra: Extra = if self.extra.is_empty() {
            Extra::new()
        } else {
            serde_json::from_str(self.extra.as_str())
                .map_err(|error| unreadable(format!("`extra`: {error}")))?
        };
        let customer = &self.customer;
        Ok(Command::Charge {
            amount: Money::new(self.minor_units, currency),
            description: owned(self.description),
            customer: Customer {
                id: owned(customer.id),
                name: owned(customer.name),
                email: owned(customer.email),
                phone: owned(customer.phone),
                ip: owned(customer.ip),
                country: owned(customer.country),
            },
            payment_method: owned(self.payment_method),
            saved_account_id: owned(self.saved_account_id),
            extra,
        })
    }

    /// Whether `command` is the charge this describes, `extra_text` being the `extra` text it was
    /// read from: every field compared, nothing hashed.
    pub fn is(&self, command: &Command, extra_text: &str) -> bool {
        FfiCharge::of(command, extra_text).is_some_and(|mine| mine == *self)
    }
}

const STATUSES: [OutcomeStatus; 4] = [
    OutcomeStatus::Succeeded,
    OutcomeStatus::Pending,
    OutcomeStatus::Failed,
    OutcomeStatus::Unknown,
];

impl FfiOutcome {
    /// The outcome for the boundary: typed when it has no error and no details, else as JSON.
    pub fn from_outcome(outcome: Outcome) -> Result<Self, serde_json::Error> {
        let status = STATUSES
            .iter()
            .position(|status| *status == outcome.status)
            .and_then(|index| u8::try_from(index).ok())
            .unwrap_or(u8::MAX);
        if outcome.error.is_some() || outcome.details != Details::None {
            return Ok(Self {
                json: serde_json::to_string(&outcome)?.into(),
                status,
                provider_reference: ROption::RNone,
                amount: ROption::RNone,
            });
        }
        let amount = outcome.amount.map(|money| {
            let mut code = [0u8; 3];
            for (slot, byte) in code.iter_mut().zip(money.currency.code().bytes()) {
                *slot = byte;
            }
            FfiMoney {
                minor_units: money.minor_units,
                currency: code,
            }
        });
        Ok(Self {
            json: RString::new(),
            status,
            provider_reference: outcome.provider_reference.map(RString::from).into(),
            amount: amount.into(),
        })
    }

    /// The outcome the plugin returned, checked as reading its JSON would check it.
    pub fn into_outcome(self) -> Result<Outcome, String> {
        if !self.json.is_empty() {
            return serde_json::from_str(&self.json).map_err(|error| error.to_string());
        }
        let status = *STATUSES
            .get(usize::from(self.status))
            .ok_or_else(|| format!("unknown outcome status {}", self.status))?;
        let amount = match self.amount.into_option() {
            None => None,
            Some(money) => {
                let code = std::str::from_utf8(&money.currency)
                    .map_err(|_| "an amount's currency is not text".to_string())?;
                let currency = Currency::from_code(code).map_err(|error| error.to_string())?;
                Some(Money::new(money.minor_units, currency))
            }
        };
        Ok(Outcome {
            status,
            provider_reference: self
                .provider_reference
                .into_option()
                .map(RString::into_string),
            amount,
            error: None,
            details: Details::None,
        })
    }
}

impl FfiStepV3 {
    /// Reads the step the plugin returned; output the host cannot read becomes a plugin-fault
    /// error for this request, as with [`super::FfiStep::into_host_step`].
    pub fn into_host_step(self) -> HostStep {
        match self {
            FfiStepV3::Send { request, state } => {
                super::FfiStep::Send { request, state }.into_host_step()
            }
            FfiStepV3::Done { outcome } => match outcome.into_outcome() {
                Ok(outcome) => HostStep::Done(outcome),
                Err(error) => HostStep::Failed(ProviderError::new(
                    ErrorKind::PluginFault,
                    format!("plugin returned an outcome the host cannot read: {error}"),
                )),
            },
            FfiStepV3::Failed { error } => super::FfiStep::Failed { error }.into_host_step(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(status: u8, amount: Option<FfiMoney>) -> FfiStepV3 {
        FfiStepV3::Done {
            outcome: FfiOutcome {
                json: RString::new(),
                status,
                provider_reference: ROption::RSome("tx_1".into()),
                amount: amount.into(),
            },
        }
    }

    #[test]
    fn a_typed_outcome_reads_back_as_the_outcome_it_was_made_from() {
        for status in STATUSES {
            let outcome = Outcome::new(status)
                .with_provider_reference("tx_1")
                .with_amount(Money::new(-5, Currency::from_code("JPY").expect("JPY")));
            let ffi = FfiOutcome::from_outcome(outcome.clone()).expect("lays out");
            assert!(ffi.json.is_empty(), "typed, not JSON");
            assert_eq!(ffi.into_outcome(), Ok(outcome));
        }
        let with_error = Outcome::failed(ProviderError::new(ErrorKind::Declined, "no"));
        let ffi = FfiOutcome::from_outcome(with_error.clone()).expect("lays out");
        assert!(!ffi.json.is_empty(), "an error crosses as JSON");
        assert_eq!(ffi.into_outcome(), Ok(with_error));
    }

    /// What a plugin could return wrong in the typed fields is a plugin fault for that request.
    #[test]
    fn a_typed_outcome_the_host_cannot_read_is_a_plugin_fault() {
        let money = |currency: [u8; 3]| {
            Some(FfiMoney {
                minor_units: 1,
                currency,
            })
        };
        for (step, why) in [
            (typed(4, None), "unknown outcome status 4"),
            (typed(u8::MAX, None), "unknown outcome status 255"),
            (typed(0, money(*b"ZZZ")), "ZZZ"),
            (typed(0, money([0xff, 0xfe, 0x41])), "not text"),
            (typed(0, money(*b"usd")), "usd"),
            (
                FfiStepV3::Done {
                    outcome: FfiOutcome {
                        json: "{\"status\":".into(),
                        status: 0,
                        provider_reference: ROption::RNone,
                        amount: ROption::RNone,
                    },
                },
                "EOF",
            ),
        ] {
            let HostStep::Failed(error) = step.into_host_step() else {
                panic!("refused: {why}");
            };
            assert_eq!(error.kind, ErrorKind::PluginFault);
            assert!(error.message.contains(why), "{why}: {}", error.message);
        }
    }
}
