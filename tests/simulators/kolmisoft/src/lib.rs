//! A Kolmisoft MOR / M4 API simulator, following the "M4 API payments get" page
//! (`shared/seeds/002`) and `providers.md` section 3.
//!
//! Documented behaviour: `POST /billing/api/payments_get` (GET only when "Allow GET API" is on),
//! `u` must name a known API user (`<error>Bad login</error>`), `hash` must be the lowercase hex
//! SHA1 of the sent `*_s` values in the document's order followed by the API Secret Key
//! (`<error>Incorrect hash</error>`), every filter narrows a stored set of payments, and the answer
//! is the document's XML, whitespace inside the tags included. Parameters are read from the query
//! string and, for POST, from the form body too: the document's own example POSTs them in the URL.
//!
//! Not documented, and assumed here (the plugin's README says so too):
//! * a GET while GET is off answers `<status>GET Requests are disabled</status>` (the wording of the
//!   wiki's "MOR API rate get" page), HTTP 200;
//! * error documents are `<page><error>…</error></page>`, HTTP 200 (providers.md GUESS);
//! * a `from_s`/`till_s` that is not an integer, or an amount bound that is not a decimal, answers
//!   `<error>Invalid parameter: NAME</error>`;
//! * `<date>` is `YYYY-MM-DD HH:MM:SS` in the server's timezone (`utc_offset_seconds`, default UTC);
//! * `<user>` is the user's first and last name, or the username when both are empty;
//! * name and currency filters match exactly; amount bounds are inclusive; so is the period;
//! * balances are written with the payment's other amounts, unless the simulator plays an older
//!   server that omits them ([`KolmisoftSimulator::set_include_balances`]).

use std::collections::{BTreeSet, VecDeque};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use gatehouse_sim_common::{RunningSimulator, serve};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

/// The hashed parameters of `payments_get`, in the document's order.
pub const HASHED_PARAMETERS: [&str; 9] = [
    "user_id_s",
    "from_s",
    "till_s",
    "username_s",
    "first_name_s",
    "last_name_s",
    "amount_min_s",
    "amount_max_s",
    "currency_s",
];

pub const PAYMENTS_GET_PATH: &str = "/billing/api/payments_get";

/// One stored payment. Amounts are decimal strings, exactly as the server writes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub user_id: u64,
    pub username: String,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    /// Unix seconds.
    pub date: i64,
    pub amount: String,
    pub amount_with_tax: String,
    #[serde(default)]
    pub comment: String,
    pub currency: String,
    #[serde(default)]
    pub balance_before: String,
    #[serde(default)]
    pub balance_after: String,
}

impl Payment {
    /// A payment with the common fields filled; adjust the rest with struct update syntax.
    pub fn new(user_id: u64, username: &str, date: i64, amount: &str, currency: &str) -> Self {
        Self {
            user_id,
            username: username.into(),
            first_name: String::new(),
            last_name: String::new(),
            date,
            amount: amount.into(),
            amount_with_tax: amount.into(),
            comment: String::new(),
            currency: currency.into(),
            balance_before: "0".into(),
            balance_after: amount.into(),
        }
    }

    /// What `<user>` shows: "First Last", or the username when the user has no name.
    pub fn display_user(&self) -> String {
        let name = format!("{} {}", self.first_name, self.last_name);
        let name = name.trim();
        if name.is_empty() {
            self.username.clone()
        } else {
            name.to_string()
        }
    }
}

/// A request that reached `payments_get`: its method and its parameters, query first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReceivedRequest {
    pub method: String,
    pub parameters: Vec<(String, String)>,
}

