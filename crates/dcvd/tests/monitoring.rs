//! The monitoring assets in `deploy/` (Prometheus rules, their promtool tests, the Grafana
//! dashboard) only query metrics dcvd really exports: every metric name in their expressions is
//! checked against the exposition dcvd's metrics registry encodes (so a renamed or removed metric
//! breaks this test, not a dashboard in production).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dcvd::metrics::Metrics;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The sample names a scrape of dcvd can contain, as its metrics registry reports them.
fn exported_names() -> BTreeSet<String> {
    Metrics::new().sample_names().into_iter().collect()
}

/// The sample names of an exposition, from its `# TYPE` lines (counters get `_total`, histograms
/// `_bucket`, `_sum` and `_count`).
fn names_in_exposition(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("malformed TYPE line {line:?}"));
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

/// What the registry reports is what a scrape shows: every family of an exposition with series
/// in it is among [`Metrics::sample_names`].
#[test]
fn sample_names_match_the_exposition() {
    let metrics = Metrics::new();
    metrics.set_unit_counts(&Default::default());
    metrics.register_provider("cf");
    metrics.observe_propagation(std::time::Duration::from_secs(3));
    metrics.observe_validation(std::time::Duration::from_secs(30));
    let shown = names_in_exposition(&metrics.encode());
    assert!(shown.len() >= 8, "{shown:?}");
    let exported = exported_names();
    let missing: Vec<_> = shown.difference(&exported).collect();
    assert!(missing.is_empty(), "in the exposition but not in sample_names: {missing:?}");
}

/// The `dcvd_*` identifiers of a PromQL expression (label values in quotes are skipped).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c == '"' || c == '\'' {
            // Skip a quoted string (a label value, a regex).
            while let Some((_, d)) = chars.next() {
                if d == '\\' {
                    chars.next();
                } else if d == c {
                    break;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut end = start + c.len_utf8();
            while let Some(&(i, d)) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                    end = i + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let word = &expr[start..end];
            if word.starts_with("dcvd_") {
                names.push(word.to_owned());
            }
        }
    }
    names
}

/// The `expr:` values of a Prometheus rules file (one line, or a `|` block).
fn rule_expressions(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        if let Some(value) = line.trim_start().strip_prefix("expr:") {
            let value = value.trim();
            if value == "|" || value == ">" {
                let mut block = String::new();
                while i + 1 < lines.len() {
                    let next = lines[i + 1];
                    let next_indent = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && next_indent <= indent {
                        break;
                    }
                    block.push_str(next.trim());
                    block.push('\n');
                    i += 1;
                }
                out.push(block);
            } else {
                out.push(value.to_owned());
            }
        }
        i += 1;
    }
    out
}

/// The `series:` selectors of a promtool test file.
fn test_series(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.trim_start().strip_prefix("- series:"))
        .map(|v| v.trim().trim_matches('\'').to_owned())
        .collect()
}

/// Every string under an `expr`, `query` or `definition` key of the dashboard.
fn dashboard_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) if s != "prometheus" => {
                        out.push(s.clone());
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

/// The problems of `exprs`: expressions naming no dcvd metric, or one dcvd does not export.
fn unknown_metrics(source: &str, exprs: &[String], exported: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for expr in exprs {
        let names = metric_names(expr);
        if names.is_empty() {
            problems.push(format!("{source}: {expr:?} names no dcvd metric"));
        }
        for name in names.iter().filter(|n| !exported.contains(*n)) {
            problems.push(format!("{source}: {expr:?} uses {name}, which dcvd does not export"));
        }
    }
    problems
}

/// The checker itself finds what it must: names outside quotes, a misspelt metric, no metric.
#[test]
fn the_checker_finds_unknown_metrics() {
    assert_eq!(
        metric_names(r#"sum by (state) (dcvd_units{state=~"dcvd_x|failed"}) > 0 and dcvd_live_records"#),
        ["dcvd_units", "dcvd_live_records"]
    );
    let exported = exported_names();
    let problems = unknown_metrics("t", &["dcvd_unit > 0".to_owned(), "up == 0".to_owned()], &exported);
    assert_eq!(
        problems,
        ["t: \"dcvd_unit > 0\" uses dcvd_unit, which dcvd does not export", "t: \"up == 0\" names no dcvd metric"]
    );
}

/// The rules, their promtool tests and the dashboard use only exported metrics, and between them
/// use the metrics the alerts are documented to rely on.
#[test]
fn monitoring_assets_use_only_exported_metrics() {
    let exported = exported_names();
    for name in [
        "dcvd_units",
        "dcvd_certcentral_requests_total",
        "dcvd_provider_calls_total",
        "dcvd_propagation_seconds_bucket",
        "dcvd_validation_seconds_bucket",
        "dcvd_rate_limit_wait_seconds_total",
        "dcvd_unit_token_expiry_timestamp_seconds",
        "dcvd_live_records",
        "dcvd_last_successful_check_timestamp_seconds",
    ] {
        assert!(exported.contains(name), "{name} is not in the exposition: {exported:?}");
    }

    let rules = rule_expressions(&read("deploy/prometheus/dcvd-rules.yml"));
    assert!(rules.len() >= 5, "found only {} rule expressions", rules.len());
    let series = test_series(&read("deploy/prometheus/dcvd-rules.test.yml"));
    assert!(series.len() >= 5, "found only {} test series", series.len());
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dcvd.json")).expect("deploy/grafana/dcvd.json is JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "found only {} dashboard queries", queries.len());

    let mut problems = unknown_metrics("dcvd-rules.yml", &rules, &exported);
    problems.extend(unknown_metrics("dcvd-rules.test.yml", &series, &exported));
    problems.extend(unknown_metrics("dcvd.json", &queries, &exported));
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The alerts the operations guide lists.
    let all_rules = rules.join("\n");
    for needle in [
        "dcvd_units{state=~\"failed|expired\"}",
        "dcvd_unit_token_expiry_timestamp_seconds",
        "dcvd_live_records{unit_state=~",
        "dcvd_last_successful_check_timestamp_seconds",
    ] {
        assert!(all_rules.contains(needle), "no rule uses {needle}");
    }
}
