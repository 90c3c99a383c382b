//! Checks of the host a configuration is about to run on, as the user running dcvd: the state
//! directory must be creatable or writable (an error naming the `chown` to run) and should not be
//! writable by group or others (a warning).
//!
//! Used by `check-config`, `run`, `once` and `cleanup` alike, so that what `check-config` accepts
//! starts. It must not change anything: writability is probed with a file created and removed at
//! once (the only test that sees ACLs, read-only mounts and systemd's `ReadOnlyPaths=`), and
//! existing files are opened for writing without truncating or locking them.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::error::{ConfigError, Location};
use super::{Config, DEFAULT_STATE_DIR};

impl Config {
    /// Checks `daemon.state_dir` as the running user: an existing directory must be writable
    /// (itself and the files in it), a missing one creatable; a directory writable by group or
    /// others adds a warning to [`Config::warnings`]. Errors carry the position of `state_dir`
    /// (or name the file when the directory comes from `$STATE_DIRECTORY` or the default).
    pub fn check_state_dir(&mut self) -> Result<(), ConfigError> {
        let dir = self.daemon.state_dir.clone();
        let user = RunningUser::current();
        let problem = match fs::metadata(&dir) {
            Ok(meta) if !meta.is_dir() => Some(format!("state_dir {} is not a directory", dir.display())),
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o7777;
                if mode & 0o022 != 0 {
                    let warning = format!(
                        "state_dir {} is writable by group or others (mode {mode:04o}): another user could \
                         replace the state store; run `chmod 700 {}`",
                        dir.display(),
                        dir.display()
                    );
                    self.warnings.push(self.at_state_dir(&warning));
                }
                unwritable_in(&dir).map(|(what, e)| {
                    let what = match what {
                        None => format!("state_dir {} is not writable by {user}", dir.display()),
                        Some(file) => {
                            format!("state_dir {} holds {}, which {user} cannot write", dir.display(), file.display())
                        }
                    };
                    format!(
                        "{what} ({e}), and dcvd runs as that user: run `chown -R {} {}` (or run dcvd as \
                         the directory's owner)",
                        user.chown_spec(),
                        dir.display()
                    )
                })
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                let parent = existing_ancestor(&dir);
                match fs::metadata(&parent) {
                    Ok(meta) if !meta.is_dir() => Some(format!(
                        "state_dir {} cannot be created: {} is not a directory",
                        dir.display(),
                        parent.display()
                    )),
                    _ if probe(&parent).is_err() => Some(format!(
                        "state_dir {} does not exist and {user}, which dcvd runs as, cannot create it in {}: \
                         create it with `install -d -o {} -m 0700 {}`",
                        dir.display(),
                        parent.display(),
                        user.owner(),
                        dir.display()
                    )),
                    _ => None,
                }
            }
            Err(e) => Some(format!("cannot read state_dir {}: {e}", dir.display())),
        };
        match problem {
            Some(message) => Err(self.error_at_state_dir(message)),
            None => Ok(()),
        }
    }

    fn at_state_dir(&self, message: &str) -> String {
        match &self.state_dir_origin {
            Some(at) => format!("{at}: {message}"),
            None => format!("{}: {message}{}", self.main_file().display(), self.state_dir_source()),
        }
    }

    fn error_at_state_dir(&self, message: String) -> ConfigError {
        match &self.state_dir_origin {
            Some(Location { file, line, col }) => {
                ConfigError { file: file.clone(), line: Some(*line), col: Some(*col), message }
            }
            None => ConfigError::new(self.main_file(), format!("{message}{}", self.state_dir_source())),
        }
    }

    /// Where an unwritten `state_dir` came from, for messages.
    fn state_dir_source(&self) -> &'static str {
        if self.daemon.state_dir == Path::new(DEFAULT_STATE_DIR) {
            " (the default state_dir)"
        } else {
            " (from $STATE_DIRECTORY)"
        }
    }

    fn main_file(&self) -> &Path {
        self.files.first().map_or(Path::new("<string>"), PathBuf::as_path)
    }
}

/// The first thing in existing directory `dir` the running user cannot write, with the error:
/// the directory itself (`None`, probed) or one of its files (opened for writing, not truncated).
fn unwritable_in(dir: &Path) -> Option<(Option<PathBuf>, io::Error)> {
    if let Err(e) = probe(dir) {
        return Some((None, e));
    }
    let entries = fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if let Err(e) = OpenOptions::new().write(true).open(&path) {
            return Some((Some(path), e));
        }
    }
    None
}

/// Creates and removes a file in `dir`: whether the running user may create files there.
fn probe(dir: &Path) -> io::Result<()> {
    let path = dir.join(format!(".dcvd-write-check.{}", std::process::id()));
    OpenOptions::new().write(true).create_new(true).open(&path)?;
    fs::remove_file(&path)
}

/// The nearest ancestor of `path` that exists (`/` at worst).
fn existing_ancestor(path: &Path) -> PathBuf {
    path.ancestors()
        .skip(1)
        .find(|p| !p.as_os_str().is_empty() && fs::symlink_metadata(p).is_ok())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The effective user of this process, for messages: its uid and, when `/etc/passwd` knows it,
/// its name.
struct RunningUser {
    uid: Option<u32>,
    name: Option<String>,
}

impl RunningUser {
    fn current() -> Self {
        // /proc/self belongs to the process's effective user (std has no geteuid()).
        let uid = fs::metadata("/proc/self").ok().map(|m| m.uid());
        let name = uid.and_then(|uid| {
            let passwd = fs::read_to_string("/etc/passwd").ok()?;
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        });
        Self { uid, name }
    }

    /// `NAME` or the uid, for `install -o`.
    fn owner(&self) -> String {
        match (&self.name, self.uid) {
            (Some(name), _) => name.clone(),
            (None, Some(uid)) => uid.to_string(),
            (None, None) => "USER".into(),
        }
    }

    /// `NAME:` (the user and its login group) or the uid, for `chown`.
    fn chown_spec(&self) -> String {
        match &self.name {
            Some(name) => format!("{name}:"),
            None => self.owner(),
        }
    }
}

impl std::fmt::Display for RunningUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.name, self.uid) {
            (Some(name), Some(uid)) => write!(f, "user {name} (uid {uid})"),
            (None, Some(uid)) => write!(f, "uid {uid}"),
            _ => f.write_str("the running user"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(existing_ancestor(&dir.path().join("a/b/c")), dir.path());
        assert_eq!(existing_ancestor(Path::new("relative-missing")), Path::new("."));
    }

    #[test]
    fn running_user_has_a_uid() {
        let user = RunningUser::current();
        assert!(user.uid.is_some(), "/proc/self gives the uid");
        assert!(user.to_string().contains("uid "), "{user}");
    }
}
