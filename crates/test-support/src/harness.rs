//! The harness of the tests that run the real `dcvd` binary: a working directory (config, API key
//! file, state directory, one log of everything dcvd printed), dcvd started with a clean
//! environment, the CertCentral simulator in-process ([`LocalSim`]) or as its own binary
//! ([`SimProc`]), and waiting helpers.
//!
//! The dcvd binary's path exists only in dcvd's integration tests (`env!("CARGO_BIN_EXE_dcvd")`),
//! so the tests pass it in ([`Harness::new`]); this crate must not depend on dcvd.
//!
//! Every dcvd process gets the same environment ([`Dcvd::command`]): the parent's is cleared
//! (no `AWS_*`, `NOTIFY_SOCKET`, `JOURNAL_STREAM`, `CREDENTIALS_DIRECTORY`, provider tokens or
//! `RUST_LOG` leak from the machine running the tests) except `PATH`, `HOME` and `TMPDIR`, and the
//! AWS credential chain is pointed at files that do not exist.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use certcentral_sim::{DomainView, Fixtures, NewDomain, NewOrder, OrderView, RunningSim, Sim, SimConfig, Stats};

/// Log filter of the end-to-end runs ([`Dcvd::for_sim`]): our crates at debug, so secret hygiene
/// is checked on the chattiest level an operator would use.
pub const RUST_LOG: &str = "info,dcvd=debug,certcentral=debug,dns_provider=debug,propagation=debug";

/// Variables a dcvd child keeps from the test's environment; everything else is cleared.
const KEPT_ENV: [&str; 3] = ["PATH", "HOME", "TMPDIR"];

/// Where the binaries under test are: the `dcvd` binary given by the test and the
/// `certcentral-sim` binary next to it.
#[derive(Debug, Clone, Copy)]
pub struct Harness {
    dcvd: &'static str,
}

impl Harness {
    /// `dcvd`: `env!("CARGO_BIN_EXE_dcvd")` of the calling test.
    pub const fn new(dcvd: &'static str) -> Self {
        Self { dcvd }
    }

    /// The dcvd binary.
    pub fn dcvd_binary(&self) -> &Path {
        Path::new(self.dcvd)
    }

    /// The `certcentral-sim` binary next to dcvd's. `cargo test --workspace` builds every binary
    /// of the workspace; a run limited to `-p dcvd` does not, hence the checks (missing, or older
    /// than the simulator's sources).
    pub fn sim_binary(&self) -> PathBuf {
        let sim = self.dcvd_binary().with_file_name("certcentral-sim");
        let hint = "build it with `cargo build -p certcentral-sim --bin certcentral-sim` (same CARGO_TARGET_DIR), \
                    or run the whole workspace's tests (`scripts/test`)";
        let built = std::fs::metadata(&sim)
            .and_then(|m| m.modified())
            .unwrap_or_else(|e| panic!("the simulator binary {} is missing ({e}): {hint}", sim.display()));
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certcentral-sim");
        if let Some(newest) = newest_mtime(&src)
            && newest > built
        {
            panic!("the simulator binary {} is older than its sources in {}: {hint}", sim.display(), src.display());
        }
        sim
    }

    /// Starts the simulator binary (see [`SimProc`]).
    pub fn start_sim(&self, opts: SimOpts) -> SimProc {
        SimProc::start(&self.sim_binary(), opts)
    }

    /// A dcvd working directory for `sim` (see [`Dcvd::for_sim`]).
    pub fn dcvd(&self, sim: &SimProc) -> Dcvd {
        Dcvd::for_sim(self.dcvd_binary(), sim)
    }

    /// An in-process simulator and a dcvd working directory for it (see [`LocalSim::start`]).
    pub async fn start_local(&self, dns: Option<Vec<SocketAddr>>) -> LocalSim {
        LocalSim::start(self.dcvd_binary(), dns).await
    }
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.join("src"), dir.join("Cargo.toml")];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else { continue };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if let Ok(m) = meta.modified() {
            newest = newest.max(Some(m));
        }
    }
    newest
}

