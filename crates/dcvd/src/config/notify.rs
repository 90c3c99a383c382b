//! `[notify]`: where dcvd reports units that reached a terminal state (an exec hook and/or a
//! webhook). Parsing only; delivery is `crate::notify`.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use toml::Spanned;

use super::env::{Context, SecretKeys};
use super::error::{ConfigError, Source};
use super::raw::{HttpUrl, P};

/// Default timeout of one delivery attempt.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Default attempts per event and sink.
const MAX_ATTEMPTS: u32 = 5;
/// Default capacity of the queue between the engine and the notifier.
const QUEUE: usize = 256;

/// `[notify]`: at least one of `command` and `webhook_url`.
#[derive(Debug, Clone)]
pub struct Notify {
    /// Hook program and arguments: the event as JSON on stdin and `DCVD_*` variables.
    pub command: Option<Vec<String>>,
    /// Variables of dcvd's environment passed to the hook besides `PATH`, `LANG`, `TZ` and
    /// `CREDENTIALS_DIRECTORY`.
    pub env_pass: Vec<String>,
    /// URL the event is POSTed to as JSON.
    pub webhook_url: Option<String>,
    /// Key of the `X-Dcvd-Signature-256: sha256=HEX` HMAC-SHA256 header over the body.
    pub webhook_secret: Option<SecretString>,
    /// Timeout of one attempt (hook run or HTTP request).
    pub timeout: Duration,
    /// Attempts per event and sink (>= 1), with exponential backoff in between.
    pub max_attempts: u32,
    /// First backoff (doubling, at most [`Notify::backoff_max`]).
    pub backoff_min: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Events that may wait for delivery; further events are dropped and counted.
    pub queue: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    command: Option<Spanned<Vec<String>>>,
    env_pass: Option<Vec<Spanned<String>>>,
    webhook_url: Option<P<HttpUrl>>,
    webhook_secret_file: Option<Spanned<String>>,
    webhook_secret_env: Option<Spanned<String>>,
    timeout: Option<P<Duration>>,
    max_attempts: Option<Spanned<u32>>,
    queue: Option<Spanned<usize>>,
}

pub(super) fn parse(
    src: &Source<'_>,
    ctx: &Context<'_>,
    raw: Option<Spanned<RawNotify>>,
    warnings: &mut Vec<String>,
) -> Result<Option<Notify>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let span = raw.span();
    let raw = raw.into_inner();
    if raw.command.is_none() && raw.webhook_url.is_none() {
        return Err(src.error(&span, "[notify] needs `command` (a hook) or `webhook_url` (or both)"));
    }
    if let Some(command) = &raw.command
        && command.get_ref().first().is_none_or(|p| p.trim().is_empty())
    {
        return Err(src.error(
            &command.span(),
            "[notify] `command` must list the program and its arguments, such as \
             [\"/usr/local/libexec/dcvd-notify\"]",
        ));
    }
    let webhook_secret = match (&raw.webhook_secret_file, &raw.webhook_secret_env) {
        (None, None) => None,
        (file, env) => {
            if raw.webhook_url.is_none() {
                let key = file.as_ref().or(env.as_ref()).map(Spanned::span).unwrap_or(span.clone());
                return Err(
                    src.error(&key, "[notify] a webhook secret without `webhook_url`: set the URL or drop the secret")
                );
            }
            let keys = SecretKeys {
                file_key: "webhook_secret_file",
                env_key: "webhook_secret_env",
                file: file.as_ref(),
                env: env.as_ref(),
                section: &span,
                section_name: "[notify]",
            };
            Some(ctx.secret(src, &keys, warnings)?.value)
        }
    };
    let max_attempts = match raw.max_attempts {
        Some(n) if *n.get_ref() == 0 => return Err(src.error(&n.span(), "`max_attempts` must be at least 1")),
        Some(n) => n.into_inner(),
        None => MAX_ATTEMPTS,
    };
    let queue = match raw.queue {
        Some(n) if *n.get_ref() == 0 => return Err(src.error(&n.span(), "`queue` must be at least 1")),
        Some(n) => n.into_inner(),
        None => QUEUE,
    };
    let mut env_pass = Vec::new();
    for var in raw.env_pass.unwrap_or_default() {
        let name = var.get_ref();
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid || name.starts_with("DCVD_") {
            return Err(src.error(
                &var.span(),
                format!("[notify] {name:?} in `env_pass` is not a variable the hook may be given (a name, not DCVD_*)"),
            ));
        }
        if let Some((_, key, at)) = ctx.secret_envs.borrow().iter().find(|(n, _, _)| n == name) {
            return Err(src.error(
                &var.span(),
                format!(
                    "[notify] `env_pass` lists {name}, which holds one of dcvd's secrets (`{key}` at {}): \
                     a hook never gets dcvd's own secrets",
                    src.location(at)
                ),
            ));
        }
        env_pass.push(name.clone());
    }
    Ok(Some(Notify {
        command: raw.command.map(Spanned::into_inner),
        env_pass,
        webhook_url: raw.webhook_url.map(|u| u.0.0),
        webhook_secret,
        timeout: raw.timeout.map_or(TIMEOUT, |t| t.0),
        max_attempts,
        backoff_min: Duration::from_secs(1),
        backoff_max: Duration::from_secs(300),
        queue,
    }))
}
