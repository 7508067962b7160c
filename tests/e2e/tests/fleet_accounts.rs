//! Account protection and limits across a fleet (issue 15, items 3 and 4): three real
//! `gatehouse serve` processes on one PostgreSQL database, the real plugins, the simulators over
//! loopback.
//!
//! - A wrong password, 20 concurrent requests spread over the three hosts: the provider sees one
//!   login; the other 19 are answered `account_paused`; a resume on one host lifts the pause on
//!   the others (within the fleet's refresh, one second); with the password fixed, traffic flows.
//! - An account's `rate_limit_per_minute` and `max_concurrency` hold for the fleet: each host
//!   takes its share (the figure divided by the live hosts), the provider never sees more, and
//!   the excess is answered `rate_limited` without being sent.
//! - A host SIGKILLed while it holds an account's credentials probe frees it when its lease
//!   lapses, not before: the other host's request waits, then probes and is answered.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gatehouse_e2e::{
    API_KEY, KillOnDrop, free_port, install, library, plugin_file_name, postgres_ledger_toml,
    spawn_serve, wait_ready,
};
use gatehouse_sim_paygateglobal::PayGateSimulator;
use gatehouse_sim_paysitecash::PaysiteCashSimulator;
use serde_json::{Value, json};

const USER: &str = "webmaster42";
const PASSWORD: &str = "fleet-Paysite-Passw0rd";
const WRONG_PASSWORD: &str = "fleet-not-the-Passw0rd";
const TOKEN: &str = "fleet-accounts-token-1234";

/// One `gatehouse serve` of the fleet: its folder, configuration and address.
struct Host {
    config: PathBuf,
    listen: String,
    base: String,
    ledger_toml: String,
    process: KillOnDrop,
}

