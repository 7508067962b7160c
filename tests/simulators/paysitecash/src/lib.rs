//! A Paysite Cash statistics simulator, following "Intégration des statistiques Paysite Cash dans
//! une plateforme externe" (`shared/seeds/000`, 12/12/2007).
//!
//! Documented behaviour: the six scripts under `/stats/` (`webmasters.php`,
//! `webmasters_quick.php`, `webmasters_month.php`, `affiliates.php`, `affiliates_quick.php`,
//! `affiliates_month.php`) read `user` and `pass` (md5 of the password) from the GET query; the
//! monthly ones read `month` (`XX`) and `year` (`YYYY`); more than 3 failed logins in 5 minutes
//! lock the account (`too many login attemps`, even with the right password); the other errors
//! are `auth error`, `systeme error`, `wrong year value` and `wrong month value`; the system is
//! "protected against flooding".
//!
//! Not documented, and assumed here (the plugin's README says so too), per providers.md's GUESS:
//! * every error is the bare string with HTTP 200 and `text/plain`;
//! * statistics are `text/plain`, `;`-separated, one record per line, a header line first, amounts
//!   with a decimal comma and a currency column;
//! * the lock lasts while more than 3 failures remain in the sliding 5-minute window;
//! * checks run in this order: flood, lock, credentials (`pass` compared with the lower-case md5),
//!   injected internal errors, then `year` before `month`;
//! * the flood answer (no string is documented) is `too many login attemps` unless a test sets
//!   another; flood protection is off unless a test sets a minimum interval between requests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use gatehouse_sim_common::{RunningSimulator, serve};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// The documented error strings, spelled as the document spells them.
pub const TOO_MANY_LOGIN_ATTEMPTS: &str = "too many login attemps";
pub const AUTH_ERROR: &str = "auth error";
pub const SYSTEM_ERROR: &str = "systeme error";
pub const WRONG_YEAR: &str = "wrong year value";
pub const WRONG_MONTH: &str = "wrong month value";

/// "plus de 3 essais infructueux de connexion en 5 minutes".
pub const MAX_FAILED_LOGINS: usize = 3;
pub const LOCK_WINDOW: Duration = Duration::from_secs(5 * 60);

/// The six scripts, as served under `/stats/`.
pub const SCRIPTS: [&str; 6] = [
    "webmasters.php",
    "webmasters_quick.php",
    "webmasters_month.php",
    "affiliates.php",
    "affiliates_quick.php",
    "affiliates_month.php",
];

/// The lower-case hex md5 of `password`: what the provider expects as `pass`.
pub fn md5_hex(password: &str) -> String {
    hex::encode(Md5::digest(password.as_bytes()))
}

/// What a test can read about the simulator (also served at `GET /_sim/state`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimState {
    /// Failed logins still inside the 5-minute window.
    pub failed_logins: usize,
    /// Failed logins since the start (or the last reset).
    pub failed_logins_total: usize,
    pub locked: bool,
    /// Requests that reached each script, by script name.
    pub calls: BTreeMap<String, usize>,
    pub total_calls: usize,
    /// Requests answered with the flood error.
    pub flood_refusals: usize,
    /// Requests answered `too many login attemps` because of the lock.
    pub lockout_refusals: usize,
}

struct Inner {
    failed_logins: VecDeque<Instant>,
    failed_logins_total: usize,
    /// Added to the real clock, so tests can let 5 minutes pass at once.
    clock_offset: Duration,
    min_interval: Option<Duration>,
    flood_body: String,
    last_request: Option<Instant>,
    pending_system_errors: usize,
    calls: BTreeMap<String, usize>,
    flood_refusals: usize,
    lockout_refusals: usize,
    statistics_overrides: HashMap<String, Vec<u8>>,
}

/// The simulator's state, shared by its routes and by the tests that drive it.
#[derive(Clone)]
pub struct PaysiteCashSimulator {
    user: Arc<String>,
    password_md5: Arc<String>,
    inner: Arc<Mutex<Inner>>,
}

