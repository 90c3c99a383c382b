//! Every TOML snippet in README.md, docs/ and config/ parses, so the documentation cannot rot:
//! fragments as TOML, complete configurations (those with `[certcentral]`) through dcvd's own
//! configuration loader, with dummy secrets standing in for the files and variables they name.

use std::path::{Path, PathBuf};

use dcvd::config::{Config, Environment};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `(file, line, text)` of every ```toml block of a Markdown file.
fn toml_blocks(path: &Path) -> Vec<(String, usize, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start().starts_with("```toml") => current = Some((i + 2, String::new())),
            Some(_) if line.trim_start().starts_with("```") => {
                let (start, body) = current.take().expect("open block");
                blocks.push((path.display().to_string(), start, body));
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "{}: unterminated ```toml block", path.display());
    blocks
}

/// Parses a complete configuration, giving every `*_file` a dummy file in a credentials
/// directory (absolute paths are mapped to their file name) and every `*_env` a dummy value.
fn parse_complete(name: &str, text: &str) -> Result<Config, String> {
    let creds = tempfile::tempdir().unwrap();
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut env = Environment::isolated().with_credentials_dir(creds.path());
    let mut text = text.to_string();
    let mut stack = vec![toml::Value::Table(table)];
    while let Some(v) = stack.pop() {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    match (&v, k.ends_with("_file"), k.ends_with("_env")) {
                        (toml::Value::String(path), true, _) => {
                            let file = Path::new(path).file_name().unwrap().to_string_lossy().to_string();
                            let full = creds.path().join(&file);
                            std::fs::write(&full, dummy_secret(&k)).unwrap();
                            use std::os::unix::fs::PermissionsExt;
                            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o600)).unwrap();
                            text = text.replace(&format!("\"{path}\""), &format!("\"{file}\""));
                        }
                        (toml::Value::String(var), _, true) => {
                            env = env.with_var(var, "ZHVtbXktc2VjcmV0LWZvci1kb2NzLXRlc3Q=")
                        }
                        _ => stack.push(v),
                    }
                }
            }
            toml::Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    Config::from_toml_with(&text, Path::new(name), &env).map_err(|e| e.to_string())
}

/// What a `*_file` of the docs holds in the test: a generated service-account key for the
/// `gcloud` provider's JSON `credentials_file`, a base64 string for every other secret.
fn dummy_secret(key: &str) -> String {
    if key == "credentials_file" {
        let (json, _) = test_support::gcloud_fake::service_account_key_file(
            "dcvd@docs-project.iam.gserviceaccount.com",
            "docs-project",
            "https://oauth2.googleapis.com/token",
        );
        return json;
    }
    "ZHVtbXktc2VjcmV0LWZvci1kb2NzLXRlc3Q=".to_string()
}

#[test]
fn every_toml_block_in_the_docs_parses() {
    let mut files = vec![repo().join("README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "md") {
            files.push(p);
        }
    }
    let mut failures = Vec::new();
    let mut complete = 0;
    let mut total = 0;
    for f in &files {
        for (file, line, body) in toml_blocks(f) {
            total += 1;
            let result = if body.contains("[certcentral]") {
                complete += 1;
                parse_complete(&file, &body).map(|_| ())
            } else {
                toml::from_str::<toml::Table>(&body).map(|_| ()).map_err(|e| e.to_string())
            };
            if let Err(e) = result {
                failures.push(format!("{file}:{line}: {e}"));
            }
        }
    }
    assert!(total >= 10, "expected the docs to hold TOML examples, found {total}");
    assert!(complete >= 1, "at least one complete configuration should be documented");
    assert!(failures.is_empty(), "TOML blocks that do not parse:\n{}", failures.join("\n"));
}

#[test]
fn every_config_file_parses() {
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("config")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&p).unwrap();
            parse_complete(&p.display().to_string(), &text).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 2, "config/ should hold dcvd.example.toml and demo.toml");
}
