//! The plugin's own requests, sent over real HTTP to the simulator, and its answers fed back to
//! the plugin: plugin and simulator agree on the document (hash, parameters, XML). The host's
//! own end-to-end tests live in `tests/e2e`.

#![allow(clippy::unwrap_used)]

use gatehouse_plugin_api::testkit::{self, FlowRun};
use gatehouse_plugin_api::{
    Details, ErrorKind, HttpRequest, HttpResponse, Invocation, Method, ReportRecord,
};
use gatehouse_plugin_kolmisoft::Kolmisoft;
use gatehouse_sim_kolmisoft::{KolmisoftSimulator, Payment};
use serde_json::json;

/// The testkit's clock: 2026-01-01T00:00:00Z.
const TODAY: i64 = 1_767_225_600;

async fn send(request: &HttpRequest) -> HttpResponse {
    let client = reqwest::Client::new();
    let mut builder = match request.method {
        Method::Get => client.get(&request.url),
        _ => client.post(&request.url),
    };
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let response = builder.body(request.body.clone()).send().await.unwrap();
    let status = response.status().as_u16();
    HttpResponse::new(status, response.bytes().await.unwrap().to_vec())
}

/// Runs the one-request flow: once to learn the request, then again with the simulator's answer.
async fn drive(invocation: &Invocation) -> (FlowRun, HttpRequest) {
    let first = testkit::run::<Kolmisoft>(invocation, b"", []);
    let request = first
        .requests
        .first()
        .cloned()
        .expect("the plugin sends a request");
    let response = send(&request).await;
    (
        testkit::run::<Kolmisoft>(invocation, b"", [response]),
        request,
    )
}

fn records(run: &FlowRun) -> Vec<ReportRecord> {
    match &run.outcome().details {
        Details::Report { records, .. } => records.clone(),
        other => panic!("not a report: {other:?}"),
    }
}

fn invocation(
    base_url: &str,
    secret: &str,
    settings: &[(&str, &str)],
    command: serde_json::Value,
) -> Invocation {
    let mut all = vec![("username", "admin")];
    all.extend_from_slice(settings);
    testkit::invocation(
        command,
        testkit::account(
            &format!("{base_url}/billing"),
            &all,
            &[("secret_key", secret)],
        ),
    )
}

#[tokio::test]
async fn plugin_and_simulator_agree() {
    let (sim, running) = KolmisoftSimulator::start("s3cret", "admin").await.unwrap();
    sim.add_payment(Payment {
        first_name: "John".into(),
        last_name: "Smith".into(),
        ..Payment::new(123, "jsmith", TODAY + 60, "10.1234", "USD")
    });
    sim.add_payment(Payment::new(7, "alee", TODAY + 120, "5.50", "EUR"));
    let base = running.base_url();

    let command = json!({"operation": "report", "report": "payments",
                         "filters": {"user_id": "123", "amount_min": "1", "currency": "USD"}});
    let (run, _) = drive(&invocation(&base, "s3cret", &[], command.clone())).await;
    let found = records(&run);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].party.as_deref(), Some("John Smith"));
    assert_eq!(found[0].raw["amount"], "10.1234", "kept exact");
    assert_eq!(found[0].amount, None, "10.1234 USD is not whole cents");

    // Default period and no filters: both of today's payments.
    let (run, request) = drive(&invocation(
        &base,
        "s3cret",
        &[],
        json!({"operation": "report", "report": "payments"}),
    ))
    .await;
    assert_eq!(request.method, Method::Post);
    assert_eq!(records(&run).len(), 2);
    assert_eq!(records(&run)[1].amount.unwrap().minor_units, 550);

    // GET, once the server allows it.
    let (run, _) = drive(&invocation(
        &base,
        "s3cret",
        &[("allow_get", "true")],
        command.clone(),
    ))
    .await;
    assert_eq!(run.error().kind, ErrorKind::ProviderError);
    assert_eq!(
        run.error().provider_message.as_deref(),
        Some("GET Requests are disabled")
    );
    sim.set_allow_get(true);
    let (run, request) = drive(&invocation(
        &base,
        "s3cret",
        &[("allow_get", "true")],
        command.clone(),
    ))
    .await;
    assert_eq!(request.method, Method::Get);
    assert_eq!(records(&run).len(), 1);

    // Wrong secret, unknown user.
    let (run, _) = drive(&invocation(&base, "wrong", &[], command.clone())).await;
    assert_eq!(run.error().kind, ErrorKind::Authentication);
    assert_eq!(
        run.error().provider_message.as_deref(),
        Some("Incorrect hash")
    );
    let account = testkit::account(
        &format!("{base}/billing"),
        &[("username", "nobody")],
        &[("secret_key", "s3cret")],
    );
    let (run, _) = drive(&testkit::invocation(command, account)).await;
    assert_eq!(run.error().kind, ErrorKind::Authentication);
    assert_eq!(run.error().provider_message.as_deref(), Some("Bad login"));
}