impl ReceivedRequest {
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

struct Inner {
    secret_key: String,
    api_users: BTreeSet<String>,
    allow_get: bool,
    include_balances: bool,
    utc_offset_seconds: i64,
    /// A fixed clock for the default period; `None` reads the system clock.
    now: Option<i64>,
    payments: Vec<Payment>,
    received: Vec<ReceivedRequest>,
    /// Bodies to answer instead of handling the next requests (hostile or broken answers).
    raw_answers: VecDeque<Vec<u8>>,
}

/// The simulator's state, shared by its routes and by the tests that drive it.
#[derive(Clone)]
pub struct KolmisoftSimulator {
    inner: Arc<Mutex<Inner>>,
}

impl KolmisoftSimulator {
    /// A server whose API Secret Key is `secret_key` and whose one API user is `api_user`.
    pub fn new(secret_key: &str, api_user: &str) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                secret_key: secret_key.into(),
                api_users: BTreeSet::from([api_user.to_string()]),
                allow_get: false,
                include_balances: true,
                utc_offset_seconds: 0,
                now: None,
                payments: Vec::new(),
                received: Vec::new(),
                raw_answers: VecDeque::new(),
            })),
        }
    }

    /// Serves the simulator on an ephemeral loopback port. The account's base URL is
    /// `running.base_url() + "/billing"`.
    pub async fn start(
        secret_key: &str,
        api_user: &str,
    ) -> std::io::Result<(Self, RunningSimulator)> {
        let simulator = Self::new(secret_key, api_user);
        let running = serve(simulator.router()).await?;
        Ok((simulator, running))
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route(PAYMENTS_GET_PATH, get(payments_get).post(payments_get))
            .route(
                "/_sim/payments",
                get(list_payments_route)
                    .post(add_payment_route)
                    .delete(clear_payments_route),
            )
            .route("/_sim/settings", post(settings_route))
            .route("/_sim/requests", get(received_route))
            .with_state(self.clone())
    }

    pub fn add_api_user(&self, username: &str) {
        self.lock().api_users.insert(username.into());
    }

    pub fn set_secret_key(&self, secret_key: &str) {
        self.lock().secret_key = secret_key.into();
    }

    /// The server's "Allow GET API" setting (off by default, as the document recommends).
    pub fn set_allow_get(&self, allow: bool) {
        self.lock().allow_get = allow;
    }

    /// `false` plays an older (M2) server whose answers have no balance fields.
    pub fn set_include_balances(&self, include: bool) {
        self.lock().include_balances = include;
    }

    /// The server's timezone, for `<date>` and for the default period.
    pub fn set_utc_offset_seconds(&self, offset: i64) {
        self.lock().utc_offset_seconds = offset;
    }

    /// Fixes the server's clock (Unix seconds); `None` goes back to the system clock.
    pub fn set_now(&self, now: Option<i64>) {
        self.lock().now = now;
    }

    pub fn add_payment(&self, payment: Payment) {
        self.lock().payments.push(payment);
    }

    pub fn clear_payments(&self) {
        self.lock().payments.clear();
    }

    pub fn payments(&self) -> Vec<Payment> {
        self.lock().payments.clone()
    }

    /// Answers the next `payments_get` request with exactly these bytes (HTTP 200, `text/xml`)
    /// instead of handling it: for broken and hostile answers, invalid UTF-8 included, which
    /// `gatehouse_sim_common::Fault::Body` (a `String`) cannot carry. Queued answers are used in order.
    pub fn answer_next_with(&self, body: impl Into<Vec<u8>>) {
        self.lock().raw_answers.push_back(body.into());
    }

    /// Every request that reached `payments_get`, oldest first.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.lock().received.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("simulator state lock")
    }
}

/// The hash the server expects for `parameters`: the present hashed parameters' values in the
/// document's order, then the secret, SHA1, lowercase hex.
pub fn expected_hash(parameters: &[(String, String)], secret_key: &str) -> String {
    let mut hasher = Sha1::new();
    for name in HASHED_PARAMETERS {
        if let Some((_, value)) = parameters.iter().find(|(key, _)| key == name) {
            hasher.update(value.as_bytes());
        }
    }
    hasher.update(secret_key.as_bytes());
    hex::encode(hasher.finalize())
}

const XML_DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

fn xml_response(body: impl Into<axum::body::Body>) -> Response {
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    response
}

