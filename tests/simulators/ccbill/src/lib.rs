//! A CCBill DataLink simulator for the advanced affiliate options (`shared/seeds/003`), with the
//! answer shapes and result codes of `shared/providers.md` section 4.
//!
//! Documented behaviour:
//! - one CGI, `/utils/subscriptionManagement.cgi`, taking its parameters as a GET query string
//!   (the seed's samples) or a POST form body (providers.md: verified against production);
//! - the main parameters of the seed's table: `clientAccnum`, `username`, `password` always;
//!   `clientSubacc` for a sub-account's DataLink user; `usingSubacc` for a main-account user acting
//!   on a sub-account; `returnXML=1` for XML, CSV otherwise;
//! - `addAffiliatePayout` (`affiliateId`, `amount` in USD, optional `originalSubId`) and
//!   `addAffiliateRefund` (`affiliateId`, `subscriptionId`, `originalSubId`, `transType`), recorded
//!   in memory;
//! - answers `"results"\n"CODE"\n` (CSV) or `<?xml version='1.0'?><results>CODE</results>` (XML),
//!   always with HTTP 200; `1` is success;
//! - the login lockout: after 3 failed logins in the last hour an account answers `-12`, correct
//!   credentials or not;
//! - CCBill's DataLink page's login errors as text, `Error: 01` (too many failed logins),
//!   `Error: 02` (failed login), `Error: 03` (inactive username), `Error: 04` (IP check failed),
//!   and CCBill's "-7 Error Explained" page: a wrong username or password may come back as `-7`.
//!   Which way a wrong login is answered is a knob ([`LoginRefusals`]); the IP check is another
//!   ([`CcBillSimulator::set_ip_check_failing`]).
//!
//! Not documented, assumed here (GUESS, as the plugin's README says):
//! - the English `transType` tokens `ONETIME`, `RECURRING`, `REBILL`;
//! - ids are digit strings (the seed's examples), amounts have at most two decimals; anything else
//!   is `-5`;
//! - a payout needs a sub-account (`clientSubacc` or `usingSubacc`), as the seed's payout section
//!   says; without one it is `-5`;
//! - a sub-account user naming another sub-account in `usingSubacc` is `-9` (not permitted); a
//!   main-account user naming a sub-account the account does not have is `-5`;
//! - failed logins are counted per `clientAccnum`; a deactivated account answers `-9` after a
//!   successful login.
//!
//! Test control: Rust methods on [`CcBillSimulator`] and `/_sim/...` routes (see [`CcBillSimulator::router`]).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gatehouse_sim_common::{RunningSimulator, parse_form_or_json, serve};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The DataLink CGI path.
pub const ENDPOINT_PATH: &str = "/utils/subscriptionManagement.cgi";

/// The seed's sample account and credentials.
pub const SEED_ACCNUM: &str = "999999";
pub const SEED_USERNAME: &str = "user123";
pub const SEED_PASSWORD: &str = "pass123";
/// The sub-accounts of the default account.
pub const SEED_SUBACCOUNTS: [&str; 3] = ["0000", "0001", "0002"];
/// A DataLink user of sub-account `0001` on the default account.
pub const SEED_SUB_USERNAME: &str = "subuser01";
pub const SEED_SUB_PASSWORD: &str = "subpass01";

/// How many failed logins within [`LOCKOUT_WINDOW`] lock an account.
pub const LOCKOUT_THRESHOLD: usize = 3;
pub const LOCKOUT_WINDOW: Duration = Duration::from_secs(3600);

/// Result codes the simulator answers by itself.
pub mod codes {
    pub const SUCCESS: i64 = 1;
    pub const AUTHENTICATION: i64 = -1;
    pub const INVALID_ARGUMENTS: i64 = -5;
    pub const INVALID_ACTION: i64 = -6;
    pub const INTERNAL_ERROR: i64 = -7;
    pub const IP_NOT_ALLOWED: i64 = -8;
    pub const NOT_PERMITTED: i64 = -9;
    pub const LOCKED_OUT: i64 = -12;
}

/// An affiliate payout the simulator accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Payout {
    pub client_accnum: String,
    /// The sub-account the payout belongs to (`clientSubacc` or `usingSubacc`).
    pub subaccount: String,
    pub affiliate_id: String,
    /// The amount exactly as sent (`14.95`).
    pub amount: String,
    /// The same amount in US cents.
    pub amount_cents: i64,
    pub original_subscription_id: Option<String>,
    /// `main` or `sub`: whose credentials authorised it.
    pub login: String,
}

