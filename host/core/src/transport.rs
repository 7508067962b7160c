//! Performing the requests plugins describe: one shared client, per-request timeouts, a cap on
//! answer size, and an honest account of whether a failed request may have reached the provider.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use gatehouse_plugin_api::{HttpRequest, HttpResponse, Method, Secret};
use sha2::{Digest, Sha256};

use crate::config::EgressSettings;

/// How a request failed to produce an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportFailure {
    /// Nothing was sent: the connection could not be made, or the request could not be built.
    NotSent(String),
    /// The request may have reached the provider, but no complete answer came back.
    NoAnswer(String),
    /// The answer was larger than the host accepts.
    TooLarge { limit: usize },
}

impl TransportFailure {
    /// Whether the provider cannot have acted on the request.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, Self::NotSent(_))
    }

    pub fn describe(&self) -> String {
        match self {
            Self::NotSent(reason) => format!("could not reach the provider: {reason}"),
            Self::NoAnswer(reason) => format!("no complete answer from the provider: {reason}"),
            Self::TooLarge { limit } => format!("the provider's answer exceeded {limit} bytes"),
        }
    }
}

/// Builds the HTTP client the host uses for every provider reached without a configured proxy.
pub fn build_client() -> reqwest::Client {
    client_builder()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
}

/// An account's outbound proxy with its credentials resolved: what a client is built from.
pub struct Egress {
    proxy: String,
    username: Option<String>,
    password: Option<Secret>,
    no_proxy: Vec<String>,
}

impl Egress {
    /// Resolves `settings`; `None` when requests go direct. The error names the key, never a
    /// value.
    pub fn resolve(settings: &EgressSettings) -> Result<Option<Self>, String> {
        let Some(proxy) = &settings.proxy else {
            return Ok(None);
        };
        let password = settings
            .proxy_password
            .as_ref()
            .map(|reference| {
                reference
                    .resolve()
                    .map(|resolved| resolved.value)
                    .map_err(|message| format!("egress.proxy_password: {message}"))
            })
            .transpose()?;
        Ok(Some(Self {
            proxy: proxy.clone(),
            username: settings.proxy_username.clone(),
            password,
            no_proxy: settings.no_proxy.clone(),
        }))
    }

    /// The proxy password, for the account's scrubber.
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// What identifies the client this egress needs. The password enters only as a digest, so
    /// the cache's keys hold no secret; a rotated password builds a new client.
    fn key(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.proxy.as_bytes());
        hasher.update([0]);
        hasher.update(self.username.as_deref().unwrap_or_default().as_bytes());
        hasher.update([0]);
        if let Some(password) = &self.password {
            hasher.update(password.expose().as_bytes());
        }
        hasher.update([0]);
        hasher.update(self.no_proxy.join(",").as_bytes());
        hex::encode(hasher.finalize())
    }

    fn build_client(&self) -> Result<reqwest::Client, String> {
        // reqwest's errors here can quote the proxy URL; only the fact is reported.
        let mut proxy = reqwest::Proxy::all(self.proxy.as_str())
            .map_err(|_| "egress.proxy cannot be used as a proxy URL".to_string())?;
        if let Some(username) = &self.username {
            let password = self.password.as_ref().map_or("", |secret| secret.expose());
            proxy = proxy.basic_auth(username, password);
        }
        proxy = proxy.no_proxy(reqwest::NoProxy::from_string(&self.no_proxy.join(",")));
        client_builder()
            .proxy(proxy)
            .build()
            .map_err(|_| "the HTTP client for egress.proxy cannot be built".to_string())
    }
}

/// Clients per distinct proxy setting. Connections are pooled per client, so accounts behind
/// the same proxy share one client; requests with no proxy use the gateway's shared client.
#[derive(Default)]
pub struct ClientCache {
    clients: Mutex<HashMap<String, reqwest::Client>>,
}

