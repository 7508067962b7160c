//! The simulator's status answers, over real HTTP: v2 in the real shape a PayGateGlobal client
//! library published, v1 as the guide documents it.

use gatehouse_sim_paygateglobal::{PAID, PayGateSimulator, SIMULATED_DATETIME};
use serde_json::{Value, json};

const TOKEN: &str = "sim-token-4242";

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .expect("simulator answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

#[tokio::test]
async fn v2_status_answers_the_real_shape() {
    let (sim, running) = PayGateSimulator::start(TOKEN).await.expect("start");
    let base = running.base_url();
    let (status, pay) = post(
        &base,
        "/api/v1/pay",
        json!({"auth_token": TOKEN, "phone_number": "22892104312", "amount": 750,
               "identifier": "order-77", "network": "TMONEY"}),
    )
    .await;
    assert_eq!((status, &pay["status"]), (200, &json!(0)));
    assert!(sim.settle("order-77", PAID).await);
    let (status, answer) = post(
        &base,
        "/api/v2/status",
        json!({"auth_token": TOKEN, "identifier": "order-77"}),
    )
    .await;
    assert_eq!(status, 200);
    let reference: u64 = pay["tx_reference"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .expect("pay answers the reference");
    assert_eq!(
        answer,
        json!({"tx_reference": reference, "identifier": "order-77", "amount": 750,
               "payment_reference": answer["payment_reference"], "payment_method": "T-Money",
               "datetime": SIMULATED_DATETIME, "phone_number": "22892104312", "status": 0})
    );
    assert!(
        answer["tx_reference"].is_u64(),
        "a number, as the real answer"
    );
    assert!(answer["payment_reference"].is_string());
    // v1 by reference keeps the guide's fields.
    let (status, v1) = post(
        &base,
        "/api/v1/status",
        json!({"auth_token": TOKEN, "tx_reference": pay["tx_reference"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v1["identifier"], "order-77");
    assert_eq!(v1["status"], 0);
    // Unknown identifiers and wrong tokens are refused.
    let (status, _) = post(
        &base,
        "/api/v2/status",
        json!({"auth_token": TOKEN, "identifier": "nope"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &base,
        "/api/v2/status",
        json!({"auth_token": "wrong", "identifier": "order-77"}),
    )
    .await;
    assert_eq!(status, 401);
}
