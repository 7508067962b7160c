//! The flow contract, driven synchronously: how a host (or a test) walks a plugin's sans-IO steps.
//!
//! A flow starts with one call to the plugin's `start` entry point and goes on with one call to
//! `resume` per HTTP exchange, until the plugin answers *done* or *failed*, or takes more than
//! [`MAX_FLOW_STEPS`] steps (a plugin that keeps asking is faulty). The production host drives
//! the same steps asynchronously (it awaits the network between them) under the same limit; the
//! testkit, the host's conformance check and the end-to-end tests use [`drive`], so the rules of
//! a flow are written once.
//!
//! ```
//! use gatehouse_plugin_api::flow::{FlowEnd, drive};
//! use gatehouse_plugin_api::ffi::HostStep;
//! use gatehouse_plugin_api::{HttpRequest, HttpResponse, Method, Outcome, OutcomeStatus};
//!
//! let driven = drive::<()>(
//!     || Ok(HostStep::Send {
//!         request: HttpRequest::new(Method::Get, "https://provider.example/balance"),
//!         state: "asked".into(),
//!     }),
//!     |state, response| {
//!         assert_eq!(state, "asked");
//!         assert_eq!(response.status, 200);
//!         Ok(HostStep::Done(Outcome::new(OutcomeStatus::Succeeded)))
//!     },
//!     |_request| Some(HttpResponse::new(200, "{}")),
//! );
//! assert_eq!(driven.requests.len(), 1);
//! assert!(matches!(driven.end, FlowEnd::Done(_)));
//! ```

use crate::error::ProviderError;
use crate::ffi::{FfiHttpResponse, HostStep};
use crate::http::{HttpRequest, HttpResponse};
use crate::outcome::Outcome;

/// A flow never takes more steps than this (the `start` step and every `resume` count); a plugin
/// that keeps asking is faulty. The host and every driver enforce this one number.
pub const MAX_FLOW_STEPS: usize = 16;

/// How a driven flow ended.
// A flow ends once, by value: boxing the outcome would cost an allocation and buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum FlowEnd<E> {
    /// The plugin finished with an outcome.
    Done(Outcome),
    /// The plugin finished with an error.
    Failed(ProviderError),
    /// The plugin asked for a request the driver had no answer for (a script ran out).
    Unanswered,
    /// The plugin was still asking after [`MAX_FLOW_STEPS`] steps.
    TooManySteps,
    /// An entry point could not be called to its end (the driver's own reason: a timeout, a
    /// lost thread).
    Aborted(E),
}

impl<E: std::fmt::Debug> FlowEnd<E> {
    /// The flow's result as a plugin would report it: a driver's failure becomes a plugin-fault
    /// error that says what happened.
    pub fn into_result(self) -> Result<Outcome, ProviderError> {
        match self {
            Self::Done(outcome) => Ok(outcome),
            Self::Failed(error) => Err(error),
            Self::Unanswered => Err(ProviderError::plugin_fault(
                "the plugin sent a request that had no answer",
            )),
            Self::TooManySteps => Err(ProviderError::plugin_fault(format!(
                "the plugin did not finish within {MAX_FLOW_STEPS} steps"
            ))),
            Self::Aborted(reason) => Err(ProviderError::plugin_fault(format!(
                "the plugin call did not complete: {reason:?}"
            ))),
        }
    }
}

/// What a driven flow did.
#[derive(Debug)]
pub struct DrivenFlow<E> {
    /// Every request the plugin asked to send, in order.
    pub requests: Vec<HttpRequest>,
    pub end: FlowEnd<E>,
}

