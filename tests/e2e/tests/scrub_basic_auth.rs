//! HOST GAP REPRODUCTION (regression test for B2 in RELIABILITY.md, fixed): the scrubber removes an account's
//! secret values raw, form-encoded and percent-encoded, but not the values of the headers a
//! plugin marks sensitive. Xsolla authenticates with `Authorization: Basic base64(merchant_id:
//! api_key)`; a provider or proxy that echoes that header gets the Base64 credential (as good as
//! the API key) into the API's error answer, the ledger and the logs.

use crate::reliability;

use gatehouse_e2e::{ApiHost, captured_logs};
use gatehouse_sim_common::Fault;
use gatehouse_sim_xsolla::Credentials;
use reliability::{ALL_PLUGINS, Simulators, base64};

#[tokio::test]
async fn an_echoed_basic_authorization_header_is_scrubbed() {
    let sims = Simulators::start().await;
    let api = ApiHost::start(&ALL_PLUGINS, &sims.accounts_toml(1500)).await;
    let credentials = Credentials::default();
    let pair = base64(&format!(
        "{}:{}",
        credentials.merchant_id, credentials.api_key
    ));
    sims.xsolla_running.faults.push(Fault::Status(
        500,
        format!("<html>you sent Authorization: Basic {pair}</html>"),
    ));
    let (_, answer) = api
        .get(&format!(
            "/v1/xsolla/main/saved-accounts/{}",
            reliability::XSOLLA_USER
        ))
        .await;
    let seen = format!("{answer}\n{}", captured_logs());
    assert!(
        !seen.contains(&pair),
        "the Basic credential leaked: {answer}"
    );
}