/// A dcvd working directory: config, API key file (mode 0600), state dir and the log every run
/// appends to; runs dcvd with a clean environment.
pub struct Dcvd {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// The CertCentral API key in the key file.
    pub api_key: String,
    binary: PathBuf,
    base_url: String,
    log_filter: Option<String>,
    env: Vec<(String, String)>,
}

impl Dcvd {
    /// A directory for `binary` against CertCentral at `base_url` expecting `api_key`; dcvd runs
    /// with its default log filter (as an operator gets it).
    pub fn new(binary: &Path, base_url: &str, api_key: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("dcvd-test-").tempdir().expect("tempdir");
        let this = Self {
            dir,
            api_key: api_key.to_string(),
            binary: binary.to_path_buf(),
            base_url: base_url.to_string(),
            log_filter: None,
            env: Vec::new(),
        };
        std::fs::write(this.key_path(), api_key).expect("write key");
        set_mode(&this.key_path(), 0o600);
        this
    }

    /// A directory for the simulator process `sim`, logging at [`RUST_LOG`].
    pub fn for_sim(binary: &Path, sim: &SimProc) -> Self {
        let mut this = Self::new(binary, &sim.base_url, &sim.api_key);
        this.log_filter = Some(RUST_LOG.to_string());
        this
    }

    /// Sets `RUST_LOG` of every later run (`None`: dcvd's default filter).
    pub fn set_log_filter(&mut self, filter: Option<&str>) {
        self.log_filter = filter.map(str::to_string);
    }

    /// Adds an environment variable to every dcvd run (AWS credentials).
    pub fn env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// The CertCentral API key file.
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("certcentral-api-key")
    }

    /// The state directory the configuration names.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Writes a secret file (mode 0600) and returns its path.
    pub fn secret_file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("write secret");
        set_mode(&path, 0o600);
        path
    }

    /// The full configuration: CertCentral, the state directory, propagation through the name
    /// servers on `dns_port` (127.0.0.1 answers the SOA walk), fast polls and checks, then `rest`
    /// (providers, units).
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
timeout = "120s"

[check]
min_interval = "200ms"
max_interval = "2s"

