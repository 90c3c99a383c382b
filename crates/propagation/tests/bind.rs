//! The checker against real BIND 9 servers: a primary on 127.0.0.1 and a lagging secondary on
//! 127.0.0.2, the primary doubling as the "resolver" (authoritative only, no recursion).

use std::time::{Duration, Instant};

use propagation::{Checker, CheckerConfig, Error, Expected, Mode, Progress, ResolverSpec, ServerStatus};
use test_support::bind::{Bind, ZoneSpec};
use tokio_util::sync::CancellationToken;

fn checker(bind: &Bind, poll_min: Duration, poll_max: Duration) -> Checker {
    Checker::new(CheckerConfig {
        resolvers: vec![ResolverSpec::Addr(bind.primary_addr())],
        mode: Mode::Authoritative,
        nameserver_port: bind.port(),
        poll_min,
        poll_max,
        query_timeout: Duration::from_millis(500),
        max_queries_per_second: 200,
    })
    .expect("checker")
}

fn status_of<'a>(p: &'a Progress, server: &str) -> &'a ServerStatus {
    &p.servers.iter().find(|(n, _, _)| n == server).unwrap_or_else(|| panic!("{server} not in {p:?}")).2
}

fn deadline(d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + d
}

/// A lagging secondary holds the wait back; the wait ends soon after the secondary serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_the_lagging_secondary() {
    let bind = Bind::builder().zone(ZoneSpec::new("z.test")).with_lagging_secondary().start();
    bind.nsupdate("zone z.test\nupdate add _dnsauth.z.test 60 TXT \"lag-value\"");
    let checker = checker(&bind, Duration::from_millis(100), Duration::from_millis(400));

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let c = checker.clone();
    let wait = tokio::spawn(async move {
        let cancel = CancellationToken::new();
        let r = c
            .wait_visible(
                "_dnsauth.z.test",
                &Expected::Txt("lag-value".into()),
                deadline(Duration::from_secs(60)),
                &cancel,
                &mut |p| {
                    let _ = tx.send(p.clone());
                },
            )
            .await;
        (r, Instant::now())
    });

    // The primary serves at once, the secondary does not: the wait must go on.
    let first = rx.recv().await.expect("a progress report");
    assert_eq!(*status_of(&first, "ns1.z.test"), ServerStatus::Serving, "{first:?}");
    assert_eq!(*status_of(&first, "ns2.z.test"), ServerStatus::NotYet, "{first:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!wait.is_finished(), "the wait ended while the secondary lagged");

    let released = Instant::now();
    bind.refresh_secondary("z.test");
    bind.wait_secondary_synced("z.test", Duration::from_secs(10));
    let (result, done) = tokio::time::timeout(Duration::from_secs(20), wait).await.expect("wait ended").expect("task");
    let p = result.expect("visible");
    assert!(p.all_serving());
    let names: Vec<_> = p.servers.iter().map(|(n, a, _)| format!("{n} {a}")).collect();
    assert_eq!(
        names,
        vec![format!("ns1.z.test 127.0.0.1:{}", bind.port()), format!("ns2.z.test 127.0.0.2:{}", bind.port())]
    );
    let latency = done - released;
    println!("detection latency after the secondary refresh: {latency:?} ({} queries)", p.queries);
    assert!(latency < Duration::from_secs(3), "detected {latency:?} after the refresh (poll_max is 400 ms)");
}

/// A stopped name server is reported failing, and the deadline error names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_server_down_is_named_at_the_deadline() {
    let mut bind = Bind::builder().zone(ZoneSpec::new("down.test")).with_lagging_secondary().start();
    bind.stop_secondary();
    bind.nsupdate("zone down.test\nupdate add _dnsauth.down.test 60 TXT \"v\"");
    let checker = checker(&bind, Duration::from_millis(100), Duration::from_millis(300));
    let mut last = None;
    let err = checker
        .wait_visible(
            "_dnsauth.down.test",
            &Expected::Txt("v".into()),
            deadline(Duration::from_secs(2)),
            &CancellationToken::new(),
            &mut |p| last = Some(p.clone()),
        )
        .await
        .expect_err("must time out");
    let last = last.expect("progress reported");
    assert_eq!(*status_of(&last, "ns1.down.test"), ServerStatus::Serving);
    assert!(matches!(status_of(&last, "ns2.down.test"), ServerStatus::Failing(_)), "{last:?}");
    let Error::Timeout { lagging, .. } = &err else { panic!("expected a timeout, got {err:?}") };
    assert_eq!(lagging.len(), 1, "{lagging:?}");
    let ns2 = format!("ns2.down.test (127.0.0.2:{})", bind.port());
    assert!(lagging[0].starts_with(&ns2), "{lagging:?}");
    assert!(err.to_string().contains(&ns2), "{err}");
    println!("{err}");
}