impl Host {
    /// Starts a host in `dir` serving `plugin`, on the shared ledger, with `accounts` (TOML).
    fn start(dir: &Path, plugin: &str, ledger_toml: &str, accounts: &str) -> Self {
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins).expect("plugins folder");
        install(
            &library(&format!("gatehouse-plugin-{plugin}")),
            &plugins,
            &plugin_file_name(plugin),
        );
        let listen = format!("127.0.0.1:{}", free_port());
        let config = dir.join("plugins.toml");
        write_config(&config, &listen, ledger_toml, accounts);
        let process = spawn_serve(&config);
        Self {
            config,
            base: format!("http://{listen}"),
            listen,
            ledger_toml: ledger_toml.to_string(),
            process,
        }
    }

    /// Replaces the accounts of the running host's configuration (the watcher reloads it).
    fn rewrite_accounts(&self, accounts: &str) {
        write_config(&self.config, &self.listen, &self.ledger_toml, accounts);
    }

    async fn listing(&self, client: &reqwest::Client) -> Value {
        client
            .get(format!("{}/v1/plugins", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("listing")
            .json()
            .await
            .expect("listing JSON")
    }

    async fn paused_accounts(&self, client: &reqwest::Client) -> usize {
        self.listing(client).await["paused_accounts"]
            .as_array()
            .map_or(0, Vec::len)
    }

    /// `gatehouse_fleet_live_hosts` as this host reports it.
    async fn live_hosts(&self, client: &reqwest::Client) -> Option<u32> {
        self.metric(client, "gatehouse_fleet_live_hosts{}").await
    }

    /// Configuration reloads this host applied.
    async fn reloads_applied(&self, client: &reqwest::Client) -> u32 {
        self.metric(client, "gatehouse_config_reloads_total{result=\"applied\"}")
            .await
            .unwrap_or(0)
    }

    /// The value of the sample `series` (name and labels as rendered) of `/metrics`.
    async fn metric(&self, client: &reqwest::Client, series: &str) -> Option<u32> {
        let text = client
            .get(format!("{}/metrics", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }
}

/// Writes the configuration through a temporary file and a rename, as an operator's tooling
/// should, so the watcher never reads half a file.
fn write_config(config: &Path, listen: &str, ledger_toml: &str, accounts: &str) {
    let temporary = config.with_extension("toml.new");
    std::fs::write(
        &temporary,
        format!(
            "[host]\nplugins_dir = \"plugins\"\nlisten = \"{listen}\"\nledger = \"ledger.sqlite\"\n\n\
             [api]\nkeys = [\"{API_KEY}\"]\n\n{ledger_toml}\n{accounts}"
        ),
    )
    .expect("config");
    std::fs::rename(&temporary, config).expect("config in place");
}

/// Three hosts on one fresh database, ready, each seeing the other two.
async fn three_hosts(
    dir: &Path,
    plugin: &str,
    accounts: &str,
    client: &reqwest::Client,
) -> Vec<Host> {
    let (ledger_toml, _database) = postgres_ledger_toml(dir);
    let hosts: Vec<Host> = (0..3)
        .map(|index| {
            Host::start(
                &dir.join(format!("host-{index}")),
                plugin,
                &ledger_toml,
                accounts,
            )
        })
        .collect();
    for host in &hosts {
        wait_ready(&host.base).await;
    }
    // Each host's share of the limits is set by the live hosts it counted at its last refresh.
    for host in &hosts {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let counted = host.live_hosts(client).await;
            if counted == Some(3) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} counts {counted:?} live hosts, not 3",
                host.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    hosts
}

/// Runs `count` requests at once (`request(index)` each), and their answers in order.
async fn all_at_once<F, Fut, T>(count: usize, request: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = (0..count)
        .map(|index| tokio::spawn(request(index)))
        .collect();
    let mut answers = Vec::with_capacity(count);
    for task in tasks {
        answers.push(task.await.expect("request task"));
    }
    answers
}

/// Polls `check` every 50 ms until it holds, for at most 20 s.
async fn poll_until<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn paysitecash_account(base_url: &str, password: &str) -> String {
    format!(
        "[providers.paysitecash.accounts.main]\nbase_url = \"{base_url}\"\ntimeout_ms = 2000\n\
         settings = {{ user = \"{USER}\" }}\nsecrets = {{ password = \"{password}\" }}\n"
    )
}

/// A report request on `host`: its HTTP status and the error code, if any.
async fn report(client: &reqwest::Client, host: &Host) -> (u16, Option<String>) {
    let response = client
        .post(format!("{}/v1/paysitecash/main/reports", host.base))
        .bearer_auth(API_KEY)
        .json(&json!({"report": "webmasters_quick"}))
        .send()
        .await
        .expect("report answered");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON answer");
    (status, body["error"]["code"].as_str().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_password_costs_one_login_across_three_hosts_and_a_resume_on_one_lifts_it_on_all() {
    let (simulator, running) = PaysiteCashSimulator::start(USER, PASSWORD)
        .await
        .expect("simulator");
    let stats = PaysiteCashSimulator::stats_base_url(&running);
    let dir = tempfile::tempdir().expect("temporary folder");
    let client = reqwest::Client::new();
    let started = Instant::now();
    let hosts = Arc::new(
        three_hosts(
            dir.path(),
            "paysitecash",
            &paysitecash_account(&stats, WRONG_PASSWORD),
            &client,
        )
        .await,
    );

    println!(
        "FIGURE fleet_wrong_password: three hosts ready in {:?}",
        started.elapsed()
    );
    // 20 requests at once, spread over the three hosts.
    let answers = all_at_once(20, |index| {
        let (client, hosts) = (client.clone(), hosts.clone());
        async move { report(&client, &hosts[index % 3]).await }
    })
    .await;
    let codes: Vec<&str> = answers
        .iter()
        .map(|(_, code)| code.as_deref().unwrap_or("none"))
        .collect();
    assert_eq!(
        codes
            .iter()
            .filter(|code| **code == "authentication")
            .count(),
        1,
        "{answers:?}"
    );
    assert_eq!(
        codes
            .iter()
            .filter(|code| **code == "account_paused")
            .count(),
        19,
        "{answers:?}"
    );
    let state = simulator.state();
    assert_eq!(state.failed_logins_total, 1, "{state:?}");
    assert_eq!(simulator.call_count(), 1, "one login reached the provider");
    assert!(!state.locked, "{state:?}");
    for host in hosts.iter() {
        assert_eq!(host.paused_accounts(&client).await, 1, "{}", host.base);
    }

    // An operator resumes the account on one host; the others lift it within their refresh.
    let resumed: Value = client
        .post(format!("{}/v1/paysitecash/main/resume", hosts[0].base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("resume")
        .json()
        .await
        .expect("resume JSON");
    assert_eq!(resumed["was_paused"], true, "{resumed}");
    for host in hosts.iter() {
        poll_until("the other hosts lift the pause", || async {
            host.paused_accounts(&client).await == 0
        })
        .await;
    }
    assert_eq!(simulator.call_count(), 1, "resuming sends nothing");
    println!(
        "FIGURE fleet_wrong_password: resumed everywhere at {:?}",
        started.elapsed()
    );

    // The operator fixes the password on every host: traffic flows everywhere, and the new
    // password is proven once for the fleet.
    let mut reloads_before = Vec::new();
    for host in hosts.iter() {
        reloads_before.push(host.reloads_applied(&client).await);
    }
    for host in hosts.iter() {
        host.rewrite_accounts(&paysitecash_account(&stats, PASSWORD));
    }
    for (host, before) in hosts.iter().zip(reloads_before) {
        poll_until("the host reloads its configuration", || async {
            host.reloads_applied(&client).await > before
        })
        .await;
    }
    println!(
        "FIGURE fleet_wrong_password: phases {:?}",
        started.elapsed()
    );
    let answers = all_at_once(9, |index| {
        let (client, hosts) = (client.clone(), hosts.clone());
        async move { report(&client, &hosts[index % 3]).await }
    })
    .await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    let state = simulator.state();
    assert_eq!(state.failed_logins_total, 1, "{state:?}");
    assert_eq!(simulator.call_count(), 10);
}

/// The PayGateGlobal simulator behind a layer that counts the requests in flight at once (each
/// held 150 ms, so that overlapping sends overlap at the provider).
async fn counting_paygate() -> (
    gatehouse_sim_common::RunningSimulator,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
) {
    let simulator = PayGateSimulator::new(TOKEN);
    let (in_flight, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let router = simulator.router().layer(axum::middleware::from_fn({
        let (in_flight, most) = (in_flight.clone(), most.clone());
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let (in_flight, most) = (in_flight.clone(), most.clone());
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(150)).await;
                let response = next.run(request).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                response
            }
        }
    }));
    let running = gatehouse_sim_common::serve(router)
        .await
        .expect("simulator");
    (running, most, in_flight)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_accounts_rate_limit_and_concurrency_hold_for_the_fleet() {
    const PER_MINUTE: usize = 12;
    const MAX_CONCURRENCY: usize = 3;
    const CHARGES: usize = 30;
    let (running, most_in_flight, _in_flight) = counting_paygate().await;
    let dir = tempfile::tempdir().expect("temporary folder");
    let client = reqwest::Client::new();
    // A slot 15 s away (12 a minute, a third each) is further than the 2 s timeout: the excess
    // is refused at once instead of waiting.
    let account = format!(
        "[providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\ntimeout_ms = 2000\n\
         rate_limit_per_minute = {PER_MINUTE}\nmax_concurrency = {MAX_CONCURRENCY}\n\
         secrets = {{ auth_token = \"{TOKEN}\" }}\n",
        running.base_url()
    );
    let hosts = Arc::new(three_hosts(dir.path(), "paygateglobal", &account, &client).await);

    let started = Instant::now();
    let answers = all_at_once(CHARGES, |index| {
        let (client, hosts) = (client.clone(), hosts.clone());
        async move {
            let response = client
                .post(format!(
                    "{}/v1/paygateglobal/main/charges",
                    hosts[index % 3].base
                ))
                .bearer_auth(API_KEY)
                .header("Idempotency-Key", format!("fleet-rate-{index}"))
                .json(&json!({"amount": {"minor_units": 1500, "currency": "XOF"},
                              "customer": {"phone": "90123456"}, "payment_method": "FLOOZ"}))
                .send()
                .await
                .expect("charge answered");
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("JSON answer");
            (status, body)
        }
    })
    .await;
    let elapsed = started.elapsed();

    let sent = running.calls.count("/api/v1/pay");
    // The stated tolerance: a GCRA's burst (the limit) plus its rate over the time the load
    // ran, each host holding a third of both.
    let allowed = PER_MINUTE + PER_MINUTE * elapsed.as_secs() as usize / 60;
    assert!(
        sent <= allowed,
        "{sent} charges reached the provider in {elapsed:?}; the fleet allows {allowed}"
    );
    let accepted = answers.iter().filter(|(status, _)| *status == 200).count();
    let limited: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(accepted + limited.len(), CHARGES, "{answers:?}");
    assert!(
        limited
            .iter()
            .all(|body| body["error"]["code"] == "rate_limited"),
        "{limited:?}"
    );
    assert_eq!(accepted, sent, "every charge answered 200 was sent once");
    // Evenly spread load uses the fleet's whole budget: each host its share.
    assert!(
        sent >= PER_MINUTE,
        "{sent} sent: the fleet's budget went unused"
    );
    let most = most_in_flight.load(Ordering::SeqCst);
    println!(
        "FIGURE fleet_rate: {sent} of {CHARGES} charges sent in {elapsed:?}, {} refused rate_limited, at most {most} at once at the provider",
        limited.len()
    );
    assert!(
        most <= MAX_CONCURRENCY,
        "{most} requests in flight at the provider at once; the fleet allows {MAX_CONCURRENCY}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_probe_held_by_a_killed_host_is_taken_over_once_its_lease_lapses() {
    let (simulator, running) = PaysiteCashSimulator::start(USER, PASSWORD)
        .await
        .expect("simulator");
    let stats = PaysiteCashSimulator::stats_base_url(&running);
    let dir = tempfile::tempdir().expect("temporary folder");
    let client = reqwest::Client::new();
    let (ledger_toml, _database) = postgres_ledger_toml(dir.path());
    // A short lease (the shortest allowed is 1 s), so the takeover comes quickly.
    let ledger_toml = format!("{ledger_toml}lease_ms = 2000\n");
    // A timeout longer than the test: host A's probing flow waits on the provider until killed.
    let account =
        paysitecash_account(&stats, PASSWORD).replace("timeout_ms = 2000", "timeout_ms = 60000");
    let mut host_a = Host::start(
        &dir.path().join("host-a"),
        "paysitecash",
        &ledger_toml,
        &account,
    );
    let host_b = Host::start(
        &dir.path().join("host-b"),
        "paysitecash",
        &ledger_toml,
        &account,
    );
    wait_ready(&host_a.base).await;
    wait_ready(&host_b.base).await;

    // Host A's first report holds the fleet's probe while the provider sits on it.
    running
        .faults
        .push(gatehouse_sim_common::Fault::Delay(Duration::from_secs(60)));
    let probing = {
        let (client, base) = (client.clone(), host_a.base.clone());
        tokio::spawn(async move {
            client
                .post(format!("{base}/v1/paysitecash/main/reports"))
                .bearer_auth(API_KEY)
                .json(&json!({"report": "webmasters_quick"}))
                .send()
                .await
        })
    };
    poll_until("host A's probe reaches the provider", || async {
        running.calls.all().len() == 1
    })
    .await;
    let host_b = Arc::new(host_b);
    let waiting = {
        let (client, host_b) = (client.clone(), host_b.clone());
        tokio::spawn(async move { report(&client, &host_b).await })
    };
    // Host B waits for the probe while host A lives: nothing more reaches the provider.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "host B must wait for host A's probe"
    );
    assert_eq!(running.calls.all().len(), 1);

    let killed_at = Instant::now();
    host_a.process.0.kill().expect("SIGKILL host A");
    let _ = host_a.process.0.wait();
    let (status, code) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("host B is answered once host A's lease lapsed")
        .expect("request task");
    let took_over_after = killed_at.elapsed();
    println!(
        "FIGURE fleet_probe_takeover: host B sent {took_over_after:?} after host A was killed"
    );
    assert_eq!((status, code), (200, None));
    assert_eq!(running.calls.all().len(), 2, "host B probed once");
    assert_eq!(simulator.failed_logins_total(), 0);
    assert!(
        probing.await.expect("task").is_err(),
        "host A died mid-request"
    );
}
