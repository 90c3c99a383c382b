//! Client configuration: base URL rules, defaults, invalid settings, redacted Debug output.

mod common;

use std::time::Duration;

use certcentral::{Client, ClientConfig, Error, RateWindow, RetryPolicy, SecretString};
use common::KEY;

fn config_for(url: &str, allow_insecure_http: bool) -> ClientConfig {
    let mut config = ClientConfig::new(url, SecretString::from(KEY));
    config.allow_insecure_http = allow_insecure_http;
    config
}

fn config_error(config: ClientConfig) -> String {
    match Client::new(config) {
        Err(Error::Config { message }) => message,
        Err(other) => panic!("expected Error::Config, got {other:?}"),
        Ok(client) => panic!("expected Error::Config, got a client {client:?}"),
    }
}

/// The defaults are DigiCert's US instance, 30 s, 100/5 s + 1000/3 min and 5 attempts.
#[test]
fn defaults() {
    let config = ClientConfig::new(ClientConfig::US_BASE_URL, SecretString::from(KEY));
    assert_eq!(config.base_url, "https://www.digicert.com/services/v2");
    assert_eq!(config.timeout, Duration::from_secs(30));
    assert_eq!(
        config.rate_limits,
        vec![RateWindow::new(100, Duration::from_secs(5)), RateWindow::new(1000, Duration::from_secs(300))]
    );
    assert_eq!(config.retry, RetryPolicy::default());
    assert_eq!(config.retry.max_attempts, 5);
    assert!(!config.allow_insecure_http);
}

/// https URLs (US, EU, with a trailing slash) are accepted; the slash is dropped.
#[test]
fn https_urls_accepted() {
    let eu = Client::new(config_for(ClientConfig::EU_BASE_URL, false)).unwrap();
    assert_eq!(eu.base_url(), "https://certcentral.digicert.eu/services/v2");
    let us = Client::new(config_for("https://www.digicert.com/services/v2/", false)).unwrap();
    assert_eq!(us.base_url(), "https://www.digicert.com/services/v2");
}

/// Plain http is refused unless allowed, and even then only to loopback hosts.
#[test]
fn plain_http_rules() {
    let message = config_error(config_for("http://127.0.0.1:8080/services/v2", false));
    assert!(message.contains("plain http") && message.contains("allow_insecure_http"), "{message}");

    for loopback in [
        "http://127.0.0.1:8080/services/v2",
        "http://127.10.20.30:1/services/v2",
        "http://localhost:8080",
        "http://[::1]:8080/services/v2",
    ] {
        Client::new(config_for(loopback, true)).unwrap_or_else(|e| panic!("{loopback}: {e}"));
    }
    for remote in [
        "http://www.digicert.com/services/v2",
        "http://10.0.0.1/services/v2",
        "http://[2001:db8::1]/services/v2",
        "http://localhost.example.com/services/v2",
    ] {
        let message = config_error(config_for(remote, true));
        assert!(message.contains("loopback"), "{remote}: {message}");
    }
}

/// Other schemes, garbage, credentials in the URL and queries are refused with clear messages.
#[test]
fn malformed_urls_refused() {
    assert!(config_error(config_for("ftp://www.digicert.com/services/v2", true)).contains("scheme"));
    assert!(config_error(config_for("www.digicert.com/services/v2", false)).contains("not a valid URL"));
    let creds = config_error(config_for("https://user:hunter2@www.digicert.com/services/v2", false));
    assert!(creds.contains("credentials") && !creds.contains("hunter2"), "{creds}");
    assert!(config_error(config_for("https://www.digicert.com/services/v2?x=1", false)).contains("query"));
}

/// Empty keys, zero timeouts, zero attempts and empty windows are refused.
#[test]
fn invalid_settings_refused() {
    let empty = ClientConfig::new(ClientConfig::US_BASE_URL, SecretString::from("  \n"));
    assert!(config_error(empty).contains("api_key is empty"));

    let newline = ClientConfig::new(ClientConfig::US_BASE_URL, SecretString::from("abc\ndef"));
    let message = config_error(newline);
    assert!(message.contains("api_key") && !message.contains("abc"), "{message}");

    let mut zero_timeout = config_for(ClientConfig::US_BASE_URL, false);
    zero_timeout.timeout = Duration::ZERO;
    assert!(config_error(zero_timeout).contains("timeout"));

    let mut zero_attempts = config_for(ClientConfig::US_BASE_URL, false);
    zero_attempts.retry.max_attempts = 0;
    assert!(config_error(zero_attempts).contains("max_attempts"));

    let mut zero_window = config_for(ClientConfig::US_BASE_URL, false);
    zero_window.rate_limits = vec![RateWindow::new(0, Duration::from_secs(5))];
    assert!(config_error(zero_window).contains("rate limit window"));
}

/// A key file's trailing newline is tolerated.
#[test]
fn key_with_trailing_newline_accepted() {
    Client::new(ClientConfig::new(ClientConfig::US_BASE_URL, SecretString::from(format!("{KEY}\n")))).unwrap();
}

/// Debug output of the config and the client shows `[redacted]`, never the key.
#[test]
fn debug_output_is_redacted() {
    let config = config_for(ClientConfig::US_BASE_URL, false);
    let shown = format!("{config:?} {config:#?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("[redacted]"));
    let client = Client::new(config).unwrap();
    let shown = format!("{client:?} {client:#?} {:?}", client.clone());
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("[redacted]") && shown.contains("www.digicert.com"));
}

/// Endpoint labels are stable snake_case strings, one per endpoint.
#[test]
fn endpoint_labels() {
    let labels: Vec<&str> = certcentral::Endpoint::ALL.iter().map(|e| e.as_str()).collect();
    assert_eq!(
        labels,
        [
            "dcv_random_value",
            "check_dcv",
            "order_info",
            "order_validation",
            "change_dcv_method",
            "submit_validation",
            "generate_domain_token",
            "validate_domain_token",
            "domain_info",
            "list_orders",
            "list_domains"
        ]
    );
    assert_eq!(certcentral::Endpoint::CheckDcv.to_string(), "check_dcv");
}
