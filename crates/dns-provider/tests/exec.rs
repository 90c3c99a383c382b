//! The `exec` adapter running a real hook script (written by the test) that updates a real BIND
//! 9 with `nsupdate`: the conformance battery read back over DNS, plus the hook contract
//! (environment, exit codes, stderr tail, timeout kill, no listing).

mod battery;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use battery::Harness;
use dns_provider::exec::ExecProvider;
use dns_provider::{DnsProvider, ProviderError, Record, RecordType, SharedProvider};
use test_support::bind::Bind;

const ZONE: &str = "exec.test";

/// A dns-hook as an operator would write it: RFC 2136 updates through nsupdate, following the
/// exit-status convention (65 conflict, 77 credentials refused).
const HOOK: &str = r#"#!/bin/sh
# usage: hook SERVER PORT KEYFILE (the record comes in DCVD_* variables)
set -u
server=$1 port=$2 key=$3
nsu() { printf 'server %s %s\nzone %s\n%s\nsend\n' "$server" "$port" "$DCVD_ZONE" "$1" | nsupdate -k "$key" 2>&1; }
case "$DCVD_TYPE" in
  TXT) data="\"$DCVD_VALUE\"" ;;
  CNAME) data="$DCVD_VALUE." ;;
  *) echo "unsupported type $DCVD_TYPE" >&2; exit 64 ;;
esac
case "$DCVD_ACTION" in
  present)
    if [ "$DCVD_TYPE" = CNAME ]; then prereq="prereq nxdomain $DCVD_NAME."; else prereq="prereq nxrrset $DCVD_NAME. CNAME"; fi
    out=$(nsu "$prereq
update add $DCVD_NAME. $DCVD_TTL $DCVD_TYPE $data") && exit 0
    ;;
  cleanup)
    out=$(nsu "update delete $DCVD_NAME. $DCVD_TYPE $data") && exit 0
    ;;
  *) echo "unknown action $DCVD_ACTION" >&2; exit 64 ;;
esac
case "$out" in
  *YXDOMAIN*|*YXRRSET*)
    if [ "$DCVD_TYPE" = CNAME ] && [ "$(dig +short +norecurse -p "$port" "@$server" "$DCVD_NAME" CNAME)" = "$DCVD_VALUE." ]; then
      exit 0
    fi
    echo "$DCVD_NAME already holds records that conflict with a $DCVD_TYPE" >&2; exit 65 ;;
  *NOTAUTH*|*REFUSED*|*"tsig verify failure"*)
    echo "$out" >&2; echo "the TSIG key was refused" >&2; exit 77 ;;
esac
echo "$out" >&2
exit 1
"#;

/// Writes an executable script into `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
    path
}

fn exec(command: Vec<String>, timeout: Duration) -> ExecProvider {
    ExecProvider::new(vec![ZONE.into()], command, timeout)
}

struct ExecHarness {
    bind: Arc<Bind>,
    dir: tempfile::TempDir,
    provider: SharedProvider,
}

impl ExecHarness {
    fn hook_command(&self, key_file: &Path) -> Vec<String> {
        vec![
            self.dir.path().join("hook.sh").display().to_string(),
            "127.0.0.1".into(),
            self.bind.port().to_string(),
            key_file.display().to_string(),
        ]
    }
}

async fn setup() -> ExecHarness {
    let bind = Arc::new(tokio::task::spawn_blocking(|| Bind::start(&[ZONE])).await.expect("start BIND"));
    let dir = tempfile::tempdir().expect("tempdir");
    script(dir.path(), "hook.sh", HOOK);
    let mut h = ExecHarness { bind, dir, provider: Arc::new(exec(vec![], Duration::ZERO)) };
    h.provider = Arc::new(exec(h.hook_command(&h.bind.tsig_key_file()), Duration::from_secs(20)));
    h
}

