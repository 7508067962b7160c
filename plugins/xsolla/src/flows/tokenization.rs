//! Saved accounts ("tokenization"): list, delete, and charge a saved account.

use gatehouse_plugin_api::{
    Command, Details, HttpResponse, Invocation, Method, Money, Operation, Outcome, ProviderError,
    SavedAccount,
};

use crate::account::Account;
use crate::flows::Started;
use crate::flows::payment_page::check_positive;
use crate::flows::{extra_integer, extra_object, money_outcome_for_http_error, required};
use crate::transformers::errors::{Call, http_error};
use crate::transformers::json::{amount_to_json, array, first_text, object, parse_root, to_value};
use crate::transformers::wire::{
    ChargeRequest, ChargeSettings, ChargeUser, Checkout, Purchase, Wrapped, encode_path_segment,
    is_numeric_id, to_json_bytes,
};

/// The document asks for a 2-minute timeout on the charge call.
pub const CHARGE_TIMEOUT_MS: u64 = 120_000;

/// Checks a saved-account type (`card`, `paypal`, `alipayplus_cn`, ... in the document's enum).
/// Only its shape is checked so a type Xsolla adds later still works; Xsolla refuses unknown ones.
fn account_type(text: &str, field: &str) -> Result<String, ProviderError> {
    let text = text.trim().to_ascii_lowercase();
    if !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
    {
        Ok(text)
    } else {
        Err(ProviderError::invalid_request(
            "the saved account type must be one of Xsolla's types (`card`, `paypal`, ...)",
        )
        .with_field(field))
    }
}

fn account_id<'a>(text: &'a str, field: &str) -> Result<&'a str, ProviderError> {
    let text = text.trim();
    if is_numeric_id(text) {
        Ok(text)
    } else {
        Err(
            ProviderError::invalid_request("the saved account id must be Xsolla's numeric id")
                .with_field(field),
        )
    }
}

fn user_path(account: &Account<'_>, user_id: &str) -> String {
    format!(
        "/projects/{}/users/{}",
        account.project_id,
        encode_path_segment(user_id)
    )
}

pub fn start_list(invocation: &Invocation) -> Started<()> {
    let Command::SavedAccounts { user_id, .. } = &invocation.command else {
        return Err(ProviderError::wrong_command(
            Operation::SavedAccounts,
            invocation.command.operation(),
        ));
    };
    let account = Account::read(&invocation.account)?;
    let user_id = required(
        Some(user_id),
        "user_id",
        "saved accounts need the user's id",
    )?;
    let path = format!("{}/payment_accounts", user_path(&account, user_id));
    Ok((account.request(Method::Get, &path).retry_safe(true), ()))
}

/// The list [GUESS shape: an array of `{id, name, type, payment_system}`].
pub fn finish_list(response: &HttpResponse) -> Result<Outcome, ProviderError> {
    if !response.is_success() {
        return Err(http_error(Call::SavedAccounts, response));
    }
    let root = parse_root(&response.body, "saved-accounts")?;
    let elements = array(root).ok_or_else(|| {
        ProviderError::malformed_response("Xsolla's saved-accounts answer is not a list")
    })?;
    let mut accounts = Vec::with_capacity(elements.len());
    for (index, element) in elements.into_iter().enumerate() {
        if object(element).is_none() {
            return Err(ProviderError::malformed_response(format!(
                "saved account {index} in Xsolla's answer is not an object"
            )));
        }
        let id = first_text(element, &[&["id"], &["account_id"]]).ok_or_else(|| {
            ProviderError::malformed_response(format!("saved account {index} has no `id`"))
        })?;
        accounts.push(SavedAccount {
            id,
            account_type: first_text(element, &[&["type"]]),
            name: first_text(element, &[&["name"], &["payment_system", "name"]]),
            raw: to_value(element),
        });
    }
    Ok(Outcome::succeeded().with_details(Details::SavedAccounts { accounts }))
}

pub fn start_delete(invocation: &Invocation) -> Started<()> {
    let Command::DeleteSavedAccount {
        user_id,
        account_type: kind,
        account_id: id,
        ..
    } = &invocation.command
    else {
        return Err(ProviderError::wrong_command(
            Operation::DeleteSavedAccount,
            invocation.command.operation(),
        ));
    };
    let account = Account::read(&invocation.account)?;
    let user_id = required(
        Some(user_id),
        "user_id",
        "deleting a saved account needs the user's id",
    )?;
    let kind = account_type(kind, "account_type")?;
    let id = account_id(id, "account_id")?;
    let path = format!(
        "{}/payment_accounts/{kind}/{id}",
        user_path(&account, user_id)
    );
    // Deleting twice leaves the same state; the second answer is a 404 at worst.
    let request = account.request(Method::Delete, &path).retry_safe(true);
    Ok((request, ()))
}