/// Drives one flow: `start` once, then `answer` each request and `resume` with the answer, until
/// the plugin ends or [`MAX_FLOW_STEPS`] steps have passed.
///
/// `start` and `resume` wrap the plugin's entry points (directly, on a thread under a time
/// budget, ...); an `Err` from either ends the flow as [`FlowEnd::Aborted`]. `answer` returns the
/// response to a request, or `None` when it has none ([`FlowEnd::Unanswered`]).
pub fn drive<E>(
    start: impl FnOnce() -> Result<HostStep, E>,
    mut resume: impl FnMut(String, FfiHttpResponse) -> Result<HostStep, E>,
    mut answer: impl FnMut(&HttpRequest) -> Option<HttpResponse>,
) -> DrivenFlow<E> {
    let mut requests = Vec::new();
    let mut step = match start() {
        Ok(step) => step,
        Err(reason) => {
            return DrivenFlow {
                requests,
                end: FlowEnd::Aborted(reason),
            };
        }
    };
    for _ in 0..MAX_FLOW_STEPS {
        let (request, state) = match step {
            HostStep::Done(outcome) => {
                return DrivenFlow {
                    requests,
                    end: FlowEnd::Done(outcome),
                };
            }
            HostStep::Failed(error) => {
                return DrivenFlow {
                    requests,
                    end: FlowEnd::Failed(error),
                };
            }
            HostStep::Send { request, state } => (request, state),
        };
        let response = answer(&request);
        requests.push(request);
        let Some(response) = response else {
            return DrivenFlow {
                requests,
                end: FlowEnd::Unanswered,
            };
        };
        step = match resume(state, FfiHttpResponse::from(response)) {
            Ok(step) => step,
            Err(reason) => {
                return DrivenFlow {
                    requests,
                    end: FlowEnd::Aborted(reason),
                };
            }
        };
    }
    DrivenFlow {
        requests,
        end: FlowEnd::TooManySteps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Method;
    use crate::outcome::OutcomeStatus;

    fn send(state: &str) -> HostStep {
        HostStep::Send {
            request: HttpRequest::new(Method::Get, "https://provider.example/x"),
            state: state.into(),
        }
    }

    #[test]
    fn a_plugin_that_keeps_asking_is_stopped_at_the_limit() {
        let mut resumed = 0;
        let driven = drive::<()>(
            || Ok(send("0")),
            |_, _| {
                resumed += 1;
                Ok(send("again"))
            },
            |_| Some(HttpResponse::new(200, "")),
        );
        assert!(matches!(driven.end, FlowEnd::TooManySteps));
        assert_eq!(driven.requests.len(), MAX_FLOW_STEPS);
        assert_eq!(resumed, MAX_FLOW_STEPS);
    }

    #[test]
    fn a_request_without_an_answer_ends_the_flow_and_is_counted() {
        let driven = drive::<()>(|| Ok(send("0")), |_, _| panic!("not resumed"), |_| None);
        assert!(matches!(driven.end, FlowEnd::Unanswered));
        assert_eq!(driven.requests.len(), 1);
        assert!(driven.end.into_result().is_err());
    }

    #[test]
    fn a_driver_failure_is_aborted_with_its_reason() {
        let driven = drive(
            || Ok(send("0")),
            |_, _| Err("timed out"),
            |_| Some(HttpResponse::new(200, "")),
        );
        assert!(matches!(driven.end, FlowEnd::Aborted("timed out")));
        let started = drive::<&str>(|| Err("lost"), |_, _| unreachable!(), |_| None);
        assert!(started.requests.is_empty());
        assert!(matches!(started.end, FlowEnd::Aborted("lost")));
    }

    #[test]
    fn the_state_travels_back_with_the_answer() {
        let driven = drive::<()>(
            || Ok(send("first")),
            |state, response| {
                assert_eq!(state, "first");
                assert_eq!(response.status, 202);
                Ok(HostStep::Done(Outcome::new(OutcomeStatus::Pending)))
            },
            |_| Some(HttpResponse::new(202, "")),
        );
        match driven.end {
            FlowEnd::Done(outcome) => assert_eq!(outcome.status, OutcomeStatus::Pending),
            other => panic!("{other:?}"),
        }
    }
}