/// A CNAME into a second zone is followed: the target shows the chain, the check succeeds
/// where the TXT really lives; a CNAME check does not follow; a loop is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_delegation_cname_into_another_zone() {
    let bind = Bind::builder()
        .zone(
            ZoneSpec::new("a.test")
                .with_line("_dnsauth 60 IN CNAME _dnsauth.b.test.")
                .with_line("loop1 60 IN CNAME loop2.a.test.")
                .with_line("loop2 60 IN CNAME loop1.a.test."),
        )
        .zone(ZoneSpec::new("b.test"))
        .start();
    let checker = checker(&bind, Duration::from_millis(50), Duration::from_millis(200));

    let t = checker.target("_dnsauth.a.test.", true).await.expect("target");
    assert_eq!(t.name, "_dnsauth.a.test");
    assert_eq!(t.owner, "_dnsauth.b.test");
    assert_eq!(t.cname_chain, vec!["_dnsauth.b.test".to_string()]);
    assert!(t.is_delegated());
    assert_eq!(t.zone, "b.test");
    assert_eq!(t.nameservers.len(), 1);
    assert_eq!(t.nameservers[0].name, "ns1.b.test");
    assert_eq!(t.nameservers[0].addrs, vec![bind.primary_addr()]);

    bind.nsupdate("zone b.test\nupdate add _dnsauth.b.test 60 TXT \"delegated\"");
    let p = checker
        .wait_visible(
            "_dnsauth.a.test",
            &Expected::Txt("delegated".into()),
            deadline(Duration::from_secs(10)),
            &CancellationToken::new(),
            &mut |_| {},
        )
        .await
        .expect("visible at the target");
    assert_eq!(p.target.owner, "_dnsauth.b.test");

    let unfollowed = checker.target("_dnsauth.a.test", false).await.expect("target");
    assert_eq!((unfollowed.owner.as_str(), unfollowed.zone.as_str()), ("_dnsauth.a.test", "a.test"));
    assert!(!unfollowed.is_delegated());
    let p = checker.check_once("_dnsauth.a.test", &Expected::Cname("_dnsauth.B.test.".into())).await.expect("check");
    assert!(p.all_serving(), "{p:?}");
    let p = checker.check_once("_dnsauth.a.test", &Expected::Cname("other.b.test".into())).await.expect("check");
    assert_eq!(p.servers[0].2, ServerStatus::NotYet);

    let err = checker.target("loop1.a.test", true).await.expect_err("loop");
    assert!(matches!(&err, Error::CnameLoop { chain, .. } if chain.len() == 2), "{err:?}");
}

/// A TXT RRset too large for UDP is fetched over TCP and found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_txt_rrset_over_tcp() {
    let bind = Bind::builder().zone(ZoneSpec::new("big.test")).start();
    let mut cmds = String::from("zone big.test\n");
    for i in 0..20 {
        cmds.push_str(&format!("update add _dnsauth.big.test 60 TXT \"{i:02}{}\"\n", "x".repeat(98)));
    }
    cmds.push_str("update add _dnsauth.big.test 60 TXT \"ours\"");
    bind.nsupdate(&cmds);
    let checker = checker(&bind, Duration::from_millis(50), Duration::from_millis(200));
    let p = checker.check_once("_dnsauth.big.test", &Expected::Txt("ours".into())).await.expect("check");
    assert!(p.all_serving(), "{p:?}");
    assert_eq!(p.queries, 2, "one UDP query answered truncated, then one TCP query");
    let p =
        checker.check_once("_dnsauth.big.test", &Expected::Txt(format!("07{}", "x".repeat(98)))).await.expect("check");
    assert!(p.all_serving(), "{p:?}");
}

/// NXDOMAIN, NODATA and another value are "not yet"; REFUSED and SERVFAIL are failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_answers_and_server_failures() {
    let bind = Bind::builder()
        .zone(ZoneSpec::new("neg.test").with_line("www 60 IN A 192.0.2.1").with_line("_dnsauth 60 IN TXT \"other\""))
        .zone(ZoneSpec::new("srv.test"))
        .start();
    let checker = checker(&bind, Duration::from_millis(50), Duration::from_millis(200));
    let v = Expected::Txt("v".into());
    for name in ["nothing-here.neg.test", "www.neg.test", "_dnsauth.neg.test"] {
        let p = checker.check_once(name, &v).await.expect("check");
        assert_eq!(p.servers.len(), 1);
        assert_eq!(p.servers[0].2, ServerStatus::NotYet, "{name}: {p:?}");
    }

    // A second BIND, used as every zone's "name server port": it does not serve neg.test
    // (REFUSED) and cannot load its own copy of srv.test (SERVFAIL).
    let other = Bind::builder()
        .zone(ZoneSpec::new("other.test"))
        .zone(ZoneSpec::new("srv.test").with_line("this line is not a record"))
        .start();
    assert!(test_support::bind::dig(other.primary_addr(), "srv.test", "SOA").is_empty(), "srv.test must be broken");
    let cross =
        Checker::new(CheckerConfig { nameserver_port: other.port(), ..checker.config().clone() }).expect("checker");
    let p = cross.check_once("_dnsauth.neg.test", &v).await.expect("check");
    assert!(matches!(&p.servers[0].2, ServerStatus::Failing(e) if e.contains("REFUSED")), "{p:?}");
    let p = cross.check_once("_dnsauth.srv.test", &v).await.expect("check");
    assert!(matches!(&p.servers[0].2, ServerStatus::Failing(e) if e.contains("SERVFAIL")), "{p:?}");
}

