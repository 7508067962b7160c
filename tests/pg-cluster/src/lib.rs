//! A throwaway PostgreSQL cluster for tests: `initdb` in a temporary folder, `postgres` on a free
//! loopback port, one database per test.
//!
//! Starting a cluster costs about a second, a database a few milliseconds, so a test process
//! starts one cluster ([`shared`]) and gives each test its own database in it
//! ([`Cluster::create_database`]).
//!
//! The server binaries come from Debian's `postgresql-15` package (`/usr/lib/postgresql/15/bin`,
//! or the folder `GATEHOUSE_PG_BIN` names). A machine without them fails the tests that need a
//! cluster with a message naming the package: never a silent skip.
//!
//! Run as root, the cluster runs as the `postgres` system user (the server refuses to run as
//! root): the temporary folder is handed to that user and the server process drops to it before
//! it starts.
//!
//! The cluster is disposable, so it runs with `fsync=off`, `synchronous_commit=off` and
//! `full_page_writes=off`: a crash of the machine loses it, which costs nothing, and tests do
//! not wait for a disk. What the tests check (constraints, locks, isolation) does not depend on
//! durability.
//!
//! **Stopping.** A [`Cluster`] that is dropped stops its server (SIGINT: PostgreSQL's fast
//! shutdown) and removes its folder. The [`shared`] cluster lives in a static, which Rust never
//! drops, so a small keeper process (`sh`) watches a pipe from the test process: when the test
//! process ends, however it ends (all tests done, a panic, a SIGKILL), the pipe closes and the
//! keeper stops the server and removes the folder.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where Debian's `postgresql-15` package puts the server binaries.
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// The Debian package that provides the server binaries.
pub const PACKAGE: &str = "postgresql-15";

/// The cluster's superuser: tests connect as it, over TCP with a password.
pub const SUPERUSER: &str = "postgres";

/// How long a server may take to accept connections after it was started.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The cluster every test of this process shares, started on first use.
///
/// # Panics
/// When the cluster cannot start (the binaries are missing, `initdb` fails, the server exits),
/// with a message saying why; every test that asks for it then fails with that message.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| Cluster::start().unwrap_or_else(|error| panic!("{error}")))
}

/// Runs `work` on a thread of its own and waits for it. The synchronous driver runs a small
/// tokio runtime per connection, which tokio refuses to start or drop on an async worker: the
/// cluster's own driver calls go through here, so an async test may call [`shared`] and
/// [`Cluster::create_database`] directly.
fn off_async<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(work)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Why a cluster could not start.
#[derive(Debug)]
pub struct StartError(String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot start a test PostgreSQL cluster: {}", self.0)
    }
}

impl std::error::Error for StartError {}

/// A running throwaway cluster.
pub struct Cluster {
    root: PathBuf,
    port: u16,
    password: String,
    server: Mutex<Option<Child>>,
    keeper: Mutex<Option<Child>>,
    /// `None` only while the cluster is being dropped.
    admin: Mutex<Option<postgres::Client>>,
    databases: AtomicUsize,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("root", &self.root)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// A database of a test cluster, with what a client needs to reach it.
#[derive(Clone)]
pub struct Database {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The superuser's password (random per cluster; the server checks it with SCRAM).
    pub password: String,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// `postgres://user@host:port/name`, without the password (which goes separately).
    pub fn url(&self) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.name
        )
    }

    /// A client configuration for the database, password included.
    pub fn config(&self) -> postgres::Config {
        let mut config = postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.name)
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// A direct connection, for a test that inspects or tampers with the database. The
    /// synchronous driver blocks: use it from a plain thread or `spawn_blocking`, never on an
    /// async worker.
    ///
    /// # Panics
    /// When the cluster does not answer.
    pub fn connect(&self) -> postgres::Client {
        self.config()
            .connect(postgres::NoTls)
            .unwrap_or_else(|error| panic!("cannot connect to {}: {error}", self.url()))
    }
}

/// Whether the server waits for its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync=off`, `synchronous_commit=off`, `full_page_writes=off`: for tests (see the crate
    /// documentation).
    Disposable,
    /// PostgreSQL's defaults (every commit flushed): for benchmarks, which must pay what a real
    /// server pays.
    Durable,
}

