//! Embedding Gatehouse in a platform's own axum application.
//!
//! The platform builds a configuration in code, starts a `Gateway`, dispatches a normalized
//! command directly, and mounts the host's HTTP API under its own `/payments` prefix next to its
//! own routes. Run it with the plugins folder as the first argument:
//!
//! ```sh
//! cargo run -p gatehouse-host --example embed -- target/plugins http://127.0.0.1:9101 token
//! ```

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use gatehouse_host::ledger::{Ledger, SqliteLedger};
use gatehouse_host::plugin_api::Command;
use gatehouse_host::service::{Service, api};
use gatehouse_host::{Config, Gateway};

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

    // 1. Configuration as a struct, checked like a file.
    let config = Config::builder(&plugins_dir)
        .api_key("platform-internal-key")
        .account(
            "paygateglobal",
            "main",
            &paygate_url,
            &[],
            &[("auth_token", &paygate_token)],
        )
        .build()?;
    let gateway = Gateway::start(config).await;

    // 2. Dispatch a normalized command directly, as a library.
    let outcome = gateway
        .dispatch(
            "paygateglobal",
            "main",
            Command::Balance {
                extra: Default::default(),
            },
        )
        .await?;
    println!("balance outcome: {}", serde_json::to_string(&outcome)?);

    // 3. Mount the HTTP API (a tower service) inside the platform's own app.
    let ledger: Arc<dyn Ledger> = Arc::new(SqliteLedger::open_in_memory()?);
    let payments = api::router(Service::new(gateway, ledger));
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
