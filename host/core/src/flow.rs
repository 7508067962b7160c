//! One command's flow through a plugin: the host's asynchronous driver of the sans-IO steps
//! (`gatehouse_plugin_api::flow` states the rules; this driver awaits the network between steps).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_plugin_api::ffi::{EncodedInvocation, FfiHttpResponse, HostStep};
use gatehouse_plugin_api::flow::MAX_FLOW_STEPS;
use gatehouse_plugin_api::{
    Currency, ErrorKind, HttpRequest, HttpResponse, Operation, Outcome, ProviderError,
};

use crate::accounts::AccountRuntime;
use crate::error::DispatchError;
use crate::fleet_share::ConcurrencySlot;
use crate::loader::LoadedPlugin;
use crate::metrics::Metrics;
use crate::plugin_pool::{CallFailure, PluginPool};
use crate::scrub::Scrubber;
use crate::transport::{TransportFailure, loggable, loggable_url, same_origin, send_once};

/// The longest a callback confirmation holding a slot waits for the confirmation rate.
const CONFIRMATION_RATE_WAIT: Duration = Duration::from_secs(2);

/// One command's flow through a plugin.
pub(crate) struct Flow<'a> {
    pub(crate) pool: &'a PluginPool,
    pub(crate) client: &'a reqwest::Client,
    pub(crate) metrics: &'a Metrics,
    pub(crate) plugin: Arc<LoadedPlugin>,
    pub(crate) runtime: Arc<AccountRuntime>,
    /// The account's secrets.
    pub(crate) scrubber: &'a Scrubber,
    /// The sensitive header values this flow has sent (see `Scrubber::learn_sensitive_headers`);
    /// empty, and free, for plugins that mark none.
    pub(crate) learned: Scrubber,
    pub(crate) base_url: &'a str,
    /// `base_url` parsed (`None`: not a URL, every request is outside it).
    pub(crate) parsed_base_url: Option<&'a url::Url>,
    pub(crate) provider: &'a str,
    pub(crate) account: &'a str,
    pub(crate) operation: Operation,
    /// The invocation, encoded once for every step of the flow (the account's part once per
    /// resolution of the account).
    pub(crate) invocation: Arc<EncodedInvocation>,
    pub(crate) budget: Duration,
    /// `host.max_abandoned_plugin_threads`: past it, the plugin's calls are refused.
    pub(crate) max_stuck_threads: u64,
    /// `host.plugin_calls = "inline"`: plugin calls run on this task's thread.
    pub(crate) inline_calls: bool,
    /// The currency of the amount the command names, to check the outcome's against.
    pub(crate) expected_currency: Option<Currency>,
    pub(crate) max_response_bytes: usize,
    pub(crate) provider_requests: u32,
    /// The host's own refusal of the flow's first request (its share of the account's rate
    /// limit spent): the command ends with it instead of a transport failure, as nothing was sent.
    pub(crate) host_refusal: Option<DispatchError>,
}

/// What a request holds while it is sent (given back when dropped): a callback-confirmation
/// slot or a command slot.
enum Slot<'a> {
    Confirmation {
        _held: tokio::sync::SemaphorePermit<'a>,
    },
    Command {
        _held: ConcurrencySlot<'a>,
    },
}