impl PaysiteCashSimulator {
    /// A simulator knowing one account: `user` with the clear `password`.
    pub fn new(user: &str, password: &str) -> Self {
        Self {
            user: Arc::new(user.to_string()),
            password_md5: Arc::new(md5_hex(password)),
            inner: Arc::new(Mutex::new(Inner {
                failed_logins: VecDeque::new(),
                failed_logins_total: 0,
                clock_offset: Duration::ZERO,
                min_interval: None,
                flood_body: TOO_MANY_LOGIN_ATTEMPTS.to_string(),
                last_request: None,
                pending_system_errors: 0,
                calls: BTreeMap::new(),
                flood_refusals: 0,
                lockout_refusals: 0,
                statistics_overrides: HashMap::new(),
            })),
        }
    }

    /// Serves the simulator on an ephemeral loopback port.
    pub async fn start(user: &str, password: &str) -> std::io::Result<(Self, RunningSimulator)> {
        let simulator = Self::new(user, password);
        let running = serve(simulator.router()).await?;
        Ok((simulator, running))
    }

    /// The base URL an account should use: the simulator's root plus `/stats`, as in production.
    pub fn stats_base_url(running: &RunningSimulator) -> String {
        format!("{}/stats", running.base_url())
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/stats/{script}", get(statistics))
            .route("/_sim/state", get(state_route))
            .route("/_sim/reset-lock", post(reset_lock_route))
            .route("/_sim/advance", post(advance_route))
            .route("/_sim/min-interval", post(min_interval_route))
            .route("/_sim/system-errors", post(system_errors_route))
            .route(
                "/_sim/statistics/{script}",
                put(set_statistics_route).delete(clear_statistics_route),
            )
            .with_state(self.clone())
    }

    pub fn state(&self) -> SimState {
        let mut inner = self.lock();
        let now = inner.now();
        inner.forget_old_failures(now);
        SimState {
            failed_logins: inner.failed_logins.len(),
            failed_logins_total: inner.failed_logins_total,
            locked: inner.failed_logins.len() > MAX_FAILED_LOGINS,
            total_calls: inner.calls.values().sum(),
            calls: inner.calls.clone(),
            flood_refusals: inner.flood_refusals,
            lockout_refusals: inner.lockout_refusals,
        }
    }

    /// Failed logins inside the current 5-minute window.
    pub fn failed_logins(&self) -> usize {
        self.state().failed_logins
    }

    pub fn failed_logins_total(&self) -> usize {
        self.state().failed_logins_total
    }

    pub fn is_locked(&self) -> bool {
        self.state().locked
    }

    /// Requests that reached the statistics scripts (not the `/_sim` routes).
    pub fn call_count(&self) -> usize {
        self.state().total_calls
    }

    /// Forgets every failed login: the lock is lifted.
    pub fn reset_lock(&self) {
        let mut inner = self.lock();
        inner.failed_logins.clear();
        inner.failed_logins_total = 0;
    }

    /// Moves the simulator's clock forward (to let the 5-minute window pass).
    pub fn advance(&self, duration: Duration) {
        self.lock().clock_offset += duration;
    }

    /// Turns flood protection on (requests closer together than `interval` are refused) or off.
    pub fn set_min_interval(&self, interval: Option<Duration>) {
        let mut inner = self.lock();
        inner.min_interval = interval;
        inner.last_request = None;
    }

    /// What a flooding client receives (no string is documented; see the crate documentation).
    pub fn set_flood_body(&self, body: &str) {
        self.lock().flood_body = body.to_string();
    }

    /// The next `count` authenticated requests answer `systeme error`.
    pub fn fail_with_system_error(&self, count: usize) {
        self.lock().pending_system_errors = count;
    }

