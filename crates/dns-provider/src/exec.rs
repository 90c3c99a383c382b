//! The `exec` adapter: runs an operator's hook command to present or clean up a record, for DNS
//! hosts dcvd has no adapter for.
//!
//! The command (argv, no shell) gets the record in its environment:
//! `DCVD_ACTION=present|cleanup`, `DCVD_ZONE`, `DCVD_NAME` (absolute, no trailing dot),
//! `DCVD_TYPE=TXT|CNAME`, `DCVD_VALUE` (TXT string unquoted, CNAME target without trailing dot),
//! `DCVD_TTL` (seconds). Nothing else of dcvd's environment reaches it but [`BASE_ENV`] and the
//! names of its allow-list ([`ExecProvider::with_env_pass`]): dcvd's own secrets (the DigiCert
//! key, AWS and Cloudflare credentials) must never leak into a script. Its exit status says what
//! happened:
//!
//! | exit | meaning | error |
//! |---|---|---|
//! | 0 | done (presenting an existing value and cleaning up an absent one must succeed too) | - |
//! | 65 (`EX_DATAERR`) | the record conflicts with existing data (a CNAME next to other records) | [`ProviderError::Conflict`] |
//! | 75 (`EX_TEMPFAIL`) | temporary failure: dcvd retries later | [`ProviderError::Transient`] |
//! | 77 (`EX_NOPERM`) | credentials refused | [`ProviderError::Auth`] |
//! | other | failure | [`ProviderError::Rejected`] |
//!
//! Errors carry the tail of the command's stderr (last 20 lines, at most 2 KiB). A command that
//! outlives `timeout` is killed with its whole process group (it runs in its own group, so a
//! shell script's children die with it). The hook cannot list records: [`DnsProvider::list`]
//! answers a clear [`ProviderError::Rejected`].

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;

use crate::{DnsProvider, ProviderError, Published, Record, RecordType, normalize_name};

const KIND: &str = "exec";

/// Lines and bytes of stderr kept in errors.
const TAIL_LINES: usize = 20;
const TAIL_BYTES: usize = 2048;

/// The variables of dcvd's environment every hook gets (when set), besides the `DCVD_*` contract.
pub const BASE_ENV: &[&str] = &["PATH", "LANG", "TZ", "CREDENTIALS_DIRECTORY"];

/// `PATH` of a hook when dcvd itself has none (the usual system directories).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `exec` provider.
#[derive(Debug, Clone)]
pub struct ExecProvider {
    zones: Vec<String>,
    command: Vec<String>,
    timeout: Duration,
    /// Names of dcvd's environment variables passed on besides [`BASE_ENV`].
    env_pass: Vec<String>,
}

fn config_err(message: impl Into<String>) -> ProviderError {
    ProviderError::Config { provider: KIND, message: message.into() }
}

/// The last [`TAIL_LINES`] lines of `bytes`, at most [`TAIL_BYTES`] bytes, on one line.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    let mut out = lines[lines.len().saturating_sub(TAIL_LINES)..].join(" | ");
    if out.len() > TAIL_BYTES {
        let mut cut = out.len() - TAIL_BYTES;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = format!("...{}", &out[cut..]);
    }
    out
}

impl ExecProvider {
    /// A provider serving `zones` through `command` (program and arguments), each run limited to
    /// `timeout`.
    pub fn new(zones: Vec<String>, command: Vec<String>, timeout: Duration) -> Self {
        Self { zones: zones.iter().map(|z| normalize_name(z)).collect(), command, timeout, env_pass: Vec::new() }
    }

    /// Also passes these variables of dcvd's environment to the hook (when set). The caller
    /// keeps dcvd's own secrets out of the list (the configuration refuses them).
    #[must_use]
    pub fn with_env_pass(mut self, names: Vec<String>) -> Self {
        self.env_pass = names;
        self
    }

    /// The part of dcvd's environment the hook inherits: [`BASE_ENV`] and `env_pass`, when set
    /// (`PATH` falls back to the system directories).
    fn inherited_env(&self) -> Vec<(String, std::ffi::OsString)> {
        let mut vars = Vec::new();
        for name in BASE_ENV.iter().copied().chain(self.env_pass.iter().map(String::as_str)) {
            if vars.iter().any(|(n, _)| n == name) {
                continue;
            }
            match std::env::var_os(name) {
                Some(value) => vars.push((name.to_owned(), value)),
                None if name == "PATH" => vars.push((name.to_owned(), DEFAULT_PATH.into())),
                None => {}
            }
        }
        vars
    }

    fn program(&self) -> Result<(&String, &[String]), ProviderError> {
        self.command
            .split_first()
            .filter(|(p, _)| !p.trim().is_empty())
            .ok_or_else(|| config_err("`command` is empty: set it to the hook program and its arguments"))
    }

    fn check_zone(&self, zone: &str, name: &str) -> Result<(String, String), ProviderError> {
        crate::check_owner(KIND, &self.zones, zone, name)
    }