/// Past this many cached clients (rotated passwords, edited proxies), the cache starts over:
/// a client in use stays alive through its clones.
const MAX_CACHED_CLIENTS: usize = 64;

impl ClientCache {
    /// The client for `egress`, built once per distinct setting.
    pub fn client_for(&self, egress: &Egress) -> Result<reqwest::Client, String> {
        let key = egress.key();
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = egress.build_client()?;
        if clients.len() >= MAX_CACHED_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// How many proxy clients exist (for tests and metrics).
    pub fn len(&self) -> usize {
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sends `request` once, to `url` (its `url`, parsed).
pub async fn send_once(
    client: &reqwest::Client,
    url: url::Url,
    request: &HttpRequest,
    timeout: Duration,
    max_response_bytes: usize,
) -> Result<HttpResponse, TransportFailure> {
    let method = match request.method {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        Method::Delete => reqwest::Method::DELETE,
        Method::Patch => reqwest::Method::PATCH,
    };
    let mut builder = client.request(method, url).timeout(timeout);
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if !request.body.is_empty() {
        builder = builder.body(request.body.clone());
    }
    let mut response = builder.send().await.map_err(classify)?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    if response
        .content_length()
        .is_some_and(|length| length > max_response_bytes as u64)
    {
        return Err(TransportFailure::TooLarge {
            limit: max_response_bytes,
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > max_response_bytes {
            return Err(TransportFailure::TooLarge {
                limit: max_response_bytes,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn classify(error: reqwest::Error) -> TransportFailure {
    // reqwest's Display of an error can include the full URL; query strings may carry
    // credentials, so only the kind of failure is kept.
    let error = error.without_url();
    if error.is_builder() {
        TransportFailure::NotSent(format!("invalid request: {error}"))
    } else if error.is_connect() {
        TransportFailure::NotSent(format!("connection failed: {error}"))
    } else if error.is_timeout() {
        TransportFailure::NoAnswer("timed out".into())
    } else {
        TransportFailure::NoAnswer(error.to_string())
    }
}

/// `scheme://host:port/path` of a URL, without its query: what logs may show.
pub fn loggable_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => loggable(&parsed),
        Err(_) => "<invalid url>".into(),
    }
}

/// [`loggable_url`] of a parsed URL.
pub fn loggable(url: &url::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map_or_else(
            || url.path().to_string(),
            |port| format!(":{port}{}", url.path())
        )
    )
}

/// Whether `url` is on the same origin (scheme, host, port) as `base_url`: a plugin may only
/// send an account's credentials to that account's provider.
pub fn same_origin(url: &url::Url, base_url: &url::Url) -> bool {
    matches!(url.scheme(), "http" | "https")
        && url.scheme() == base_url.scheme()
        && url.host_str() == base_url.host_str()
        && url.port_or_known_default() == base_url.port_or_known_default()
}

/// [`same_origin`] of two URLs not parsed yet (false when either is not a URL).
pub fn same_origin_of(url: &str, base_url: &str) -> bool {
    match (url::Url::parse(url), url::Url::parse(base_url)) {
        (Ok(url), Ok(base_url)) => same_origin(&url, &base_url),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert!(same_origin_of(
            "http://127.0.0.1:9/api?x=1",
            "http://127.0.0.1:9"
        ));
        assert!(same_origin_of(
            "https://h.example/a",
            "https://h.example:443/base"
        ));
        assert!(!same_origin_of("http://evil.example/", "http://h.example"));
        assert!(!same_origin_of("http://h.example:81/", "http://h.example"));
        assert!(!same_origin_of("file:///etc/passwd", "http://h.example"));
        assert!(!same_origin_of("not a url", "http://h.example"));
    }

    #[test]
    fn logs_never_show_queries() {
        assert_eq!(
            loggable_url("http://127.0.0.1:9/stats/a.php?user=u&pass=abc"),
            "http://127.0.0.1:9/stats/a.php"
        );
    }
}