    /// Replaces a script's statistics body with `body`, byte for byte (for hostile-body tests).
    pub fn set_statistics(&self, script: &str, body: impl Into<Vec<u8>>) {
        self.lock()
            .statistics_overrides
            .insert(script.to_string(), body.into());
    }

    pub fn clear_statistics(&self, script: &str) {
        self.lock().statistics_overrides.remove(script);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Answers one statistics request, following the documented (and assumed) rules in order.
    fn answer(&self, script: &str, query: &HashMap<String, String>) -> Vec<u8> {
        let mut inner = self.lock();
        *inner.calls.entry(script.to_string()).or_default() += 1;
        let now = inner.now();

        if let Some(interval) = inner.min_interval {
            let too_soon = inner
                .last_request
                .is_some_and(|last| now.saturating_duration_since(last) < interval);
            inner.last_request = Some(now);
            if too_soon {
                inner.flood_refusals += 1;
                return inner.flood_body.clone().into_bytes();
            }
        }

        inner.forget_old_failures(now);
        if inner.failed_logins.len() > MAX_FAILED_LOGINS {
            inner.lockout_refusals += 1;
            return TOO_MANY_LOGIN_ATTEMPTS.into();
        }

        let user_ok = query
            .get("user")
            .is_some_and(|user| user == self.user.as_str());
        let pass_ok = query
            .get("pass")
            .is_some_and(|pass| pass == self.password_md5.as_str());
        if !(user_ok && pass_ok) {
            inner.failed_logins.push_back(now);
            inner.failed_logins_total += 1;
            return AUTH_ERROR.into();
        }

        if inner.pending_system_errors > 0 {
            inner.pending_system_errors -= 1;
            return SYSTEM_ERROR.into();
        }

        let period = if script.ends_with("_month.php") {
            let year = query.get("year").filter(|year| is_digits(year, 4));
            let month = query
                .get("month")
                .filter(|month| is_digits(month, 2) && ("01"..="12").contains(&month.as_str()));
            let Some(year) = year else {
                return WRONG_YEAR.into();
            };
            let Some(month) = month else {
                return WRONG_MONTH.into();
            };
            Some((
                year.parse::<u32>().unwrap_or(2026),
                month.parse::<u32>().unwrap_or(1),
            ))
        } else {
            None
        };

        if let Some(body) = inner.statistics_overrides.get(script) {
            return body.clone();
        }
        default_statistics(script, period).into_bytes()
    }
}

impl Inner {
    fn now(&self) -> Instant {
        Instant::now() + self.clock_offset
    }

