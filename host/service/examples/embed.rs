//! Embedding Gatehouse in a platform's own axum application.
//!
//! The platform builds a configuration in code, opens the service (the gateway with its ledger in
//! front), sends a charge through the one door — recorded in the ledger before it is sent, under
//! an idempotency key, so a retry is answered from the ledger — and mounts the host's HTTP API
//! under its own `/payments` prefix next to its own routes. Run it with the plugins folder, the
//! PayGateGlobal base URL and token, and the ledger file:
//!
//! ```sh
//! cargo run -p gatehouse-service --example embed -- target/plugins http://127.0.0.1:9101 token ledger.sqlite
//! ```

use axum::Router;
use axum::routing::get;
use gatehouse_service::plugin_api::Command;
use gatehouse_service::{Config, Service, api};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let plugins_dir = args.next().unwrap_or_else(|| "target/plugins".into());
    let paygate_url = args
        .next()
        .unwrap_or_else(|| "https://paygateglobal.com".into());
    let paygate_token = args
        .next()
        .unwrap_or_else(|| "${PAYGATEGLOBAL_AUTH_TOKEN}".into());
    let ledger = args.next().unwrap_or_else(|| "ledger.sqlite".into());

    // 1. Configuration as a struct, checked like a file.
    let config = Config::builder(&plugins_dir)
        .ledger(&ledger)
        .api_key("platform-internal-key")
        .account(
            "paygateglobal",
            "main",
            &paygate_url,
            &[],
            &[("auth_token", &paygate_token)],
        )
        .build()?;
    let service = Service::open(config).await?;

    // 2. A charge through the one door: in the ledger before it is sent.
    let charge: Command = serde_json::from_value(serde_json::json!({
        "operation": "charge",
        "amount": {"minor_units": 1500, "currency": "XOF"},
        "customer": {"phone": "90123456"},
        "payment_method": "FLOOZ",
        "description": "order 1001",
    }))?;
    let first = service
        .execute(
            "paygateglobal",
            "main",
            charge.clone(),
            Some("order-1001".into()),
        )
        .await?;
    println!("charge: {}", serde_json::to_string(&first)?);
    // The platform retries (a timeout on its side): the ledger answers, the provider is not called.
    let retry = service
        .execute("paygateglobal", "main", charge, Some("order-1001".into()))
        .await?;
    println!("retry: {}", serde_json::to_string(&retry)?);

    // 3. A read goes straight through.
    let balance = service
        .execute(
            "paygateglobal",
            "main",
            Command::Balance {
                extra: Default::default(),
            },
            None,
        )
        .await?;
    println!(
        "balance outcome: {}",
        serde_json::to_string(&balance.outcome)?
    );

    // 4. Mount the HTTP API (a tower service) inside the platform's own app.
    let payments = api::router(service);
    let app = Router::new()
        .route("/", get(|| async { "the platform's own home page" }))
        .nest("/payments", payments);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{address}/payments/healthz"))
        .send()
        .await?
        .text()
        .await?;
    let plugins = client
        .get(format!("http://{address}/payments/v1/plugins"))
        .bearer_auth("platform-internal-key")
        .send()
        .await?
        .text()
        .await?;
    println!("mounted API health: {health}");
    println!("mounted API plugins: {plugins}");
    Ok(())
}