{rest}
"#,
            base = self.base_url,
            key = self.key_path().display(),
            state = self.state_dir().display(),
        )
    }

    /// Writes `dcvd.toml` and returns its path.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.config_path();
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// `dcvd.toml` in the directory.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("dcvd.toml")
    }

    /// The log every [`Dcvd::spawn`] appends to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("dcvd.log")
    }

    /// Everything every run printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Appends `text` to the log (output of runs collected otherwise).
    pub fn append_log(&self, text: &str) {
        use std::io::Write;
        let _ = self.log_file().write_all(text.as_bytes());
    }

    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("open log")
    }

    /// `dcvd <args>` (no `--config` added) with the clean environment, stdin closed.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_via(&[], args)
    }

    /// `dcvd <args>` run through `wrapper` (`["setpriv", "--reuid=65534", "--"]`), with the same
    /// environment as [`Dcvd::command`].
    pub fn command_via(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(&self.binary);
                cmd
            }
            None => Command::new(&self.binary),
        };
        cmd.args(args).env_clear().stdin(Stdio::null());
        for key in KEPT_ENV {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        // never let the AWS chain find a real profile or instance metadata
        cmd.env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        if let Some(filter) = &self.log_filter {
            cmd.env("RUST_LOG", filter);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `dcvd <args> --config dcvd.toml` with stdout and stderr appended to the log.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let log = self.log_file();
        self.command(args)
            .arg("--config")
            .arg(self.config_path())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn dcvd")
    }

    /// Starts `dcvd run --config CONFIG`, output appended to the log.
    pub fn spawn_run(&self, config: &Path) -> Child {
        let log = self.log_file();
        self.command(&["run", "--config", config.to_str().expect("utf-8 path")])
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn dcvd run")
    }

    /// Runs `dcvd once --config CONFIG` to the end (at most 90 s, blocking) and returns its
    /// output (not added to the log).
    pub fn once_output(&self, config: &Path) -> Output {
        let child = self
            .command(&["once", "--config", config.to_str().expect("utf-8 path")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dcvd");
        wait_output(child, Duration::from_secs(90))
    }

    /// Runs `dcvd once --config dcvd.toml` to the end (at most `limit`) and returns its exit
    /// status; the output goes to the log.
    pub async fn once(&self, limit: Duration) -> ExitStatus {
        let child = self.spawn(&["once"]);
        self.wait(child, limit, "dcvd once").await
    }

    /// Waits for `child` at most `limit` without blocking the runtime (in-process servers run
    /// on it); kills it and fails with the log on timeout.
    pub async fn wait(&self, mut child: Child, limit: Duration, what: &str) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {limit:?}; log:\n{}", tail(&self.log(), 150));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `dcvd status --json --config dcvd.toml`, parsed; its output is appended to the log.
    pub fn status_json(&self) -> Vec<serde_json::Value> {
        let out = self
            .command(&["status", "--json", "--config", self.config_path().to_str().expect("utf-8 path")])
            .output()
            .expect("run dcvd status");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        self.append_log(&format!("--- dcvd status --json\n{stdout}{stderr}"));
        assert!(out.status.success(), "dcvd status --json failed: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("dcvd status --json is not JSON ({e}):\n{stdout}"))
    }

    /// Fails when the API key or any of `secrets` appears anywhere in the log.
    pub fn assert_no_secrets(&self, secrets: &[(&str, &str)]) {
        let log = self.log();
        assert!(!log.is_empty(), "dcvd printed nothing at all: the secret check would be vacuous");
        let mut all = vec![("CertCentral API key", self.api_key.as_str())];
        all.extend_from_slice(secrets);
        for (what, secret) in all {
            let secret = secret.trim();
            assert!(secret.len() >= 8, "{what}: too short to search for");
            assert!(!log.contains(secret), "the {what} appears in dcvd's log");
        }
    }

    /// Asserts `status` is a success and returns the log (for more checks).
    pub fn assert_success(&self, status: ExitStatus, what: &str) -> String {
        let log = self.log();
        assert!(status.success(), "{what} failed ({status}); log:\n{}", tail(&log, 200));
        log
    }
}

/// The simulator in this process (its state directly readable through [`LocalSim::sim`]) and a
/// dcvd working directory for it; dereferences to the [`Dcvd`].
pub struct LocalSim {
    /// The running simulator.
    pub sim: RunningSim,
    /// A port free on 127.0.0.1 and 127.0.0.2 for the memory provider's name servers.
    pub dns_port: u16,
    dcvd: Dcvd,
}

impl LocalSim {
    /// A simulator whose DNS checks ask `dns` (default: the memory name servers on
    /// [`LocalSim::dns_port`]), and a working directory for `dcvd_binary` against it.
    pub async fn start(dcvd_binary: &Path, dns: Option<Vec<SocketAddr>>) -> Self {
        let ips = ["127.0.0.1".parse().expect("ip"), "127.0.0.2".parse().expect("ip")];
        let dns_port = crate::ports::free_port_on(&ips);
        let dns = dns.unwrap_or_else(|| ips.iter().map(|ip| SocketAddr::new(*ip, dns_port)).collect());
        let api_key = format!("test-key-{:016x}", rand::random::<u64>());
        let sim = Sim::new(SimConfig { api_key: api_key.clone(), dns_servers: dns, seed: 1, ..SimConfig::default() });
        let sim = sim.spawn("127.0.0.1:0".parse().expect("addr")).await.expect("start simulator");
        let dcvd = Dcvd::new(dcvd_binary, &sim.base_url, &api_key);
        Self { sim, dns_port, dcvd }
    }

    /// The simulator's state.
    pub fn sim(&self) -> &Sim {
        self.sim.sim()
    }

    /// The `[providers.mem]` memory provider serving `zones` from the two name servers on
    /// [`LocalSim::dns_port`], each record visible after `lag_ms`.
    pub fn memory_provider(&self, zones: &[&str], lag_ms: u64) -> String {
        format!(
            "[providers.mem]\ntype = \"memory\"\nzones = {zones:?}\nlisten = [\"127.0.0.1:{p}\", \"127.0.0.2:{p}\"]\nlag = \"{lag_ms}ms\"\n",
            p = self.dns_port
        )
    }
}

impl Deref for LocalSim {
    type Target = Dcvd;

    fn deref(&self) -> &Dcvd {
        &self.dcvd
    }
}

impl std::ops::DerefMut for LocalSim {
    fn deref_mut(&mut self) -> &mut Dcvd {
        &mut self.dcvd
    }
}

/// How to start the simulator process.
#[derive(Debug, Clone, Default)]
pub struct SimOpts {
    /// Name servers the DCV checks query.
    pub dns: Vec<SocketAddr>,
    /// DV orders to preload.
    pub orders: Vec<NewOrder>,
    /// OV/EV domains to preload.
    pub domains: Vec<NewDomain>,
    /// `--fault` settings.
    pub faults: Vec<String>,
    /// `--seed`.
    pub seed: u64,
    /// Other arguments (`--no-rate-limit`, `--negative-ttl 5s`, ...).
    pub extra: Vec<String>,
}

/// A running `certcentral-sim` process, killed on drop.
pub struct SimProc {
    child: Child,
    /// `http://ADDR/services/v2`.
    pub base_url: String,
    /// `http://ADDR`.
    pub root: String,
    /// The API key it expects.
    pub api_key: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for SimProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SimProc {
    /// Starts `binary` on a free port and waits for its `listening on` line.
    pub fn start(binary: &Path, opts: SimOpts) -> Self {
        let dir = tempfile::Builder::new().prefix("dcvd-test-sim-").tempdir().expect("tempdir");
        let api_key = format!("dc-devkey-{:032x}", rand::random::<u128>());
        let fixtures = Fixtures { orders: opts.orders.clone(), domains: opts.domains.clone() };
        let orders = dir.path().join("orders.json");
        std::fs::write(&orders, serde_json::to_string(&fixtures).expect("fixtures json")).expect("write orders");
        let mut cmd = Command::new(binary);
        cmd.args(["--listen", "127.0.0.1:0", "--seed", &opts.seed.to_string()])
            .arg("--orders")
            .arg(&orders)
            // the key through the environment: it would show in `ps` as an argument
            .env("CERTCENTRAL_SIM_API_KEY", &api_key)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("sim.log")).expect("sim log"));
        for d in &opts.dns {
            cmd.arg("--dns").arg(d.to_string());
        }
        for f in &opts.faults {
            cmd.arg("--fault").arg(f);
        }
        cmd.args(&opts.extra);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start the simulator binary: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {}
        });
        let Ok(first) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.path().join("sim.log")).unwrap_or_default();
            panic!("the simulator printed no `listening on` line within 20 s; its log:\n{log}");
        };
        let base_url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the simulator: {first:?}"))
            .trim()
            .to_string();
        let root = base_url.trim_end_matches("/services/v2").to_string();
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("client");
        Self { child, base_url, root, api_key, http, _dir: dir }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let url = format!("{}{path}", self.root);
        let resp = self.http.get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "GET {url} answered {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}: {text}"))
    }

    /// `GET /_sim/orders/{id}`.
    pub async fn order(&self, id: u64) -> OrderView {
        self.get(&format!("/_sim/orders/{id}")).await
    }

    /// `GET /_sim/domains/{id}`.
    pub async fn domain(&self, id: u64) -> DomainView {
        self.get(&format!("/_sim/domains/{id}")).await
    }

    /// `GET /_sim/stats`.
    pub async fn stats(&self) -> Stats {
        self.get("/_sim/stats").await
    }

    /// Calls made for order `id` (every endpoint, whatever the answer).
    pub async fn order_calls(&self, id: u64) -> u64 {
        self.stats().await.order_calls.get(&id).map(|m| m.values().sum()).unwrap_or(0)
    }

    /// Calls made for domain `id`.
    pub async fn domain_calls(&self, id: u64) -> u64 {
        self.stats().await.domain_calls.get(&id).map(|m| m.values().sum()).unwrap_or(0)
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// stdout then stderr of `out`, as text.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `chmod MODE path`.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `kill -SIG pid`.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().expect("kill").success();
    assert!(ok, "kill -{sig} {} failed", child.id());
}

