//! Runs the real binary in `--quick` mode (simulator, child processes, name servers) and checks
//! the JSON it writes: every order validated, the figures consistent with each strategy.

use std::process::Command;

fn run_quick(strategies: &str) -> serde_json::Value {
    let dir =
        std::env::temp_dir().join(format!("dcvd-bench-it-{}-{}", std::process::id(), strategies.replace(',', "_")));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_dcvd-bench"))
        .args(["--quick", "--strategies", strategies, "--json"])
        .arg(&json)
        .arg("--work-dir")
        .arg(&dir)
        .output()
        .expect("run dcvd-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dcvd-bench failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("Scenario: 5 orders"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    v
}

fn figures<'a>(runs: &'a serde_json::Value, strategy: &str) -> &'a serde_json::Value {
    runs.as_array()
        .unwrap()
        .iter()
        .find(|r| r["strategy"] == strategy)
        .unwrap_or_else(|| panic!("no run of {strategy} in {runs}"))
        .get("figures")
        .unwrap()
}

#[test]
fn quick_mode_runs_dcvd_and_the_baseline() {
    let runs = run_quick("dcvd,poll-2s");
    for strategy in ["dcvd", "poll-2s"] {
        let f = figures(&runs, strategy);
        assert_eq!(f["valid_orders"], 5, "{strategy}: {f}");
        assert_eq!(f["records_left"], 0, "{strategy}: {f}");
        assert_eq!(f["http_429"], 0, "{strategy}: {f}");
        // one publish and one remove per record
        assert_eq!(f["provider_calls_per_record"], 2.0, "{strategy}: {f}");
        assert!(f["peak_rss_mib"].as_f64().unwrap() > 1.0, "{strategy}: {f}");
        assert_eq!(f["detection_s"]["n"], 5, "{strategy}: {f}");
        assert!(f["time_to_valid_s"]["max"].as_f64().unwrap() <= f["wall_s"].as_f64().unwrap(), "{f}");
        // no run beats what no schedule can beat; the floor covers the longest propagation time
        let (wall, bound) = (f["wall_s"].as_f64().unwrap(), f["floor_lower_bound_s"].as_f64().unwrap());
        assert!(bound > 0.0 && wall >= bound, "{strategy}: {f}");
        assert!(f["true_floor_s"].as_f64().unwrap() >= f["lag_bound_s"]["max"].as_f64().unwrap(), "{f}");
    }
    // dcvd checks only once every name server serves the record: never early, never negative
    // detection latency, and it queried the name servers itself.
    let d = figures(&runs, "dcvd");
    assert_eq!(d["premature_checks"], 0, "{d}");
    assert!(d["detection_s"]["p50"].as_f64().unwrap() >= 0.0, "{d}");
    assert!(d["dns_queries_per_record"].as_f64().unwrap() >= 2.0, "{d}");
    // The baseline never asks DNS itself.
    let p = figures(&runs, "poll-2s");
    assert_eq!(p["dns_queries_per_record"], 0.0, "{p}");
    assert!(p["calls_per_valid_order"].as_f64().unwrap() >= 2.0, "{p}");
}