/// An affiliate refund the simulator accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AffiliateRefund {
    pub client_accnum: String,
    pub subaccount: Option<String>,
    pub affiliate_id: String,
    pub subscription_id: String,
    pub original_subscription_id: String,
    pub trans_type: String,
    pub login: String,
}

/// How the simulator answers a wrong login and the lockout that follows. CCBill is seen to answer
/// both ways; which one an account gets is not documented.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginRefusals {
    /// `-1` for a wrong login, `-12` once locked (the result-code table).
    #[default]
    ResultCodes,
    /// `-7` for a wrong login (CCBill's "-7 Error Explained"), `-12` once locked.
    MinusSeven,
    /// `Error: 02` for a wrong login, `Error: 01` once locked (CCBill's DataLink page).
    ErrorTexts,
}

/// One DataLink answer: a result document, or a login error as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// `"results"\n"CODE"\n` or `<results>CODE</results>`.
    Code(i64),
    /// `Error: NN`, whatever format was asked for.
    ErrorText(u8),
}

impl Reply {
    /// The result code of the same meaning, for the request log: an `Error:` answer is logged as
    /// the code the result-code table gives the same refusal (01 `-12`, 02 `-1`, 03 `-9`,
    /// 04 `-8`; others `0`).
    pub fn equivalent_code(self) -> i64 {
        match self {
            Self::Code(code) => code,
            Self::ErrorText(1) => codes::LOCKED_OUT,
            Self::ErrorText(2) => codes::AUTHENTICATION,
            Self::ErrorText(3) => codes::NOT_PERMITTED,
            Self::ErrorText(4) => codes::IP_NOT_ALLOWED,
            Self::ErrorText(_) => 0,
        }
    }
}

/// What reached the CGI, without credential values: which parameters came in the URL and which
/// in the body, so tests can check where the password travelled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    pub action: Option<String>,
    pub query_parameters: Vec<String>,
    pub body_parameters: Vec<String>,
    pub xml: bool,
    /// The result code answered ([`Reply::equivalent_code`] for an `Error:` answer).
    pub result: i64,
    /// The number of an `Error: NN` answer, when the answer was one.
    pub error_text: Option<u8>,
}

#[derive(Clone, Debug)]
struct DataLinkUser {
    username: String,
    password: String,
    /// `None` for a main-account user.
    subaccount: Option<String>,
}

#[derive(Clone, Debug, Default)]
struct SimAccount {
    subaccounts: BTreeSet<String>,
    users: Vec<DataLinkUser>,
    deactivated: bool,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<String, SimAccount>,
    payouts: Vec<Payout>,
    refunds: Vec<AffiliateRefund>,
    forced_results: VecDeque<Reply>,
    login_refusals: LoginRefusals,
    ip_check_failing: bool,
    failed_logins: HashMap<String, Vec<Instant>>,
    clock_offset: Duration,
    requests: Vec<RecordedRequest>,
}

/// The simulator's state, shared by its routes and the tests that drive it.
#[derive(Clone, Default)]
pub struct CcBillSimulator {
    inner: Arc<Mutex<Inner>>,
}

impl CcBillSimulator {
    /// A simulator with no accounts.
    pub fn new() -> Self {
        Self::default()
    }

    /// The seed's account `999999` with sub-accounts 0000-0002, its main-account user
    /// `user123`/`pass123`, and a DataLink user of sub-account 0001.
    pub fn with_seed_account() -> Self {
        let simulator = Self::new();
        simulator.add_account(SEED_ACCNUM, &SEED_SUBACCOUNTS);
        simulator.add_main_user(SEED_ACCNUM, SEED_USERNAME, SEED_PASSWORD);
        simulator.add_sub_account_user(SEED_ACCNUM, "0001", SEED_SUB_USERNAME, SEED_SUB_PASSWORD);
        simulator
    }

    /// Serves the seed-account simulator on an ephemeral loopback port.
    pub async fn start() -> std::io::Result<(Self, RunningSimulator)> {
        Self::with_seed_account().serve().await
    }

    /// Serves this simulator on an ephemeral loopback port.
    pub async fn serve(self) -> std::io::Result<(Self, RunningSimulator)> {
        let running = serve(self.router()).await?;
        Ok((self, running))
    }