    /// Runs the hook for `action` on `record`.
    async fn run(&self, action: &str, zone: &str, record: &Record) -> Result<(), ProviderError> {
        let (zone, name) = self.check_zone(zone, &record.name)?;
        let (program, args) = self.program()?;
        let value = match record.rtype {
            RecordType::Txt => record.value.clone(),
            RecordType::Cname => normalize_name(&record.value),
        };
        let what = format!("{program} {action} {name} {} {value:?}", record.rtype);
        let mut cmd = tokio::process::Command::new(program);
        // A minimal environment: dcvd's may hold the DigiCert key and cloud credentials.
        cmd.env_clear().envs(self.inherited_env());
        cmd.args(args)
            .env("DCVD_ACTION", action)
            .env("DCVD_ZONE", &zone)
            .env("DCVD_NAME", &name)
            .env("DCVD_TYPE", record.rtype.as_str())
            .env("DCVD_VALUE", &value)
            .env("DCVD_TTL", record.ttl.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // its own process group, so a timeout can kill the script's children too
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| config_err(format!("cannot run {program:?}: {e}: check `command` (path and permissions)")))?;
        let pid = child.id();
        tracing::debug!(command = %program, action, record = %record, "running exec hook");
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                return Err(ProviderError::Transient {
                    provider: KIND,
                    message: format!("{what}: waiting for it failed: {e}"),
                });
            }
            Err(_) => {
                // The dropped future killed the child (kill_on_drop); this gets its descendants.
                if let Some(pid) = pid {
                    kill_group(pid).await;
                }
                return Err(ProviderError::Transient {
                    provider: KIND,
                    message: format!("{what} did not finish within {:?} and was killed", self.timeout),
                });
            }
        };
        if output.status.success() {
            return Ok(());
        }
        let stderr = tail(&output.stderr);
        let stderr = if stderr.is_empty() { tail(&output.stdout) } else { stderr };
        Err(exit_error(&what, output.status, &stderr))
    }
}

fn exit_error(what: &str, status: ExitStatus, stderr: &str) -> ProviderError {
    let code = status.code();
    let status_text = match code {
        Some(c) => format!("exit status {c}"),
        None => "a signal".to_string(),
    };
    let detail = if stderr.is_empty() { String::from(" (no output)") } else { format!(": {stderr}") };
    let message = format!("{what} failed with {status_text}{detail}");
    match code {
        Some(65) => ProviderError::Conflict { provider: KIND, message },
        Some(75) => ProviderError::Transient { provider: KIND, message },
        Some(77) => ProviderError::Auth { provider: KIND, message },
        _ => ProviderError::Rejected { provider: KIND, code: Some(status_text), message },
    }
}

/// SIGKILL to the process group `pgid` (best effort: `kill(1)`, since this crate has no unsafe
/// code to call kill(2) directly).
async fn kill_group(pgid: u32) {
    let result = tokio::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if let Err(error) = result {
        tracing::warn!(%error, pgid, "could not kill the exec hook's process group");
    }
}

/// Where `program` would be found: itself when it has a slash, else the first match in `PATH`.
fn resolve(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[async_trait]
impl DnsProvider for ExecProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn zones(&self) -> &[String] {
        &self.zones
    }

    async fn publish(&self, zone: &str, record: &Record) -> Result<Published, ProviderError> {
        self.run("present", zone, record).await.map(|()| Published::default())
    }

    async fn remove(&self, zone: &str, record: &Record) -> Result<(), ProviderError> {
        self.run("cleanup", zone, record).await
    }

    /// Checks that the command exists and is executable (it is not run: it has no dry-run mode).
    async fn preflight(&self) -> Result<(), ProviderError> {
        let (program, _) = self.program()?;
        match resolve(program) {
            Some(path) if is_executable(&path) => Ok(()),
            Some(path) if path.exists() => {
                Err(config_err(format!("{} is not an executable file: check `command` and its mode", path.display())))
            }
            _ => Err(config_err(format!("command {program:?} not found: check `command` (absolute path, or in PATH)"))),
        }
    }

    async fn list(&self, _zone: &str, _name: &str, _rtype: RecordType) -> Result<Vec<String>, ProviderError> {
        Err(ProviderError::Rejected {
            provider: KIND,
            code: None,
            message: "listing records is not supported: the hook command can only present and clean up; \
                      check the records over DNS instead"
                .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tail keeps the last 20 non-empty lines and at most 2 KiB.
    #[test]
    fn stderr_tail() {
        let text: String = (1..=100).map(|i| format!("line {i}\n\n")).collect();
        let t = tail(text.as_bytes());
        assert!(t.starts_with("line 81 | ") && t.ends_with("line 100"), "{t}");
        let long = format!("{}\n", "é".repeat(3000));
        let t = tail(long.as_bytes());
        assert!(t.starts_with("...") && t.len() <= TAIL_BYTES + 4, "{}", t.len());
        assert_eq!(tail(b""), "");
    }

    /// Exit codes map to error kinds.
    #[test]
    fn exit_codes() {
        use std::os::unix::process::ExitStatusExt as _;
        let st = |c: i32| ExitStatus::from_raw(c << 8);
        assert!(matches!(exit_error("x", st(65), ""), ProviderError::Conflict { .. }));
        assert!(exit_error("x", st(75), "").is_retryable());
        assert!(matches!(exit_error("x", st(77), ""), ProviderError::Auth { .. }));
        let e = exit_error("hook present", st(2), "boom");
        assert_eq!(e.to_string(), "exec: hook present failed with exit status 2: boom");
        assert!(!e.is_retryable());
        assert_eq!(
            exit_error("x", ExitStatus::from_raw(9), "").to_string(),
            "exec: x failed with a signal (no output)"
        );
    }

    /// An empty command is a Config error, at preflight and at use.
    #[tokio::test]
    async fn empty_command() {
        let p = ExecProvider::new(vec!["example.io".into()], vec![], Duration::from_secs(1));
        assert!(matches!(p.preflight().await, Err(ProviderError::Config { .. })));
        let err = p.publish("example.io", &Record::txt("_dnsauth.example.io", "v")).await.unwrap_err();
        assert!(err.to_string().starts_with("exec: `command` is empty"), "{err}");
    }
}