impl Flow<'_> {
    pub(crate) async fn run(
        mut self,
        inbound_body: Vec<u8>,
    ) -> (Result<Outcome, DispatchError>, u32) {
        let result = match self.drive(inbound_body).await {
            // Once a money-moving request has been sent, no error is a definitive failure: the
            // provider may have acted even if the plugin then failed to read its answer.
            Err(DispatchError::Provider(error))
                if self.operation.moves_money() && self.provider_requests > 0 =>
            {
                Ok(Outcome::unknown(self.scrub(error)))
            }
            other => other,
        };
        (result, self.provider_requests)
    }

    async fn drive(&mut self, inbound_body: Vec<u8>) -> Result<Outcome, DispatchError> {
        let plugin = self.plugin.clone();
        let invocation = self.invocation.clone();
        let mut step = self
            .call_plugin(move || plugin.start_flow(&invocation, &inbound_body))
            .await?;
        for step_number in 0..MAX_FLOW_STEPS {
            let answered = match &step {
                HostStep::Done(_) => "done",
                HostStep::Failed(_) => "failed",
                HostStep::Send { .. } => "send",
            };
            tracing::debug!(step = step_number, answered, "plugin step");
            match step {
                HostStep::Done(outcome) => {
                    if let Some(problem) = self.impossible_amount(&outcome) {
                        return self.finish_with_error(ProviderError::plugin_fault(problem));
                    }
                    return Ok(self.scrubber.outcome(self.learned.outcome(outcome)));
                }
                HostStep::Failed(error) => return self.finish_with_error(error),
                HostStep::Send { request, state } => {
                    let response = match self.perform(&request).await {
                        Ok(response) => response,
                        Err(failure) => {
                            return match self.host_refusal.take() {
                                Some(refusal) => Err(refusal),
                                None => self.finish_after_transport_failure(failure),
                            };
                        }
                    };
                    let plugin = self.plugin.clone();
                    let invocation = self.invocation.clone();
                    let response = FfiHttpResponse::from(response);
                    step = self
                        .call_plugin(move || plugin.resume_flow(&invocation, &state, &response))
                        .await?;
                }
            }
        }
        self.finish_with_error(ProviderError::plugin_fault(format!(
            "the plugin did not finish within {MAX_FLOW_STEPS} steps"
        )))
    }

    /// Runs one plugin entry point off the async workers, within the call budget. A plugin that
    /// never returns costs one abandoned thread, not the host: its request fails here.
    async fn call_plugin(
        &self,
        call: impl FnOnce() -> HostStep + Send + 'static,
    ) -> Result<HostStep, DispatchError> {
        let result = if self.inline_calls {
            let started = Instant::now();
            // The plugin's entry points catch its panics; this catches the host side's.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
                Ok(_) if started.elapsed() > self.budget => Err(CallFailure::OverBudget),
                Ok(step) => Ok(step),
                Err(_) => Err(CallFailure::Lost),
            }
        } else {
            self.pool
                .run_for(self.provider, self.max_stuck_threads, self.budget, call)
                .await
        };
        match result {
            Ok(step) => Ok(step),
            Err(CallFailure::Unavailable { stuck }) => Err(DispatchError::PluginUnavailable {
                provider: self.provider.to_string(),
                stuck,
                max: self.max_stuck_threads,
            }),
            Err(CallFailure::Lost) => Err(DispatchError::Provider(ProviderError::plugin_fault(
                "the plugin call ended without a result",
            ))),
            Err(CallFailure::OverBudget) => {
                self.metrics.increment(
                    "gatehouse_plugin_calls_over_budget_total",
                    &[("provider", self.provider)],
                );
                Err(DispatchError::Provider(ProviderError::plugin_fault(
                    format!(
                        "the plugin did not answer within its {} ms budget",
                        self.budget.as_millis()
                    ),
                )))
            }
        }
    }

    /// An outcome of a money-moving command whose amount cannot be right: negative, or in
    /// another currency than the command's. It is a plugin fault, not data to pass on: a caller
    /// would book it. (Once a request went out, `run` makes that fault an `unknown` outcome.)
    fn impossible_amount(&self, outcome: &Outcome) -> Option<String> {
        if !self.operation.moves_money() {
            return None;
        }
        let claimed = outcome.amount?;
        if claimed.minor_units < 0 {
            return Some(format!(
                "the plugin reported a negative amount ({} {} minor units) for a {}",
                claimed.minor_units, claimed.currency, self.operation
            ));
        }
        self.expected_currency
            .filter(|expected| *expected != claimed.currency)
            .map(|expected| {
                format!(
                    "the plugin reported an amount in {} for a {} in {expected}",
                    claimed.currency, self.operation
                )
            })
    }

    /// Removes the account's secrets and the sensitive header values sent so far.
    fn scrub(&self, error: ProviderError) -> ProviderError {
        self.scrubber.error(self.learned.error(error))
    }

    fn finish_with_error(&self, error: ProviderError) -> Result<Outcome, DispatchError> {
        let error = self.scrub(error);
        if self.operation.moves_money() && error.kind != ErrorKind::PluginFault {
            // The plugin refused before or after sending; it decides `unknown` itself when a
            // request may have acted, so a plain error here is a definitive failure.
            Ok(Outcome::failed(error))
        } else {
            Err(DispatchError::Provider(error))
        }
    }

    fn finish_after_transport_failure(
        &self,
        failure: TransportFailure,
    ) -> Result<Outcome, DispatchError> {
        let kind = match failure {
            TransportFailure::TooLarge { .. } => ErrorKind::MalformedResponse,
            _ => ErrorKind::ProviderUnavailable,
        };
        let error = self.scrub(ProviderError::new(kind, failure.describe()));
        if self.operation.moves_money() {
            if failure.nothing_sent() {
                Ok(Outcome::failed(error))
            } else {
                Ok(Outcome::unknown(error))
            }
        } else {
            Err(DispatchError::Provider(error))
        }
    }

    /// Sends one request the plugin asked for, under the account's policy.
    async fn perform(&mut self, request: &HttpRequest) -> Result<HttpResponse, TransportFailure> {
        self.learned.learn_sensitive_headers(request, self.scrubber);
        // Parsed once: for the origin check, the log line and the client.
        let url = url::Url::parse(&request.url).ok().filter(|url| {
            self.parsed_base_url
                .is_some_and(|base_url| same_origin(url, base_url))
        });
        let Some(url) = url else {
            return Err(TransportFailure::NotSent(format!(
                "the plugin asked for {}, outside the account's base URL {}",
                loggable_url(&request.url),
                loggable_url(self.base_url)
            )));
        };
        let policy = &self.runtime.policy;
        let timeout = Duration::from_millis(request.timeout_ms.unwrap_or(policy.timeout_ms));
        // A webhook's requests confirm a callback anyone could have sent: they spend a budget of
        // their own, apart from the commands'. Past its concurrency a callback is refused at
        // once (the provider resends one answered 503), so a flood cannot queue up; the few
        // holding a slot wait briefly for the rate, so legitimate callbacks in a burst pass.
        let _permit = if self.operation == Operation::Webhook {
            let Ok(permit) = self.runtime.confirmations.try_acquire() else {
                return Err(TransportFailure::NotSent(format!(
                    "the account's {} callback confirmations in flight are taken",
                    policy.webhook_confirmations_max_concurrency
                )));
            };
            if let Err(wait) = self
                .runtime
                .take_confirmation_slot(timeout.min(CONFIRMATION_RATE_WAIT))
                .await
            {
                return Err(TransportFailure::NotSent(format!(
                    "the account's callback confirmation budget ({} a minute) has no slot for {} ms",
                    policy.webhook_confirmations_per_minute,
                    wait.as_millis()
                )));
            }
            Slot::Confirmation { _held: permit }
        } else {
            if let Err(wait) = self.runtime.take_rate_slot(timeout).await {
                if self.provider_requests == 0 {
                    self.host_refusal = Some(DispatchError::RateLimited {
                        provider: self.provider.to_string(),
                        account: self.account.to_string(),
                        per_minute: policy.rate_limit_per_minute,
                        wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    });
                }
                return Err(TransportFailure::NotSent(format!(
                    "the account's rate limit ({} a minute) has no slot for {} ms",
                    policy.rate_limit_per_minute,
                    wait.as_millis()
                )));
            }
            let Some(slot) = self.runtime.concurrency_slot().await else {
                return Err(TransportFailure::NotSent("the account is closed".into()));
            };
            Slot::Command { _held: slot }
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A pause set by another flow while this one waited stops it before it sends.
            if let Some(pause) = self.runtime.paused() {
                return Err(TransportFailure::NotSent(format!(
                    "the account is paused: {}",
                    pause.reason
                )));
            }
            let started = Instant::now();
            let result = send_once(
                self.client,
                url.clone(),
                request,
                timeout,
                self.max_response_bytes,
            )
            .await;
            self.provider_requests += 1;
            let elapsed = started.elapsed();
            let status_label = match &result {
                Ok(response) => response.status.to_string(),
                Err(TransportFailure::NotSent(_)) => "not_sent".into(),
                Err(TransportFailure::NoAnswer(_)) => "no_answer".into(),
                Err(TransportFailure::TooLarge { .. }) => "too_large".into(),
            };
            let metrics = self.metrics;
            metrics.observe(
                "gatehouse_provider_latency_seconds",
                &[("provider", self.provider)],
                elapsed,
            );
            metrics.increment(
                "gatehouse_provider_requests_total",
                &[("provider", self.provider), ("status", &status_label)],
            );
            // An exchange that went as expected (answered, not 5xx, first attempt) is a `debug`
            // line: the access line and the provider metrics already say it, and at `info` it
            // cost every request a second formatted line. What an operator looks for when
            // something is wrong stays at `info`.
            let unusual = attempt > 1 || !matches!(&result, Ok(response) if response.status < 500);
            macro_rules! provider_request_line {
                ($level:expr) => {
                    tracing::event!(
                        $level,
                        provider = self.provider,
                        account = self.account,
                        method = request.method.as_str(),
                        url = %loggable(&url),
                        status = %status_label,
                        elapsed_us = elapsed.as_micros() as u64,
                        attempt,
                        "provider request"
                    )
                };
            }
            if unusual {
                provider_request_line!(tracing::Level::INFO);
            } else {
                provider_request_line!(tracing::Level::DEBUG);
            }
            let retryable = match &result {
                // Nothing reached the provider: resending cannot do anything twice.
                Err(TransportFailure::NotSent(_)) => true,
                Err(TransportFailure::NoAnswer(_)) => request.retry_safe,
                Ok(response) => request.retry_safe && matches!(response.status, 502..=504),
                Err(TransportFailure::TooLarge { .. }) => false,
            };
            if !retryable || attempt > policy.max_retries {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(50 * (1 << attempt.min(6)))).await;
        }
    }
}
