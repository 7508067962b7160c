//! Sandbox test: `POST /merchants/{merchant_id}/projects/{project_id}/payments/{id}/chargeback`.

use gatehouse_plugin_api::{
    Command, HttpResponse, Invocation, Method, Operation, Outcome, ProviderError,
};

use crate::account::Account;
use crate::flows::Started;
use crate::transformers::errors::{Call, http_error};
use crate::transformers::wire::is_numeric_id;

/// Starts a chargeback; the transaction id is what `finish` reads the answer against.
pub fn start(invocation: &Invocation) -> Started<String> {
    let Command::SandboxChargeback { transaction_id, .. } = &invocation.command else {
        return Err(ProviderError::wrong_command(
            Operation::SandboxChargeback,
            invocation.command.operation(),
        ));
    };
    let account = Account::read(&invocation.account)?;
    let transaction_id = transaction_id.trim();
    if !is_numeric_id(transaction_id) {
        return Err(ProviderError::invalid_request(
            "transaction_id must be Xsolla's numeric transaction id",
        )
        .with_field("transaction_id"));
    }
    let path = format!(
        "/merchants/{}/projects/{}/payments/{transaction_id}/chargeback",
        account.merchant_id, account.project_id
    );
    // The document's body is empty; its sample is `{}`.
    let request = account
        .json_request(Method::Post, &path, b"{}".to_vec())
        .retry_safe(false);
    Ok((request, transaction_id.to_string()))
}

/// 204 when the chargeback was requested; 404 / 422 `{"message": ...}` otherwise.
pub fn finish(transaction_id: String, response: &HttpResponse) -> Result<Outcome, ProviderError> {
    if response.is_success() {
        Ok(Outcome::succeeded().with_provider_reference(transaction_id))
    } else {
        Err(http_error(Call::Chargeback, response))
    }
}