#[async_trait]
impl Harness for ExecHarness {
    fn provider(&self) -> SharedProvider {
        self.provider.clone()
    }

    fn zone(&self) -> String {
        ZONE.into()
    }

    async fn read_back(&self, name: &str, rtype: RecordType) -> Vec<String> {
        let (bind, name) = (self.bind.clone(), name.to_string());
        tokio::task::spawn_blocking(move || bind.query(bind.primary_addr(), &name, rtype.as_str())).await.expect("dig")
    }

    async fn add_foreign(&self, record: &Record) {
        let bind = self.bind.clone();
        let cmd =
            format!("zone {ZONE}\nupdate add {}. {} {} \"{}\"", record.name, record.ttl, record.rtype, record.value);
        tokio::task::spawn_blocking(move || bind.nsupdate(&cmd)).await.expect("nsupdate");
    }

    fn with_wrong_credentials(&self) -> Option<SharedProvider> {
        let key = self.dir.path().join("wrong.key");
        let clause = format!(
            "key \"{}\" {{ algorithm {}; secret \"d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZy0hIQ==\"; }};\n",
            self.bind.tsig().name,
            self.bind.tsig().algorithm
        );
        std::fs::write(&key, clause).expect("write wrong key");
        Some(Arc::new(exec(self.hook_command(&key), Duration::from_secs(20))))
    }

    async fn throttle_next(&self, _n: u32) -> bool {
        false
    }
}

conformance_battery!(setup);

/// The hook gets exactly the documented environment: absolute name, no trailing dots, TTL.
#[tokio::test]
async fn hook_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("env.txt");
    let hook = script(dir.path(), "dump.sh", &format!("#!/bin/sh\nenv | grep '^DCVD_' | sort > '{}'\n", out.display()));
    let p = exec(vec![hook.display().to_string()], Duration::from_secs(20));
    let mut rec = Record::cname(format!("_dnsauth.www.{ZONE}."), "Rnd123.dcv.digicert.com.");
    rec.ttl = 120;
    p.publish(&format!("{ZONE}."), &rec).await.expect("present");
    let env = std::fs::read_to_string(&out).expect("hook ran");
    assert_eq!(
        env.lines().collect::<Vec<_>>(),
        [
            "DCVD_ACTION=present",
            "DCVD_NAME=_dnsauth.www.exec.test",
            "DCVD_TTL=120",
            "DCVD_TYPE=CNAME",
            "DCVD_VALUE=rnd123.dcv.digicert.com",
            "DCVD_ZONE=exec.test",
        ]
    );
    p.remove(ZONE, &Record::txt(format!("_dnsauth.{ZONE}"), "tok with spaces")).await.expect("cleanup");
    let env = std::fs::read_to_string(&out).expect("hook ran");
    assert!(env.contains("DCVD_ACTION=cleanup\n") && env.contains("DCVD_VALUE=tok with spaces\n"), "{env}");
}

/// Set in the re-run of [`hook_gets_a_minimal_environment`] whose environment holds secrets.
const ENV_CHILD: &str = "EXEC_ENV_TEST_CHILD";

/// Secrets and unrelated variables an operator's dcvd process may have in its environment.
const PARENT_SECRETS: &[(&str, &str)] = &[
    ("DIGICERT_API_KEY", "dc-key-must-not-leak"),
    ("AWS_SECRET_ACCESS_KEY", "aws-secret-must-not-leak"),
    ("AWS_SESSION_TOKEN", "aws-session-must-not-leak"),
    ("CLOUDFLARE_API_TOKEN", "cf-token-must-not-leak"),
    ("HOOK_API_TOKEN", "the-hook-s-own-token"),
];

