//! The process environment the configuration reads (secrets, systemd directories), and secret
//! resolution from `*_file` / `*_env` keys.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use toml::Spanned;

use super::error::{ConfigError, Source};

/// Where the configuration reads environment variables from: `*_env` secrets,
/// `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`) and `$STATE_DIRECTORY`.
///
/// [`Environment::process`] reads the real process environment; tests and embedders build an
/// isolated one with [`Environment::isolated`] + [`Environment::with_var`], so parallel tests
/// need not mutate the process environment. `Debug` shows variable names, never values.
#[derive(Clone)]
pub struct Environment {
    overrides: BTreeMap<String, String>,
    inherit: bool,
    /// Read only the DNS providers' secrets (`dcvd cleanup`): the CertCentral key and the
    /// `[notify]` secret are checked for presence in the file but not read.
    provider_secrets_only: bool,
}

impl Environment {
    /// The process environment (plus any [`with_var`](Self::with_var) overrides).
    pub fn process() -> Self {
        Self { overrides: BTreeMap::new(), inherit: true, provider_secrets_only: false }
    }

    /// An empty environment: only variables added with [`with_var`](Self::with_var) exist.
    pub fn isolated() -> Self {
        Self { overrides: BTreeMap::new(), inherit: false, provider_secrets_only: false }
    }

    /// Reads only the DNS providers' secrets: a command that never calls CertCentral or a
    /// notification sink (`dcvd cleanup`) must work where only the DNS credentials are at hand.
    /// The other secrets get a placeholder value that is never sent anywhere.
    #[must_use]
    pub fn provider_secrets_only(mut self) -> Self {
        self.provider_secrets_only = true;
        self
    }

    /// Sets a variable (overriding the process environment, if inherited).
    #[must_use]
    pub fn with_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.overrides.insert(name.into(), value.into());
        self
    }

    /// Sets `$CREDENTIALS_DIRECTORY`, the directory relative `*_file` secrets are read from.
    #[must_use]
    pub fn with_credentials_dir(self, dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref().to_string_lossy().into_owned();
        self.with_var("CREDENTIALS_DIRECTORY", dir)
    }

    /// The value of a variable; `None` when unset or not valid UTF-8.
    pub fn var(&self, name: &str) -> Option<String> {
        match self.overrides.get(name) {
            Some(value) => Some(value.clone()),
            None if self.inherit => std::env::var(name).ok(),
            None => None,
        }
    }

    /// A non-empty `$CREDENTIALS_DIRECTORY`.
    pub fn credentials_dir(&self) -> Option<PathBuf> {
        self.var("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()).map(PathBuf::from)
    }

    /// The first entry of a non-empty `$STATE_DIRECTORY` (systemd may list several, `:`-separated).
    pub fn state_dir(&self) -> Option<PathBuf> {
        let value = self.var("STATE_DIRECTORY")?;
        let first = value.split(':').next().unwrap_or_default();
        (!first.is_empty()).then(|| PathBuf::from(first))
    }
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets (`*_env`): show names only.
        f.debug_struct("Environment")
            .field("overrides", &self.overrides.keys().collect::<Vec<_>>())
            .field("inherit", &self.inherit)
            .field("provider_secrets_only", &self.provider_secrets_only)
            .finish()
    }
}

/// The `*_file` / `*_env` pair of one secret, as written in a section.
pub(super) struct SecretKeys<'a> {
    /// Key names, e.g. `api_key_file` and `api_key_env`.
    pub(super) file_key: &'static str,
    pub(super) env_key: &'static str,
    pub(super) file: Option<&'a Spanned<String>>,
    pub(super) env: Option<&'a Spanned<String>>,
    /// The section, for "missing" errors.
    pub(super) section: &'a Range<usize>,
    pub(super) section_name: &'a str,
}

/// Where a secret came from, for checks that must name it without showing it.
pub(super) struct ResolvedSecret {
    pub(super) value: SecretString,
    /// The key that held it (`*_file` or `*_env`) and its span.
    pub(super) key: &'static str,
    pub(super) span: Range<usize>,
    /// `file "/path"` or `environment variable NAME`.
    pub(super) origin: String,
}

/// Context shared by everything that resolves paths and secrets of one main file.
pub(super) struct Context<'a> {
    pub(super) env: &'a Environment,
    /// Relative paths without a better anchor are relative to this directory (the main
    /// configuration file's directory; empty = the current directory).
    pub(super) base_dir: &'a Path,
    /// Every variable a `*_env` key read a secret from: `(variable, key, span)`, so that exec
    /// hooks can be refused them whatever the order of the sections.
    pub(super) secret_envs: RefCell<Vec<(String, &'static str, Range<usize>)>>,
}