impl Cluster {
    /// Runs `initdb` in a new temporary folder and starts a server on a free loopback port.
    pub fn start() -> Result<Self, StartError> {
        off_async(|| Self::start_here(Durability::Disposable))
    }

    /// [`Cluster::start`] with every commit flushed to disk (a benchmark's server).
    pub fn start_durable() -> Result<Self, StartError> {
        off_async(|| Self::start_here(Durability::Durable))
    }

    fn start_here(durability: Durability) -> Result<Self, StartError> {
        let bin = bin_dir()?;
        let owner = server_user()?;
        let root = make_root(owner)?;
        let started = Self::start_in(&bin, &root, owner, durability);
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&root);
        }
        started
    }

    fn start_in(
        bin: &Path,
        root: &Path,
        owner: Option<(u32, u32)>,
        durability: Durability,
    ) -> Result<Self, StartError> {
        let durability_settings: &[&str] = match durability {
            Durability::Disposable => &[
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            Durability::Durable => &[],
        };
        let password = random_password()?;
        let password_file = root.join("password");
        write_file(&password_file, &password, owner)?;
        let data = root.join("data");
        let initdb = as_owner(Command::new(bin.join("initdb")), owner)
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .arg(format!("--pwfile={}", password_file.display()))
            // Local socket connections are the test harness's own; TCP asks for the password,
            // so the ledger's password handling is exercised.
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .output()
            .map_err(|error| StartError(format!("cannot run {}: {error}", bin.display())))?;
        if !initdb.status.success() {
            return Err(StartError(format!(
                "initdb failed ({}): {}{}",
                initdb.status,
                String::from_utf8_lossy(&initdb.stdout),
                String::from_utf8_lossy(&initdb.stderr)
            )));
        }
        // TLS on (plain connections stay allowed): a throwaway CA signs the server's certificate
        // for 127.0.0.1, and tests of TLS to the ledger trust `ca.pem`.
        let (ca_pem, cert_pem, key_pem) = tls_certificates()?;
        write_file(&root.join("ca.pem"), &ca_pem, None)?;
        std::fs::set_permissions(root.join("ca.pem"), std::fs::Permissions::from_mode(0o644))
            .map_err(|error| StartError(format!("cannot share ca.pem: {error}")))?;
        write_file(&root.join("server.crt"), &cert_pem, owner)?;
        write_file(&root.join("server.key"), &key_pem, owner)?;
        let ssl_cert = format!("ssl_cert_file={}", root.join("server.crt").display());
        let ssl_key = format!("ssl_key_file={}", root.join("server.key").display());
        // A port picked free may be taken before the server binds it: try a few.
        let mut last_problem = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let log_path = root.join(format!("server-{port}.log"));
            let log = File::create(&log_path).map_err(|error| {
                StartError(format!("cannot create {}: {error}", log_path.display()))
            })?;
            let log_err = log
                .try_clone()
                .map_err(|error| StartError(format!("cannot share the log file: {error}")))?;
            let mut server = as_owner(Command::new(bin.join("postgres")), owner)
                .arg("-D")
                .arg(&data)
                .arg("-k")
                .arg(root)
                .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
                .args(durability_settings)
                .args(["-c", "max_connections=300"])
                .args(["-c", "ssl=on", "-c", &ssl_cert, "-c", &ssl_key])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .map_err(|error| StartError(format!("cannot start postgres: {error}")))?;
            let keeper = start_keeper(server.id(), root)?;
            match wait_until_ready(&mut server, port, &password) {
                Ok(admin) => {
                    return Ok(Self {
                        root: root.to_path_buf(),
                        port,
                        password,
                        server: Mutex::new(Some(server)),
                        keeper: Mutex::new(Some(keeper)),
                        admin: Mutex::new(Some(admin)),
                        databases: AtomicUsize::new(0),
                    });
                }
                Err(problem) => {
                    stop_server(&mut server);
                    stop_keeper(keeper);
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    last_problem = format!("{problem}; server log:\n{log}");
                    if !log.contains("could not bind") {
                        break;
                    }
                }
            }
        }
        Err(StartError(last_problem))
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's (postmaster's) process id, while it runs: its connections and background
    /// workers are its child processes (the bench reads their CPU time).
    pub fn server_pid(&self) -> Option<u32> {
        self.server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(Child::id)
    }

    /// The PEM file of the CA that signed the server's TLS certificate (for 127.0.0.1).
    pub fn ca_file(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// Creates a new, empty database.
    ///
    /// # Panics
    /// When the server refuses (it is then broken for every test).
    pub fn create_database(&self) -> Database {
        let number = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("gatehouse_test_{}_{number}", std::process::id());
        off_async(|| {
            self.admin
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_mut()
                .map(|admin| admin.batch_execute(&format!("CREATE DATABASE {name}")))
        })
        .unwrap_or_else(|| panic!("the cluster is stopping"))
        .unwrap_or_else(|error| panic!("cannot create the test database {name}: {error}"));
        Database {
            name,
            host: "127.0.0.1".into(),
            port: self.port,
            user: SUPERUSER.into(),
            password: self.password.clone(),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let admin = self
            .admin
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        off_async(move || drop(admin));
        let lock = |slot: &mut Mutex<Option<Child>>| {
            slot.get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
        };
        if let Some(mut server) = lock(&mut self.server) {
            stop_server(&mut server);
        }
        let _ = std::fs::remove_dir_all(&self.root);
        if let Some(keeper) = lock(&mut self.keeper) {
            stop_keeper(keeper);
        }
    }
}

fn bin_dir() -> Result<PathBuf, StartError> {
    let bin = std::env::var_os("GATEHOUSE_PG_BIN")
        .map_or_else(|| PathBuf::from(DEFAULT_BIN_DIR), PathBuf::from);
    check_bin_dir(&bin)?;
    Ok(bin)
}

fn check_bin_dir(bin: &Path) -> Result<(), StartError> {
    for program in ["initdb", "postgres"] {
        if !bin.join(program).is_file() {
            return Err(StartError(format!(
                "the PostgreSQL server binary {} is missing: install Debian's `{PACKAGE}` package \
                 (`apt-get install {PACKAGE}`), or point GATEHOUSE_PG_BIN at a folder holding \
                 PostgreSQL 15's initdb and postgres",
                bin.join(program).display()
            )));
        }
    }
    Ok(())
}

/// The user and group the server runs as: `None` for the current user, the `postgres` system
/// user's when running as root.
fn server_user() -> Result<Option<(u32, u32)>, StartError> {
    if !running_as_root() {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|error| StartError(format!("cannot read /etc/passwd: {error}")))?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&SUPERUSER))
        .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
        .map(Some)
        .ok_or_else(|| {
            StartError(format!(
                "running as root, the server must run as the `postgres` system user, and there is \
                 none: Debian's `{PACKAGE}` package creates it (`apt-get install {PACKAGE}`)"
            ))
        })
}

