//! BIND 9 launcher: a primary on `127.0.0.1:PORT` accepting TSIG-signed dynamic updates, and
//! optionally a secondary on `127.0.0.2:PORT` that lags (the primary sends no NOTIFY and the
//! secondary's refresh is a day long) until [`Bind::refresh_secondary`] releases it.
//!
//! Every zone gets `ns1.<zone>` (127.0.0.1) and, with a secondary, `ns2.<zone>` (127.0.0.2) as
//! its NS records, so a propagation checker that walks SOA/NS through the primary finds both
//! servers on the same port.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports;

/// The TSIG key every launched server accepts for updates.
#[derive(Debug, Clone)]
pub struct TsigKey {
    /// Key name (`dcvd`).
    pub name: String,
    /// Algorithm as BIND writes it (`hmac-sha256`).
    pub algorithm: String,
    /// Base64 secret.
    pub secret_b64: String,
}

/// One zone to serve.
#[derive(Debug, Clone)]
pub struct ZoneSpec {
    /// Zone name, no trailing dot.
    pub name: String,
    /// Extra zone-file lines (`www 60 IN A 192.0.2.1`), relative to the zone origin.
    pub extra: Vec<String>,
    /// SOA minimum (negative-caching TTL), seconds.
    pub soa_minimum: u32,
}

impl ZoneSpec {
    /// A zone with no extra records and a 30 s negative TTL.
    pub fn new(name: &str) -> Self {
        Self { name: name.trim_end_matches('.').to_string(), extra: Vec::new(), soa_minimum: 30 }
    }

    /// Adds a zone-file line.
    pub fn with_line(mut self, line: impl Into<String>) -> Self {
        self.extra.push(line.into());
        self
    }
}

/// How to start BIND.
#[derive(Debug, Clone, Default)]
pub struct BindBuilder {
    zones: Vec<ZoneSpec>,
    secondary: bool,
}

impl BindBuilder {
    /// Adds a zone.
    pub fn zone(mut self, zone: ZoneSpec) -> Self {
        self.zones.push(zone);
        self
    }

    /// Also starts a lagging secondary on 127.0.0.2 (same port).
    pub fn with_lagging_secondary(mut self) -> Self {
        self.secondary = true;
        self
    }

    /// Starts the servers; panics with a clear message when BIND cannot start.
    pub fn start(self) -> Bind {
        assert!(!self.zones.is_empty(), "BindBuilder needs at least one zone");
        let named = find_named();
        if self.secondary {
            ports::ensure_loopback_alias("127.0.0.2");
        }
        let mut last_err = String::new();
        for _ in 0..5 {
            match Bind::try_start(&named, &self) {
                Ok(b) => return b,
                Err(e) => last_err = e,
            }
        }
        panic!("BIND did not start after 5 attempts: {last_err}");
    }
}

/// Running BIND servers; killed on drop.
#[derive(Debug)]
pub struct Bind {
    dir: tempfile::TempDir,
    port: u16,
    rndc_port: u16,
    primary: Child,
    secondary: Option<Child>,
    zones: Vec<ZoneSpec>,
    tsig: TsigKey,
    named: PathBuf,
}

const RNDC_SECRET: &str = "c2VjcmV0LXJuZGMta2V5LWZvci10ZXN0cy1vbmx5LTAwMDA=";

impl Bind {
    /// A builder.
    pub fn builder() -> BindBuilder {
        BindBuilder::default()
    }

    /// A single primary serving `zones`.
    pub fn start(zones: &[&str]) -> Self {
        zones.iter().fold(Self::builder(), |b, z| b.zone(ZoneSpec::new(z))).start()
    }

