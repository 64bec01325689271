//! Where nRF Cloud is and how patiently to talk to it.

use std::time::Duration;

use reqwest::Url;

use super::CloudError;

/// Production provisioning service (claims, dry runs).
pub const PROVISIONING_URL: &str = "https://api.provisioning.nrfcloud.com/v1/";
/// Production REST API (onboarding, bulk operations).
pub const API_URL: &str = "https://api.nrfcloud.com/v1/";

/// Connection and retry settings of a [`super::CloudClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudSettings {
    /// Provisioning service base URL, ending in `/`.
    pub provisioning_url: Url,
    /// REST API base URL, ending in `/`.
    pub api_url: Url,
    /// Whole-request deadline of one attempt (connect, send, answer, body).
    pub request_timeout: Duration,
    /// Deadline of the TCP + TLS connect of one attempt.
    pub connect_timeout: Duration,
    /// Attempts per call, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles after each retry.
    pub backoff_base: Duration,
    /// Cap of the doubling backoff.
    pub backoff_max: Duration,
    /// The longest `Retry-After` the client is willing to wait; a server that
    /// asks for longer ends the call as unreachable (never retried early).
    pub retry_after_max: Duration,
    /// Bytes read of one answer; longer answers are cut (errors) or refused
    /// (success bodies, as malformed).
    pub max_body: usize,
}

impl Default for CloudSettings {
    fn default() -> Self {
        Self::for_stage("prod").unwrap_or_else(|_| unreachable!("prod is a known stage"))
    }
}

impl CloudSettings {
    /// Settings for one of nRF Cloud's stages as Nordic's tools name them:
    /// `prod` (or empty), `beta`, `dev`, `feature`. Stages insert `.<stage>.`
    /// after `api.provisioning` and `api`.
    pub fn for_stage(stage: &str) -> Result<Self, CloudError> {
        let infix = match stage {
            "" | "prod" => ".".to_string(),
            "beta" | "dev" | "feature" => format!(".{stage}."),
            other => {
                return Err(CloudError::Config(format!(
                    "unknown nRF Cloud stage {other:?}: expected prod, beta, dev or feature"
                )));
            }
        };
        Self::with_urls(
            &format!("https://api.provisioning{infix}nrfcloud.com/v1/"),
            &format!("https://api{infix}nrfcloud.com/v1/"),
        )
    }

    /// Default timeouts and retries with other base URLs (a stand-in in
    /// tests, a proxy). A missing trailing `/` is added.
    pub fn with_urls(provisioning_url: &str, api_url: &str) -> Result<Self, CloudError> {
        Ok(Self {
            provisioning_url: Self::base_url("provisioning", provisioning_url)?,
            api_url: Self::base_url("API", api_url)?,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_attempts: 4,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(10),
            retry_after_max: Duration::from_secs(60),
            max_body: 1 << 20,
        })
    }

    /// Checks that hold for settings built field by field.
    pub(crate) fn check(&self) -> Result<(), CloudError> {
        for (what, url) in [
            ("provisioning", &self.provisioning_url),
            ("API", &self.api_url),
        ] {
            Self::base_url(what, url.as_str())?;
        }
        if self.max_attempts == 0 {
            return Err(CloudError::Config("max_attempts must be at least 1".into()));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(CloudError::Config(
                "timeouts must be longer than zero".into(),
            ));
        }
        Ok(())
    }

    /// Parse the `what` ("provisioning", "API") base URL: https (http
    /// only to this machine: the API key goes with every request), no
    /// credentials, no query, ending in `/` so that joining
    /// `claimed-devices` keeps the `/v1/` path.
    pub fn base_url(what: &str, text: &str) -> Result<Url, CloudError> {
        let bad =
            |problem: &str| CloudError::Config(format!("{what} base URL {text:?}: {problem}"));
        let mut url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(bad(
                    "plain http:// to another machine would send the API key in clear; use https:// \
                     (http:// is for this machine only: 127.0.0.0/8, ::1, localhost)",
                ));
            }
            _ => return Err(bad("must be https:// (or http:// to this machine)")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "must not carry credentials (the API key goes in a header)",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must not have a query or fragment"));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(url)
    }
}

fn is_loopback(url: &Url) -> bool {
    url.host_str().is_some_and(is_loopback_host)
}

/// Whether `host` (a name, or an address, IPv6 bracketed or not) is this
/// machine: `localhost`, 127.0.0.0/8 or ::1. Where a secret may go in clear.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_follow_nordics_tools() {
        let dev = CloudSettings::for_stage("dev").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            dev.provisioning_url.as_str(),
            "https://api.provisioning.dev.nrfcloud.com/v1/"
        );
        assert_eq!(dev.api_url.as_str(), "https://api.dev.nrfcloud.com/v1/");
        let prod = CloudSettings::default();
        assert_eq!(prod.provisioning_url.as_str(), PROVISIONING_URL);
        assert_eq!(prod.api_url.as_str(), API_URL);
        assert!(CloudSettings::for_stage("staging").is_err());
    }

    #[test]
    fn plain_http_is_for_this_machine_only() {
        for local in [
            "http://127.0.0.1:9/v1/",
            "http://127.1.2.3/v1/",
            "http://localhost:8080/v1/",
            "http://LOCALHOST/v1/",
            "http://[::1]:9/v1/",
            "https://api.nrfcloud.com/v1/",
        ] {
            assert!(CloudSettings::base_url("API", local).is_ok(), "{local}");
        }
        for remote in [
            "http://api.nrfcloud.com/v1/",
            "http://10.0.0.5/v1/",
            "http://[::2]/v1/",
            "http://localhost.example.com/v1/",
            "http://128.0.0.1/v1/",
        ] {
            let e = CloudSettings::base_url("API", remote).expect_err(remote);
            assert!(e.to_string().contains("API key in clear"), "{e}");
        }
    }

    #[test]
    fn base_urls_get_a_trailing_slash_and_refuse_credentials() {
        let s = CloudSettings::with_urls("http://127.0.0.1:9/p/v1", "http://127.0.0.1:9/a/v1/")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.provisioning_url.as_str(), "http://127.0.0.1:9/p/v1/");
        let e = CloudSettings::with_urls("https://user:pw@example.com/v1/", API_URL);
        assert!(e.is_err());
        assert!(CloudSettings::with_urls("ftp://example.com/", API_URL).is_err());
    }
}