fn running_as_root() -> bool {
    // /proc/self/status: "Uid:\t<real>\t<effective>\t...".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn as_owner(mut command: Command, owner: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = owner {
        // Set before exec; std drops the supplementary groups when root changes its uid.
        command.uid(uid).gid(gid);
    }
    command
}

fn make_root(owner: Option<(u32, u32)>) -> Result<PathBuf, StartError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let root = std::env::temp_dir().join(format!("gatehouse-pg-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&root)
        .map_err(|error| StartError(format!("cannot create {}: {error}", root.display())))?;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
        .map_err(|error| StartError(format!("cannot restrict {}: {error}", root.display())))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&root, Some(uid), Some(gid)).map_err(|error| {
            StartError(format!(
                "cannot hand {} to the postgres user: {error}",
                root.display()
            ))
        })?;
    }
    Ok(root)
}

fn write_file(path: &Path, contents: &str, owner: Option<(u32, u32)>) -> Result<(), StartError> {
    let fail =
        |error: std::io::Error| StartError(format!("cannot write {}: {error}", path.display()));
    let mut file = File::create(path).map_err(fail)?;
    file.write_all(contents.as_bytes()).map_err(fail)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(fail)?;
    }
    Ok(())
}

/// A throwaway CA and a server certificate it signed for 127.0.0.1: (CA PEM, certificate PEM,
/// key PEM).
fn tls_certificates() -> Result<(String, String, String), StartError> {
    let fail =
        |error: rcgen::Error| StartError(format!("cannot make the TLS certificates: {error}"));
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gatehouse test cluster CA");
    let ca_key = rcgen::KeyPair::generate().map_err(fail)?;
    let ca = ca_params.self_signed(&ca_key).map_err(fail)?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).map_err(fail)?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
            127, 0, 0, 1,
        ])));
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let certificate = params.signed_by(&key, &ca, &ca_key).map_err(fail)?;
    Ok((ca.pem(), certificate.pem(), key.serialize_pem()))
}

