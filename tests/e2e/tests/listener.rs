//! The public edge (issue 21): the HTTP listener under slow-connection attacks and a descriptor
//! limit, accept errors that back off, TLS from certificate files that rotate while serving,
//! and outbound requests through a fixed egress proxy. Loopback only; every loop is bounded.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gatehouse_e2e::{
    API_KEY, ApiHost, TestHost, captured_logs, free_port, gatehouse_binary, in_own_process,
    install, library, plugin_file_name, wait_ready,
};
use gatehouse_sim_paygateglobal::PayGateSimulator;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::reliability::figure;

const TOKEN: &str = "edge-test-token-1234";

/// The attack of issue 21: this many connections, each trickling a header line.
const SLOW_CONNECTIONS: usize = 2_000;
/// The serving process's descriptor limit in the attack.
const HOST_DESCRIPTOR_LIMIT: u64 = 256;
/// The header-read timeout the attacked host is configured with.
const HEADER_TIMEOUT: Duration = Duration::from_millis(2_000);
/// Every slow connection is closed this soon after it connected: the header timeout after the
/// host accepted it, and the last of 2 000 waits in the kernel's queue until the host has room
/// (see the assertion). Well before the idle timeout (25 s) and the attacker's 30 s.
const CLOSED_WITHIN: Duration = Duration::from_millis(10_000);
/// A health check or charge during the attack is answered this soon (two SYN retransmissions).
const SERVED_WITHIN: Duration = Duration::from_millis(7_500);
/// How long the test waits for any one answer during the attack before calling it lost.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// Raises this test process's own descriptor limit: it holds the attacker's 2 000 sockets.
fn raise_own_descriptor_limit(needed: u64) {
    let (soft, hard) = rlimit::Resource::NOFILE
        .get()
        .expect("the descriptor limit can be read");
    if soft >= needed {
        return;
    }
    assert!(
        hard >= needed,
        "this test needs {needed} open descriptors but the hard limit is {hard}: raise it (ulimit -Hn {needed}) to run it"
    );
    rlimit::Resource::NOFILE
        .set(needed, hard)
        .unwrap_or_else(|error| panic!("cannot raise the descriptor limit to {needed}: {error}"));
}

/// `gatehouse serve` with its descriptor limit set by the shell before it execs the binary (the
/// process keeps its pid across `exec`, so the child's pid is the host's).
fn start_limited_host(config: &Path, descriptor_limit: u64, log: &Path) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {descriptor_limit} && exec \"$0\" --config \"$1\" serve"
        ))
        .arg(gatehouse_binary())
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("gatehouse starts")
}

/// The process's CPU time (user + system) from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::File::open(format!("/proc/{pid}/stat")).expect("process stat");
    cpu_time_from(&stat)
}

/// The same from an open `/proc/<pid>/stat` (read again from its start: needs no descriptor).
fn cpu_time_from(stat: &std::fs::File) -> Duration {
    use std::os::unix::fs::FileExt as _;
    let mut buffer = vec![0u8; 4096];
    let read = stat.read_at(&mut buffer, 0).expect("read process stat");
    let stat = String::from_utf8_lossy(&buffer[..read]).into_owned();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // Linux reports in clock ticks of 1/100 s (USER_HZ) on every architecture we run on.
    Duration::from_millis(ticks * 10)
}

/// What one slow connection saw.
enum Slow {
    NeverConnected,
    /// The host closed it this long after it connected; `answered`: bytes it received first.
    Closed {
        after: Duration,
        answered: usize,
    },
    StillOpen,
}

/// Connects, sends a request line, then one header line every 1.5 s, never ending the headers,
/// until the host closes the connection (or `give_up` passes).
async fn slow_connection(address: std::net::SocketAddr, give_up: Duration) -> Slow {
    let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_secs(20), TcpStream::connect(address)).await
    else {
        return Slow::NeverConnected;
    };
    let connected = Instant::now();
    let (mut reader, writer) = stream.into_split();
    let closed = async move {
        let mut buffer = [0u8; 1024];
        let mut answered = 0;
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return answered,
                Ok(read) => answered += read,
            }
        }
    };
    tokio::select! {
        answered = closed => Slow::Closed { after: connected.elapsed(), answered },
        _ = trickle_headers(writer) => Slow::Closed { after: connected.elapsed(), answered: 0 },
        _ = tokio::time::sleep(give_up) => Slow::StillOpen,
    }
}

