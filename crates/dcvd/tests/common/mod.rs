//! Shared harness of the tests that run the real `dcvd` binary: an in-process CertCentral
//! simulator, a temporary directory with the config and the API key file, and helpers to run
//! dcvd and collect its whole output.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use certcentral_sim::{RunningSim, Sim, SimConfig};

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub sim: RunningSim,
    pub api_key: String,
    pub dns_port: u16,
}

impl Harness {
    /// A simulator whose DNS checks ask `dns` (defaults to dcvd's memory name servers).
    pub async fn start(dns: Option<Vec<SocketAddr>>) -> Self {
        let dns_port = test_support::ports::free_port_on(&["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()]);
        let dns = dns.unwrap_or_else(|| {
            vec![format!("127.0.0.1:{dns_port}").parse().unwrap(), format!("127.0.0.2:{dns_port}").parse().unwrap()]
        });
        let api_key = format!("test-key-{:016x}", rand::random::<u64>());
        let sim = Sim::new(SimConfig { api_key: api_key.clone(), dns_servers: dns, seed: 1, ..SimConfig::default() });
        let sim = sim.spawn("127.0.0.1:0".parse().unwrap()).await.expect("start simulator");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("api-key"), &api_key).unwrap();
        set_mode(&dir.path().join("api-key"), 0o600);
        Self { dir, sim, api_key, dns_port }
    }

    pub fn sim(&self) -> &Sim {
        self.sim.sim()
    }

    /// `[certcentral]`, `[daemon]`, `[propagation]` and `[check]` for this harness, followed by
    /// `rest` (providers and units). `dns_port` is where propagation looks.
    pub fn config(&self, dns_port: u16, rest: &str) -> String {
        format!(
            r#"[certcentral]
base_url = "{base}"
api_key_file = "{key}"

[daemon]
state_dir = "{state}"
log_format = "text"

[propagation]
resolvers = ["127.0.0.1:{dns_port}"]
nameserver_port = {dns_port}
poll_min = "50ms"
poll_max = "500ms"
timeout = "60s"

[check]
min_interval = "200ms"
max_interval = "2s"

{rest}
"#,
            base = self.sim.base_url,
            key = self.dir.path().join("api-key").display(),
            state = self.dir.path().join("state").display(),
        )
    }

    /// The memory provider serving `zones` from two name servers of this harness.
    pub fn memory_provider(&self, zones: &[&str], lag_ms: u64) -> String {
        format!(
            "[providers.mem]\ntype = \"memory\"\nzones = {zones:?}\nlisten = [\"127.0.0.1:{p}\", \"127.0.0.2:{p}\"]\nlag = \"{lag_ms}ms\"\n",
            p = self.dns_port
        )
    }

    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("dcvd.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dcvd"));
        // dcvd's default log filter, as an operator gets it.
        cmd.args(args).env_remove("RUST_LOG").env_remove("JOURNAL_STREAM").env_remove("CREDENTIALS_DIRECTORY");
        cmd
    }

    /// Runs `dcvd once` to the end (bounded) and returns its output.
    pub fn once(&self, config: &Path) -> Output {
        let child = self
            .command(&["once", "--config", config.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dcvd");
        wait_output(child, Duration::from_secs(90))
    }

    /// Starts `dcvd run` with stderr to a log file (read with [`Harness::log`]).
    pub fn spawn_run(&self, config: &Path) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        self.command(&["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dcvd run")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("dcvd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

pub fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Waits for `child` at most `limit`, killing it on timeout (then the test fails on its output).
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("dcvd did not finish within {limit:?}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().expect("kill").success();
    assert!(ok, "kill -{sig} failed");
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
