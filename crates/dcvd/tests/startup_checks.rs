//! `check-config` is as strict as start-up: what would stop `run`/`once` with exit 78 is refused
//! by `check-config` with the same message and position, and start-up refuses it before creating
//! the state directory. The real binary, run as an unprivileged user where the check depends on
//! who runs dcvd (the state directory).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use test_support::harness::{Harness, LocalSim, set_mode, text};

/// The binaries under test.
const HARNESS: Harness = Harness::new(env!("CARGO_BIN_EXE_dcvd"));

/// A `dcvd` command, as user `nobody` when the tests run as root (root may write anywhere, so
/// only another user shows the state directory check), else as the current user.
fn dcvd_as_service_user(h: &LocalSim, args: &[&str]) -> Command {
    let wrapper: &[&str] =
        if is_root() { &["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] } else { &[] };
    let mut cmd = h.command_via(wrapper, args);
    cmd.current_dir("/");
    cmd
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").expect("/proc/self").uid() == 0
}

/// A configuration readable by the service user: API key from an environment variable, the
/// given state directory, a memory provider and one order.
fn config(h: &LocalSim, state_dir: &Path, extra: &str) -> String {
    format!(
        "[certcentral]\nbase_url = \"{}\"\napi_key_env = \"DCVD_TEST_API_KEY\"\n\n[daemon]\nstate_dir = \"{}\"\n\
         log_format = \"text\"\n\n[providers.mem]\ntype = \"memory\"\nzones = [\"example.test\"]\n\n{extra}\
         [[order]]\nid = 7\nmethod = \"dns-txt-token\"\ndomains = [\"example.test\"]\n",
        h.sim.base_url,
        state_dir.display()
    )
}

fn run(h: &LocalSim, args: &[&str]) -> Output {
    dcvd_as_service_user(h, args).env("DCVD_TEST_API_KEY", &h.api_key).output().expect("run dcvd")
}

/// Settings that used to pass `check-config` and then stop `once` with 78 (after creating the
/// state directory) now fail both with the same positioned message, and nothing is created.
#[tokio::test]
async fn check_config_refuses_what_start_up_refuses() {
    let h = HARNESS.start_local(None).await;
    let state = h.dir.path().join("state");
    let cases = [
        (
            "hosted_zone_id with two zones",
            "[providers.aws]\ntype = \"route53\"\nzones = [\"a.example\", \"b.example\"]\nhosted_zone_id = \"Z0123\"\n\n",
            "dcvd.toml:16:18: provider `aws`: `hosted_zone_id` names one hosted zone but `zones` lists 2",
        ),
        (
            "cloudflare base_url over http to a remote host",
            "[providers.cf]\ntype = \"cloudflare\"\nzones = [\"cf.example\"]\napi_token_env = \"DCVD_TEST_CF_TOKEN\"\n\
             base_url = \"http://192.0.2.1/client/v4\"\n\n",
            "dcvd.toml:17:12: provider `cf`: base_url \"http://192.0.2.1/client/v4\" uses plain http to 192.0.2.1",
        ),
        (
            "token with a space inside",
            "[providers.cf]\ntype = \"cloudflare\"\nzones = [\"cf.example\"]\napi_token_env = \"DCVD_TEST_CF_SPACED\"\n\n",
            "dcvd.toml:16:17: environment variable DCVD_TEST_CF_SPACED (from `api_token_env`) has whitespace or a \
             line break inside the secret",
        ),
    ];
    for (name, extra, want) in cases {
        let path = h.write_config(&config(&h, &state, extra));
        for command in ["check-config", "once"] {
            let out = h
                .command(&[command, "--config", path.to_str().unwrap()])
                .env("DCVD_TEST_API_KEY", &h.api_key)
                .env("DCVD_TEST_CF_TOKEN", "cf-t0ken-value")
                .env("DCVD_TEST_CF_SPACED", "Bearer cf-t0ken-value")
                .output()
                .unwrap();
            let all = text(&out);
            assert_eq!(out.status.code(), Some(78), "{name}: {command}: {all}");
            assert!(all.contains(want), "{name}: {command}: want {want:?} in:\n{all}");
            assert!(!all.contains("cf-t0ken-value"), "{name}: {command} printed the token: {all}");
            assert!(!state.exists(), "{name}: {command} created the state directory");
        }
    }
}

/// A state directory the service user cannot write (or create, or whose files it cannot write)
/// fails `check-config` and start-up with 78 and the `chown`/`install` to run, before anything
/// is created; root, who can write it, passes.
#[tokio::test]
async fn unwritable_state_dir_is_a_configuration_error() {
    let h = HARNESS.start_local(None).await;
    set_mode(h.dir.path(), 0o755);
    let preflight = dcvd_as_service_user(&h, &["--version"]).output().expect("run dcvd");
    assert!(
        preflight.status.success(),
        "cannot run {} as the service user (the checkout must be readable by others): {}",
        HARNESS.dcvd_binary().display(),
        text(&preflight)
    );
    let (user, chown) = if is_root() { ("user nobody (uid 65534)", "nobody:") } else { ("", "") };

    // Owned by root (or read-only for a non-root test user).
    let locked = h.dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(if is_root() { 0o755 } else { 0o555 })).unwrap();

    let path = h.write_config(&config(&h, &locked, ""));
    set_mode(&path, 0o644);
    for command in ["check-config", "once"] {
        let out = run(&h, &[command, "--config", path.to_str().unwrap()]);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(78), "{command}: {all}");
        let want = format!("dcvd.toml:6:13: state_dir {} is not writable by {user}", locked.display());
        assert!(all.contains(&want), "{command}: want {want:?} in:\n{all}");
        let want = format!("run `chown -R {chown}");
        assert!(all.contains(&want) && all.contains(&format!(" {}`", locked.display())), "{command}: {all}");
        assert_eq!(std::fs::read_dir(&locked).unwrap().count(), 0, "{command} wrote into {}", locked.display());
    }

    let missing = locked.join("state");
    let path = h.write_config(&config(&h, &missing, ""));
    for command in ["check-config", "once"] {
        let out = run(&h, &[command, "--config", path.to_str().unwrap()]);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(78), "{command}: {all}");
        let want = format!(
            "dcvd.toml:6:13: state_dir {} does not exist and {user}, which dcvd runs as, cannot create it in {}: \
             create it with `install -d -o ",
            missing.display(),
            locked.display()
        );
        assert!(all.contains(&want), "{command}: want {want:?} in:\n{all}");
        assert!(!missing.exists(), "{command} created {}", missing.display());
    }

    if is_root() {
        // The service user owns the directory, but a file in it belongs to root (someone ran
        // `dcvd once` as root): the store could not be opened.
        let owned = h.dir.path().join("owned");
        std::fs::create_dir(&owned).unwrap();
        std::os::unix::fs::chown(&owned, Some(65534), Some(65534)).unwrap();
        set_mode(&owned, 0o700);
        let db = owned.join("dcvd.sqlite3");
        std::fs::write(&db, "").unwrap();
        set_mode(&db, 0o600);
        let path = h.write_config(&config(&h, &owned, ""));
        let out = run(&h, &["check-config", "--config", path.to_str().unwrap()]);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(78), "{all}");
        let want =
            format!("state_dir {} holds {}, which user nobody (uid 65534) cannot write", owned.display(), db.display());
        assert!(all.contains(&want) && all.contains(&format!("run `chown -R nobody: {}`", owned.display())), "{all}");

        // Root may write all of these: check-config passes.
        for dir in [&locked, &missing, &owned] {
            let path = h.write_config(&config(&h, dir, ""));
            let out = h
                .command(&["check-config", "--config", path.to_str().unwrap()])
                .env("DCVD_TEST_API_KEY", &h.api_key)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{}: {}", dir.display(), text(&out));
        }
        assert!(!missing.exists(), "check-config created {}", missing.display());
    }
}