/// Waits for `child` at most `limit` (blocking), killing it on timeout and failing with its
/// stderr.
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

/// Polls the async `cond` every 50 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`eventually`] for a plain (non-async) condition.
pub async fn eventually_sync(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    eventually(limit, what, || std::future::ready(cond())).await;
}

/// Every TXT and CNAME of `zone` on `server`, by zone transfer (BIND allows AXFR from loopback):
/// `(owner, type, data)` with TXT data unquoted, names without trailing dot.
pub fn axfr(server: SocketAddr, zone: &str) -> Vec<(String, String, String)> {
    let out = Command::new("dig")
        .args([
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            "+nocmd",
            "+nostats",
            "+time=2",
            "+tries=1",
            zone,
            "AXFR",
        ])
        .output()
        .expect("run dig (install bind9-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Transfer failed"), "AXFR of {zone} from {server} failed: {text}");
    text.lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?.trim_end_matches('.').to_ascii_lowercase();
            let _ttl = parts.next()?;
            let _class = parts.next()?;
            let rtype = parts.next()?.to_string();
            let rest: Vec<&str> = parts.collect();
            let data = rest.join(" ");
            match rtype.as_str() {
                "TXT" => Some((name, rtype, unquote(&data))),
                "CNAME" => Some((name, rtype, data.trim_end_matches('.').to_ascii_lowercase())),
                _ => None,
            }
        })
        .collect()
}