    fn forget_old_failures(&mut self, now: Instant) {
        while self
            .failed_logins
            .front()
            .is_some_and(|failed| now.saturating_duration_since(*failed) >= LOCK_WINDOW)
        {
            self.failed_logins.pop_front();
        }
    }
}

fn is_digits(text: &str, count: usize) -> bool {
    text.len() == count && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// Cents as the assumed French format writes them: `149,85`.
fn french_amount(cents: u64) -> String {
    format!("{},{:02}", cents / 100, cents % 100)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The statistics each script returns unless a test replaced them: deterministic, so tests can
/// assert exact amounts. A sale is 29,95 EUR; an affiliate earns 9,00 EUR per signup.
pub fn default_statistics(script: &str, period: Option<(u32, u32)>) -> String {
    const SALE_CENTS: u64 = 2995;
    const COMMISSION_CENTS: u64 = 900;
    let mut body = String::new();
    match (script, period) {
        ("webmasters.php", _) => {
            body.push_str("date;site;hits;signups;sales;refunds;montant;devise\n");
            for (day, site, sales) in [
                (7, "site-a.example", 5),
                (8, "site-a.example", 2),
                (8, "site-b.example", 1),
            ] {
                body.push_str(&format!(
                    "2026-01-{day:02};{site};{};{};{sales};0;{};EUR\n",
                    sales * 40,
                    sales * 2,
                    french_amount(sales * SALE_CENTS)
                ));
            }
        }
        ("webmasters_quick.php", _) => {
            body.push_str("date;sales;refunds;montant;devise\n");
            body.push_str(&format!(
                "2026-01-09;3;0;{};EUR\n",
                french_amount(3 * SALE_CENTS)
            ));
        }
        ("affiliates.php", _) => {
            body.push_str("date;affiliate;clicks;signups;commission;devise\n");
            for (day, affiliate, signups) in [(7, "aff-1", 4), (8, "aff-1", 1), (8, "aff-2", 2)] {
                body.push_str(&format!(
                    "2026-01-{day:02};{affiliate};{};{signups};{};EUR\n",
                    signups * 25,
                    french_amount(signups * COMMISSION_CENTS)
                ));
            }
        }
        ("affiliates_quick.php", _) => {
            body.push_str("date;clicks;signups;commission;devise\n");
            body.push_str(&format!(
                "2026-01-09;50;2;{};EUR\n",
                french_amount(2 * COMMISSION_CENTS)
            ));
        }
        ("webmasters_month.php", Some((year, month))) => {
            body.push_str("date;sales;refunds;montant;devise\n");
            for day in 1..=days_in_month(year, month) {
                let sales = u64::from(day % 5 + 1);
                body.push_str(&format!(
                    "{year:04}-{month:02}-{day:02};{sales};0;{};EUR\n",
                    french_amount(sales * SALE_CENTS)
                ));
            }
        }
        ("affiliates_month.php", Some((year, month))) => {
            body.push_str("date;affiliate;clicks;signups;commission;devise\n");
            for day in 1..=days_in_month(year, month) {
                let signups = u64::from(day % 3);
                body.push_str(&format!(
                    "{year:04}-{month:02}-{day:02};aff-1;{};{signups};{};EUR\n",
                    signups * 25 + 3,
                    french_amount(signups * COMMISSION_CENTS)
                ));
            }
        }
        _ => {}
    }
    body
}

fn plain_text(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn statistics(
    State(sim): State<PaysiteCashSimulator>,
    Path(script): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !SCRIPTS.contains(&script.as_str()) {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    plain_text(sim.answer(&script, &query))
}

async fn state_route(State(sim): State<PaysiteCashSimulator>) -> Json<SimState> {
    Json(sim.state())
}

async fn reset_lock_route(State(sim): State<PaysiteCashSimulator>) -> StatusCode {
    sim.reset_lock();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Advance {
    seconds: u64,
}

async fn advance_route(
    State(sim): State<PaysiteCashSimulator>,
    Json(body): Json<Advance>,
) -> StatusCode {
    sim.advance(Duration::from_secs(body.seconds));
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct MinInterval {
    millis: Option<u64>,
    #[serde(default)]
    flood_body: Option<String>,
}

async fn min_interval_route(
    State(sim): State<PaysiteCashSimulator>,
    Json(body): Json<MinInterval>,
) -> StatusCode {
    sim.set_min_interval(body.millis.map(Duration::from_millis));
    if let Some(flood_body) = body.flood_body {
        sim.set_flood_body(&flood_body);
    }
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct SystemErrors {
    count: usize,
}

async fn system_errors_route(
    State(sim): State<PaysiteCashSimulator>,
    Json(body): Json<SystemErrors>,
) -> StatusCode {
    sim.fail_with_system_error(body.count);
    StatusCode::NO_CONTENT
}

async fn set_statistics_route(
    State(sim): State<PaysiteCashSimulator>,
    Path(script): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    if !SCRIPTS.contains(&script.as_str()) {
        return StatusCode::NOT_FOUND;
    }
    sim.set_statistics(&script, body.to_vec());
    StatusCode::NO_CONTENT
}

async fn clear_statistics_route(
    State(sim): State<PaysiteCashSimulator>,
    Path(script): Path<String>,
) -> StatusCode {
    sim.clear_statistics(&script);
    StatusCode::NO_CONTENT
}