fn error_document(text: &str) -> Response {
    xml_response(format!(
        "{XML_DECLARATION}<page>\n <error>{}</error>\n</page>\n",
        escape(text)
    ))
}

async fn payments_get(
    State(sim): State<KolmisoftSimulator>,
    method: Method,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut parameters: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    if method == Method::POST {
        // Body parameters win over query parameters of the same name.
        for (name, value) in form_urlencoded::parse(&body).into_owned() {
            parameters.retain(|(key, _)| key != &name);
            parameters.push((name, value));
        }
    }
    let mut inner = sim.lock();
    inner.received.push(ReceivedRequest {
        method: method.to_string(),
        parameters: parameters.clone(),
    });
    if let Some(raw) = inner.raw_answers.pop_front() {
        return xml_response(raw);
    }
    if method == Method::GET && !inner.allow_get {
        return xml_response(format!(
            "{XML_DECLARATION}<status>GET Requests are disabled</status>\n"
        ));
    }
    let parameter = |name: &str| {
        parameters
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    if !parameter("u").is_some_and(|user| inner.api_users.contains(user)) {
        return error_document("Bad login");
    }
    let expected = expected_hash(&parameters, &inner.secret_key);
    if parameter("hash") != Some(expected.as_str()) {
        return error_document("Incorrect hash");
    }
    let filter =
        match PaymentFilter::from_parameters(&parameter, inner.now, inner.utc_offset_seconds) {
            Ok(filter) => filter,
            Err(name) => return error_document(&format!("Invalid parameter: {name}")),
        };
    let selected: Vec<&Payment> = inner
        .payments
        .iter()
        .filter(|payment| filter.matches(payment))
        .collect();
    xml_response(payments_document(
        &selected,
        inner.include_balances,
        inner.utc_offset_seconds,
    ))
}

/// The filters of one request, parsed.
struct PaymentFilter {
    user_id: Option<String>,
    from: i64,
    till: i64,
    username: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    amount_min: Option<Decimal>,
    amount_max: Option<Decimal>,
    currency: Option<String>,
}

impl PaymentFilter {
    /// `Err(name)` names the parameter that could not be read.
    fn from_parameters<'a>(
        parameter: &impl Fn(&str) -> Option<&'a str>,
        now: Option<i64>,
        utc_offset_seconds: i64,
    ) -> Result<Self, &'static str> {
        let timestamp = |name: &'static str| {
            parameter(name)
                .map(|text| text.trim().parse::<i64>().map_err(|_| name))
                .transpose()
        };
        let amount = |name: &'static str| {
            parameter(name)
                .map(|text| Decimal::from_str(text.trim()).map_err(|_| name))
                .transpose()
        };
        let text = |name: &str| parameter(name).map(str::to_string);
        // The document's defaults: today 00:00 to 23:59, in the server's timezone.
        let now = now.unwrap_or_else(system_now);
        let local_midnight = (now + utc_offset_seconds).div_euclid(86_400) * 86_400;
        let today_from = local_midnight - utc_offset_seconds;
        Ok(Self {
            user_id: text("user_id_s"),
            from: timestamp("from_s")?.unwrap_or(today_from),
            till: timestamp("till_s")?.unwrap_or(today_from + 86_399),
            username: text("username_s"),
            first_name: text("first_name_s"),
            last_name: text("last_name_s"),
            amount_min: amount("amount_min_s")?,
            amount_max: amount("amount_max_s")?,
            currency: text("currency_s"),
        })
    }

    fn matches(&self, payment: &Payment) -> bool {
        let amount = Decimal::from_str(&payment.amount).ok();
        let same = |wanted: &Option<String>, actual: &str| {
            wanted.as_deref().is_none_or(|wanted| wanted == actual)
        };
        same(&self.user_id, &payment.user_id.to_string())
            && (self.from..=self.till).contains(&payment.date)
            && same(&self.username, &payment.username)
            && same(&self.first_name, &payment.first_name)
            && same(&self.last_name, &payment.last_name)
            && self
                .amount_min
                .is_none_or(|min| amount.is_some_and(|amount| amount >= min))
            && self
                .amount_max
                .is_none_or(|max| amount.is_some_and(|amount| amount <= max))
            && same(&self.currency, &payment.currency)
    }
}

fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// The document's success answer, with its layout: one-space indentation per level and values
/// padded with spaces inside their tags.
pub fn payments_document(
    payments: &[&Payment],
    include_balances: bool,
    utc_offset_seconds: i64,
) -> String {
    let mut xml = String::from(XML_DECLARATION);
    xml.push_str("<page>\n <pagename> Payments_list </pagename>\n <payments>\n");
    for payment in payments {
        let mut fields = vec![
            ("user", payment.display_user()),
            ("date", format_date(payment.date, utc_offset_seconds)),
            ("amount", payment.amount.clone()),
            ("amount_with_tax", payment.amount_with_tax.clone()),
            ("comment", payment.comment.clone()),
            ("currency", payment.currency.clone()),
        ];
        if include_balances {
            fields.push((
                "user_balance_before_payment",
                payment.balance_before.clone(),
            ));
            fields.push(("user_balance_after_payment", payment.balance_after.clone()));
        }
        xml.push_str("  <payment>\n");
        for (name, value) in fields {
            xml.push_str(&format!("   <{name}> {} </{name}>\n", escape(&value)));
        }
        xml.push_str("  </payment>\n");
    }
    xml.push_str(" </payments>\n</page>\n");
    xml
}

/// `YYYY-MM-DD HH:MM:SS` at the server's offset.
pub fn format_date(unix: i64, utc_offset_seconds: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::UtcOffset::from_whole_seconds(i32::try_from(utc_offset_seconds).unwrap_or(0))
        .ok()
        .and_then(|offset| {
            time::OffsetDateTime::from_unix_timestamp(unix)
                .ok()
                .map(|moment| moment.to_offset(offset))
        })
        .and_then(|moment| moment.format(&format).ok())
        .unwrap_or_default()
}

pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            other => escaped.push(other),
        }
    }
    escaped
}

async fn list_payments_route(State(sim): State<KolmisoftSimulator>) -> Json<Vec<Payment>> {
    Json(sim.payments())
}

async fn add_payment_route(
    State(sim): State<KolmisoftSimulator>,
    Json(payment): Json<Payment>,
) -> StatusCode {
    sim.add_payment(payment);
    StatusCode::NO_CONTENT
}

async fn clear_payments_route(State(sim): State<KolmisoftSimulator>) -> StatusCode {
    sim.clear_payments();
    StatusCode::NO_CONTENT
}

/// `POST /_sim/settings`: any of these fields, the others left as they are.
#[derive(Deserialize)]
struct SettingsChange {
    allow_get: Option<bool>,
    include_balances: Option<bool>,
    utc_offset_seconds: Option<i64>,
    /// `null` returns to the system clock; absent leaves the clock alone.
    #[serde(default, with = "double_option")]
    now: Option<Option<i64>>,
    secret_key: Option<String>,
    add_api_user: Option<String>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<i64>>, D::Error> {
        Option::<i64>::deserialize(deserializer).map(Some)
    }
}

async fn settings_route(
    State(sim): State<KolmisoftSimulator>,
    Json(change): Json<SettingsChange>,
) -> StatusCode {
    if let Some(allow) = change.allow_get {
        sim.set_allow_get(allow);
    }
    if let Some(include) = change.include_balances {
        sim.set_include_balances(include);
    }
    if let Some(offset) = change.utc_offset_seconds {
        sim.set_utc_offset_seconds(offset);
    }
    if let Some(now) = change.now {
        sim.set_now(now);
    }
    if let Some(secret_key) = change.secret_key {
        sim.set_secret_key(&secret_key);
    }
    if let Some(user) = change.add_api_user {
        sim.add_api_user(&user);
    }
    StatusCode::NO_CONTENT
}

async fn received_route(State(sim): State<KolmisoftSimulator>) -> Json<Vec<ReceivedRequest>> {
    Json(sim.received())
}
