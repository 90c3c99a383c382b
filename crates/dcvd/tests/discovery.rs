//! End to end, `[discovery]`: the real `dcvd` binary scans the real `certcentral-sim` binary's
//! account and validates what is pending there through BIND (RFC 2136), with no TOML unit for
//! it.
//!
//! The account: 12 pending DV orders (5 by DNS in managed zones, one of them also listed in the
//! TOML; 1 in a zone whose hook publishes nothing, issued by the test during the run; 2 with the
//! email method; 4 with names in zones no provider serves) and 6 OV domains (due in 10 days,
//! validated for another 200 days, pending, and 3 outside the managed zones). Asserted: exactly
//! the right units run and validate, with their source; nothing outside the managed zones is
//! touched (no CertCentral call for those ids, no record anywhere else); list and info calls are
//! counted; an order that leaves the pending list has its records removed; a list call that
//! fails keeps the running units; `set_method` both ways.

mod e2e_common;

use std::collections::BTreeMap;
use std::time::Duration;

use certcentral_sim::{DcvMethod, NewDomain, NewOrder};
use e2e_common::{Dcvd, SimOpts, SimProc, dcv_records, eventually, order_toml, rfc2136_provider, signal, tail};
use test_support::bind::Bind;

const LIMIT: Duration = Duration::from_secs(90);

/// Zones BIND serves; `held.test` is published through a hook that writes nothing to DNS.
const ZONES: [&str; 4] = ["example.com", "example.net", "example.org", "held.test"];

/// The hook of the `held.test` provider: records what it is asked to do, publishes nothing (so
/// the order's unit waits for propagation until the test issues the order).
const HOOK: &str = "#!/bin/sh\necho \"$DCVD_ACTION $DCVD_NAME $DCVD_TYPE $DCVD_VALUE\" >> \"$1\"\n";

fn days(n: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::Duration::days(n)
}