/// Runs `provider`'s hook once (present) and returns the names and values of its environment,
/// without the variables `sh` adds itself.
async fn hook_env(dir: &Path, env_pass: &[&str]) -> Vec<(String, String)> {
    let out = dir.join(format!("env-{}.txt", env_pass.len()));
    let hook = script(dir, "dump-all.sh", "#!/bin/sh\nenv > \"$1\"\n");
    let p = exec(vec![hook.display().to_string(), out.display().to_string()], Duration::from_secs(20))
        .with_env_pass(env_pass.iter().map(|s| s.to_string()).collect());
    p.publish(ZONE, &Record::txt(format!("_dnsauth.{ZONE}"), "tok")).await.expect("present");
    let text = std::fs::read_to_string(&out).expect("the hook ran");
    let mut vars: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .filter(|(n, _)| !["PWD", "OLDPWD", "SHLVL", "_"].contains(&n.as_str()))
        .collect();
    vars.sort();
    vars
}

/// A hook gets a minimal environment: `PATH`, `LANG`, `TZ`, `CREDENTIALS_DIRECTORY` and the
/// `DCVD_*` contract, plus exactly what `env_pass` names; never dcvd's DigiCert key, AWS or
/// Cloudflare credentials unless passed explicitly. The test re-runs itself in a child process
/// whose environment holds those secrets (as dcvd's would), since this process may not change
/// its own environment.
#[tokio::test]
async fn hook_gets_a_minimal_environment() {
    if std::env::var_os(ENV_CHILD).is_none() {
        let name = "hook_gets_a_minimal_environment";
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(ENV_CHILD, "1")
            .env("LANG", "C.UTF-8")
            .env("TZ", "UTC")
            .env("CREDENTIALS_DIRECTORY", "/run/credentials/dcvd.service")
            .env("HOME", "/var/lib/dcvd")
            .envs(PARENT_SECRETS.iter().copied())
            .output()
            .expect("re-run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&format!("test {name} ... ok")),
            "the child run failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let names = |vars: &[(String, String)]| vars.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let contract = ["DCVD_ACTION", "DCVD_NAME", "DCVD_TTL", "DCVD_TYPE", "DCVD_VALUE", "DCVD_ZONE"];

    let vars = hook_env(dir.path(), &[]).await;
    let mut expected: Vec<String> =
        ["CREDENTIALS_DIRECTORY", "LANG", "PATH", "TZ"].iter().chain(&contract).map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names(&vars), expected, "{vars:?}");
    let value = |vars: &[(String, String)], name: &str| vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!(value(&vars, "CREDENTIALS_DIRECTORY").as_deref(), Some("/run/credentials/dcvd.service"));
    assert_eq!(value(&vars, "PATH"), std::env::var("PATH").ok());
    for (_, secret) in PARENT_SECRETS {
        assert!(!vars.iter().any(|(_, v)| v == secret), "{secret} leaked into the hook: {vars:?}");
    }

    // Explicitly passed: present (an unset name is simply absent).
    let vars = hook_env(dir.path(), &["HOOK_API_TOKEN", "AWS_SECRET_ACCESS_KEY", "NOT_SET_ANYWHERE"]).await;
    assert_eq!(value(&vars, "HOOK_API_TOKEN").as_deref(), Some("the-hook-s-own-token"));
    assert_eq!(value(&vars, "AWS_SECRET_ACCESS_KEY").as_deref(), Some("aws-secret-must-not-leak"));
    assert_eq!(value(&vars, "NOT_SET_ANYWHERE"), None);
    for absent in ["DIGICERT_API_KEY", "AWS_SESSION_TOKEN", "CLOUDFLARE_API_TOKEN", "HOME"] {
        assert_eq!(value(&vars, absent), None, "{absent} was not passed: {vars:?}");
    }
}

/// A failing hook's error names the command and carries the tail of its stderr; 75 is
/// retryable, other statuses are not.
#[tokio::test]
async fn failure_carries_stderr_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = script(
        dir.path(),
        "fail.sh",
        "#!/bin/sh\ni=1; while [ $i -le 100 ]; do echo \"problem line $i\" >&2; i=$((i+1)); done\nexit ${1:-3}\n",
    );
    let rec = Record::txt(format!("_dnsauth.{ZONE}"), "tok");
    let err = exec(vec![hook.display().to_string()], Duration::from_secs(20)).publish(ZONE, &rec).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ProviderError::Rejected { .. }) && !err.is_retryable(), "{err:?}");
    assert!(
        text.starts_with(&format!(
            "exec: {} present _dnsauth.exec.test TXT \"tok\" failed with exit status 3:",
            hook.display()
        )),
        "{text}"
    );
    assert!(text.ends_with("problem line 100") && text.contains("problem line 81 |"), "{text}");
    assert!(!text.contains("problem line 80 "), "only the tail is kept: {text}");

    let err = exec(vec![hook.display().to_string(), "75".into()], Duration::from_secs(20))
        .remove(ZONE, &rec)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "exit 75 is a temporary failure: {err:?}");
}

