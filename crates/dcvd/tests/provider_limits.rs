//! The per-account client-side rate limit of providers: sections acting as one account share
//! one limiter, every API request of every section goes through it, and the documented
//! defaults apply when `rate_limit` is absent.

use std::path::Path;
use std::time::Duration;

use dcvd::config::{Config, Environment, RateLimit};
use dcvd::providers;
use dns_provider::Record;
use test_support::cloudflare_fake::CloudflareFake;

fn config(text: &str, env: &Environment) -> Config {
    Config::from_toml_with(text, Path::new("dcvd.toml"), env).unwrap_or_else(|e| panic!("{e}"))
}

/// Two Cloudflare sections with one token are one account: one limiter admits the requests of
/// both, and it admits exactly the requests the API received.
#[tokio::test]
async fn sections_of_one_account_share_one_limiter() {
    let fake = CloudflareFake::builder().zone("a.example").zone("b.example").start().await;
    let env = Environment::isolated().with_var("KEY", "k").with_var("CF_TOKEN", fake.token.clone());
    let section = |name: &str, zone: &str| {
        format!(
            "[providers.{name}]\ntype = \"cloudflare\"\nzones = [\"{zone}\"]\napi_token_env = \"CF_TOKEN\"\n\
             base_url = \"{}\"\nrate_limit = {{ requests = 1000, per = \"1s\" }}\n",
            fake.base_url
        )
    };
    let text =
        format!("[certcentral]\napi_key_env = \"KEY\"\n{}{}", section("one", "a.example"), section("two", "b.example"));
    let config = config(&text, &env);
    let (one, two) = (&config.providers["one"], &config.providers["two"]);
    let limit = RateLimit { requests: 1000, per: Duration::from_secs(1) };
    assert_eq!((one.rate_limit, two.rate_limit), (Some(limit), Some(limit)));
    let account = one.settings.account().expect("cloudflare is rate limited");
    assert_eq!(Some(&account), two.settings.account().as_ref(), "one token, one account");
    assert!(!account.contains(&fake.token), "the account key holds no token: {account}");

    let adapter_one = providers::build("one", one).await.unwrap();
    let adapter_two = providers::build("two", two).await.unwrap();
    adapter_one.publish_batch("a.example", &[Record::txt("_dnsauth.a.example", "value-one")]).await.unwrap();
    adapter_two.publish_batch("b.example", &[Record::txt("_dnsauth.b.example", "value-two")]).await.unwrap();
    adapter_one.remove_batch("a.example", &[Record::txt("_dnsauth.a.example", "value-one")]).await.unwrap();

    let limiter = providers::account_limiter(&account, limit).unwrap();
    let requests = fake.request_count() as u64;
    assert!(requests >= 4, "each section made requests: {requests}");
    assert_eq!(limiter.admitted(), requests, "every request of both sections went through the one limiter");
}

