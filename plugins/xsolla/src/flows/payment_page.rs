//! Payment page: `POST /merchants/{merchant_id}/token`, then the Pay Station URL with the token.

use gatehouse_plugin_api::http::encode_form;
use gatehouse_plugin_api::{
    Command, Details, HttpResponse, Invocation, Method, Money, Operation, Outcome, ProviderError,
};

use crate::account::Account;
use crate::flows::{Started, extra_object, extra_string, required};
use crate::transformers::errors::{Call, http_error};
use crate::transformers::json::amount_to_json;
use crate::transformers::json::{first_text, parse_root};
use crate::transformers::wire::{
    Checkout, Purchase, TokenRequest, TokenSettings, TokenUser, Wrapped, to_json_bytes,
};

/// Starts a token request; the amount is what the payment page is for.
pub fn start(invocation: &Invocation) -> Started<Money> {
    let Command::PaymentPage {
        amount,
        description,
        customer,
        return_url,
        payment_method,
        extra,
    } = &invocation.command
    else {
        return Err(ProviderError::wrong_command(
            Operation::PaymentPage,
            invocation.command.operation(),
        ));
    };
    let account = Account::read(&invocation.account)?;
    check_positive(amount)?;
    let user_id = required(
        customer.id.as_deref(),
        "customer.id",
        "Xsolla needs the user's id in the game (customer.id) to create a token",
    )?;
    if let Some(email) = &customer.email
        && email.chars().count() > 100
    {
        return Err(ProviderError::invalid_request(
            "customer.email must be at most 100 characters",
        )
        .with_field("customer.email"));
    }
    if let Some(country) = &customer.country
        && !(country.len() == 2 && country.bytes().all(|byte| byte.is_ascii_uppercase()))
    {
        return Err(ProviderError::invalid_request(
            "customer.country must be an ISO 3166-1 alpha-2 code in capitals (`US`)",
        )
        .with_field("customer.country"));
    }
    if let Some(url) = return_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(
            ProviderError::invalid_request("return_url must be an http(s) URL")
                .with_field("return_url"),
        );
    }
    let payment_method = payment_method
        .as_deref()
        .map(|method| {
            method.trim().parse::<u64>().map_err(|_| {
                ProviderError::invalid_request(
                    "payment_method must be Xsolla's numeric payment method id for a token",
                )
                .with_field("payment_method")
            })
        })
        .transpose()?;
    let language = extra_string(extra, "language")?;
    if let Some(language) = language
        && !(language.len() == 2 && language.bytes().all(|byte| byte.is_ascii_lowercase()))
    {
        return Err(ProviderError::invalid_request(
            "extra `language` must be an ISO 639-1 code (`en`)",
        )
        .with_field("extra.language"));
    }
    let external_id = extra_string(extra, "external_id")?.or(invocation.reference.as_deref());
    let body = TokenRequest {
        user: TokenUser {
            id: Wrapped { value: user_id },
            name: Wrapped::of(customer.name.as_deref()),
            email: Wrapped::of(customer.email.as_deref()),
            phone: Wrapped::of(customer.phone.as_deref()),
            country: Wrapped::of(customer.country.as_deref()),
        },
        settings: TokenSettings {
            project_id: account.project_id_number()?,
            currency: amount.currency.code(),
            language,
            return_url: return_url.as_deref(),
            external_id,
            mode: account.mode(),
            payment_method,
            ui: extra_object(extra, "ui")?,
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
    let path = format!("/merchants/{}/token", account.merchant_id);
    // A token is not a payment: creating a second one after a lost answer does nothing twice.
    let request = account
        .json_request(Method::Post, &path, to_json_bytes(&body)?)
        .retry_safe(true);
    Ok((request, *amount))
}

pub fn finish(
    invocation: &Invocation,
    amount: Money,
    response: &HttpResponse,
) -> Result<Outcome, ProviderError> {
    if !response.is_success() {
        return Err(http_error(Call::CreateToken, response));
    }
    let root = parse_root(&response.body, "create-token")?;
    // `{"token": "..."}` [GUESS-strong per providers.md].
    let token = first_text(root, &[&["token"]]).ok_or_else(|| {
        ProviderError::malformed_response("Xsolla's create-token answer has no `token`")
            .with_field("token")
    })?;
    let account = Account::read(&invocation.account)?;
    let base = account.paystation_url();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!(
        "{base}{separator}{}",
        encode_form(&[("token", token.as_str())])
    );
    Ok(Outcome::pending()
        .with_amount(amount)
        .with_details(Details::PaymentPage {
            url,
            token: Some(token),
        }))
}

pub fn check_positive(amount: &Money) -> Result<(), ProviderError> {
    if amount.is_positive() {
        Ok(())
    } else {
        Err(ProviderError::invalid_request("amount must be positive")
            .with_field("amount.minor_units"))
    }
}
