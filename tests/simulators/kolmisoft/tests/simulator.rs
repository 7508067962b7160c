//! The simulator over real HTTP on loopback: it follows the document (hash, login, GET, filters, XML).

#![allow(clippy::unwrap_used)]

use gatehouse_sim_kolmisoft::{KolmisoftSimulator, Payment, expected_hash};

/// 2026-01-01T12:00:00Z: "today" is 2026-01-01 in UTC.
const NOW: i64 = 1_767_268_800;
const TODAY: i64 = 1_767_225_600;

async fn started() -> (KolmisoftSimulator, gatehouse_sim_common::RunningSimulator) {
    // The document's example: API Secret Key 456789, user "username".
    let (sim, running) = KolmisoftSimulator::start("456789", "username")
        .await
        .unwrap();
    sim.set_now(Some(NOW));
    sim.add_payment(Payment {
        first_name: "John".into(),
        last_name: "Smith".into(),
        comment: "top-up & more".into(),
        ..Payment::new(123, "jsmith", TODAY + 3600, "10.0000", "USD")
    });
    sim.add_payment(Payment::new(123, "jsmith", TODAY - 3600, "20", "USD")); // yesterday
    sim.add_payment(Payment {
        first_name: "Ann".into(),
        last_name: "Lee".into(),
        ..Payment::new(7, "alee", TODAY + 7200, "5.5", "EUR")
    });
    sim.add_payment(Payment::new(8, "bob", TODAY + 10_800, "99.1234", "USD"));
    (sim, running)
}

fn url(running: &gatehouse_sim_common::RunningSimulator) -> String {
    format!("{}/billing/api/payments_get", running.base_url())
}

/// Signs `filters` (wire names) as the document says and returns the full parameter list.
fn signed(filters: &[(&str, &str)], secret: &str) -> Vec<(String, String)> {
    let mut parameters: Vec<(String, String)> = vec![("u".into(), "username".into())];
    parameters.extend(
        filters
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string())),
    );
    let hash = expected_hash(&parameters, secret);
    parameters.push(("hash".into(), hash));
    parameters
}

async fn post(
    running: &gatehouse_sim_common::RunningSimulator,
    parameters: &[(String, String)],
) -> String {
    let response = reqwest::Client::new()
        .post(url(running))
        .form(parameters)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/xml"),
        "XML content type"
    );
    response.text().await.unwrap()
}

fn users(xml: &str) -> Vec<String> {
    xml.lines()
        .filter_map(|line| line.trim().strip_prefix("<user>"))
        .map(|rest| rest.trim_end_matches("</user>").trim().to_string())
        .collect()
}

#[tokio::test]
async fn the_documents_example_request_is_accepted() {
    let (_sim, running) = started().await;
    // Verbatim: "HTML POST: http://<SERVER_IP>/billing/api/payments_get?u=username&user_id_s=123&hash=f7c3…"
    let response = reqwest::Client::new()
        .post(format!(
            "{}?u=username&user_id_s=123&hash=f7c3bc1d808e04732adf679965ccc34ca7ae3441",
            url(&running)
        ))
        .send()
        .await
        .unwrap();
    let xml = response.text().await.unwrap();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<page>\n <pagename> Payments_list </pagename>\n <payments>\n"), "{xml}");
    // The default period is today: yesterday's payment of user 123 is not listed.
    assert_eq!(users(&xml), vec!["John Smith"]);
    assert!(
        xml.contains("   <user> John Smith </user>\n"),
        "values padded as in the document: {xml}"
    );
    assert!(xml.contains("<date> 2026-01-01 01:00:00 </date>"));
    assert!(xml.contains("<amount> 10.0000 </amount>"));
    assert!(xml.contains("<comment> top-up &amp; more </comment>"));
    assert!(xml.contains("<user_balance_before_payment> 0 </user_balance_before_payment>"));
    assert!(xml.contains("<user_balance_after_payment> 10.0000 </user_balance_after_payment>"));
}

#[tokio::test]
async fn a_wrong_hash_is_refused() {
    let (_sim, running) = started().await;
    let xml = post(&running, &signed(&[("user_id_s", "123")], "wrong secret")).await;
    assert!(xml.contains("<error>Incorrect hash</error>"), "{xml}");
    // Missing hash.
    let xml = post(&running, &[("u".into(), "username".into())]).await;
    assert!(xml.contains("<error>Incorrect hash</error>"), "{xml}");
    // The values hashed in another order than the document's.
    let mut parameters: Vec<(String, String)> = vec![
        ("u".into(), "username".into()),
        ("from_s".into(), TODAY.to_string()),
        ("user_id_s".into(), "123".into()),
    ];
    let mut hasher_input = format!("{TODAY}123");
    hasher_input.push_str("456789");
    let out_of_order = {
        use sha1::Digest;
        hex::encode(sha1::Sha1::digest(hasher_input.as_bytes()))
    };
    parameters.push(("hash".into(), out_of_order));
    let xml = post(&running, &parameters).await;
    assert!(xml.contains("<error>Incorrect hash</error>"), "{xml}");
    // The same parameters hashed in the document's order pass, whatever order they are sent in.
    let good = expected_hash(&parameters, "456789");
    parameters.pop();
    parameters.push(("hash".into(), good));
    let xml = post(&running, &parameters).await;
    assert!(xml.contains("<payments>"), "{xml}");
}