/// Sends a request line, then a header line every 1.5 s, never ending the headers. Returns when
/// a write fails (the host closed the connection).
async fn trickle_headers(mut writer: tokio::net::tcp::OwnedWriteHalf) -> std::io::Result<()> {
    writer
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await?;
    loop {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        writer.write_all(b"X-Slow: still-typing\r\n").await?;
    }
}

fn paygate_config(
    dir: &Path,
    port: u16,
    simulator_url: &str,
    server_table: &str,
) -> std::path::PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins folder");
    install(
        &library("gatehouse-plugin-paygateglobal"),
        &plugins,
        &plugin_file_name("paygateglobal"),
    );
    let config = dir.join("plugins.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = \"plugins\"\nlisten = \"127.0.0.1:{port}\"\nledger = \"ledger.sqlite\"\n\n\
             [api]\nkeys = [\"{API_KEY}\"]\n\n{server_table}\n\n\
             [providers.paygateglobal.accounts.main]\nbase_url = \"{simulator_url}\"\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n"
        ),
    )
    .expect("config");
    config
}

fn charge_body() -> Value {
    json!({"amount": {"minor_units": 700, "currency": "XOF"},
           "customer": {"phone": "90123456"}, "payment_method": "FLOOZ"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_slow_connections_under_a_256_descriptor_limit() {
    raise_own_descriptor_limit(SLOW_CONNECTIONS as u64 + 1_024);
    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let dir = tempfile::tempdir().expect("folder");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = paygate_config(
        dir.path(),
        port,
        &running.base_url(),
        &format!(
            "[server]\nheader_read_timeout_ms = {}\nidle_timeout_ms = 25000\nrequest_timeout_ms = 10000\n",
            HEADER_TIMEOUT.as_millis()
        ),
    );
    let log = dir.path().join("host.log");
    let mut host = start_limited_host(&config, HOST_DESCRIPTOR_LIMIT, &log);
    let pid = host.id();
    wait_ready(&base).await;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("open files line");
    assert!(
        open_files.split_whitespace().nth(3) == Some("256"),
        "the host runs with a soft limit of 256 descriptors: {open_files}"
    );

    let cpu_before = cpu_time(pid);
    let attack_started = Instant::now();
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let attackers: Vec<_> = (0..SLOW_CONNECTIONS)
        .map(|_| tokio::spawn(slow_connection(address, Duration::from_secs(30))))
        .collect();

    // While the attack runs: health checks and ledgered charges, each on a new connection
    // (so each has to get through the accept queue), must each be answered.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut slowest_health = Duration::ZERO;
    let mut slowest_charge = Duration::ZERO;
    for round in 0..12 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let health =
            tokio::time::timeout(ANSWER_TIMEOUT, client.get(format!("{base}/healthz")).send())
                .await;
        let took = started.elapsed();
        assert!(
            matches!(&health, Ok(Ok(response)) if response.status() == 200),
            "round {round}: /healthz did not answer 200 during the attack: {health:?}"
        );
        slowest_health = slowest_health.max(took);

        let started = Instant::now();
        let charge = tokio::time::timeout(
            ANSWER_TIMEOUT,
            client
                .post(format!("{base}/v1/paygateglobal/main/charges"))
                .bearer_auth(API_KEY)
                .header("Idempotency-Key", format!("edge-charge-{round}"))
                .json(&charge_body())
                .send(),
        )
        .await;
        let took = started.elapsed();
        let charge = match charge {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                (
                    status,
                    response.json::<Value>().await.unwrap_or(Value::Null),
                )
            }
            other => panic!("round {round}: the charge got no answer during the attack: {other:?}"),
        };
        assert_eq!(charge.0, 200, "round {round}: {}", charge.1);
        assert!(
            charge.1["entry_id"].is_string() || charge.1["status"].is_string(),
            "{}",
            charge.1
        );
        slowest_charge = slowest_charge.max(took);
    }

    let mut never_connected = 0;
    let mut still_open = 0;
    let mut closed = 0;
    let mut answered = 0;
    let mut latest_close = Duration::ZERO;
    for attacker in attackers {
        match attacker.await.expect("attacker task") {
            Slow::NeverConnected => never_connected += 1,
            Slow::StillOpen => still_open += 1,
            Slow::Closed {
                after,
                answered: bytes,
            } => {
                closed += 1;
                latest_close = latest_close.max(after);
                if bytes > 0 {
                    answered += 1;
                }
            }
        }
    }
    let attack_wall = attack_started.elapsed();
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    let host_log = std::fs::read_to_string(&log).unwrap_or_default();
    let accept_warnings = host_log.matches("accept failed").count();
    let _ = host.kill();
    let _ = host.wait();
    figure(
        "listener.slow_connections",
        format!(
            "{SLOW_CONNECTIONS} slow connections, descriptor limit {HOST_DESCRIPTOR_LIMIT}, header timeout {} ms: closed by the host {closed} (latest {} ms after connecting), still open 0 expected ({still_open}), never connected {never_connected}, answered {answered}; /healthz slowest {} ms, ledgered charge slowest {} ms over 12 rounds; host CPU {} ms over {} ms; accept warnings {accept_warnings}",
            HEADER_TIMEOUT.as_millis(),
            latest_close.as_millis(),
            slowest_health.as_millis(),
            slowest_charge.as_millis(),
            cpu.as_millis(),
            attack_wall.as_millis(),
        ),
    );
    assert_eq!(never_connected, 0, "every attacker connection was accepted");
    assert_eq!(still_open, 0, "the host closed every slow connection");
    assert_eq!(closed, SLOW_CONNECTIONS);
    // Nothing but the header timeout (or an eviction to make room) closes a connection whose
    // headers never end before the attacker gives up at 30 s: the idle timeout is 25 s and the
    // request timeout starts only once the headers are complete. So "closed before
    // CLOSED_WITHIN" shows the header timeout at work. A connection's clock starts when the
    // kernel completes its handshake, not when the host accepts it: the last of the 2 000 waits
    // in the accept queue until the host has room, so the latest close is the time to accept
    // them all plus 2 s: 2.6 s seen here. With the accept queue at tokio's 1 024 (before
    // `[server] listen_backlog`) it overflowed, the kernel dropped thousands of handshakes
    // (`nstat` ListenOverflows) and their clients, already "connected", were accepted only
    // after the kernel's SYN-ACK retries (1, 3, 7 s): 5.2-10 s here, 19.6 s once in CI.
    assert!(
        latest_close <= CLOSED_WITHIN,
        "slow connections are closed by the header timeout ({HEADER_TIMEOUT:?}, closed within {CLOSED_WITHIN:?} expected): latest after {latest_close:?}"
    );
    // With 2 000 attackers connecting at once the kernel's accept queue is full for moments,
    // and a SYN it drops is retransmitted by the client after 1 s, then 3 s, then 7 s after the
    // first. Alone, one drop is seen (1.04 s slowest); CI, with other tests on the same two
    // cores, saw more. A host that stopped answering misses ANSWER_TIMEOUT (15 s) and fails above.
    assert!(
        slowest_health < SERVED_WITHIN,
        "/healthz answered within two SYN retransmissions under attack: {slowest_health:?}"
    );
    assert!(
        slowest_charge < SERVED_WITHIN,
        "a ledgered charge answered within two SYN retransmissions under attack: {slowest_charge:?}"
    );
    assert!(
        host_log.contains("server.max_connections lowered to fit the descriptor limit"),
        "the connection limit was fitted to 256 descriptors: {host_log}"
    );
    assert!(
        !host_log.contains("Too many open files"),
        "the host never ran out of descriptors: {host_log}"
    );
    assert_eq!(
        simulator.transactions().len(),
        12,
        "each charge reached the provider once"
    );
}

/// The accept queue holds a burst: 2 000 connections made at once to a listener opened by
/// `server::bind` with the default `[server] listen_backlog`, none accepted yet, each complete
/// well within the kernel's first SYN retry (1 s). Had the kernel dropped a handshake for want
/// of room, that client would wait at least a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_two_thousand_connections_fits_the_accept_queue() {
    raise_own_descriptor_limit(SLOW_CONNECTIONS as u64 + 1_024);
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("net.core.somaxconn is readable")
        .trim()
        .parse()
        .expect("somaxconn is a number");
    assert!(
        somaxconn as usize >= SLOW_CONNECTIONS,
        "net.core.somaxconn is {somaxconn}: the kernel caps every accept queue there, below this test's {SLOW_CONNECTIONS}"
    );
    let settings = gatehouse_core::config::ServerSettings::default();
    let listener = gatehouse_service::server::bind("127.0.0.1:0", &settings)
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let connects: Vec<_> = (0..SLOW_CONNECTIONS)
        .map(|_| {
            tokio::spawn(async move {
                let started = Instant::now();
                // Bounded: a dropped handshake would otherwise retry for two minutes.
                let stream =
                    tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address)).await;
                (stream, started.elapsed())
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(SLOW_CONNECTIONS);
    let mut slowest = Duration::ZERO;
    let mut late = 0;
    for connect in connects {
        let (stream, took) = connect.await.expect("connect task");
        match stream {
            Ok(stream) => streams.push(stream.expect("a connection is made or waits")),
            Err(_) => late += 1,
        }
        slowest = slowest.max(took);
    }
    assert_eq!(
        late, 0,
        "{late} connections waited over 2 s: the kernel dropped their handshakes (the accept queue of {} was full)",
        settings.listen_backlog
    );
    figure(
        "listener.accept_queue",
        format!(
            "{SLOW_CONNECTIONS} connections at once, none accepted, backlog {}: slowest connect {} ms",
            settings.listen_backlog,
            slowest.as_millis()
        ),
    );
    assert!(
        slowest < Duration::from_millis(900),
        "a connection waited {slowest:?}: the kernel dropped a handshake (the accept queue of {} was full)",
        settings.listen_backlog
    );
    drop(listener);
}

/// A listener out of descriptors: `accept` fails with EMFILE for as long as the limit holds,
/// while the pending connection keeps the listener readable. The host backs off (a spinning loop
/// would burn a core) and serves the connection once descriptors are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_back_off_and_recover() {
    if !in_own_process("listener::accept_errors_back_off_and_recover") {
        return;
    }
    let host = ApiHost::start(&[], "").await;
    let address = host.base_url.trim_start_matches("http://").to_string();
    let (initial_soft, hard) = rlimit::Resource::NOFILE.get().expect("limit");
    let stat = std::fs::File::open("/proc/self/stat").expect("process stat");
    // The client's socket is made first; then no descriptor is left, and the host's accept of
    // the connection fails with EMFILE.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    let open = std::fs::read_dir("/proc/self/fd").expect("fds").count() as u64;
    rlimit::Resource::NOFILE
        .set(open.saturating_sub(1), hard)
        .expect("lower the limit");
    let pending = socket
        .connect(address.parse().expect("address"))
        .await
        .expect("connect");
    let cpu_before = cpu_time_from(&stat);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = cpu_time_from(&stat).saturating_sub(cpu_before);
    rlimit::Resource::NOFILE
        .set(initial_soft, hard)
        .expect("restore the limit");
    drop(pending);
    // Descriptors are back: the next connection is served once the pause (at most 1 s) ends.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut fresh = TcpStream::connect(&address).await.expect("connect");
        fresh
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        fresh.read_to_end(&mut answer).await.expect("read");
    })
    .await
    .expect("answered once descriptors are back");
    let answer = String::from_utf8_lossy(&answer);
    let warnings = captured_logs()
        .matches("accept failed; backing off")
        .count();
    figure(
        "listener.accept_backoff",
        format!(
            "2 s out of descriptors: process CPU {} ms, {warnings} warning(s); answered after recovery: {}",
            cpu.as_millis(),
            answer.lines().next().unwrap_or("")
        ),
    );
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer}; logs: {}",
        captured_logs()
            .lines()
            .filter(|line| !line.contains("TRACE"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        cpu < Duration::from_millis(700),
        "the accept loop backs off instead of spinning: {cpu:?} of CPU in 2 s"
    );
    assert_eq!(warnings, 1, "one warning per run of failures");
    host.stop().await;
}