    /// The DataLink CGI plus the control routes:
    /// - `POST /_sim/next-result` `{"code": -7}` or `{"error_text": 2}`: answer this code, or
    ///   `Error: 02`, to the next DataLink request;
    /// - `POST /_sim/login-refusals` `{"refusals": "minus_seven"}` (or `result_codes`,
    ///   `error_texts`): how wrong logins and the lockout are answered from now on;
    /// - `POST /_sim/ip-check` `{"failing": true}`: every login answers `Error: 04` until turned off;
    /// - `GET /_sim/payouts`, `GET /_sim/refunds`, `GET /_sim/requests`: what was recorded;
    /// - `GET /_sim/accounts/{accnum}/logins`: `{"failed_logins": n, "locked": bool}`;
    /// - `POST /_sim/accounts/{accnum}/deactivated` `{"deactivated": true}`;
    /// - `POST /_sim/clock/advance` `{"seconds": 3600}`: move the lockout clock forward;
    /// - `POST /_sim/reset`: forget payouts, refunds, requests, failed logins and forced codes.
    pub fn router(&self) -> Router {
        Router::new()
            .route(ENDPOINT_PATH, get(datalink).post(datalink))
            .route("/_sim/next-result", post(next_result_route))
            .route("/_sim/login-refusals", post(login_refusals_route))
            .route("/_sim/ip-check", post(ip_check_route))
            .route("/_sim/payouts", get(payouts_route))
            .route("/_sim/refunds", get(refunds_route))
            .route("/_sim/requests", get(requests_route))
            .route("/_sim/accounts/{accnum}/logins", get(logins_route))
            .route(
                "/_sim/accounts/{accnum}/deactivated",
                post(deactivated_route),
            )
            .route("/_sim/clock/advance", post(advance_clock_route))
            .route("/_sim/reset", post(reset_route))
            .with_state(self.clone())
    }

    pub fn add_account(&self, client_accnum: &str, subaccounts: &[&str]) {
        let mut inner = self.lock();
        let account = inner.accounts.entry(client_accnum.to_string()).or_default();
        account
            .subaccounts
            .extend(subaccounts.iter().map(|subaccount| subaccount.to_string()));
    }

    pub fn add_main_user(&self, client_accnum: &str, username: &str, password: &str) {
        self.add_user(client_accnum, username, password, None);
    }

    /// Adds a DataLink user of one sub-account (creating the sub-account if needed).
    pub fn add_sub_account_user(
        &self,
        client_accnum: &str,
        subaccount: &str,
        username: &str,
        password: &str,
    ) {
        self.add_user(client_accnum, username, password, Some(subaccount));
    }

    fn add_user(
        &self,
        client_accnum: &str,
        username: &str,
        password: &str,
        subaccount: Option<&str>,
    ) {
        let mut inner = self.lock();
        let account = inner.accounts.entry(client_accnum.to_string()).or_default();
        if let Some(subaccount) = subaccount {
            account.subaccounts.insert(subaccount.to_string());
        }
        account.users.push(DataLinkUser {
            username: username.to_string(),
            password: password.to_string(),
            subaccount: subaccount.map(str::to_string),
        });
    }

    /// Answers `code` to the next DataLink request, whatever it is, changing no state. Several
    /// calls queue several answers.
    pub fn answer_next(&self, code: i64) {
        self.lock().forced_results.push_back(Reply::Code(code));
    }

    /// Answers `Error: NN` (CCBill's text login errors, 1-4 documented) to the next DataLink
    /// request, changing no state. Queues like [`answer_next`](Self::answer_next).
    pub fn answer_next_error_text(&self, number: u8) {
        self.lock()
            .forced_results
            .push_back(Reply::ErrorText(number));
    }

    /// How wrong logins and the lockout are answered from now on (failed logins still count
    /// toward the lockout, whichever way they are answered).
    pub fn set_login_refusals(&self, refusals: LoginRefusals) {
        self.lock().login_refusals = refusals;
    }

    /// While on, every login answers `Error: 04` (IP check failed) before its credentials are
    /// looked at; such refusals do not count toward the lockout.
    pub fn set_ip_check_failing(&self, failing: bool) {
        self.lock().ip_check_failing = failing;
    }

    pub fn set_deactivated(&self, client_accnum: &str, deactivated: bool) {
        if let Some(account) = self.lock().accounts.get_mut(client_accnum) {
            account.deactivated = deactivated;
        }
    }