fn unquote(data: &str) -> String {
    let mut out = String::new();
    let (mut in_quotes, mut escaped) = (false, false);
    for c in data.chars() {
        match (in_quotes, escaped, c) {
            (true, true, c) => {
                out.push(c);
                escaped = false;
            }
            (true, false, '\\') => escaped = true,
            (_, false, '"') => in_quotes = !in_quotes,
            (true, false, c) => out.push(c),
            _ => {}
        }
    }
    out
}

/// The TXT and CNAME records of `zone` on `server` except those owned by a name in `keep` (the
/// zone's own data): what must be gone after cleanup.
pub fn dcv_records(server: SocketAddr, zone: &str, keep: &[&str]) -> Vec<(String, String, String)> {
    axfr(server, zone).into_iter().filter(|(n, _, _)| !keep.contains(&n.as_str())).collect()
}

/// The `[providers.NAME]` section of an RFC 2136 provider against `bind`'s primary.
pub fn rfc2136_provider(name: &str, bind: &crate::bind::Bind, zones: &[&str]) -> String {
    format!(
        "[providers.{name}]\ntype = \"rfc2136\"\nserver = \"{}\"\nzones = {zones:?}\ntsig_key_name = \"{}\"\ntsig_algorithm = \"hmac-sha256\"\ntsig_secret_file = \"{}\"\n",
        bind.primary_addr(),
        bind.tsig().name,
        bind.tsig_secret_file().display()
    )
}

/// A `[[order]]` table.
pub fn order_toml(id: u64, method: &str, domains: &[&str]) -> String {
    format!("[[order]]\nid = {id}\nmethod = \"{method}\"\ndomains = {domains:?}\n")
}

/// A domain validation scope for both sides of an end-to-end test: the simulator's account
/// setting and the order's `validation_scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// CertCentral's default: base domains (both sides left at their defaults).
    Base,
    /// Exact names: `--validation-scope exact` and `validation_scope = "exact"` on the order.
    Exact,
}

