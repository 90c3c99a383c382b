//! A private PostgreSQL cluster for tests: `initdb` into a temp dir, `pg_ctl start` on a free high
//! port of 127.0.0.1, password authentication (SCRAM) for TCP, no Unix socket outside the temp
//! dir. The cluster runs as an unprivileged user: when the tests run as root (CI containers),
//! `initdb` and the server run as `nobody` through `runuser`, because PostgreSQL refuses to run as
//! root. The server is stopped (immediate mode) on drop.
//!
//! [`PgCluster::stop`] and [`PgCluster::start`] let a test take the database away and bring it
//! back on the same port with the same data. [`PgCluster::shared`] is one cluster for a whole test
//! binary (a database per test), stopped by a watchdog process once the tests exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::ports;

const INSTALL_HINT: &str = "install it with `apt-get install -y postgresql` (scripts/test does this)";
/// The superuser's name in every test cluster.
pub const SUPERUSER: &str = "dcvd";
/// The superuser's password in every test cluster (tests are free to log it).
pub const PASSWORD: &str = "dcvd-test-password";
/// The user the cluster runs as when the tests run as root.
const UNPRIVILEGED: &str = "nobody";

/// A running private cluster. Stopped on drop.
pub struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_root: bool,
    // Kept last: removed after the server stopped.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster").field("port", &self.port).field("data", &self.data).finish_non_exhaustive()
    }
}

/// The directory of PostgreSQL's server binaries: the newest `/usr/lib/postgresql/<v>/bin`, or
/// the directory of `initdb` on `PATH`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
            return dir;
        }
    }
    panic!("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: {INSTALL_HINT}");
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|out| out.stdout.trim_ascii() == b"0").unwrap_or(false)
}

impl PgCluster {
    /// Creates and starts a cluster; panics with what is missing when it cannot.
    pub fn start_new() -> Self {
        let bin = bin_dir();
        let as_root = is_root();
        let dir = tempfile::Builder::new().prefix("dcvd-pg-").tempdir().expect("temp dir for PostgreSQL");
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).expect("write the password file");
        if as_root {
            // The server user must own the cluster's directory and be able to reach it.
            chown_unprivileged(dir.path());
            chown_unprivileged(&pwfile);
        }
        let mut initdb = command(&bin, "initdb", as_root);
        initdb.args(["--no-sync", "--encoding=UTF8", "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"]);
        initdb
            .arg(format!("--username={SUPERUSER}"))
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("-D")
            .arg(&data);
        run(initdb, "initdb");
        let cluster = Self { bin, data, port: ports::free_port(), as_root, dir };
        cluster.start();
        cluster
    }

    /// One cluster for the whole test binary, started on first use. Statics are never dropped, so a
    /// small watchdog process stops the server and removes its directory once this process has
    /// exited (also when it was killed). Never stop it: other tests use it; take a
    /// [`start_new`](Self::start_new) cluster of your own for that.
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = Self::start_new();
            cluster.stop_after_exit();
            cluster
        })
    }

    /// Spawns `sh` waiting for this process to exit, then stopping the server and removing the
    /// cluster's directory.
    // The watchdog outlives this process by design: nobody waits for it here.
    #[expect(clippy::zombie_processes)]
    fn stop_after_exit(&self) {
        let stop = command(&self.bin, "pg_ctl", self.as_root);
        let stop_line = std::iter::once(stop.get_program())
            .chain(stop.get_args())
            .map(|part| shell_quote(&part.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop_line} -D {data} -m immediate stop; rm -rf {dir}",
            pid = std::process::id(),
            data = shell_quote(&self.data.to_string_lossy()),
            dir = shell_quote(&self.dir.path().to_string_lossy()),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the PostgreSQL watchdog");
    }

    /// Starts the (stopped) server on its port and waits until it accepts connections.
    pub fn start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off \
             -c max_connections=200 -c shared_buffers=16MB",
            self.port,
            self.dir.path().display()
        );
        let mut pg_ctl = command(&self.bin, "pg_ctl", self.as_root);
        pg_ctl
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.log_path())
            .args(["-o", &options, "-w", "-t", "60", "start"]);
        pg_ctl.stdout(Stdio::null());
        let out = pg_ctl.output().expect("run pg_ctl start");
        if !out.status.success() {
            panic!(
                "PostgreSQL did not start: {}\nserver log:\n{}",
                describe(&out),
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL started but does not accept TCP on {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`): connections break as in a crash.
    pub fn stop(&self) {
        let mut pg_ctl = command(&self.bin, "pg_ctl", self.as_root);
        pg_ctl.arg("-D").arg(&self.data).args(["-m", "immediate", "-w", "stop"]).stdout(Stdio::null());
        let out = pg_ctl.output().expect("run pg_ctl stop");
        assert!(out.status.success(), "pg_ctl stop failed: {}", describe(&out));
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` without the password (give it through a file or variable).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// A URL for `database` with the password in it.
    pub fn url_with_password(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}:{PASSWORD}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database (each test takes its own, so tests can share a cluster).
    pub fn create_database(&self, name: &str) {
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "database names here are [a-z0-9_]: {name}"
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
    }

    /// Runs SQL through `psql` on the local socket and returns its unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let mut psql = command(&self.bin, "psql", self.as_root);
        psql.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"]).arg(self.dir.path()).args([
            "-p",
            &self.port.to_string(),
            "-U",
            SUPERUSER,
            "-d",
            database,
            "-c",
            sql,
        ]);
        let out = psql.output().expect("run psql");
        assert!(out.status.success(), "psql {sql:?} failed: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let mut pg_ctl = command(&self.bin, "pg_ctl", self.as_root);
        pg_ctl.arg("-D").arg(&self.data).args(["-m", "immediate", "stop"]).stdout(Stdio::null()).stderr(Stdio::null());
        let _ = pg_ctl.status();
    }
}

/// `bin/name`, run as [`UNPRIVILEGED`] when the tests run as root.
fn command(bin: &Path, name: &str, as_root: bool) -> Command {
    let program = bin.join(name);
    if as_root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", UNPRIVILEGED, "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn chown_unprivileged(path: &Path) {
    let out = Command::new("chown").arg(format!("{UNPRIVILEGED}:")).arg(path).output().expect("run chown");
    assert!(out.status.success(), "chown {} failed: {}", path.display(), describe(&out));
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|err| panic!("cannot run {what}: {err}; {INSTALL_HINT}"));
    assert!(out.status.success(), "{what} failed: {}", describe(&out));
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_stops_and_keeps_its_data() {
        let cluster = PgCluster::start_new();
        cluster.create_database("kept");
        cluster.psql("kept", "CREATE TABLE t (v int); INSERT INTO t VALUES (7)");
        cluster.stop();
        assert!(std::net::TcpStream::connect(("127.0.0.1", cluster.port())).is_err(), "stopped server still listens");
        cluster.start();
        assert_eq!(cluster.psql("kept", "SELECT v FROM t"), "7");
    }
}
