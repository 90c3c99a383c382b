//! Zone routing: the longest zone suffix wins, a zone matches itself, labels are matched whole,
//! names are normalized, `route_via` restricts to one provider, and an unroutable name says how
//! to fix the configuration.

use std::sync::Arc;

use dns_provider::memory::{MemoryProvider, MemoryStore};
use dns_provider::{RouteError, Router, SharedProvider};

fn provider(zones: &[&str]) -> SharedProvider {
    Arc::new(MemoryProvider::new(zones.iter().map(|z| z.to_string()).collect(), MemoryStore::new()))
}

fn router() -> Router {
    let mut r = Router::new();
    r.add("parent", provider(&["example.com", "example.org"]));
    r.add("child", provider(&["Sub.Example.COM."]));
    r.add("other", provider(&["example.net", "deep.sub.example.com"]));
    r
}

fn route(r: &Router, name: &str) -> (String, String) {
    let (provider, _, zone) = r.route(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    (provider.to_string(), zone.to_string())
}

/// The most specific configured zone wins, whatever the order the providers were added in.
#[test]
fn longest_suffix_wins() {
    let r = router();
    assert_eq!(route(&r, "_dnsauth.www.example.com"), ("parent".into(), "example.com".into()));
    assert_eq!(route(&r, "_dnsauth.sub.example.com"), ("child".into(), "sub.example.com".into()));
    assert_eq!(route(&r, "_dnsauth.x.deep.sub.example.com"), ("other".into(), "deep.sub.example.com".into()));

    let mut reversed = Router::new();
    reversed.add("other", provider(&["deep.sub.example.com"]));
    reversed.add("child", provider(&["sub.example.com"]));
    reversed.add("parent", provider(&["example.com"]));
    assert_eq!(route(&reversed, "a.deep.sub.example.com").0, "other");
    assert_eq!(route(&reversed, "a.sub.example.com").0, "child");
}

/// A zone apex routes to its own zone; a name sharing only a string suffix does not match.
#[test]
fn exact_zone_and_whole_labels() {
    let r = router();
    assert_eq!(route(&r, "example.com"), ("parent".into(), "example.com".into()));
    assert_eq!(route(&r, "sub.example.com"), ("child".into(), "sub.example.com".into()));
    assert_eq!(route(&r, "notsub.example.com"), ("parent".into(), "example.com".into()));
    assert!(r.route("badexample.com").is_err(), "badexample.com is not inside example.com");
}

/// Names are normalized: case and a trailing dot do not matter.
#[test]
fn names_are_normalized() {
    let r = router();
    assert_eq!(route(&r, "_DNSAUTH.WWW.Example.Org."), ("parent".into(), "example.org".into()));
}

/// An unroutable name gives an error naming it and telling what to configure.
#[test]
fn no_match_error() {
    let r = router();
    let err = r.route("_dnsauth.example.io.").unwrap_err();
    assert_eq!(err, RouteError { name: "_dnsauth.example.io".into() });
    assert_eq!(
        err.to_string(),
        "no provider serves _dnsauth.example.io: add its zone to the `zones` of a [providers.NAME] section"
    );
    assert!(Router::new().route("example.com").is_err());
}

/// `route_via` uses only the named provider's zones, even when another has a longer match.
#[test]
fn route_via_restricts_to_one_provider() {
    let r = router();
    let (name, p, zone) = r.route_via("parent", "_dnsauth.sub.example.com").expect("parent serves example.com");
    assert_eq!((name, zone, p.kind()), ("parent", "example.com", "memory"));
    let (name, _, zone) = r.route_via("other", "a.deep.sub.example.com").expect("other");
    assert_eq!((name, zone), ("other", "deep.sub.example.com"));
    let err = r.route_via("child", "_dnsauth.example.org").unwrap_err();
    assert_eq!(err.name, "_dnsauth.example.org");
    assert!(r.route_via("missing", "example.com").is_err());
}

/// `provider` finds a configured instance by its config name.
#[test]
fn provider_by_name() {
    let r = router();
    assert_eq!(r.provider("child").map(|p| p.zones().to_vec()), Some(vec!["sub.example.com".to_string()]));
    assert!(r.provider("nope").is_none());
}