impl<'a> Context<'a> {
    pub(super) fn new(env: &'a Environment, base_dir: &'a Path) -> Self {
        Self { env, base_dir, secret_envs: RefCell::default() }
    }

    pub(super) fn relative_path(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }

    /// Reads a secret from `*_file` or `*_env` (exactly one must be given).
    pub(super) fn secret(
        &self,
        src: &Source<'_>,
        keys: &SecretKeys<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<ResolvedSecret, ConfigError> {
        let (file_key, env_key) = (keys.file_key, keys.env_key);
        match (keys.file, keys.env) {
            (Some(_), Some(env)) => {
                Err(src.error(&env.span(), format!("give either `{file_key}` or `{env_key}`, not both")))
            }
            (None, None) => Err(src.error(
                keys.section,
                format!(
                    "{} needs a secret: set `{file_key}` (a file; relative paths are read from \
                     $CREDENTIALS_DIRECTORY) or `{env_key}` (an environment variable)",
                    keys.section_name
                ),
            )),
            (Some(file), None) if self.skips(keys.section_name) => Ok(not_loaded(file_key, file)),
            (None, Some(env)) if self.skips(keys.section_name) => {
                // Still recorded: exec hooks are refused this variable whatever the command.
                self.secret_envs.borrow_mut().push((env.get_ref().trim().to_owned(), env_key, env.span()));
                Ok(not_loaded(env_key, env))
            }
            (Some(file), None) => self.secret_file(src, file_key, file, warnings),
            (None, Some(env)) => self.secret_env(src, env_key, env),
        }
    }

    /// Whether the secret of this section is left unread ([`Environment::provider_secrets_only`]):
    /// `[certcentral]` and `[notify]` are the sections that are not a DNS provider's.
    fn skips(&self, section_name: &str) -> bool {
        self.env.provider_secrets_only && matches!(section_name, "[certcentral]" | "[notify]")
    }

    fn secret_file(
        &self,
        src: &Source<'_>,
        key: &'static str,
        file: &Spanned<String>,
        warnings: &mut Vec<String>,
    ) -> Result<ResolvedSecret, ConfigError> {
        self.read_secret_file(src, key, file, warnings, true)
    }

    /// Reads a secret *document* from a file (a JSON key file, which has whitespace inside):
    /// the same path rules and mode warning as [`secret`](Self::secret), only emptiness refused.
    pub(super) fn secret_document(
        &self,
        src: &Source<'_>,
        key: &'static str,
        file: &Spanned<String>,
        warnings: &mut Vec<String>,
    ) -> Result<ResolvedSecret, ConfigError> {
        self.read_secret_file(src, key, file, warnings, false)
    }

    fn read_secret_file(
        &self,
        src: &Source<'_>,
        key: &'static str,
        file: &Spanned<String>,
        warnings: &mut Vec<String>,
        single_token: bool,
    ) -> Result<ResolvedSecret, ConfigError> {
        let span = file.span();
        let written = file.get_ref();
        if written.trim().is_empty() {
            return Err(src.error(&span, format!("`{key}` must name a file")));
        }
        let relative = Path::new(written);
        let path = if relative.is_absolute() {
            relative.to_path_buf()
        } else if let Some(dir) = self.env.credentials_dir() {
            dir.join(relative)
        } else {
            self.base_dir.join(relative)
        };
        let origin = format!("file {:?}", path.display().to_string());
        let text = std::fs::read_to_string(&path)
            .map_err(|e| src.error(&span, format!("cannot read `{key}` {origin}: {e}")))?;
        check_secret_file_mode(&path, |mode| {
            warnings.push(src.warning(
                &span,
                format_args!(
                    "secret {origin} is readable by group or others (mode {mode:04o}): \
                     restrict it with `chmod 600` or use systemd LoadCredential="
                ),
            ));
        });
        let value = if single_token {
            clean_secret(&text).map_err(|problem| src.error(&span, problem.message(key, &origin)))?
        } else if text.trim().is_empty() {
            return Err(src.error(&span, SecretProblem::Empty.message(key, &origin)));
        } else {
            text.as_str()
        };
        Ok(ResolvedSecret { value: SecretString::from(value), key, span, origin })
    }

    fn secret_env(
        &self,
        src: &Source<'_>,
        key: &'static str,
        env: &Spanned<String>,
    ) -> Result<ResolvedSecret, ConfigError> {
        let span = env.span();
        let name = env.get_ref().trim();
        if name.is_empty() {
            return Err(src.error(&span, format!("`{key}` must name an environment variable")));
        }
        self.secret_envs.borrow_mut().push((name.to_owned(), key, span.clone()));
        let origin = format!("environment variable {name}");
        let value =
            self.env.var(name).ok_or_else(|| src.error(&span, format!("{origin} (from `{key}`) is not set")))?;
        let value = clean_secret(&value).map_err(|problem| src.error(&span, problem.message(key, &origin)))?;
        Ok(ResolvedSecret { value: SecretString::from(value), key, span, origin })
    }
}

/// The placeholder of a secret left unread: never sent (the command does not use that secret).
fn not_loaded(key: &'static str, at: &Spanned<String>) -> ResolvedSecret {
    ResolvedSecret {
        value: SecretString::from("not-loaded"),
        key,
        span: at.span(),
        origin: "(not loaded by this command)".to_owned(),
    }
}

/// Why a secret's text is refused (never quoting it).
#[derive(Debug, PartialEq, Eq)]
enum SecretProblem {
    Empty,
    /// Whitespace or control characters before or after the value.
    Around,
    /// Whitespace or control characters inside the value (two lines, a pasted "Bearer x").
    Inside,
}

impl SecretProblem {
    fn message(&self, key: &str, origin: &str) -> String {
        let (subject, tail) = if origin.starts_with("file") {
            (format!("`{key}` {origin}"), "store the secret alone, optionally followed by one newline")
        } else {
            (format!("{origin} (from `{key}`)"), "set it to the secret alone")
        };
        match self {
            Self::Empty => format!("{subject} is empty"),
            Self::Around => format!(
                "{subject} has whitespace (spaces, tabs or extra line breaks) around the secret, which \
                 API keys, tokens and TSIG secrets never contain: {tail}"
            ),
            Self::Inside => format!(
                "{subject} has whitespace or a line break inside the secret, which API keys, tokens and \
                 TSIG secrets never contain (two secrets, or a secret with a label?): {tail}"
            ),
        }
    }
}

/// The secret in `text`: one trailing newline (`\n` or `\r\n`, as editors and `echo` write
/// files) is dropped; any other whitespace or control character is refused rather than silently
/// trimmed or sent, since the HTTP header or TSIG key would then fail only at start-up or at the
/// first request.
fn clean_secret(text: &str) -> Result<&str, SecretProblem> {
    let value = text.strip_suffix('\n').map_or(text, |t| t.strip_suffix('\r').unwrap_or(t));
    let bad = |c: char| c.is_whitespace() || c.is_control();
    if value.trim_matches(bad).is_empty() {
        Err(SecretProblem::Empty)
    } else if value.trim_matches(bad).len() != value.len() {
        Err(SecretProblem::Around)
    } else if value.contains(bad) {
        Err(SecretProblem::Inside)
    } else {
        Ok(value)
    }
}

/// Calls `warn` with the permission bits when a secret file is readable by group or others.
#[cfg(unix)]
fn check_secret_file_mode(path: &Path, warn: impl FnOnce(u32)) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o044 != 0 {
            warn(mode);
        }
    }
}