    fn try_start(named: &Path, spec: &BindBuilder) -> Result<Self, String> {
        let mut ips: Vec<IpAddr> = vec!["127.0.0.1".parse().expect("ip")];
        if spec.secondary {
            ips.push("127.0.0.2".parse().expect("ip"));
        }
        let port = ports::free_port_on(&ips);
        let rndc_port = ports::free_port_on(&ips);
        let dir = tempfile::Builder::new().prefix("dcvd-bind-").tempdir().map_err(|e| e.to_string())?;
        let secret: [u8; 32] = rand::random();
        let tsig = TsigKey { name: "dcvd".into(), algorithm: "hmac-sha256".into(), secret_b64: base64_encode(&secret) };
        let mut bind = Self {
            dir,
            port,
            rndc_port,
            primary: spawn_placeholder()?,
            secondary: None,
            zones: spec.zones.clone(),
            tsig,
            named: named.to_path_buf(),
        };
        bind.write_files(spec.secondary).map_err(|e| format!("writing BIND config: {e}"))?;
        bind.primary = bind.spawn_named("primary")?;
        bind.wait_serving(bind.primary_addr(), Duration::from_secs(15))?;
        if spec.secondary {
            bind.secondary = Some(bind.spawn_named("secondary")?);
            bind.wait_serving(bind.secondary_addr().expect("secondary"), Duration::from_secs(15))?;
        }
        Ok(bind)
    }

    /// The DNS port of every server.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The primary's address (127.0.0.1:port).
    pub fn primary_addr(&self) -> SocketAddr {
        SocketAddr::new("127.0.0.1".parse().expect("ip"), self.port)
    }

    /// The secondary's address (127.0.0.2:port), when started with one.
    pub fn secondary_addr(&self) -> Option<SocketAddr> {
        self.secondary.as_ref().map(|_| SocketAddr::new("127.0.0.2".parse().expect("ip"), self.port))
    }

    /// The TSIG key accepted for updates on the primary.
    pub fn tsig(&self) -> &TsigKey {
        &self.tsig
    }

    /// A file holding only the base64 TSIG secret (what dcvd's `tsig_secret_file` expects).
    pub fn tsig_secret_file(&self) -> PathBuf {
        self.dir.path().join("tsig.secret")
    }

    /// A `key "dcvd" { ... };` file for `nsupdate -k`.
    pub fn tsig_key_file(&self) -> PathBuf {
        self.dir.path().join("tsig.key")
    }

    /// Runs `nsupdate` with `commands` (without `server`/`send`, which are added) against the
    /// primary, signed with the TSIG key; panics on failure.
    pub fn nsupdate(&self, commands: &str) {
        let script = format!("server 127.0.0.1 {}\n{commands}\nsend\n", self.port);
        let out = run_with_stdin(Command::new("nsupdate").arg("-k").arg(self.tsig_key_file()), &script);
        assert!(out.0, "nsupdate failed: {}", out.1);
    }

    /// Asks `server` for `name`/`rtype` (no recursion) and returns the answer's data for that
    /// type: TXT strings unquoted and joined per record, names without trailing dot.
    pub fn query(&self, server: SocketAddr, name: &str, rtype: &str) -> Vec<String> {
        dig(server, name, rtype)
    }

    /// Makes the secondary transfer the zone now (`rndc refresh`), releasing its lag.
    pub fn refresh_secondary(&self, zone: &str) {
        assert!(self.secondary.is_some(), "no secondary was started");
        self.rndc("127.0.0.2", &["refresh", zone]);
    }

    /// Serial of `zone` on `server`.
    pub fn serial(&self, server: SocketAddr, zone: &str) -> Option<u32> {
        dig(server, zone, "SOA").first().and_then(|soa| soa.split_whitespace().nth(2)).and_then(|s| s.parse().ok())
    }

