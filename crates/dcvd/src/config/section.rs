//! What a provider's home (`crate::providers::<type>`) gets from the configuration loader: one
//! `[providers.NAME]` section as a TOML table with its spans ([`Section`]), and the value types
//! and checks that turn it into settings with `file:line:col` errors.
//!
//! The loader keeps the envelope (the section's name, `type`, `zones` and `rate_limit`) and
//! never sees a provider's own keys; the provider's home never sees another section. Secrets
//! resolve through [`Section::secret`] (so `$CREDENTIALS_DIRECTORY`, `*_env` and the
//! file-mode warning work the same everywhere) and come back as [`Secret`], which compares by
//! value (reload reuse) and never prints it.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use toml::Spanned;
use toml::de::DeTable;

use super::env::{Context, SecretKeys};
pub(crate) use super::error::ConfigError;
use super::error::Source;
pub(crate) use super::names::normalize;
pub(crate) use super::raw::{
    ApiUrl, BaseUrl, FromConfigStr, HttpUrl, Lag, ListenAddr, P, ServerAddr, Zone, insecure_http_host, is_loopback,
    url_host,
};

/// A secret read from the configuration (`*_file` / `*_env`). Compares by value, so that a
/// reload keeps an adapter only when its secret is unchanged; `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a secret (tests, embedders).
    pub fn new(value: SecretString) -> Self {
        Self(value)
    }

    /// The secret for an adapter's settings.
    pub fn secret_string(&self) -> SecretString {
        self.0.clone()
    }
}

impl ExposeSecret<str> for Secret {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.expose_secret() == other.0.expose_secret()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// A secret as resolved: the value and where it came from (for errors about its content).
pub(crate) struct ResolvedSecret {
    /// The value.
    pub(crate) value: Secret,
    /// The key that named it (`api_key_file`, ...).
    pub(crate) key: &'static str,
    /// The span of that key's value.
    pub(crate) span: Range<usize>,
    /// `file "/path"` or `environment variable NAME` (never the value).
    pub(crate) origin: String,
}

/// A variable a provider passes to a child process, checked once every section is read.
pub(super) struct ForwardedEnv {
    pub(super) provider: String,
    pub(super) var: String,
    pub(super) span: Range<usize>,
}

/// One `[providers.NAME]` section, handed to its provider's `parse`.
pub(crate) struct Section<'a, 'i> {
    src: &'a Source<'a>,
    ctx: &'a Context<'a>,
    name: &'a str,
    span: Range<usize>,
    table: Option<Spanned<DeTable<'i>>>,
    zones: Vec<(String, Range<usize>)>,
    warnings: &'a mut Vec<String>,
    forwarded_env: &'a mut Vec<ForwardedEnv>,
}

impl<'a, 'i> Section<'a, 'i> {
    pub(super) fn new(
        src: &'a Source<'a>,
        ctx: &'a Context<'a>,
        name: &'a str,
        table: Spanned<DeTable<'i>>,
        warnings: &'a mut Vec<String>,
        forwarded_env: &'a mut Vec<ForwardedEnv>,
    ) -> Self {
        Self { src, ctx, name, span: table.span(), table: Some(table), zones: Vec::new(), warnings, forwarded_env }
    }

    /// The section's name (`NAME` of `[providers.NAME]`).
    pub(crate) fn name(&self) -> &str {
        self.name
    }

    /// `provider `NAME``, the subject of most messages.
    pub(crate) fn subject(&self) -> String {
        format!("provider `{}`", self.name)
    }

    /// The span of the whole section (for "needs a key" errors).
    pub(crate) fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// Deserializes the section into the provider's schema `T` (`deny_unknown_fields`; it must
    /// declare `type` and `zones` so unknown-key errors list them), then reads `zones`.
    /// Call once.
    pub(crate) fn schema<T: Deserialize<'i>>(&mut self) -> Result<T, ConfigError> {
        let table = self.table.take().expect("Section::schema is called once");
        let zones_value = table.get_ref().get("zones").cloned();
        let raw = T::deserialize(toml::de::Deserializer::from(table)).map_err(|e| self.src.toml_error(&e))?;
        if let Some(value) = zones_value {
            let zones = <Spanned<Vec<Spanned<P<Zone>>>>>::deserialize(toml::de::ValueDeserializer::from(value))
                .map_err(|e| self.src.toml_error(&e))?;
            if zones.get_ref().is_empty() {
                return Err(self.error(
                    &zones.span(),
                    format!(
                        "provider `{}` has an empty `zones` list: list the zones it serves, such as \
                         [\"example.com\"]",
                        self.name
                    ),
                ));
            }
            self.zones = zones.get_ref().iter().map(|z| (z.get_ref().0.0.clone(), z.span())).collect();
        }
        Ok(raw)
    }

    /// The zones of `zones`, normalized (after [`schema`](Self::schema)).
    pub(crate) fn zones(&self) -> Vec<String> {
        self.zones.iter().map(|(z, _)| z.clone()).collect()
    }

    pub(super) fn zone_spans(&self) -> &[(String, Range<usize>)] {
        &self.zones
    }

    /// An error at `span`.
    pub(crate) fn error(&self, span: &Range<usize>, message: impl Into<String>) -> ConfigError {
        self.src.error(span, message)
    }

    /// Reads a secret from `file_key` or `env_key` (exactly one must be set); `section_name`
    /// names the table in the "needs a secret" error (default: the provider).
    pub(crate) fn secret(
        &mut self,
        (file_key, file): (&'static str, Option<&Spanned<String>>),
        (env_key, env): (&'static str, Option<&Spanned<String>>),
        table: Option<(&Range<usize>, &str)>,
    ) -> Result<ResolvedSecret, ConfigError> {
        let subject = self.subject();
        let (section, section_name) = table.unwrap_or((&self.span, &subject));
        let resolved = self.ctx.secret(
            self.src,
            &SecretKeys { file_key, env_key, file, env, section, section_name },
            self.warnings,
        )?;
        Ok(ResolvedSecret {
            value: Secret(resolved.value),
            key: resolved.key,
            span: resolved.span,
            origin: resolved.origin,
        })
    }

    /// Reads a secret *document* (a JSON key file, whitespace inside allowed) from a file.
    pub(crate) fn secret_document(
        &mut self,
        key: &'static str,
        file: &Spanned<String>,
    ) -> Result<ResolvedSecret, ConfigError> {
        let resolved = self.ctx.secret_document(self.src, key, file, self.warnings)?;
        Ok(ResolvedSecret {
            value: Secret(resolved.value),
            key: resolved.key,
            span: resolved.span,
            origin: resolved.origin,
        })
    }

    /// An environment variable of the configuration's environment.
    pub(crate) fn env_var(&self, name: &str) -> Option<String> {
        self.ctx.env.var(name)
    }

    /// A path relative to the main file's directory.
    pub(crate) fn relative_path(&self, path: &str) -> PathBuf {
        self.ctx.relative_path(path)
    }

    /// Declares that the provider passes variable `var` (written at `span`) to a child process:
    /// refused, once every section is read, when a `*_env` key reads one of dcvd's secrets from it.
    pub(crate) fn forwards_env(&mut self, var: String, span: Range<usize>) {
        self.forwarded_env.push(ForwardedEnv { provider: self.name.to_owned(), var, span });
    }
}
