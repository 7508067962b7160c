//! Inbound webhooks: verify the signature on the raw bytes, then parse and answer.

use gatehouse_plugin_api::error::truncate;
use gatehouse_plugin_api::{
    Details, Invocation, Outcome, ProviderError, WebhookEvent, WebhookReply, WebhookResult,
};

use crate::account::{PROJECT_SECRET_KEY, project_secret_key};
use crate::transformers::webhook::{
    Notification, SignatureCheck, check_signature, error_reply, parse_notification,
};

/// Verifies and parses one webhook. Always finishes with an outcome carrying the reply Xsolla
/// expects: 204 when accepted, its documented error body otherwise.
///
/// A bad signature is reported as `invalid_request` (provider code `INVALID_SIGNATURE`), not as
/// `authentication`: it says nothing about our credentials at Xsolla, and anyone can POST to the
/// webhook URL, so it must never make the host pause the account.
pub fn handle(invocation: &Invocation, headers: &[(String, String)], body: &[u8]) -> Outcome {
    let Some(secret) = project_secret_key(&invocation.account) else {
        // Our configuration is incomplete: a 5xx makes Xsolla retry once it is fixed.
        let error = ProviderError::invalid_request(format!(
            "account `{}` has no `{PROJECT_SECRET_KEY}`: webhooks cannot be verified",
            invocation.account.account
        ))
        .with_field(PROJECT_SECRET_KEY);
        return Outcome::failed(error).with_details(reply_only(error_reply(
            500,
            "SERVER_ERROR",
            "The webhook cannot be verified right now.",
        )));
    };
    let problem = match check_signature(headers, body, secret) {
        SignatureCheck::Valid => None,
        SignatureCheck::Missing => Some("the webhook has no `Authorization: Signature ...` header"),
        SignatureCheck::Malformed => {
            Some("the webhook's Authorization header is not `Signature <40 hex digits>`")
        }
        SignatureCheck::Wrong => {
            Some("the webhook's signature does not match sha1(body + project secret key)")
        }
    };
    if let Some(problem) = problem {
        let error = ProviderError::invalid_request(problem).with_provider_code("INVALID_SIGNATURE");
        return Outcome::failed(error).with_details(reply_only(error_reply(
            401,
            "INVALID_SIGNATURE",
            "Invalid signature",
        )));
    }
    match parse_notification(body) {
        Ok(Notification::Transaction(event)) => accepted(event),
        Ok(Notification::UserValidation) | Ok(Notification::Other(_)) => {
            Outcome::succeeded().with_details(reply_only(WebhookReply::empty(204)))
        }
        Err(unreadable) => {
            let reply = error_reply(422, unreadable.code, &truncate(&unreadable.error.message));
            Outcome::failed(unreadable.error.with_provider_code(unreadable.code))
                .with_details(reply_only(reply))
        }
    }
}

fn accepted(event: WebhookEvent) -> Outcome {
    let mut outcome = Outcome::succeeded();
    outcome.provider_reference = event.provider_reference.clone();
    outcome.amount = event.amount;
    outcome.with_details(Details::Webhook(WebhookResult {
        event: Some(event),
        reply: WebhookReply::empty(204),
    }))
}

fn reply_only(reply: WebhookReply) -> Details {
    Details::Webhook(WebhookResult { event: None, reply })
}