/// rcgen's certificate authority and the leaf certificates it signs for 127.0.0.1.
struct TestCa {
    certificate: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gatehouse test CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let certificate = params.self_signed(&key).expect("CA certificate");
        Self { certificate, key }
    }

    /// A leaf for 127.0.0.1: (certificate PEM, key PEM, certificate DER).
    fn leaf(&self, serial: u64) -> (String, String, Vec<u8>) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
                127, 0, 0, 1,
            ])));
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let key = rcgen::KeyPair::generate().expect("key");
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .expect("leaf certificate");
        (
            certificate.pem(),
            key.serialize_pem(),
            certificate.der().to_vec(),
        )
    }
}

/// Writes a file the way an operator (or cert-manager) should: a temporary name, then rename.
fn write_atomically(path: &Path, contents: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents).expect("write");
    std::fs::rename(&temporary, path).expect("rename");
}

/// The certificate the server presents on a fresh TLS connection.
async fn served_certificate(address: &str, ca_der: &[u8]) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca_der.to_vec()))
        .expect("CA root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect(address).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = connector
        .connect(name, stream)
        .await
        .expect("TLS handshake");
    let (_, connection) = tls.get_ref();
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a certificate")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_the_api_and_picks_up_a_rotated_certificate() {
    let ca = TestCa::new();
    let (first_pem, first_key, first_der) = ca.leaf(1);
    let (second_pem, second_key, second_der) = ca.leaf(2);
    let host = TestHost::start(
        &["gatehouse-plugin-paygateglobal"],
        "[server]\n[server.tls]\ncert_file = \"tls/cert.pem\"\nkey_file = \"tls/key.pem\"\n",
    )
    .await;
    let tls_dir = host.dir.path().join("tls");
    std::fs::create_dir(&tls_dir).expect("tls folder");
    write_atomically(&tls_dir.join("cert.pem"), &first_pem);
    write_atomically(&tls_dir.join("key.pem"), &first_key);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gatehouse_service::server::serve(
        host.service.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));

    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca.certificate.pem().as_bytes()).expect("CA"),
        )
        .tls_built_in_root_certs(false)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut answered = None;
    for _ in 0..100 {
        if let Ok(response) = client
            .get(format!("https://{address}/v1/plugins"))
            .bearer_auth(API_KEY)
            .send()
            .await
        {
            answered = Some(response.status().as_u16());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answered, Some(200), "the API answers over HTTPS");
    assert_eq!(
        served_certificate(&address, ca.certificate.der()).await,
        first_der
    );
    let plain = reqwest::get(format!("http://{address}/healthz")).await;
    assert!(
        !matches!(&plain, Ok(response) if response.status() == 200),
        "plain HTTP is not served on the TLS port"
    );

    // Rotation: both files replaced while serving; new connections get the new certificate.
    let rotated = Instant::now();
    write_atomically(&tls_dir.join("key.pem"), &second_key);
    write_atomically(&tls_dir.join("cert.pem"), &second_pem);
    let mut seen_after = None;
    for _ in 0..100 {
        if served_certificate(&address, ca.certificate.der()).await == second_der {
            seen_after = Some(rotated.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen_after = seen_after.expect("the rotated certificate is served within 10 s");
    let health = client
        .get(format!("https://{address}/healthz"))
        .send()
        .await
        .expect("HTTPS after rotation");
    assert_eq!(health.status(), 200);

    // A half-written key (a non-atomic writer): the certificate in force stays.
    std::fs::write(tls_dir.join("key.pem"), "-----BEGIN PRIVATE KEY-----\nMIIB").expect("write");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        served_certificate(&address, ca.certificate.der()).await,
        second_der,
        "an unreadable key leaves the previous certificate in force"
    );
    assert!(captured_logs().contains("TLS certificate files changed but cannot be served"));
    figure(
        "listener.tls_rotation",
        format!(
            "HTTPS with a test CA; rotated certificate (serial 1 -> 2) served {} ms after the files changed; a half-written key kept serial 2",
            seen_after.as_millis()
        ),
    );
    let _ = stop.send(());
    let _ = server.await;
}

/// What the test proxy saw.
#[derive(Default)]
struct ProxyCounts {
    /// Requests in absolute form (`GET http://…`), by target `host:port`.
    forwarded: std::sync::Mutex<Vec<String>>,
    /// `CONNECT host:port` tunnels.
    tunnels: std::sync::Mutex<Vec<String>>,
    /// Requests refused for missing or wrong credentials.
    refused: AtomicUsize,
}

/// A small HTTP proxy on loopback: `CONNECT` tunnels and absolute-URI requests, Basic
/// credentials required, everything counted. Runs until the test ends.
async fn start_proxy(username: &str, password: &str) -> (String, Arc<ProxyCounts>) {
    use base64::Engine as _;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let address = listener.local_addr().expect("address").to_string();
    let counts = Arc::new(ProxyCounts::default());
    let expected = format!(
        "basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    );
    let shared = counts.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let counts = shared.clone();
            let expected = expected.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match client.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let mut words = text.split_whitespace();
                let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let authorized = text.lines().any(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("proxy-authorization:")
                        .is_some_and(|value| value.trim() == expected.to_ascii_lowercase())
                });
                if !authorized {
                    counts.refused.fetch_add(1, Ordering::SeqCst);
                    let _ = client
                        .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                    return;
                }
                if method == "CONNECT" {
                    counts
                        .tunnels
                        .lock()
                        .expect("counts")
                        .push(target.to_string());
                    let Ok(mut upstream) = TcpStream::connect(target).await else {
                        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                        return;
                    };
                    let _ = client
                        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                        .await;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                } else {
                    let Some(authority) = target
                        .strip_prefix("http://")
                        .and_then(|rest| rest.split('/').next())
                    else {
                        let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                        return;
                    };
                    counts
                        .forwarded
                        .lock()
                        .expect("counts")
                        .push(authority.to_string());
                    let Ok(mut upstream) = TcpStream::connect(authority).await else {
                        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                        return;
                    };
                    // Servers accept the absolute form; the rest of the connection is relayed
                    // as it is (later requests on it reach the same origin).
                    if upstream.write_all(&head).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                }
            });
        }
    });
    (address, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_goes_through_the_configured_proxy_except_where_excepted() {
    const PROXY_USER: &str = "egress-user";
    const PROXY_PASSWORD: &str = "egress-pass-Secret-42";
    const WRONG_PASSWORD: &str = "wrong-pass-Secret-77";
    let (proxy, counts) = start_proxy(PROXY_USER, PROXY_PASSWORD).await;
    let (proxied_simulator, proxied) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    // A second provider address, reached directly through the `no_proxy` exception.
    let excepted_simulator = PayGateSimulator::new(TOKEN);
    let excepted = gatehouse_sim_common::serve_on(
        "127.0.0.2:0".parse().expect("address"),
        excepted_simulator.router(),
    )
    .await
    .expect("simulator on 127.0.0.2");
    // A TLS-only provider address: the request to it must be tunnelled with CONNECT.
    let tls_only = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let tls_only_address = tls_only.local_addr().expect("address").to_string();
    drop(tls_only);

    let secrets = tempfile::tempdir().expect("folder");
    let password_file = secrets.path().join("proxy-password");
    std::fs::write(&password_file, format!("{PROXY_PASSWORD}\n")).expect("password file");
    let wrong_file = secrets.path().join("wrong-password");
    std::fs::write(&wrong_file, WRONG_PASSWORD).expect("password file");
    let account = |name: &str, base_url: &str, egress: &str| {
        format!(
            "[providers.paygateglobal.accounts.{name}]\nbase_url = \"{base_url}\"\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n{egress}\n"
        )
    };
    let host = TestHost::start(
        &["gatehouse-plugin-paygateglobal"],
        &format!(
            "[egress]\nproxy = \"http://{proxy}\"\nproxy_username = \"{PROXY_USER}\"\nproxy_password = {{ file = \"{}\" }}\nno_proxy = [\"127.0.0.2\"]\n\n{}{}{}{}{}",
            password_file.display(),
            account("proxied", &proxied.base_url(), ""),
            account("excepted", &excepted.base_url(), ""),
            account("direct", &proxied.base_url(), "egress = {}"),
            account("tunnelled", &format!("https://{tls_only_address}"), ""),
            account(
                "wrong",
                &proxied.base_url(),
                &format!(
                    "egress = {{ proxy = \"http://{proxy}\", proxy_username = \"{PROXY_USER}\", proxy_password = {{ file = \"{}\" }} }}",
                    wrong_file.display()
                )
            ),
        ),
    )
    .await;
    let charge = |phone: &str| {
        json!({"operation": "charge", "amount": {"minor_units": 1500, "currency": "XOF"},
               "customer": {"phone": phone}, "payment_method": "TMONEY"})
    };
    let forwarded = |counts: &ProxyCounts| counts.forwarded.lock().expect("counts").clone();

    host.call_keyed(
        "paygateglobal",
        "proxied",
        charge("90000001"),
        Some("egress-1"),
    )
    .await
    .expect("charge through the proxy");
    let through_proxy = forwarded(&counts);
    assert!(
        !through_proxy.is_empty()
            && through_proxy
                .iter()
                .all(|target| *target == proxied.base_url().trim_start_matches("http://")),
        "the proxied account's request went through the proxy: {through_proxy:?}"
    );
    assert_eq!(proxied_simulator.transactions().len(), 1);

    host.call_keyed(
        "paygateglobal",
        "excepted",
        charge("90000002"),
        Some("egress-2"),
    )
    .await
    .expect("charge to an excepted host");
    host.call_keyed(
        "paygateglobal",
        "direct",
        charge("90000003"),
        Some("egress-3"),
    )
    .await
    .expect("charge with the account's own direct egress");
    assert_eq!(
        excepted_simulator.transactions().len(),
        1,
        "the excepted host was reached"
    );
    assert_eq!(
        proxied_simulator.transactions().len(),
        2,
        "the direct account reached its provider"
    );
    assert_eq!(
        forwarded(&counts),
        through_proxy,
        "neither the excepted host nor the direct account went through the proxy"
    );

    // HTTPS through the proxy is a CONNECT tunnel (the address behind it serves nothing, so the
    // read fails after the tunnel was made).
    let tunnelled = host
        .call(
            "paygateglobal",
            "tunnelled",
            json!({"operation": "balance"}),
        )
        .await;
    let tunnels = counts.tunnels.lock().expect("counts").clone();
    assert!(
        !tunnels.is_empty() && tunnels.iter().all(|target| *target == tls_only_address),
        "an https provider is reached through a CONNECT tunnel: {tunnels:?} ({tunnelled:?})"
    );

    // Wrong proxy credentials: refused by the proxy, and neither password shows anywhere.
    let refused = host
        .call_keyed(
            "paygateglobal",
            "wrong",
            charge("90000004"),
            Some("egress-4"),
        )
        .await;
    assert!(
        counts.refused.load(Ordering::SeqCst) >= 1,
        "the proxy refused the wrong password"
    );
    let answer = format!("{refused:?}");
    let logs = captured_logs();
    for secret in [PROXY_PASSWORD, WRONG_PASSWORD] {
        assert!(
            !answer.contains(secret),
            "a proxy password in an answer: {answer}"
        );
        assert!(!logs.contains(secret), "a proxy password in the logs");
    }
    assert!(!format!("{:?}", host.gateway.config()).contains(PROXY_PASSWORD));
    assert_eq!(
        proxied_simulator.transactions().len(),
        2,
        "nothing got past the refusing proxy"
    );
    figure(
        "listener.egress_proxy",
        format!(
            "proxied account: {} request(s) through the proxy; excepted host and direct account: 0; https provider: {} CONNECT tunnel(s); wrong credentials: {} refusal(s), passwords in answers and logs: 0",
            through_proxy.len(),
            tunnels.len(),
            counts.refused.load(Ordering::SeqCst)
        ),
    );
}

/// `max_concurrent_requests` and `request_timeout_ms`: with two slots and charges held by the
/// provider, a third charge waits for a slot and all three are answered `request_timeout` in
/// time; the two that started run on and are recorded, the third never reached the ledger or
/// the provider; retries with the same keys get each outcome. A body that trickles in is cut
/// off by the same timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_bounded_and_answered_within_the_request_timeout() {
    let (simulator, running) = PayGateSimulator::start(TOKEN).await.expect("simulator");
    let host = Arc::new(
        ApiHost::start(
            &["gatehouse-plugin-paygateglobal"],
            &format!(
                "[server]\nmax_concurrent_requests = 2\nrequest_timeout_ms = 1000\n\n\
                 [providers.paygateglobal.accounts.main]\nbase_url = \"{}\"\ntimeout_ms = 10000\nsecrets = {{ auth_token = \"{TOKEN}\" }}\n",
                running.base_url()
            ),
        )
        .await,
    );
    // The account's credentials are accepted once first: until then its flows run one at a time
    // (the credentials probe), which would hide the slot bound.
    let (status, _, body) = host
        .request(
            reqwest::Method::POST,
            "/v1/paygateglobal/main/charges",
            Some(charge_body()),
            &[("Idempotency-Key", "bound-warm-up")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..3 {
        running.faults.push(gatehouse_sim_common::Fault::DelayAfter(
            Duration::from_secs(3),
        ));
    }
    let charge = |key: &'static str| {
        let host = host.clone();
        async move {
            host.request(
                reqwest::Method::POST,
                "/v1/paygateglobal/main/charges",
                Some(charge_body()),
                &[("Idempotency-Key", key)],
            )
            .await
        }
    };
    let started = Instant::now();
    let first = tokio::spawn(charge("bound-1"));
    let second = tokio::spawn(charge("bound-2"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = tokio::spawn(charge("bound-3"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reached_while_waiting = simulator.transactions().len();
    let mut answers = Vec::new();
    for answer in [first, second, third] {
        let (status, _, body) = answer.await.expect("task");
        answers.push((status, body["error"]["code"].clone()));
    }
    let all_answered = started.elapsed();
    for (status, code) in &answers {
        assert_eq!(*status, 503, "{answers:?}");
        assert_eq!(code, "request_timeout", "{answers:?}");
    }
    assert_eq!(
        reached_while_waiting, 3,
        "the warm-up and the two charges holding the slots reached the provider; the third waited for a slot"
    );
    // The two that started run to their end and are recorded: their retries get the outcome.
    let mut retried = Vec::new();
    for key in ["bound-1", "bound-2", "bound-3"] {
        let mut outcome = None;
        for _ in 0..100 {
            let (status, headers, body) = charge(key).await;
            if status == 200 {
                outcome = Some((
                    headers.get("idempotent-replayed").is_some(),
                    body["status"].clone(),
                ));
                break;
            }
            assert!(status == 409 || status == 503, "{key}: {status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        retried.push(outcome.unwrap_or_else(|| panic!("{key} was never answered")));
    }
    assert!(
        retried.iter().all(|(replayed, _)| *replayed),
        "every retry answered from the ledger: {retried:?}"
    );
    assert_eq!(
        simulator.transactions().len(),
        4,
        "one provider call per charge (the warm-up and three)"
    );

    // A body announced but sent slowly holds a slot no longer than the request timeout.
    let address = host.base_url.trim_start_matches("http://").to_string();
    let mut slow_body = TcpStream::connect(&address).await.expect("connect");
    slow_body
        .write_all(
            format!(
                "POST /v1/paygateglobal/main/charges HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"amount\":"
            )
            .as_bytes(),
        )
        .await
        .expect("send");
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), slow_body.read(&mut answer))
        .await
        .expect("answered while the body is still missing")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..read]).to_string();
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("request_timeout"),
        "{answer}"
    );
    figure(
        "listener.request_bounds",
        format!(
            "2 slots, timeout 1000 ms: 3 charges held by the provider answered 503 request_timeout within {} ms; the third waited for a slot (provider saw 2 of 3 while it waited); every retry replayed from the ledger, one provider call per charge; a trickling body cut off with 503",
            all_answered.as_millis()
        ),
    );
    drop(slow_body);
    if let Ok(host) = Arc::try_unwrap(host) {
        host.stop().await;
    }
}