#[cfg(not(unix))]
fn check_secret_file_mode(_path: &Path, _warn: impl FnOnce(u32)) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_text_keeps_one_trailing_newline_out_and_refuses_other_whitespace() {
        assert_eq!(clean_secret("k3y\n"), Ok("k3y"));
        assert_eq!(clean_secret("k3y\r\n"), Ok("k3y"));
        assert_eq!(clean_secret("k3y"), Ok("k3y"));
        assert_eq!(clean_secret(""), Err(SecretProblem::Empty));
        assert_eq!(clean_secret(" \n"), Err(SecretProblem::Empty));
        assert_eq!(clean_secret("k3y\n\n"), Err(SecretProblem::Around));
        assert_eq!(clean_secret(" k3y\n"), Err(SecretProblem::Around));
        assert_eq!(clean_secret("k3y \n"), Err(SecretProblem::Around));
        assert_eq!(clean_secret("k3y\nother\n"), Err(SecretProblem::Inside));
        assert_eq!(clean_secret("Bearer k3y"), Err(SecretProblem::Inside));
        assert_eq!(clean_secret("k3y\u{7f}x"), Err(SecretProblem::Inside));
    }

    #[test]
    fn isolated_environment_sees_only_its_variables() {
        let env = Environment::isolated().with_var("A", "1");
        assert_eq!(env.var("A").as_deref(), Some("1"));
        assert_eq!(env.var("PATH"), None);
    }

    #[test]
    fn state_directory_takes_the_first_entry() {
        let env = Environment::isolated().with_var("STATE_DIRECTORY", "/var/lib/a:/var/lib/b");
        assert_eq!(env.state_dir(), Some(PathBuf::from("/var/lib/a")));
        let empty = Environment::isolated().with_var("STATE_DIRECTORY", "");
        assert_eq!(empty.state_dir(), None);
    }

    #[test]
    fn debug_shows_names_not_values() {
        let env = Environment::isolated().with_var("DIGICERT_API_KEY", "s3cr3t-value");
        let debug = format!("{env:?}");
        assert!(debug.contains("DIGICERT_API_KEY"), "{debug}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }
}
