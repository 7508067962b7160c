//! Removing known secret values from text a plugin or a provider produced.
//!
//! Plugins are written never to echo a credential; this is the second line of defence, applied to
//! every error before it leaves the host (API answers, logs, the ledger).

use gatehouse_plugin_api::{Outcome, ProviderError};

/// Secrets shorter than this are not scrubbed: replacing every `1` or `ab` would destroy
/// messages, and such values are not credentials anyone should configure.
const MIN_SCRUBBED_LENGTH: usize = 4;

#[derive(Clone, Default)]
pub struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut scrubber = Self::default();
        scrubber.extend(secrets);
        scrubber
    }

    /// Adds more values to remove. A provider that echoes a request back shows the secret the
    /// way it was sent: raw, or form/percent-encoded. Each form is scrubbed.
    pub fn extend(&mut self, secrets: impl IntoIterator<Item = String>) {
        self.secrets.extend(
            secrets
                .into_iter()
                .filter(|secret| secret.len() >= MIN_SCRUBBED_LENGTH)
                .flat_map(|secret| {
                    let form = gatehouse_plugin_api::http::encode_form(&[("", &secret)])
                        .trim_start_matches('=')
                        .to_string();
                    let percent = form.replace('+', "%20");
                    [secret, form, percent]
                }),
        );
        self.secrets.sort();
        self.secrets.dedup();
        // Longest first, so a secret containing another is replaced whole.
        self.secrets
            .sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    }

    /// Adds the values of the headers a plugin marked sensitive that neither this scrubber nor
    /// `known` removes yet: a credential the plugin derived from the account's secrets
    /// (`Basic base64(id:key)`, a signature) is as good as the secret, and a provider or proxy
    /// that echoes headers would otherwise put it in an error.
    pub fn learn_sensitive_headers(
        &mut self,
        request: &gatehouse_plugin_api::HttpRequest,
        known: &Scrubber,
    ) {
        let values: Vec<String> = request
            .headers
            .iter()
            .filter(|(name, _)| {
                request
                    .sensitive_headers
                    .iter()
                    .any(|sensitive| sensitive.eq_ignore_ascii_case(name))
            })
            .flat_map(|(_, value)| {
                // `Scheme credential`: the credential alone is echoed too, often without its scheme.
                let credential = value
                    .split_once(' ')
                    .map(|(_, credential)| credential.trim().to_string());
                std::iter::once(value.clone()).chain(credential)
            })
            .filter(|value| !self.secrets.contains(value) && !known.secrets.contains(value))
            .collect();
        if !values.is_empty() {
            self.extend(values);
        }
    }

    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }

    pub fn error(&self, mut error: ProviderError) -> ProviderError {
        error.message = self.text(&error.message);
        error.provider_message = error.provider_message.map(|text| self.text(&text));
        error.provider_code = error.provider_code.map(|text| self.text(&text));
        error
    }

    pub fn outcome(&self, mut outcome: Outcome) -> Outcome {
        outcome.error = outcome.error.map(|error| self.error(error));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_known_secret() {
        let scrubber = Scrubber::new([
            "hunter22".to_string(),
            "tok".to_string(),
            "hunter22-long".to_string(),
        ]);
        assert_eq!(
            scrubber.text("bad hunter22-long and hunter22, tok"),
            "bad *** and ***, tok"
        );
    }

    #[test]
    fn replaces_sensitive_header_values_and_their_credentials() {
        let mut scrubber = Scrubber::default();
        let request = gatehouse_plugin_api::HttpRequest::get("http://127.0.0.1/x")
            .sensitive_header("Authorization", "Basic bWVyY2hhbnQ6YXBpLWtleS0x")
            .header("Accept", "application/json");
        scrubber.learn_sensitive_headers(&request, &Scrubber::new(["api-key-1".to_string()]));
        assert_eq!(
            scrubber.text("echo: Basic bWVyY2hhbnQ6YXBpLWtleS0x; alone bWVyY2hhbnQ6YXBpLWtleS0x; application/json"),
            "echo: ***; alone ***; application/json"
        );
    }

    #[test]
    fn replaces_encoded_forms_too() {
        let scrubber = Scrubber::new(["p&ss w=rd".to_string()]);
        assert_eq!(
            scrubber.text("password=p%26ss+w%3Drd&x=1"),
            "password=***&x=1"
        );
        assert_eq!(scrubber.text("p%26ss%20w%3Drd"), "***");
    }
}
