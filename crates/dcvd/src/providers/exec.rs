//! `type = "exec"`: a program of the operator's, run once per record and action. Its
//! `env_pass` variables are declared to the loader ([`Section::forwards_env`]), which refuses
//! any that holds one of dcvd's own secrets once every section is read.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dns_provider::SharedProvider;
use toml::Spanned;

use super::{BuildContext, ProviderSettings};
use crate::config::section::{ConfigError, P, Section};

/// Default timeout of one hook run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

super::section_schema! {
    /// The section as written.
    struct Raw {
        command: Spanned<Vec<String>>,
        timeout: Option<P<Duration>>,
        env_pass: Option<Vec<Spanned<String>>>,
    }
}

/// The settings of an exec provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// Program and arguments (non-empty).
    pub command: Vec<String>,
    /// Timeout of one run (default 60s).
    pub timeout: Duration,
    /// Variables of dcvd's environment passed to the hook besides `PATH`, `LANG`, `TZ` and
    /// `CREDENTIALS_DIRECTORY` (never one a `*_env` key names).
    pub env_pass: Vec<String>,
}

/// Checks one `env_pass` name: a variable name, and not one of the `DCVD_*` contract.
fn env_pass_name(section: &Section<'_, '_>, var: &Spanned<String>) -> Result<String, ConfigError> {
    let provider = section.name();
    let name = var.get_ref();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(section.error(
            &var.span(),
            format!(
                "provider `{provider}`: {name:?} in `env_pass` is not an environment variable name \
                 (letters, digits and '_', not starting with a digit)"
            ),
        ));
    }
    if name.starts_with("DCVD_") {
        return Err(section.error(
            &var.span(),
            format!("provider `{provider}`: `env_pass` cannot list {name}: dcvd sets the DCVD_* variables itself"),
        ));
    }
    Ok(name.clone())
}

/// Validates an `exec` section.
pub(crate) fn parse(section: &mut Section<'_, '_>) -> Result<Arc<dyn ProviderSettings>, ConfigError> {
    let raw: Raw = section.schema()?;
    if raw.command.get_ref().first().is_none_or(|p| p.trim().is_empty()) {
        return Err(section.error(
            &raw.command.span(),
            format!(
                "provider `{}`: `command` must list the program and its \
                 arguments, such as [\"/usr/local/libexec/dns-hook\"]",
                section.name()
            ),
        ));
    }
    let mut env_pass = Vec::new();
    for var in raw.env_pass.unwrap_or_default() {
        let var_name = env_pass_name(section, &var)?;
        if !env_pass.contains(&var_name) {
            section.forwards_env(var_name.clone(), var.span());
            env_pass.push(var_name);
        }
    }
    Ok(Arc::new(Exec {
        command: raw.command.into_inner(),
        timeout: raw.timeout.map_or(EXEC_TIMEOUT, |t| t.0),
        env_pass,
    }))
}

#[async_trait]
impl ProviderSettings for Exec {
    async fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<SharedProvider> {
        Ok(Arc::new(
            dns_provider::exec::ExecProvider::new(cx.zones.to_vec(), self.command.clone(), self.timeout)
                .with_env_pass(self.env_pass.clone()),
        ))
    }
}