/// States and sources of `status --json`, by (kind, id); empty while the daemon has not
/// created (or migrated) its store yet.
fn units(dcvd: &Dcvd) -> BTreeMap<(String, u64), (String, String)> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dcvd"))
        .args(["status", "--json", "--state-dir"])
        .arg(dcvd.dir.path().join("state"))
        .output()
        .expect("run dcvd status");
    if !out.status.success() {
        return BTreeMap::new();
    }
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    rows.iter()
        .map(|r| {
            (
                (r["kind"].as_str().unwrap_or_default().to_string(), r["id"].as_u64().expect("id")),
                (
                    r["state"].as_str().unwrap_or_default().to_string(),
                    r["source"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

fn state_of(dcvd: &Dcvd, kind: &str, id: u64) -> Option<String> {
    units(dcvd).get(&(kind.to_string(), id)).map(|(state, _)| state.clone())
}

async fn admin(sim: &SimProc, method: reqwest::Method, path: &str, body: serde_json::Value) {
    let url = format!("{}{path}", sim.root);
    let resp = reqwest::Client::new().request(method, &url).json(&body).send().await.expect("admin call");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
}

/// Calls per endpoint for order `id` (empty when none).
async fn order_calls(sim: &SimProc, id: u64) -> BTreeMap<String, u64> {
    sim.stats().await.order_calls.get(&id).cloned().unwrap_or_default()
}

async fn domain_calls(sim: &SimProc, id: u64) -> BTreeMap<String, u64> {
    sim.stats().await.domain_calls.get(&id).cloned().unwrap_or_default()
}

fn scans(dcvd: &Dcvd) -> usize {
    dcvd.log().lines().filter(|l| l.contains("discovery scan")).count()
}

/// The account of the acceptance test, `set_method` off; the daemon rescans on SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_runs_exactly_the_pending_work_of_managed_zones() {
    let bind = Bind::start(&ZONES);
    let orders = vec![
        // by DNS, in managed zones (101 is also listed in the TOML: the TOML wins)
        NewOrder::new(101, &["www.example.com"]),
        NewOrder::new(102, &["shop.example.com", "example.com"]),
        NewOrder::new(103, &["api.example.net"]),
        NewOrder::new(104, &["app.example.org"]).with_method(DcvMethod::DnsCnameToken),
        NewOrder::new(105, &["*.cdn.example.net"]),
        // by DNS, published through the hook that writes nothing: issued by the test mid-run
        NewOrder::new(106, &["held.test"]),
        // email: left alone without set_method
        NewOrder::new(107, &["mail.example.com"]).with_method(DcvMethod::Email),
        NewOrder::new(108, &["smtp.example.net"]).with_method(DcvMethod::Email),
        // names in zones no provider serves (one order mixes a managed and an unmanaged name)
        NewOrder::new(109, &["www.unmanaged.com"]),
        NewOrder::new(110, &["shop.elsewhere.net", "www.example.com"]),
        NewOrder::new(111, &["example.co.uk"]),
        NewOrder::new(112, &["portal.other.org"]).with_method(DcvMethod::DnsCnameToken),
        // not pending: never listed
        NewOrder { status: Some("issued".into()), ..NewOrder::new(113, &["old.example.com"]) },
    ];
    let domains = vec![
        NewDomain::new(201, "secure.example.com").validated("ov", days(10)),
        NewDomain::new(202, "static.example.com").validated("ov", days(200)),
        NewDomain::new(203, "portal.example.net").pending("ov"),
        NewDomain::new(204, "corp.unmanaged.com").validated("ov", days(10)),
        NewDomain::new(205, "x.other.org").pending("ev"),
        NewDomain::new(206, "y.elsewhere.net").validated("ov", days(5)),
    ];
    let sim =
        SimProc::start(SimOpts { dns: vec![bind.primary_addr()], orders, domains, seed: 21, ..SimOpts::default() });
    let dcvd = Dcvd::new(&sim);
    let hook = dcvd.dir.path().join("hold-hook.sh");
    let hook_log = dcvd.dir.path().join("hook.log");
    std::fs::write(&hook, HOOK).unwrap();
    e2e_common::set_mode(&hook, 0o755);
    let rest = format!(
        "{}\n[providers.held]\ntype = \"exec\"\ncommand = [\"{}\", \"{}\"]\nzones = [\"held.test\"]\n\n\
         [discovery]\norders = true\ndomains = true\n\n{}",
        rfc2136_provider("bind", &bind, &["example.com", "example.net", "example.org"]),
        hook.display(),
        hook_log.display(),
        order_toml(101, "dns-txt-token", &["www.example.com"]),
    );
    let metrics_port = test_support::ports::free_port();
    let text = dcvd
        .config(&sim, bind.port(), &rest)
        .replace("[daemon]\n", &format!("[daemon]\nrescan = \"off\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n"));
    dcvd.write_config(&text);
    let mut child = dcvd.spawn(&["run"]);

    // Everything in managed zones validates; 106 waits for a propagation that never comes.
    let done = ["cleaned_up"];
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("dcvd exited ({status}); log:\n{}", tail(&dcvd.log(), 100));
        }
        let u = units(&dcvd);
        let all_done = [("order", 101), ("order", 102), ("order", 103), ("order", 104), ("order", 105)]
            .into_iter()
            .chain([("domain", 201), ("domain", 203)])
            .all(|(k, id)| u.get(&(k.to_string(), id)).is_some_and(|(s, _)| done.contains(&s.as_str())));
        if all_done && u.get(&("order".to_string(), 106)).is_some_and(|(s, _)| s == "published") {
            break;
        }
        assert!(start.elapsed() < LIMIT, "discovered units not validated in time: {u:?}\n{}", tail(&dcvd.log(), 80));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let want: BTreeMap<(String, u64), String> = [
        (("order", 101), "config"),
        (("order", 102), "discovered"),
        (("order", 103), "discovered"),
        (("order", 104), "discovered"),
        (("order", 105), "discovered"),
        (("order", 106), "discovered"),
        (("domain", 201), "discovered"),
        (("domain", 203), "discovered"),
    ]
    .into_iter()
    .map(|((k, id), s)| ((k.to_string(), id), s.to_string()))
    .collect();
    let got: BTreeMap<(String, u64), String> = units(&dcvd).into_iter().map(|(k, (_, source))| (k, source)).collect();
    assert_eq!(got, want, "exactly these units, with their source");
    for id in [101, 102, 103, 104, 105] {
        let o = sim.order(id).await;
        assert_eq!((o.status.as_str(), o.dcv_status.as_str()), ("issued", "valid"), "order {id}: {o:?}");
    }
    for id in [201, 203] {
        let d = sim.domain(id).await;
        assert!(d.dcv_valid && d.validated_until["ov"] > days(300), "domain {id} revalidated: {d:?}");
    }
    // Left alone: email orders keep their method, unmanaged work gets no call at all.
    for id in [107, 108] {
        assert_eq!(sim.order(id).await.dcv_method, DcvMethod::Email);
        assert_eq!(
            order_calls(&sim, id).await,
            BTreeMap::from([("order_validation".to_string(), 1)]),
            "order {id}: one look at its method, nothing else"
        );
    }
    for id in [109, 110, 111, 112, 113] {
        assert_eq!(order_calls(&sim, id).await, BTreeMap::new(), "order {id} must not be touched");
    }
    for id in [202, 204, 205, 206] {
        assert_eq!(domain_calls(&sim, id).await, BTreeMap::new(), "domain {id} must not be touched");
    }
    assert_eq!(sim.domain(202).await.validated_until["ov"].date_naive(), days(200).date_naive());
    // Costs: one list call of each kind, one info call per new candidate, 2 calls per DV order
    // (token + check) and per domain (submit + check).
    let stats = sim.stats().await;
    assert_eq!(scans(&dcvd), 1, "one scan at start");
    assert_eq!(stats.calls.get("list_orders"), Some(&1), "{:?}", stats.calls);
    assert_eq!(stats.calls.get("list_domains"), Some(&1), "{:?}", stats.calls);
    assert_eq!(stats.calls.get("order_info"), None, "names come from the list: {:?}", stats.calls);
    // 102..108: 7 new candidates (101 is the TOML's; 109..112 are filtered out without a call)
    assert_eq!(stats.calls.get("order_validation"), Some(&7), "{:?}", stats.calls);
    // only 203 has no active validation listed
    assert_eq!(stats.calls.get("domain_info"), Some(&1), "{:?}", stats.calls);
    assert_eq!(domain_calls(&sim, 201).await.values().sum::<u64>(), 2, "201: submit + check");
    assert_eq!(domain_calls(&sim, 203).await.values().sum::<u64>(), 3, "203: info + submit + check");
    for id in [102, 103, 104, 105] {
        assert_eq!(
            order_calls(&sim, id).await.values().sum::<u64>(),
            3,
            "order {id}: validation status + token + check"
        );
    }
    assert_eq!(stats.premature_checks, 0);

    // CertCentral's order list fails: the scan keeps the units it had (106 keeps waiting).
    admin(
        &sim,
        reqwest::Method::PUT,
        "/_sim/faults",
        serde_json::json!({"endpoints": {"list_orders": {"error_503": 1.0}}}),
    )
    .await;
    signal(&child, "HUP");
    eventually(LIMIT, "the failed scan", || async { scans(&dcvd) == 2 }).await;
    assert!(dcvd.log().contains("cannot list pending orders"), "{}", tail(&dcvd.log(), 40));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state_of(&dcvd, "order", 106).as_deref(), Some("published"), "a failed list must not end a unit");
    admin(&sim, reqwest::Method::PUT, "/_sim/faults", serde_json::json!({})).await;

    // 106 is issued in CertCentral (someone validated it another way): it leaves the pending
    // list, so its unit ends and its record is removed.
    admin(&sim, reqwest::Method::PATCH, "/_sim/orders/106", serde_json::json!({"status": "issued"})).await;
    signal(&child, "HUP");
    eventually(LIMIT, "unit 106 removed", || async { state_of(&dcvd, "order", 106).as_deref() == Some("removed") })
        .await;
    let hook_calls = std::fs::read_to_string(&hook_log).unwrap_or_default();
    let value = sim.order(106).await.dcv_random_value;
    assert_eq!(
        hook_calls.lines().collect::<Vec<_>>(),
        [format!("present _dnsauth.held.test TXT {value}"), format!("cleanup _dnsauth.held.test TXT {value}")],
        "the held order's record: published once, removed once"
    );
    // Everything that finished stays finished; nothing was restarted.
    let after = units(&dcvd);
    for id in [101, 102, 103, 104, 105] {
        assert_eq!(after[&("order".to_string(), id)].0, "cleaned_up", "order {id}");
    }
    for id in [201, 203] {
        assert_eq!(after[&("domain".to_string(), id)].0, "cleaned_up", "domain {id}");
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    for line in ["dcvd_discovery_scans_total{result=\"ok\"} 2", "dcvd_discovery_scans_total{result=\"failed\"} 1"] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing from:\n{metrics}");
    }
    signal(&child, "TERM");
    let status = dcvd.wait(child, Duration::from_secs(30), "dcvd run").await;
    assert!(status.success(), "{status}");

    let stats = sim.stats().await;
    assert_eq!(scans(&dcvd), 3, "start + 2 SIGHUPs");
    assert_eq!(stats.calls.get("list_domains"), Some(&3), "one per scan: {:?}", stats.calls);
    // start, the failed scan (5 attempts: the client's retry policy), the last scan
    assert_eq!(stats.calls.get("list_orders"), Some(&7), "{:?}", stats.calls);
    assert_eq!(stats.calls.get("order_validation"), Some(&7), "known candidates cost no info call again");
    assert_eq!(stats.calls.get("domain_info"), Some(&1), "{:?}", stats.calls);
    assert_eq!(stats.calls.get("order_dcv_method"), None, "set_method is off");
    for zone in ZONES {
        assert!(dcv_records(bind.primary_addr(), zone, &[]).is_empty(), "records left in {zone}");
    }
    let tsig = std::fs::read_to_string(bind.tsig_secret_file()).unwrap();
    dcvd.assert_no_secrets(&[("TSIG secret", &tsig)]);
}

/// `set_method = "dns-txt-token"`: pending email orders are switched (once, logged) and validate
/// by DNS; a DNS order is not switched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_method_switches_email_orders_to_dns() {
    let bind = Bind::start(&["example.com"]);
    let orders = vec![
        NewOrder::new(301, &["mail.example.com"]).with_method(DcvMethod::Email),
        NewOrder::new(302, &["www.example.com", "example.com"]).with_method(DcvMethod::Email),
        NewOrder::new(303, &["shop.example.com"]),
    ];
    let sim = SimProc::start(SimOpts { dns: vec![bind.primary_addr()], orders, seed: 22, ..SimOpts::default() });
    let dcvd = Dcvd::new(&sim);
    let rest = format!(
        "{}\n[discovery]\norders = true\nset_method = \"dns-txt-token\"\n",
        rfc2136_provider("bind", &bind, &["example.com"])
    );
    dcvd.write_config(&dcvd.config(&sim, bind.port(), &rest));
    let status = dcvd.once(LIMIT).await;
    let log = dcvd.assert_success(status, "dcvd once");
    for id in [301, 302, 303] {
        let o = sim.order(id).await;
        assert_eq!((o.status.as_str(), o.dcv_method), ("issued", DcvMethod::DnsTxtToken), "order {id}: {o:?}");
    }
    let switched: Vec<&str> = log.lines().filter(|l| l.contains("switched the order's DCV method")).collect();
    assert_eq!(switched.len(), 2, "one INFO line per switched order:\n{}", switched.join("\n"));
    assert!(
        switched.iter().all(|l| l.contains("INFO") && l.contains("email") && l.contains("dns-txt-token")),
        "{}",
        switched.join("\n")
    );
    for id in [301, 302] {
        assert_eq!(order_calls(&sim, id).await.get("order_dcv_method"), Some(&1), "order {id} switched once");
    }
    assert_eq!(order_calls(&sim, 303).await.get("order_dcv_method"), None, "a DNS order is not switched");
    let stats = sim.stats().await;
    assert_eq!((stats.calls.get("list_orders"), stats.calls.get("list_domains")), (Some(&1), None));
    assert!(dcv_records(bind.primary_addr(), "example.com", &[]).is_empty(), "records left");
    let u = units(&dcvd);
    assert_eq!(u.len(), 3, "{u:?}");
    assert!(u.values().all(|(state, source)| state == "cleaned_up" && source == "discovered"), "{u:?}");

    // `check-config` shows the section; `--online` with discovery alone checks the key with the
    // call a scan starts with.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dcvd"))
        .args(["check-config", "--online", "--config"])
        .arg(dcvd.config_path())
        .output()
        .expect("run dcvd check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("discovery: orders on, domains off, set_method dns-txt-token"), "{stdout}");
    assert!(stdout.contains(&format!("certcentral {}: ok", sim.base_url)), "{stdout}");
    assert_eq!(sim.stats().await.calls.get("list_orders"), Some(&2), "one List orders more");
}