/// A hook that outlives the timeout is killed together with its children.
#[tokio::test]
async fn timeout_kills_the_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    let hook =
        script(dir.path(), "hang.sh", &format!("#!/bin/sh\nsleep 300 &\necho $$ $! > '{}'\nwait\n", pids.display()));
    let p = exec(vec![hook.display().to_string()], Duration::from_millis(1500));
    let err = p.publish(ZONE, &Record::txt(format!("_dnsauth.{ZONE}"), "tok")).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("did not finish within 1.5s and was killed"), "{err}");
    let text = std::fs::read_to_string(&pids).expect("the hook started");
    for pid in text.split_whitespace() {
        // Gone, or a zombie waiting for a reaper: either way no longer running.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let running = state.as_deref().is_some_and(|s| {
                let after = s.rsplit_once(')').map_or("", |(_, rest)| rest.trim_start());
                !after.starts_with('Z') && !after.starts_with('X')
            });
            if !running {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "process {pid} of the hook still runs");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `list` is unsupported with a clear error; preflight finds missing or non-executable commands
/// and a missing command fails the call with a Config error.
#[tokio::test]
async fn list_unsupported_and_preflight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = script(dir.path(), "ok.sh", "#!/bin/sh\nexit 0\n");
    let p = exec(vec![ok.display().to_string()], Duration::from_secs(5));
    p.preflight().await.expect("an executable hook passes preflight");
    let err = p.list(ZONE, &format!("_dnsauth.{ZONE}"), RecordType::Txt).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected { .. }), "{err:?}");
    assert!(err.to_string().starts_with("exec: listing records is not supported"), "{err}");
    exec(vec!["sh".into()], Duration::from_secs(5)).preflight().await.expect("found in PATH");

    let plain = dir.path().join("plain.sh");
    std::fs::write(&plain, "#!/bin/sh\n").expect("write");
    let err = exec(vec![plain.display().to_string()], Duration::from_secs(5)).preflight().await.unwrap_err();
    assert!(err.to_string().contains("is not an executable file"), "{err}");

    let missing = exec(vec!["/nonexistent/dns-hook".into()], Duration::from_secs(5));
    assert!(missing.preflight().await.unwrap_err().to_string().contains("not found"));
    let err = missing.publish(ZONE, &Record::txt(format!("_dnsauth.{ZONE}"), "tok")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Config { .. }), "{err:?}");
    assert!(err.to_string().starts_with("exec: cannot run \"/nonexistent/dns-hook\""), "{err}");
}

/// A hook exiting 77 (here: BIND refused its TSIG key) is a non-retryable Auth error that
/// carries the hook's explanation.
#[tokio::test]
async fn refused_key_is_auth() {
    let h = setup().await;
    let bad = h.with_wrong_credentials().expect("wrong credentials");
    let err = bad.publish(ZONE, &Record::txt(format!("_dnsauth.auth.{ZONE}"), "tok")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
    assert!(err.to_string().ends_with("the TSIG key was refused"), "{err}");
}