/// 204 No Content [SRC: delete-saved-account page]; any 2xx is accepted.
pub fn finish_delete(response: &HttpResponse) -> Result<Outcome, ProviderError> {
    if response.is_success() {
        Ok(Outcome::succeeded())
    } else {
        Err(http_error(Call::DeleteSavedAccount, response))
    }
}

/// Starts a charge; the amount is what the answer is read against.
pub fn start_charge(invocation: &Invocation) -> Started<Money> {
    let Command::Charge {
        amount,
        description,
        customer,
        payment_method,
        saved_account_id,
        extra,
    } = &invocation.command
    else {
        return Err(ProviderError::wrong_command(
            Operation::Charge,
            invocation.command.operation(),
        ));
    };
    let account = Account::read(&invocation.account)?;
    check_positive(amount)?;
    let reference = required(
        invocation.reference.as_deref(),
        "reference",
        "a charge needs the host-made reference, sent as settings.external_id",
    )?;
    let saved_account_id = required(
        saved_account_id.as_deref(),
        "saved_account_id",
        "Xsolla charges only saved accounts: saved_account_id is required",
    )?;
    let id = account_id(saved_account_id, "saved_account_id")?;
    let kind = account_type(
        required(
            payment_method.as_deref(),
            "payment_method",
            "payment_method must name the saved account's type (`card`, `paypal`, ...)",
        )?,
        "payment_method",
    )?;
    let user_id = required(
        customer.id.as_deref(),
        "customer.id",
        "a charge needs the user's id (customer.id)",
    )?;
    let ip = required(
        customer.ip.as_deref(),
        "customer.ip",
        "Xsolla requires the user's IP address (customer.ip) to charge a saved account",
    )?;
    let body = ChargeRequest {
        user: ChargeUser {
            ip,
            name: customer.name.as_deref(),
            legal: extra_object(extra, "user_legal")?,
        },
        settings: ChargeSettings {
            currency: amount.currency.code(),
            external_id: reference,
            mode: account.mode(),
            mock_code: extra_integer(extra, "mock_code")?,
        },
        purchase: Purchase {
            checkout: Checkout {
                currency: amount.currency.code(),
                amount: amount_to_json(amount)?,
            },
            description: Wrapped::of(description.as_deref()),
        },
        custom_parameters: extra_object(extra, "custom_parameters")?,
    };
    let path = format!("{}/payments/{kind}/{id}", user_path(&account, user_id));
    // Not retry-safe: the document does not say Xsolla refuses a second charge with the same
    // external_id, so a lost answer is reconciled by search instead of being resent.
    let request = account
        .json_request(Method::Post, &path, to_json_bytes(&body)?)
        .timeout_ms(CHARGE_TIMEOUT_MS)
        .retry_safe(false);
    Ok((request, *amount))
}

/// The charge answer [GUESS: `{"transaction_id": <int>}`]. Accepted means the payment exists at
/// Xsolla; it is final only when the `payment` webhook arrives or the status says `done`, so the
/// outcome is `pending`. An answer that cannot be read after the charge was sent is `unknown`.
pub fn finish_charge(amount: Money, response: &HttpResponse) -> Outcome {
    if !response.is_success() {
        return money_outcome_for_http_error(Call::Charge, response);
    }
    let transaction_id = parse_root(&response.body, "charge").and_then(|root| {
        first_text(
            root,
            &[&["transaction_id"], &["transaction", "id"], &["id"]],
        )
        .ok_or_else(|| {
            ProviderError::malformed_response(
                "Xsolla accepted the charge but sent no `transaction_id`",
            )
            .with_field("transaction_id")
        })
    });
    match transaction_id {
        Ok(transaction_id) => Outcome::pending()
            .with_provider_reference(transaction_id)
            .with_amount(amount),
        Err(mut error) => {
            error.message = format!(
                "{} (the charge may have happened: reconcile by external_id)",
                error.message
            );
            Outcome::unknown(error).with_amount(amount)
        }
    }
}