    /// Waits (up to `timeout`) until the secondary has the primary's serial for `zone`.
    pub fn wait_secondary_synced(&self, zone: &str, timeout: Duration) {
        let secondary = self.secondary_addr().expect("no secondary");
        let start = Instant::now();
        loop {
            let want = self.serial(self.primary_addr(), zone);
            if want.is_some() && self.serial(secondary, zone) == want {
                return;
            }
            assert!(start.elapsed() < timeout, "secondary did not sync {zone} within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the secondary (nothing listens on 127.0.0.2:port afterwards).
    pub fn stop_secondary(&mut self) {
        if let Some(mut c) = self.secondary.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the secondary again after [`stop_secondary`](Self::stop_secondary).
    pub fn start_secondary(&mut self) {
        assert!(self.secondary.is_none(), "secondary already running");
        let child = self.spawn_named("secondary").expect("restart secondary");
        self.secondary = Some(child);
        let addr = self.secondary_addr().expect("secondary");
        self.wait_serving(addr, Duration::from_secs(15)).expect("secondary serving");
    }

    fn rndc(&self, server: &str, args: &[&str]) {
        let out = Command::new("rndc")
            .arg("-c")
            .arg(self.dir.path().join("rndc.conf"))
            .args(["-s", server, "-p", &self.rndc_port.to_string()])
            .args(args)
            .output()
            .expect("run rndc (install bind9-utils)");
        assert!(out.status.success(), "rndc {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn spawn_named(&self, role: &str) -> Result<Child, String> {
        let conf = self.dir.path().join(role).join("named.conf");
        let log = std::fs::File::create(self.dir.path().join(format!("{role}.log"))).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.named);
        cmd.arg("-g").arg("-c").arg(&conf).stdout(Stdio::null()).stderr(log);
        cmd.spawn().map_err(|e| format!("spawning {}: {e}", self.named.display()))
    }

    fn wait_serving(&self, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        let zone = &self.zones[0].name;
        loop {
            if !dig(addr, zone, "SOA").is_empty() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                let role = if addr.ip().to_string() == "127.0.0.1" { "primary" } else { "secondary" };
                let log = std::fs::read_to_string(self.dir.path().join(format!("{role}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                return Err(format!(
                    "BIND {role} on {addr} did not serve {zone} within {timeout:?}; log tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn write_files(&self, with_secondary: bool) -> std::io::Result<()> {
        let d = self.dir.path();
        let key_clause = format!(
            "key \"{}\" {{ algorithm {}; secret \"{}\"; }};\n",
            self.tsig.name, self.tsig.algorithm, self.tsig.secret_b64
        );
        std::fs::write(d.join("tsig.key"), &key_clause)?;
        std::fs::write(d.join("tsig.secret"), format!("{}\n", self.tsig.secret_b64))?;
        let rndc_key = format!("key \"rndc-key\" {{ algorithm hmac-sha256; secret \"{RNDC_SECRET}\"; }};\n");
        std::fs::write(
            d.join("rndc.conf"),
            format!("{rndc_key}options {{ default-key \"rndc-key\"; default-port {}; }};\n", self.rndc_port),
        )?;
        for (role, ip) in [("primary", "127.0.0.1"), ("secondary", "127.0.0.2")] {
            if role == "secondary" && !with_secondary {
                continue;
            }
            let rd = d.join(role);
            std::fs::create_dir_all(&rd)?;
            let mut conf = String::new();
            conf.push_str(&key_clause);
            conf.push_str(&rndc_key);
            conf.push_str(&format!(
                "controls {{ inet {ip} port {rp} allow {{ 127.0.0.0/8; }} keys {{ \"rndc-key\"; }}; }};\n\
                 options {{\n  directory \"{dir}\";\n  listen-on port {port} {{ {ip}; }};\n  listen-on-v6 {{ none; }};\n\
                 \x20 pid-file none;\n  recursion no;\n  dnssec-validation no;\n  notify no;\n  allow-transfer {{ 127.0.0.0/8; }};\n\
                 \x20 session-keyfile \"{dir}/session.key\";\n  managed-keys-directory \"{dir}\";\n  max-cache-size 8m;\n\
                 \x20 minimal-responses yes;\n  transfer-source 127.0.0.2;\n}};\n",
                rp = self.rndc_port,
                dir = rd.display(),
                port = self.port,
            ));
            // transfer-source only matters for the secondary, but BIND rejects an address it does
            // not hold, so the primary gets its own.
            if role == "primary" {
                conf = conf.replace("transfer-source 127.0.0.2;", "transfer-source 127.0.0.1;");
            }
            for z in &self.zones {
                if role == "primary" {
                    std::fs::write(rd.join(format!("{}.zone", z.name)), zone_file(z, with_secondary))?;
                    conf.push_str(&format!(
                        "zone \"{n}\" {{ type primary; file \"{n}.zone\"; allow-update {{ key \"{k}\"; }}; notify no; }};\n",
                        n = z.name,
                        k = self.tsig.name
                    ));
                } else {
                    conf.push_str(&format!(
                        "zone \"{n}\" {{ type secondary; file \"{n}.bk\"; primaries port {p} {{ 127.0.0.1; }}; }};\n",
                        n = z.name,
                        p = self.port
                    ));
                }
            }
            std::fs::write(rd.join("named.conf"), conf)?;
        }
        Ok(())
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.primary.kill();
        let _ = self.primary.wait();
        self.stop_secondary();
    }
}

fn zone_file(z: &ZoneSpec, with_secondary: bool) -> String {
    // Refresh of a day: the secondary never polls by itself, so it lags until told to refresh.
    let mut s = format!(
        "$ORIGIN {n}.\n$TTL 60\n@ IN SOA ns1.{n}. hostmaster.{n}. 1 86400 3600 604800 {min}\n@ IN NS ns1.{n}.\nns1 IN A 127.0.0.1\n",
        n = z.name,
        min = z.soa_minimum
    );
    if with_secondary {
        s.push_str(&format!("@ IN NS ns2.{n}.\nns2 IN A 127.0.0.2\n", n = z.name));
    }
    for line in &z.extra {
        s.push_str(line);
        s.push('\n');
    }
    s
}

fn find_named() -> PathBuf {
    for p in ["/usr/sbin/named", "/usr/bin/named", "/usr/local/sbin/named"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "BIND 9 `named` not found: install it with `apt-get install -y bind9 bind9-utils bind9-dnsutils` (scripts/test does this)"
    );
}

fn spawn_placeholder() -> Result<Child, String> {
    Command::new("true").spawn().map_err(|e| e.to_string())
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = match cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot run {cmd:?}: {e} (install bind9-dnsutils)")),
    };
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// `dig +norecurse +short` against `server`; TXT strings unquoted and joined per record.
pub fn dig(server: SocketAddr, name: &str, rtype: &str) -> Vec<String> {
    let out = Command::new("dig")
        .args([
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            "+norecurse",
            "+short",
            "+time=1",
            "+tries=1",
            name,
            rtype,
        ])
        .output()
        .expect("run dig (install bind9-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| !l.starts_with(";;") && !l.trim().is_empty())
        .map(|l| {
            let l = l.trim();
            if rtype.eq_ignore_ascii_case("TXT") { unquote_txt(l) } else { l.trim_end_matches('.').to_string() }
        })
        .collect()
}

fn unquote_txt(line: &str) -> String {
    // `"part one" "part two"` -> `part onepart two`
    let mut out = String::new();
    let mut in_q = false;
    let mut esc = false;
    for c in line.chars() {
        match (in_q, esc, c) {
            (true, true, c) => {
                out.push(c);
                esc = false;
            }
            (true, false, '\\') => esc = true,
            (_, false, '"') => in_q = !in_q,
            (true, false, c) => out.push(c),
            _ => {}
        }
    }
    out
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The launcher starts a primary and a lagging secondary; an update reaches the secondary
    /// only after `refresh_secondary`.
    #[test]
    fn primary_and_lagging_secondary() {
        let bind = Bind::builder().zone(ZoneSpec::new("lag.test")).with_lagging_secondary().start();
        bind.nsupdate("zone lag.test\nupdate add _dnsauth.lag.test 60 TXT \"v1\"");
        assert_eq!(bind.query(bind.primary_addr(), "_dnsauth.lag.test", "TXT"), vec!["v1"]);
        let secondary = bind.secondary_addr().expect("secondary");
        assert!(bind.query(secondary, "_dnsauth.lag.test", "TXT").is_empty(), "secondary must lag");
        bind.refresh_secondary("lag.test");
        bind.wait_secondary_synced("lag.test", Duration::from_secs(10));
        assert_eq!(bind.query(secondary, "_dnsauth.lag.test", "TXT"), vec!["v1"]);
        assert_eq!(bind.query(bind.primary_addr(), "lag.test", "NS").len(), 2);
    }

    #[test]
    fn txt_unquoting() {
        assert_eq!(unquote_txt("\"a b\" \"c\\\"d\""), "a bc\"d");
    }
}