#[tokio::test]
async fn an_unknown_user_is_refused() {
    let (_sim, running) = started().await;
    let mut parameters = signed(&[], "456789");
    parameters[0].1 = "nobody".into();
    let xml = post(&running, &parameters).await;
    assert!(xml.contains("<error>Bad login</error>"), "{xml}");
    let xml = post(&running, &parameters[1..]).await;
    assert!(
        xml.contains("<error>Bad login</error>"),
        "no u at all: {xml}"
    );
}

#[tokio::test]
async fn get_is_refused_unless_allowed() {
    let (sim, running) = started().await;
    let client = reqwest::Client::new();
    let parameters = signed(&[("user_id_s", "123")], "456789");
    let xml = client
        .get(url(&running))
        .query(&parameters)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        xml.contains("<status>GET Requests are disabled</status>"),
        "{xml}"
    );
    sim.set_allow_get(true);
    let xml = client
        .get(url(&running))
        .query(&parameters)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(users(&xml), vec!["John Smith"]);
    assert_eq!(sim.received().last().unwrap().method, "GET");
}

#[tokio::test]
async fn every_filter_narrows_the_list() {
    let (_sim, running) = started().await;
    let from = TODAY.to_string();
    let till = (TODAY + 86_399).to_string();
    let whole_day = [("from_s", from.as_str()), ("till_s", till.as_str())];
    for (filter, expected) in [
        (vec![], vec!["John Smith", "Ann Lee", "bob"]),
        (vec![("user_id_s", "7")], vec!["Ann Lee"]),
        (vec![("username_s", "bob")], vec!["bob"]),
        (vec![("first_name_s", "John")], vec!["John Smith"]),
        (vec![("last_name_s", "Lee")], vec!["Ann Lee"]),
        (vec![("amount_min_s", "10")], vec!["John Smith", "bob"]),
        (vec![("amount_max_s", "10")], vec!["John Smith", "Ann Lee"]),
        (
            vec![("amount_min_s", "5.6"), ("amount_max_s", "99.1233")],
            vec!["John Smith"],
        ),
        (vec![("currency_s", "EUR")], vec!["Ann Lee"]),
        (
            vec![("currency_s", "USD"), ("amount_min_s", "50")],
            vec!["bob"],
        ),
        (vec![("user_id_s", "123"), ("currency_s", "EUR")], vec![]),
    ] {
        let mut filters: Vec<(&str, &str)> = whole_day.to_vec();
        filters.extend(filter.iter().copied());
        let xml = post(&running, &signed(&filters, "456789")).await;
        assert_eq!(users(&xml), expected, "{filter:?}: {xml}");
    }
    // The period: yesterday only.
    let yesterday_from = (TODAY - 86_400).to_string();
    let yesterday_till = (TODAY - 1).to_string();
    let xml = post(
        &running,
        &signed(
            &[("from_s", &yesterday_from), ("till_s", &yesterday_till)],
            "456789",
        ),
    )
    .await;
    assert_eq!(users(&xml), vec!["jsmith"]);
    // An empty result is an empty list.
    let xml = post(
        &running,
        &signed(&[("from_s", "0"), ("till_s", "1")], "456789"),
    )
    .await;
    assert!(xml.contains(" <payments>\n </payments>\n"), "{xml}");
}

#[tokio::test]
async fn older_servers_omit_balances_and_bad_parameters_are_errors() {
    let (sim, running) = started().await;
    sim.set_include_balances(false);
    let xml = post(&running, &signed(&[], "456789")).await;
    assert!(
        xml.contains("<amount_with_tax>") && !xml.contains("user_balance"),
        "{xml}"
    );
    let xml = post(&running, &signed(&[("from_s", "yesterday")], "456789")).await;
    assert!(
        xml.contains("<error>Invalid parameter: from_s</error>"),
        "{xml}"
    );
    let xml = post(&running, &signed(&[("amount_min_s", "ten")], "456789")).await;
    assert!(
        xml.contains("<error>Invalid parameter: amount_min_s</error>"),
        "{xml}"
    );
}

#[tokio::test]
async fn control_routes() {
    let (sim, running) = started().await;
    let client = reqwest::Client::new();
    let base = running.base_url();
    let response = client
        .post(format!("{base}/_sim/payments"))
        .json(&Payment::new(9, "carol", TODAY + 60, "1.5", "GBP"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(sim.payments().len(), 5);
    let response = client
        .post(format!("{base}/_sim/settings"))
        .json(&serde_json::json!({"allow_get": true, "now": null, "add_api_user": "reseller"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let listed: Vec<Payment> = client
        .get(format!("{base}/_sim/payments"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 5);
    assert_eq!(
        client
            .delete(format!("{base}/_sim/payments"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert!(sim.payments().is_empty());
    let received: serde_json::Value = client
        .get(format!("{base}/_sim/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(received.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn queued_raw_answers_replace_the_next_ones() {
    let (sim, running) = started().await;
    sim.answer_next_with(vec![b'<', 0xff, b'>']);
    sim.answer_next_with("<page>");
    let response = reqwest::Client::new()
        .post(url(&running))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        &[b'<', 0xff, b'>']
    );
    let xml = post(&running, &signed(&[], "456789")).await;
    assert_eq!(xml, "<page>");
    let xml = post(&running, &signed(&[], "456789")).await;
    assert!(xml.contains("Payments_list"), "back to normal: {xml}");
    assert_eq!(sim.received().len(), 3, "every request is recorded");
}
