//! `[store]`: where dcvd keeps its state (SQLite in `daemon.state_dir`, the default, or a
//! PostgreSQL database several instances share) and this instance's lease settings. Parsing only:
//! the store itself is `crate::store`; nothing here connects to a database.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::env::{Context, SecretKeys};
use super::error::{ConfigError, Source};
use super::raw::P;
use crate::store::PgSettings;

/// Default `lease_ttl`.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// The shortest `lease_ttl` (renewals must fit in it with room to spare).
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(3);

/// `[store]`, with its defaults when the section is absent.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The PostgreSQL database (`url`, password, `ca_file`); `None`: SQLite in `daemon.state_dir`.
    pub postgres: Option<PgSettings>,
    /// This instance's id, the owner of the leases it takes (default: the host name).
    pub instance: String,
    /// How long a claimed unit stays this instance's without a renewal.
    pub lease_ttl: Duration,
}

impl StoreSettings {
    /// One line for `check-config` and the start-up log (the URL holds no password).
    pub fn describe(&self, state_dir: &std::path::Path) -> String {
        let ttl = humantime::format_duration(self.lease_ttl);
        match &self.postgres {
            Some(pg) => format!(
                "postgresql {} (tls {}), instance {}, lease_ttl {ttl}",
                pg.url(),
                if pg.requires_tls() { "required" } else { "if offered" },
                self.instance
            ),
            None => format!("sqlite in {}, instance {}, lease_ttl {ttl}", state_dir.display(), self.instance),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    url: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    instance: Option<Spanned<String>>,
    lease_ttl: Option<Spanned<P<Duration>>>,
}

pub(super) fn parse(
    src: &Source<'_>,
    ctx: &Context<'_>,
    raw: Option<Spanned<RawStore>>,
    warnings: &mut Vec<String>,
) -> Result<StoreSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(StoreSettings {
            postgres: None,
            instance: crate::store::default_instance(),
            lease_ttl: DEFAULT_LEASE_TTL,
        });
    };
    let span = raw.span();
    let raw = raw.into_inner();
    let instance = match raw.instance {
        Some(name) => {
            let valid = !name.get_ref().is_empty()
                && name.get_ref().len() <= 64
                && name.get_ref().chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if !valid {
                return Err(src.error(
                    &name.span(),
                    "[store] `instance` must be 1 to 64 characters of letters, digits, '.', '-' and '_' \
                     (it names this dcvd in leases, logs and `dcvd status`)",
                ));
            }
            name.into_inner()
        }
        None => crate::store::default_instance(),
    };
    let lease_ttl = match raw.lease_ttl {
        Some(ttl) if ttl.get_ref().0 < MIN_LEASE_TTL => {
            return Err(src.error(&ttl.span(), "[store] `lease_ttl` must be at least 3s"));
        }
        Some(ttl) => ttl.into_inner().0,
        None => DEFAULT_LEASE_TTL,
    };
    let Some(url) = raw.url else {
        let stray = [&raw.password_file, &raw.password_env, &raw.ca_file].into_iter().flatten().next();
        if let Some(key) = stray {
            return Err(src.error(
                &key.span(),
                "[store] password and ca_file apply to a PostgreSQL `url`, which is not set (without it the \
                 state is SQLite in daemon.state_dir)",
            ));
        }
        return Ok(StoreSettings { postgres: None, instance, lease_ttl });
    };
    let password = if raw.password_file.is_some() || raw.password_env.is_some() {
        let keys = SecretKeys {
            file_key: "password_file",
            env_key: "password_env",
            file: raw.password_file.as_ref(),
            env: raw.password_env.as_ref(),
            section: &span,
            section_name: "[store]",
        };
        Some(ctx.secret(src, &keys, warnings)?.value)
    } else {
        None
    };
    let ca_file = match raw.ca_file {
        Some(file) => {
            let path = ctx.relative_path(file.get_ref());
            if let Err(e) = std::fs::metadata(&path) {
                return Err(src.error(&file.span(), format!("[store] ca_file {}: {e}", path.display())));
            }
            Some(path)
        }
        None => None,
    };
    let postgres = PgSettings::new(url.get_ref(), password, ca_file).map_err(|e| {
        // The message never repeats the URL: it may hold the password it complains about.
        let message = e.to_string();
        src.error(&url.span(), message.strip_prefix("state store: ").unwrap_or(&message))
    })?;
    Ok(StoreSettings { postgres: Some(postgres), instance, lease_ttl })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "[certcentral]\napi_key_env = \"DCVD_TEST_STORE_KEY\"\n";

    fn load(store: &str) -> Result<Config, String> {
        let env =
            crate::config::Environment::isolated().with_var("DCVD_TEST_STORE_KEY", "k").with_var("PGPASS_TEST", "pw");
        let text = format!("{BASE}\n{store}");
        Config::from_toml_with(&text, std::path::Path::new("/etc/dcvd/dcvd.toml"), &env).map_err(|e| e.to_string())
    }

    #[test]
    fn absent_section_is_sqlite_with_defaults() {
        let cfg = load("").unwrap();
        assert!(cfg.store.postgres.is_none());
        assert_eq!(cfg.store.lease_ttl, super::DEFAULT_LEASE_TTL);
        assert_eq!(cfg.store.instance, crate::store::default_instance());
    }

    #[test]
    fn postgres_url_with_password_from_env() {
        let cfg = load(
            "[store]\nurl = \"postgres://dcvd@db.example:5432/dcvd\"\npassword_env = \"PGPASS_TEST\"\n\
             instance = \"node-1\"\nlease_ttl = \"10s\"\n",
        )
        .unwrap();
        let pg = cfg.store.postgres.as_ref().unwrap();
        assert!(pg.requires_tls());
        assert_eq!(cfg.store.instance, "node-1");
        assert_eq!(cfg.store.lease_ttl, std::time::Duration::from_secs(10));
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("\"pw\""), "the password never shows: {debug}");
        let line = cfg.store.describe(&cfg.daemon.state_dir);
        assert_eq!(
            line,
            "postgresql postgres://dcvd@db.example:5432/dcvd (tls required), instance node-1, lease_ttl 10s"
        );
    }

    #[test]
    fn errors_name_the_place_and_never_the_password() {
        let err = load("[store]\nurl = \"postgres://dcvd:hunter2@db.example/dcvd\"\n").unwrap_err();
        assert!(err.starts_with("/etc/dcvd/dcvd.toml:5:7:"), "{err}");
        assert!(err.contains("password_file") && !err.contains("hunter2"), "{err}");
        let err = load("[store]\nurl = \"postgres://dcvd@db.example/dcvd?sslmode=disable\"\n").unwrap_err();
        assert!(err.contains("TLS is required"), "{err}");
        let err = load("[store]\nlease_ttl = \"1s\"\n").unwrap_err();
        assert!(err.contains(":5:13:") && err.contains("at least 3s"), "{err}");
        let err = load("[store]\npassword_env = \"PGPASS_TEST\"\n").unwrap_err();
        assert!(err.contains("`url`, which is not set"), "{err}");
        let err = load("[store]\ninstance = \"a b\"\n").unwrap_err();
        assert!(err.contains("`instance`"), "{err}");
        let err = load("[store]\nurl = \"postgres://dcvd@db.example/dcvd\"\npassword = \"x\"\n").unwrap_err();
        assert!(err.contains("password"), "unknown key refused: {err}");
    }
}