    pub fn payouts(&self) -> Vec<Payout> {
        self.lock().payouts.clone()
    }

    pub fn refunds(&self) -> Vec<AffiliateRefund> {
        self.lock().refunds.clone()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// How many DataLink requests reached the CGI (control routes excluded).
    pub fn datalink_calls(&self) -> usize {
        self.lock().requests.len()
    }

    /// Failed logins for the account within the lockout window.
    pub fn failed_logins(&self, client_accnum: &str) -> usize {
        let mut inner = self.lock();
        let now = inner.now();
        inner.recent_failures(client_accnum, now)
    }

    pub fn is_locked(&self, client_accnum: &str) -> bool {
        self.failed_logins(client_accnum) >= LOCKOUT_THRESHOLD
    }

    /// Moves the simulator's lockout clock forward (failed logins age out after an hour).
    pub fn advance_clock(&self, by: Duration) {
        self.lock().clock_offset += by;
    }

    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.payouts.clear();
        inner.refunds.clear();
        inner.requests.clear();
        inner.failed_logins.clear();
        inner.forced_results.clear();
        inner.login_refusals = LoginRefusals::default();
        inner.ip_check_failing = false;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The parameters of one DataLink request, query and body merged (the body wins a clash, as a
/// CGI reading both would).
struct Parameters(Vec<(String, String)>);

impl Parameters {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    }
}

/// Who logged in.
struct LoggedIn {
    /// The sub-account the request acts on, if any.
    subaccount: Option<String>,
    login: &'static str,
}

impl Inner {
    fn now(&self) -> Instant {
        Instant::now() + self.clock_offset
    }

    fn recent_failures(&mut self, client_accnum: &str, now: Instant) -> usize {
        let Some(failures) = self.failed_logins.get_mut(client_accnum) else {
            return 0;
        };
        failures.retain(|at| now.saturating_duration_since(*at) < LOCKOUT_WINDOW);
        failures.len()
    }

    fn fail_login(&mut self, client_accnum: &str, now: Instant) -> i64 {
        self.failed_logins
            .entry(client_accnum.to_string())
            .or_default()
            .push(now);
        codes::AUTHENTICATION
    }

    /// Runs one DataLink request and returns its answer.
    fn handle(&mut self, parameters: &Parameters) -> Reply {
        if let Some(reply) = self.forced_results.pop_front() {
            return reply;
        }
        if self.ip_check_failing {
            return Reply::ErrorText(4);
        }
        let logged_in = match self.log_in(parameters) {
            Ok(logged_in) => logged_in,
            Err(code) => return self.login_refusal(code),
        };
        Reply::Code(match parameters.get("action") {
            Some("addAffiliatePayout") => self.add_payout(parameters, logged_in),
            Some("addAffiliateRefund") => self.add_refund(parameters, logged_in),
            _ => codes::INVALID_ACTION,
        })
    }

    /// A login refusal in the account's style of answering.
    fn login_refusal(&self, code: i64) -> Reply {
        match (self.login_refusals, code) {
            (LoginRefusals::MinusSeven, codes::AUTHENTICATION) => {
                Reply::Code(codes::INTERNAL_ERROR)
            }
            (LoginRefusals::ErrorTexts, codes::AUTHENTICATION) => Reply::ErrorText(2),
            (LoginRefusals::ErrorTexts, codes::LOCKED_OUT) => Reply::ErrorText(1),
            _ => Reply::Code(code),
        }
    }

    /// Checks the main parameters against the seed's table and the account's users.
    fn log_in(&mut self, parameters: &Parameters) -> Result<LoggedIn, i64> {
        let now = self.now();
        let client_accnum = parameters
            .get("clientAccnum")
            .ok_or(codes::AUTHENTICATION)?;
        let Some(account) = self.accounts.get(client_accnum).cloned() else {
            return Err(codes::AUTHENTICATION);
        };
        if self.recent_failures(client_accnum, now) >= LOCKOUT_THRESHOLD {
            return Err(codes::LOCKED_OUT);
        }
        let username = parameters.get("username");
        let password = parameters.get("password");
        let client_subacc = parameters.get("clientSubacc");
        let using_subacc = parameters.get("usingSubacc");
        let Some(user) = account.users.iter().find(|user| {
            Some(user.username.as_str()) == username && Some(user.password.as_str()) == password
        }) else {
            return Err(self.fail_login(client_accnum, now));
        };
        let logged_in = match &user.subaccount {
            // A sub-account user must name its sub-account (the table's X) and may act on no other.
            Some(own) => {
                if client_subacc != Some(own.as_str()) {
                    return Err(self.fail_login(client_accnum, now));
                }
                if using_subacc.is_some_and(|using| using != own) {
                    return Err(codes::NOT_PERMITTED);
                }
                LoggedIn {
                    subaccount: Some(own.clone()),
                    login: "sub",
                }
            }
            // A main-account user may name a sub-account (the table's O for both parameters);
            // it must be one of the account's, and two different ones make no sense.
            None => {
                let named = match (client_subacc, using_subacc) {
                    (Some(client), Some(using)) if client != using => {
                        return Err(codes::INVALID_ARGUMENTS);
                    }
                    (client, using) => client.or(using),
                };
                if named.is_some_and(|subaccount| !account.subaccounts.contains(subaccount)) {
                    return Err(codes::INVALID_ARGUMENTS);
                }
                LoggedIn {
                    subaccount: named.map(str::to_string),
                    login: "main",
                }
            }
        };
        if account.deactivated {
            return Err(codes::NOT_PERMITTED);
        }
        Ok(logged_in)
    }

    fn add_payout(&mut self, parameters: &Parameters, logged_in: LoggedIn) -> i64 {
        let (Some(subaccount), Some(affiliate_id), Some(amount)) = (
            logged_in.subaccount,
            parameters.get("affiliateId").filter(|id| is_id(id)),
            parameters.get("amount"),
        ) else {
            return codes::INVALID_ARGUMENTS;
        };
        let Some(amount_cents) = dollars_to_cents(amount) else {
            return codes::INVALID_ARGUMENTS;
        };
        let original_subscription_id = parameters.get("originalSubId");
        if original_subscription_id.is_some_and(|id| !is_id(id)) {
            return codes::INVALID_ARGUMENTS;
        }
        self.payouts.push(Payout {
            client_accnum: parameters
                .get("clientAccnum")
                .unwrap_or_default()
                .to_string(),
            subaccount,
            affiliate_id: affiliate_id.to_string(),
            amount: amount.to_string(),
            amount_cents,
            original_subscription_id: original_subscription_id.map(str::to_string),
            login: logged_in.login.to_string(),
        });
        codes::SUCCESS
    }

    fn add_refund(&mut self, parameters: &Parameters, logged_in: LoggedIn) -> i64 {
        let (
            Some(affiliate_id),
            Some(subscription_id),
            Some(original_subscription_id),
            Some(trans_type),
        ) = (
            parameters.get("affiliateId").filter(|id| is_id(id)),
            parameters.get("subscriptionId").filter(|id| is_id(id)),
            parameters.get("originalSubId").filter(|id| is_id(id)),
            parameters
                .get("transType")
                .filter(|kind| matches!(*kind, "ONETIME" | "RECURRING" | "REBILL")),
        )
        else {
            return codes::INVALID_ARGUMENTS;
        };
        self.refunds.push(AffiliateRefund {
            client_accnum: parameters
                .get("clientAccnum")
                .unwrap_or_default()
                .to_string(),
            subaccount: logged_in.subaccount,
            affiliate_id: affiliate_id.to_string(),
            subscription_id: subscription_id.to_string(),
            original_subscription_id: original_subscription_id.to_string(),
            trans_type: trans_type.to_string(),
            login: logged_in.login.to_string(),
        });
        codes::SUCCESS
    }
}

fn is_id(text: &str) -> bool {
    (1..=20).contains(&text.len()) && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// `14.95` → 1495; at most two decimals, positive, no floats.
pub fn dollars_to_cents(text: &str) -> Option<i64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > 12
        || !digits(whole)
        || fraction.len() > 2
        || !digits(fraction)
    {
        return None;
    }
    if text.ends_with('.') {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = format!("{fraction:0<2}").parse().ok()?;
    let cents = whole.checked_mul(100)?.checked_add(fraction)?;
    (cents > 0).then_some(cents)
}

/// The body of an answer: a result document in the requested format, or `Error: NN` as text.
pub fn reply_body(reply: Reply, xml: bool) -> String {
    match reply {
        Reply::Code(code) => answer_body(code, xml),
        Reply::ErrorText(number) => format!("Error: {number:02}"),
    }
}

/// The answer body in the requested format.
pub fn answer_body(code: i64, xml: bool) -> String {
    if xml {
        format!("<?xml version='1.0'?><results>{code}</results>")
    } else {
        format!("\"results\"\n\"{code}\"\n")
    }
}

fn pairs_of(encoded: &[u8]) -> Vec<(String, String)> {
    parse_form_or_json(None, encoded).unwrap_or_default()
}

async fn datalink(
    State(sim): State<CcBillSimulator>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query_pairs = pairs_of(query.unwrap_or_default().as_bytes());
    let body_pairs = if method == Method::POST {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok());
        parse_form_or_json(content_type, &body).unwrap_or_default()
    } else {
        Vec::new()
    };
    let names =
        |pairs: &[(String, String)]| pairs.iter().map(|(key, _)| key.clone()).collect::<Vec<_>>();
    let (query_parameters, body_parameters) = (names(&query_pairs), names(&body_pairs));
    let parameters = Parameters(query_pairs.into_iter().chain(body_pairs).collect());
    let xml = parameters.get("returnXML") == Some("1");
    let mut inner = sim.lock();
    let reply = inner.handle(&parameters);
    inner.requests.push(RecordedRequest {
        method: method.to_string(),
        action: parameters.get("action").map(str::to_string),
        query_parameters,
        body_parameters,
        xml,
        result: reply.equivalent_code(),
        error_text: match reply {
            Reply::ErrorText(number) => Some(number),
            Reply::Code(_) => None,
        },
    });
    let content_type = if xml && matches!(reply, Reply::Code(_)) {
        "text/xml"
    } else {
        "text/plain; charset=UTF-8"
    };
    // DataLink reports its own errors in the body with HTTP 200.
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        reply_body(reply, xml),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NextResult {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    error_text: Option<u8>,
}

async fn next_result_route(
    State(sim): State<CcBillSimulator>,
    Json(body): Json<NextResult>,
) -> StatusCode {
    match (body.code, body.error_text) {
        (Some(code), None) => sim.answer_next(code),
        (None, Some(number)) => sim.answer_next_error_text(number),
        _ => return StatusCode::UNPROCESSABLE_ENTITY,
    }
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Refusals {
    refusals: LoginRefusals,
}

async fn login_refusals_route(
    State(sim): State<CcBillSimulator>,
    Json(body): Json<Refusals>,
) -> StatusCode {
    sim.set_login_refusals(body.refusals);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct IpCheck {
    failing: bool,
}

async fn ip_check_route(
    State(sim): State<CcBillSimulator>,
    Json(body): Json<IpCheck>,
) -> StatusCode {
    sim.set_ip_check_failing(body.failing);
    StatusCode::NO_CONTENT
}

async fn payouts_route(State(sim): State<CcBillSimulator>) -> Json<Vec<Payout>> {
    Json(sim.payouts())
}

async fn refunds_route(State(sim): State<CcBillSimulator>) -> Json<Vec<AffiliateRefund>> {
    Json(sim.refunds())
}

async fn requests_route(State(sim): State<CcBillSimulator>) -> Json<Vec<RecordedRequest>> {
    Json(sim.requests())
}

async fn logins_route(
    State(sim): State<CcBillSimulator>,
    Path(accnum): Path<String>,
) -> Json<serde_json::Value> {
    let failed_logins = sim.failed_logins(&accnum);
    Json(json!({ "failed_logins": failed_logins, "locked": failed_logins >= LOCKOUT_THRESHOLD }))
}

#[derive(Deserialize)]
struct Deactivated {
    deactivated: bool,
}

async fn deactivated_route(
    State(sim): State<CcBillSimulator>,
    Path(accnum): Path<String>,
    Json(body): Json<Deactivated>,
) -> StatusCode {
    if !sim.lock().accounts.contains_key(&accnum) {
        return StatusCode::NOT_FOUND;
    }
    sim.set_deactivated(&accnum, body.deactivated);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Advance {
    seconds: u64,
}

async fn advance_clock_route(
    State(sim): State<CcBillSimulator>,
    Json(body): Json<Advance>,
) -> StatusCode {
    sim.advance_clock(Duration::from_secs(body.seconds));
    StatusCode::NO_CONTENT
}

async fn reset_route(State(sim): State<CcBillSimulator>) -> StatusCode {
    sim.reset();
    StatusCode::NO_CONTENT
}