impl Scope {
    /// The simulator arguments.
    pub fn sim_args(self) -> Vec<String> {
        match self {
            Self::Base => Vec::new(),
            Self::Exact => vec!["--validation-scope".into(), "exact".into()],
        }
    }

    /// [`order_toml`] with this scope.
    pub fn order_toml(self, id: u64, method: &str, domains: &[&str]) -> String {
        let order = order_toml(id, method, domains);
        match self {
            Self::Base => order,
            Self::Exact => format!("{order}validation_scope = \"exact\"\n"),
        }
    }
}

/// The states of `status --json` rows by id.
pub fn states(rows: &[serde_json::Value]) -> std::collections::BTreeMap<u64, String> {
    rows.iter().map(|r| (r["id"].as_u64().expect("id"), r["state"].as_str().unwrap_or_default().to_string())).collect()
}

/// Waits (at most `limit`) for `child` while transferring `zone` from `server` every ~50 ms;
/// returns its exit status and every TXT/CNAME seen in the zone meanwhile.
pub async fn watch_zone_until_exit(
    dcvd: &Dcvd,
    mut child: Child,
    server: SocketAddr,
    zone: &str,
    limit: Duration,
) -> (ExitStatus, std::collections::BTreeSet<(String, String, String)>) {
    let mut seen = std::collections::BTreeSet::new();
    let start = Instant::now();
    loop {
        seen.extend(axfr(server, zone));
        if let Some(status) = child.try_wait().expect("try_wait") {
            return (status, seen);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dcvd did not finish within {limit:?}; log:\n{}", tail(&dcvd.log(), 150));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child_env(dcvd: &Dcvd, wrapper: &[&str]) -> std::collections::BTreeMap<String, String> {
        let out = dcvd.command_via(wrapper, &[]).output().expect("run env");
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A child sees only the kept variables, the AWS chain pointed nowhere, the log filter and
    /// what the test added: nothing of the test's own environment (cargo sets `CARGO_*` for
    /// every test process; CI machines set `AWS_*`), also through a wrapper.
    #[test]
    fn children_get_a_clean_environment() {
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some(), "cargo sets it for tests");
        // `env` stands in for dcvd: it prints the environment it was given.
        let mut dcvd = Dcvd::new(Path::new("/usr/bin/env"), "http://127.0.0.1:9/services/v2", "k3y-for-the-test");
        dcvd.set_log_filter(Some("debug"));
        dcvd.env("CF_TOKEN", "t0k3n");
        for wrapper in [&[][..], &["/usr/bin/env", "--"][..]] {
            let env = child_env(&dcvd, wrapper);
            let allowed = [
                "PATH",
                "HOME",
                "TMPDIR",
                "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE",
                "AWS_EC2_METADATA_DISABLED",
                "RUST_LOG",
                "CF_TOKEN",
            ];
            let unexpected: Vec<&String> = env.keys().filter(|k| !allowed.contains(&k.as_str())).collect();
            assert!(unexpected.is_empty(), "leaked into the child: {unexpected:?}");
            assert_eq!(env.get("AWS_EC2_METADATA_DISABLED").map(String::as_str), Some("true"));
            assert_eq!(env.get("RUST_LOG").map(String::as_str), Some("debug"));
            assert_eq!(env.get("CF_TOKEN").map(String::as_str), Some("t0k3n"));
        }
        // the key file is private and the configuration names it and the state directory
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(dcvd.key_path()).unwrap().permissions().mode() & 0o777, 0o600);
        let config = dcvd.config(5353, "# rest");
        assert!(config.contains(&dcvd.key_path().display().to_string()) && config.ends_with("# rest\n"), "{config}");
        assert!(config.contains(&format!("state_dir = \"{}\"", dcvd.state_dir().display())), "{config}");
    }

    #[test]
    fn tail_and_unquote() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(unquote(r#""v=1" "a\"b""#), r#"v=1a"b"#);
    }
}