/// Without `rate_limit` each type gets its documented default; types without an HTTP API
/// refuse the key, with its position.
#[test]
fn documented_defaults_and_refusals() {
    let env = Environment::isolated().with_var("KEY", "k").with_var("TOKEN", "t0ken").with_var("TSIG", "c2VjcmV0");
    let text = "[certcentral]\napi_key_env = \"KEY\"\n\
                [providers.aws]\ntype = \"route53\"\nzones = [\"a.example\"]\n\
                [providers.cf]\ntype = \"cloudflare\"\nzones = [\"b.example\"]\napi_token_env = \"TOKEN\"\n\
                [providers.pdns]\ntype = \"powerdns\"\nzones = [\"c.example\"]\napi_url = \"https://pdns.example\"\napi_key_env = \"TOKEN\"\n\
                [providers.bind]\ntype = \"rfc2136\"\nzones = [\"d.example\"]\nserver = \"192.0.2.53\"\ntsig_key_name = \"k\"\ntsig_secret_env = \"TSIG\"\n";
    let config = config(text, &env);
    let limit = |name: &str| config.providers[name].rate_limit;
    assert_eq!(limit("aws"), Some(RateLimit { requests: 5, per: Duration::from_secs(1) }));
    assert_eq!(limit("cf"), Some(RateLimit { requests: 1200, per: Duration::from_secs(300) }));
    assert_eq!(limit("pdns"), None, "PowerDNS does not throttle");
    assert_eq!(limit("bind"), None);

    let overridden = text.replace(
        "api_url = \"https://pdns.example\"\n",
        "api_url = \"https://pdns.example\"\nrate_limit = { requests = 20, per = \"1m\" }\n",
    );
    assert_eq!(config_limit(&overridden, &env, "pdns"), Some(RateLimit { requests: 20, per: Duration::from_secs(60) }));

    let cases = [
        (
            text.replace(
                "tsig_secret_env = \"TSIG\"\n",
                "tsig_secret_env = \"TSIG\"\nrate_limit = { requests = 1, per = \"1s\" }\n",
            ),
            "dcvd.toml:21:14: provider `bind`: type `rfc2136` has no HTTP API to rate limit: remove `rate_limit`",
        ),
        (
            text.replace(
                "api_token_env = \"TOKEN\"\n",
                "api_token_env = \"TOKEN\"\nrate_limit = { requests = 0, per = \"1s\" }\n",
            ),
            "dcvd.toml:10:27: provider `cf`: `requests` of `rate_limit` must be at least 1",
        ),
        (
            text.replace(
                "api_token_env = \"TOKEN\"\n",
                "api_token_env = \"TOKEN\"\nrate_limit = { requests = 5, every = \"1s\" }\n",
            ),
            "dcvd.toml:10:30: unknown field `every`, expected `requests` or `per`",
        ),
    ];
    for (text, want) in cases {
        let err = Config::from_toml_with(&text, Path::new("dcvd.toml"), &env).unwrap_err();
        assert_eq!(err.to_string(), want);
    }
}

fn config_limit(text: &str, env: &Environment, name: &str) -> Option<RateLimit> {
    config(text, env).providers[name].rate_limit
}

/// Two sections of one account must agree on its limit: there is only one.
#[test]
fn one_account_cannot_have_two_limits() {
    let env = Environment::isolated().with_var("KEY", "k").with_var("TOKEN", "t0ken");
    let text = "[certcentral]\napi_key_env = \"KEY\"\n\
                [providers.one]\ntype = \"cloudflare\"\nzones = [\"a.example\"]\napi_token_env = \"TOKEN\"\n\
                [providers.two]\ntype = \"cloudflare\"\nzones = [\"b.example\"]\napi_token_env = \"TOKEN\"\n\
                rate_limit = { requests = 100, per = \"1m\" }\n";
    let err = Config::from_toml_with(text, Path::new("dcvd.toml"), &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "dcvd.toml:7:1: providers `one` and `two` use the same cloudflare account, which has one client-side \
         rate limit: give both the same `rate_limit` (or none)"
    );
}

/// A reload keeps an adapter only when its section is equal: a changed limit or token is a
/// change (the adapter is rebuilt with the new limiter), the same text is not.
#[test]
fn provider_equality_covers_the_limit_and_the_secret() {
    let env = Environment::isolated().with_var("KEY", "k").with_var("TOKEN", "t0ken").with_var("OTHER", "0ther");
    let text = "[certcentral]\napi_key_env = \"KEY\"\n\
                [providers.cf]\ntype = \"cloudflare\"\nzones = [\"a.example\"]\napi_token_env = \"TOKEN\"\n";
    let base = config(text, &env);
    assert_eq!(config(text, &env).providers["cf"], base.providers["cf"]);
    let limited = config(&format!("{text}rate_limit = {{ requests = 10, per = \"1s\" }}\n"), &env);
    assert_ne!(limited.providers["cf"], base.providers["cf"], "a new limit is a change");
    let rotated = config(&text.replace("\"TOKEN\"", "\"OTHER\""), &env);
    assert_ne!(rotated.providers["cf"], base.providers["cf"], "a new token is a change");
    assert_ne!(rotated.providers["cf"].settings.account(), base.providers["cf"].settings.account());
    let debug = format!("{:?}", rotated.providers["cf"]);
    assert!(!debug.contains("0ther") && debug.contains("REDACTED"), "{debug}");
}