fn random_password() -> Result<String, StartError> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(|error| StartError(format!("cannot read /dev/urandom: {error}")))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn free_port() -> Result<u16, StartError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| StartError(format!("cannot find a free loopback port: {error}")))
}

/// A process that stops the server and removes `root` when the pipe on its standard input
/// closes, that is when this process ends, however it ends.
fn start_keeper(server: u32, root: &Path) -> Result<Child, StartError> {
    Command::new("sh")
        .arg("-c")
        // The wait is bounded: where nothing reaps the orphaned server, `kill -0` would keep
        // answering for its zombie.
        .arg(
            "read _ignored; kill -INT \"$1\" 2>/dev/null; \
             n=0; while kill -0 \"$1\" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done; \
             rm -rf \"$2\"",
        )
        .arg("gatehouse-pg-keeper")
        .arg(server.to_string())
        .arg(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C in the terminal stops the server (same group as the
        // tests) and leaves the keeper to clean up after it.
        .process_group(0)
        .spawn()
        .map_err(|error| StartError(format!("cannot start the keeper (sh): {error}")))
}

fn stop_keeper(mut keeper: Child) {
    drop(keeper.stdin.take());
    let _ = keeper.wait();
}

/// Fast shutdown (SIGINT), then waits for the server to exit.
fn stop_server(server: &mut Child) {
    let stopped = Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status()
        .is_ok_and(|status| status.success());
    if !stopped {
        let _ = server.kill();
    }
    let _ = server.wait();
}

fn wait_until_ready(
    server: &mut Child,
    port: u16,
    password: &str,
) -> Result<postgres::Client, String> {
    let deadline = Instant::now() + READY_WITHIN;
    let mut config = postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(SUPERUSER)
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(2));
    loop {
        if let Ok(Some(status)) = server.try_wait() {
            return Err(format!("the server exited ({status})"));
        }
        match config.connect(postgres::NoTls) {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() > deadline => {
                return Err(format!(
                    "the server did not accept connections within {READY_WITHIN:?}: {error}"
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_serves_separate_databases_and_checks_the_password() {
        let cluster = shared();
        let one = cluster.create_database();
        let two = cluster.create_database();
        assert_ne!(one.name, two.name);
        let mut client = one.connect();
        client
            .batch_execute("CREATE TABLE t (x BIGINT); INSERT INTO t VALUES (1)")
            .expect("write");
        let mut other = two.connect();
        assert!(other.query("SELECT x FROM t", &[]).is_err(), "separate");
        let fsync: String = client.query_one("SHOW fsync", &[]).expect("show").get(0);
        assert_eq!(fsync, "off");

        let mut wrong = one.config();
        wrong.password("not-the-password");
        let Err(refused) = wrong.connect(postgres::NoTls) else {
            panic!("a wrong password was accepted");
        };
        // The driver's Display says "db error"; the server's words are in the source.
        let cause = std::error::Error::source(&refused).map(ToString::to_string);
        assert!(
            cause
                .as_deref()
                .is_some_and(|cause| cause.contains("password authentication failed")),
            "the server must check the password: {refused} / {cause:?}"
        );
    }

    #[test]
    fn a_dropped_cluster_stops_its_server_and_removes_its_folder() {
        let cluster = Cluster::start().expect("starts");
        let root = cluster.root.clone();
        let database = cluster.create_database();
        assert!(root.exists());
        drop(cluster);
        assert!(!root.exists(), "{} is left behind", root.display());
        assert!(
            database.config().connect(postgres::NoTls).is_err(),
            "the server still answers"
        );
    }

    #[test]
    fn missing_binaries_fail_naming_the_package() {
        // What a machine without the package sees, whatever folder was looked in.
        let message = check_bin_dir(Path::new("/nowhere")).expect_err("missing");
        assert!(message.to_string().contains(PACKAGE), "{message}");
        assert!(message.to_string().contains("/nowhere/initdb"), "{message}");
    }
}