/// The negative-caching TTL is the zone's SOA minimum, found through a negative answer and at
/// the apex.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_ttl_is_the_soa_minimum() {
    let bind = Bind::builder().zone(ZoneSpec { soa_minimum: 17, ..ZoneSpec::new("ttl.test") }).start();
    let checker = checker(&bind, Duration::from_millis(50), Duration::from_millis(200));
    let t = checker.target("_dnsauth.ttl.test", true).await.expect("target");
    assert_eq!(t.zone, "ttl.test");
    assert_eq!(t.negative_ttl, Duration::from_secs(17));
    let apex = checker.target("ttl.test", true).await.expect("target");
    assert_eq!(apex.zone, "ttl.test");
    assert_eq!(apex.negative_ttl, Duration::from_secs(17));
    let err = checker.target("nowhere.invalid", true).await.expect_err("no zone");
    assert!(matches!(err, Error::NoZone { .. }), "{err:?}");
}

/// A name in no zone the resolvers know (they answer REFUSED) is waited for until the deadline,
/// then the wait ends as a timeout that names the cause, not as an error to retry for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_in_no_zone_times_out_with_the_cause() {
    let bind = Bind::builder().zone(ZoneSpec::new("known.test")).start();
    let checker = checker(&bind, Duration::from_millis(50), Duration::from_millis(200));
    let err = checker.target("_dnsauth.unknown.example", true).await.expect_err("no zone");
    assert!(err.is_no_zone(), "{err:?}");
    let err = checker
        .wait_visible(
            "_dnsauth.unknown.example",
            &Expected::Txt("v".into()),
            deadline(Duration::from_secs(2)),
            &CancellationToken::new(),
            &mut |_| {},
        )
        .await
        .expect_err("cannot be visible");
    match &err {
        Error::Timeout { name, lagging, .. } => {
            assert_eq!(name, "_dnsauth.unknown.example");
            assert!(
                lagging.len() == 1 && lagging[0].contains("no zone found") && lagging[0].contains("REFUSED"),
                "{lagging:?}"
            );
        }
        other => panic!("expected a timeout naming the cause, got {other:?}"),
    }
}

/// The relevant CAA set is the first one found climbing from the name: the name's own, else its
/// parent's; a name with none up the tree has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caa_is_found_at_the_name_or_its_closest_parent() {
    let bind = Bind::builder()
        .zone(
            ZoneSpec::new("caa.test")
                .with_line("@ 60 IN CAA 0 issue \"letsencrypt.org\"")
                .with_line("@ 60 IN CAA 0 iodef \"mailto:sec@caa.test\"")
                .with_line("shop 60 IN CAA 128 issuewild \"digicert.com; x=y\"")
                .with_line("www 60 IN A 192.0.2.1"),
        )
        .zone(ZoneSpec::new("plain.test"))
        .start();
    let checker = checker(&bind, Duration::from_millis(50), Duration::from_millis(200));
    let www = checker.caa("www.caa.test").await.expect("caa").expect("a set");
    assert_eq!(www.owner, "caa.test");
    assert_eq!(www.records.len(), 2, "{www:?}");
    assert!(www.records.iter().any(|r| r.tag == "issue" && r.value == "letsencrypt.org" && !r.critical), "{www:?}");
    let shop = checker.caa("a.shop.caa.test").await.expect("caa").expect("a set");
    assert_eq!(shop.owner, "shop.caa.test");
    assert_eq!(
        shop.records,
        vec![propagation::Caa { critical: true, tag: "issuewild".into(), value: "digicert.com; x=y".into() }]
    );
    assert_eq!(checker.caa("x.plain.test").await.expect("caa"), None);
    // 100 names of one zone, looked at together: each name is asked, the zone's apex and the
    // names above it once (a cache of parents), not 100 times.
    let before = checker.queries_sent();
    let names: Vec<String> = (0..100).map(|i| format!("n{i}.plain.test")).collect();
    let mut lookups = tokio::task::JoinSet::new();
    for name in names {
        let checker = checker.clone();
        lookups.spawn(async move { checker.caa(&name).await });
    }
    while let Some(set) = lookups.join_next().await {
        assert!(matches!(set, Ok(Ok(None))), "{set:?}");
    }
    let asked = checker.queries_sent() - before;
    assert!((100..=103).contains(&asked), "{asked} queries for 100 names of one zone");
}
