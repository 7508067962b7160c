//! Performing the requests plugins describe: one shared client, per-request timeouts, a cap on
//! answer size, and an honest account of whether a failed request may have reached the provider.

use std::time::Duration;

use gatehouse_plugin_api::{HttpRequest, HttpResponse, Method};

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

/// Builds the one HTTP client the host uses for every provider.
pub fn build_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Sends `request` once.
pub async fn send_once(
    client: &reqwest::Client,
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
    let mut builder = client.request(method, &request.url).timeout(timeout);
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
        Ok(parsed) => format!(
            "{}://{}{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or(""),
            parsed.port().map_or_else(
                || parsed.path().to_string(),
                |port| format!(":{port}{}", parsed.path())
            )
        ),
        Err(_) => "<invalid url>".into(),
    }
}

/// Whether `url` is on the same origin (scheme, host, port) as `base_url`: a plugin may only
/// send an account's credentials to that account's provider.
pub fn same_origin(url: &str, base_url: &str) -> bool {
    match (url::Url::parse(url), url::Url::parse(base_url)) {
        (Ok(url), Ok(base)) => {
            matches!(url.scheme(), "http" | "https")
                && url.scheme() == base.scheme()
                && url.host_str() == base.host_str()
                && url.port_or_known_default() == base.port_or_known_default()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert!(same_origin(
            "http://127.0.0.1:9/api?x=1",
            "http://127.0.0.1:9"
        ));
        assert!(same_origin(
            "https://h.example/a",
            "https://h.example:443/base"
        ));
        assert!(!same_origin("http://evil.example/", "http://h.example"));
        assert!(!same_origin("http://h.example:81/", "http://h.example"));
        assert!(!same_origin("file:///etc/passwd", "http://h.example"));
        assert!(!same_origin("not a url", "http://h.example"));
    }

    #[test]
    fn logs_never_show_queries() {
        assert_eq!(
            loggable_url("http://127.0.0.1:9/stats/a.php?user=u&pass=abc"),
            "http://127.0.0.1:9/stats/a.php"
        );
    }
}
