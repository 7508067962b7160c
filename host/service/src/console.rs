//! The operator's console: one HTML page, one stylesheet, one script, compiled into the binary
//! (`include_str!`) and served under `/console` beside the API. No framework, nothing fetched
//! at run time; the page calls the API with the key the operator signs in with, so it shows and
//! offers only what that key's scopes allow (`GET /v1/whoami`).
//!
//! Every answer carries a strict Content-Security-Policy (scripts, styles and requests from this
//! origin only; no inline script or style; no framing) and `X-Content-Type-Options: nosniff`.
//! The script builds the page with `textContent` only: provider text is untrusted.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// The policy every console answer carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The console's routes (`/console`, `/console/`, its script and stylesheet), to merge into the
/// API's router: the console calls the API at the same origin, under `/v1`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The assets change with the binary: revalidate rather than run a stale script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script never writes markup from data: no innerHTML, outerHTML, insertAdjacentHTML,
    /// document.write or eval anywhere in it, and the page has no inline script or style.
    #[test]
    fn the_console_writes_text_only_and_has_nothing_inline() {
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "localStorage",
        ] {
            assert!(
                !CONSOLE_JS.contains(forbidden),
                "console.js uses {forbidden}"
            );
        }
        assert!(!INDEX_HTML.contains("style="), "an inline style");
        assert!(!INDEX_HTML.contains("<style"), "an inline stylesheet");
        let scripts = INDEX_HTML.matches("<script").count();
        let external = INDEX_HTML
            .matches("<script src=\"/console/console.js\"")
            .count();
        assert_eq!((scripts, external), (1, 1), "one script, from this origin");
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"));
    }
}
