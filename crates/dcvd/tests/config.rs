//! The configuration layer: malformed files give the exact message at the exact line:column,
//! the shipped example parses, order files merge, defaults hold, secrets resolve and never leak.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dcvd::config::{
    CnameName, Config, ConfigError, Environment, LogFormat, Method, OnExpiry, PropagationMode, RateLimit, Resolver,
    TxtName, UnitKey,
};
use dcvd::providers::acmedns::AcmeDns;
use dcvd::providers::azure::Azure;
use dcvd::providers::cloudflare::Cloudflare;
use dcvd::providers::exec::Exec;
use dcvd::providers::gcloud::Gcloud;
use dcvd::providers::memory::Memory;
use dcvd::providers::powerdns::PowerDns;
use dcvd::providers::rfc2136::{Rfc2136, TsigAlgorithm};
use secrecy::ExposeSecret;
use tempfile::TempDir;

/// A credentials directory with a readable key file, and an isolated environment that points
/// at it and holds the variables the cases use.
fn fixture() -> (TempDir, Environment) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_secret(dir.path(), "key", "file-api-key\n", 0o600);
    write_secret(dir.path(), "bad-tsig", "not-base64!\n", 0o600);
    write_secret(dir.path(), "two-lines", "sup3r-line-one\nsup3r-line-two\n", 0o600);
    write_secret(dir.path(), "padded", "  sup3r-padded\n\n", 0o600);
    let env = Environment::isolated()
        .with_credentials_dir(dir.path())
        .with_var("KEY", "env-api-key")
        .with_var("CF", "cf-token")
        .with_var("TSIG", "c2VjcmV0LXRzaWcta2V5")
        .with_var("EMPTY", "  ")
        .with_var("LABELLED", "Bearer sup3r-labelled");
    (dir, env)
}

fn write_secret(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, content).expect("write secret");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

fn parse(text: &str, env: &Environment) -> Result<Config, ConfigError> {
    Config::from_toml_with(text, Path::new("dcvd.toml"), env)
}

/// One malformed configuration and the error it must produce.
struct Case {
    name: &'static str,
    toml: &'static str,
    /// Line and column of the error.
    at: (usize, usize),
    /// The message, without the position; `{dir}` stands for the credentials directory.
    message: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "toml syntax error",
        toml: "[certcentral\napi_key_env = \"KEY\"\n",
        at: (1, 13),
        message: "unclosed table, expected `]`",
    },
    Case {
        name: "unknown top-level key",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[deamon]\ncleanup = false\n",
        at: (3, 2),
        message: "unknown field `deamon`, expected one of `certcentral`, `daemon`, \
                  `propagation`, `check`, `notify`, `discovery`, `store`, `providers`, `order`, `domain`",
    },
    Case {
        name: "unknown key in [daemon] lists the expected keys",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[daemon]\nmax_concurent = 3\n",
        at: (4, 1),
        message: "unknown field `max_concurent`, expected one of `state_dir`, `order_files`, \
                  `rescan`, `max_concurrent`, `cleanup`, `on_expiry`, `max_renewals`, \
                  `log_format`, `metrics_listen`",
    },
    Case {
        name: "inline api key is not a key",
        toml: "[certcentral]\napi_key = \"abc\"\n",
        at: (2, 1),
        message: "unknown field `api_key`, expected one of `base_url`, `api_key_file`, \
                  `api_key_env`, `rate_limits`, `timeout`, `validation_scope`, `caa_check`",
    },
    Case {
        name: "unknown validation scope",
        toml: "[certcentral]\napi_key_env = \"KEY\"\nvalidation_scope = \"fqdn\"\n",
        at: (3, 20),
        message: "unknown variant `fqdn`, expected `base` or `exact`",
    },
    Case {
        name: "wrong type: string for an integer",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[daemon]\nmax_concurrent = \"many\"\n",
        at: (4, 18),
        message: "invalid type: string \"many\", expected usize",
    },
    Case {
        name: "wrong type: string for a boolean",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[daemon]\ncleanup = \"yes\"\n",
        at: (4, 11),
        message: "invalid type: string \"yes\", expected a boolean",
    },
    Case {
        name: "bad duration unit",
        toml: "[certcentral]\napi_key_env = \"KEY\"\ntimeout = \"5 parsecs\"\n",
        at: (3, 11),
        message: "invalid duration \"5 parsecs\": unknown time unit \"parsecs\", supported \
                  units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few \
                  variations); write it like \"90s\", \"5m\" or \"1h 30m\"",
    },
    Case {
        name: "duration without unit",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[propagation]\npoll_min = \"250\"\n",
        at: (4, 12),
        message: "invalid duration \"250\": time unit needed, for example 250sec or 250ms; \
                  write it like \"90s\", \"5m\" or \"1h 30m\"",
    },
    Case {
        name: "duration given as a number",
        toml: "[certcentral]\napi_key_env = \"KEY\"\ntimeout = 30\n",
        at: (3, 11),
        message: "invalid type: integer `30`, expected a duration such as \"90s\" or \"5m\"",
    },
    Case {
        name: "zero duration",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[propagation]\ntimeout = \"0s\"\n",
        at: (4, 11),
        message: "duration \"0s\" must be greater than zero",
    },
    Case {
        name: "missing [certcentral]",
        toml: "[daemon]\ncleanup = true\n",
        at: (0, 0),
        message: "missing [certcentral] section: it needs at least `api_key_file` or \
                  `api_key_env`",
    },
    Case {
        name: "missing api key",
        toml: "[daemon]\ncleanup = true\n\n[certcentral]\ntimeout = \"10s\"\n",
        at: (4, 1),
        message: "[certcentral] needs a secret: set `api_key_file` (a file; relative paths are \
                  read from $CREDENTIALS_DIRECTORY) or `api_key_env` (an environment variable)",
    },
    Case {
        name: "both api key file and env",
        toml: "[certcentral]\napi_key_file = \"key\"\napi_key_env = \"KEY\"\n",
        at: (3, 15),
        message: "give either `api_key_file` or `api_key_env`, not both",
    },
    Case {
        name: "api key env variable unset",
        toml: "[certcentral]\napi_key_env = \"DIGICERT_API_KEY\"\n",
        at: (2, 15),
        message: "environment variable DIGICERT_API_KEY (from `api_key_env`) is not set",
    },
    Case {
        name: "api key env variable empty",
        toml: "[certcentral]\napi_key_env = \"EMPTY\"\n",
        at: (2, 15),
        message: "environment variable EMPTY (from `api_key_env`) is empty",
    },
    Case {
        name: "api key file missing names the path and the OS error",
        toml: "[certcentral]\napi_key_file = \"nope\"\n",
        at: (2, 16),
        message: "cannot read `api_key_file` file \"{dir}/nope\": No such file or directory \
                  (os error 2)",
    },
    Case {
        name: "http-token method",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[[order]]\nid = 1\nmethod = \"http-token\"\n",
        at: (5, 10),
        message: "method \"http-token\" is not supported: dcvd validates by DNS only; use \
                  \"dns-txt-token\" or \"dns-cname-token\"",
    },
    Case {
        name: "email method",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[[domain]]\nid = 1\nname = \"a.example\"\n\
               method = \"email\"\n",
        at: (6, 10),
        message: "method \"email\" is not supported: dcvd validates by DNS only; use \
                  \"dns-txt-token\" or \"dns-cname-token\"",
    },
    Case {
        name: "unknown method",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[[order]]\nid = 1\nmethod = \"dns-txt\"\n",
        at: (5, 10),
        message: "unknown method \"dns-txt\": supported methods are \"dns-txt-token\" and \
                  \"dns-cname-token\"",
    },
    Case {
        name: "duplicate order id",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n\n[[order]]\nid = 7\nmethod = \"dns-txt-token\"\n\n\
               [[order]]\nid = 7\nmethod = \"dns-cname-token\"\n",
        at: (9, 6),
        message: "duplicate order id 7: already defined at dcvd.toml:4:1",
    },
    Case {
        name: "duplicate domain id (orders and domains are separate id spaces)",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.m]\ntype = \"memory\"\n\
               zones = [\"example.com\"]\n[[order]]\nid = 5\nmethod = \"dns-txt-token\"\n\
               [[domain]]\nid = 5\nname = \"example.com\"\nmethod = \"dns-txt-token\"\n\
               [[domain]]\nid = 5\nname = \"www.example.com\"\nmethod = \"dns-txt-token\"\n",
        at: (14, 6),
        message: "duplicate domain id 5: already defined at dcvd.toml:9:1",
    },
    Case {
        name: "domain no provider serves",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.m]\ntype = \"memory\"\n\
               zones = [\"example.com\"]\n[[order]]\nid = 1\nmethod = \"dns-txt-token\"\n\
               domains = [\"example.com\", \"WWW.Example.XYZ.\"]\n",
        at: (9, 27),
        message: "no provider serves example.xyz: add its zone to the `zones` of a \
                  [providers.NAME] section. With validation_scope = \"base\" (from [certcentral] \
                  `validation_scope`) DigiCert validates www.example.xyz at its base domain \
                  example.xyz: serve example.xyz with a provider, or set validation_scope = \
                  \"exact\" if that is what your CertCentral account does (Settings > Preferences \
                  > Advanced Settings > Domain validation scope)",
    },
    Case {
        name: "domain no provider serves, exact scope",
        toml: "[certcentral]\napi_key_env = \"KEY\"\nvalidation_scope = \"exact\"\n[providers.m]\n\
               type = \"memory\"\nzones = [\"example.com\"]\n[[order]]\nid = 1\nmethod = \"dns-txt-token\"\n\
               domains = [\"example.com\", \"WWW.Example.XYZ.\"]\n",
        at: (10, 27),
        message: "no provider serves www.example.xyz: add its zone to the `zones` of a \
                  [providers.NAME] section",
    },
    Case {
        name: "unknown provider name",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.m]\ntype = \"memory\"\n\
               zones = [\"example.com\"]\n[[order]]\nid = 1\nmethod = \"dns-txt-token\"\n\
               provider = \"cf\"\n",
        at: (9, 12),
        message: "unknown provider `cf`: configured providers are `m`",
    },
    Case {
        name: "named provider does not serve the domain",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.a]\ntype = \"memory\"\n\
               zones = [\"example.com\"]\n[providers.b]\ntype = \"memory\"\nzones = [\"example.org\"]\n\
               [[domain]]\nid = 1\nname = \"*.example.com\"\nmethod = \"dns-cname-token\"\n\
               provider = \"b\"\n",
        at: (11, 8),
        message: "provider `b` does not serve example.com: its zones are example.org; add the \
                  zone to its `zones` or drop `provider` to choose by zone",
    },
    Case {
        name: "empty zones list",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.m]\ntype = \"memory\"\nzones = []\n",
        at: (5, 9),
        message: "provider `m` has an empty `zones` list: list the zones it serves, such as \
                  [\"example.com\"]",
    },
    Case {
        name: "unknown provider type",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.x]\ntype = \"bind9\"\n\
               zones = [\"example.com\"]\n",
        at: (4, 8),
        message: "unknown provider type \"bind9\" for provider `x`: expected `route53`, \
                  `cloudflare`, `azure`, `gcloud`, `powerdns`, `acmedns`, `rfc2136`, `exec` or `memory`",
    },
    Case {
        name: "provider without type",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.x]\nzones = [\"example.com\"]\n",
        at: (3, 1),
        message: "provider `x` has no `type`: set it to one of `route53`, `cloudflare`, \
                  `azure`, `gcloud`, `powerdns`, `acmedns`, `rfc2136`, `exec` or `memory`",
    },
    Case {
        name: "powerdns: key of another provider type lists this type's keys",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.pdns]\ntype = \"powerdns\"\n\
               zones = [\"example.com\"]\napi_url = \"https://pdns.example.net\"\napi_token_env = \"KEY\"\n",
        at: (7, 1),
        message: "unknown field `api_token_env`, expected one of `type`, `zones`, `api_url`, \
                  `api_key_file`, `api_key_env`, `server_id`, `timeout`",
    },
    Case {
        name: "powerdns: api key missing",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.pdns]\ntype = \"powerdns\"\n\
               zones = [\"example.com\"]\napi_url = \"https://pdns.example.net\"\n",
        at: (3, 1),
        message: "provider `pdns` needs a secret: set `api_key_file` (a file; relative paths \
                  are read from $CREDENTIALS_DIRECTORY) or `api_key_env` (an environment \
                  variable)",
    },
    Case {
        name: "powerdns: api key file missing",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.pdns]\ntype = \"powerdns\"\n\
               zones = [\"example.com\"]\napi_url = \"https://pdns.example.net\"\napi_key_file = \"pdns-key\"\n",
        at: (7, 16),
        message: "cannot read `api_key_file` file \"{dir}/pdns-key\": No such file or directory \
                  (os error 2)",
    },
    Case {
        name: "powerdns: plain http to a remote API",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.pdns]\ntype = \"powerdns\"\n\
               zones = [\"example.com\"]\napi_url = \"http://pdns.example.net:8081\"\napi_key_env = \"KEY\"\n",
        at: (6, 11),
        message: "api_url \"http://pdns.example.net:8081\" uses plain http to pdns.example.net, which \
                  would send the credentials unencrypted: use https:// (a TLS reverse proxy in front \
                  of the API); http:// is allowed only to 127.0.0.0/8, ::1 or localhost",
    },
    Case {
        name: "powerdns: bad server_id",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.pdns]\ntype = \"powerdns\"\n\
               zones = [\"example.com\"]\napi_url = \"https://pdns.example.net\"\napi_key_env = \"KEY\"\n\
               server_id = \"\"\n",
        at: (8, 13),
        message: "provider `pdns`: server_id \"\" is not valid: PowerDNS Authoritative uses \
                  \"localhost\" (the default)",
    },
    Case {
        name: "acmedns: account password missing",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.adns]\ntype = \"acmedns\"\n\
               zones = [\"auth.example.org\"]\napi_url = \"https://auth.example.org\"\n\
               [providers.adns.accounts.\"example.com\"]\nusername = \"u\"\nsubdomain = \"s1\"\n\
               fulldomain = \"s1.auth.example.org\"\n",
        at: (7, 1),
        message: "account \"example.com\" of provider `adns` needs a secret: set `password_file` (a \
                  file; relative paths are read from $CREDENTIALS_DIRECTORY) or `password_env` (an \
                  environment variable)",
    },
    Case {
        name: "acmedns: unknown account key lists the account's keys",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.adns]\ntype = \"acmedns\"\n\
               zones = [\"auth.example.org\"]\napi_url = \"https://auth.example.org\"\n\
               [providers.adns.accounts.\"example.com\"]\nusername = \"u\"\npassword = \"p\"\n",
        at: (9, 1),
        message: "unknown field `password`, expected one of `username`, `password_file`, \
                  `password_env`, `subdomain`, `fulldomain`",
    },
    Case {
        name: "acmedns: fulldomain outside the zones",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.adns]\ntype = \"acmedns\"\n\
               zones = [\"auth.example.org\"]\napi_url = \"https://auth.example.org\"\n\
               [providers.adns.accounts.\"example.com\"]\nusername = \"u\"\npassword_env = \"KEY\"\n\
               subdomain = \"s1\"\nfulldomain = \"s1.auth.example.net\"\n",
        at: (11, 14),
        message: "fulldomain s1.auth.example.net of the account \"example.com\" of provider `adns` \
                  is not inside its zones (auth.example.org): list the acme-dns server's domain in \
                  `zones`",
    },
    Case {
        name: "acmedns: subdomain does not match fulldomain",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.adns]\ntype = \"acmedns\"\n\
               zones = [\"auth.example.org\"]\napi_url = \"https://auth.example.org\"\n\
               [providers.adns.accounts.\"example.com\"]\nusername = \"u\"\npassword_env = \"KEY\"\n\
               subdomain = \"s2\"\nfulldomain = \"s1.auth.example.org\"\n",
        at: (10, 13),
        message: "subdomain \"s2\" of the account \"example.com\" of provider `adns` does not match \
                  its fulldomain s1.auth.example.org: copy both exactly as acme-dns's /register \
                  returned them",
    },
    Case {
        name: "acmedns: no accounts",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.adns]\ntype = \"acmedns\"\n\
               zones = [\"auth.example.org\"]\napi_url = \"https://auth.example.org\"\naccounts = {}\n",
        at: (7, 12),
        message: "provider `adns` has no accounts: add one [providers.adns.accounts.\"<domain>\"] per \
                  validated domain, with what acme-dns's /register returned",
    },
    Case {
        name: "key of another provider type lists this type's keys",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.cf]\ntype = \"cloudflare\"\n\
               zones = [\"example.com\"]\napi_token_env = \"CF\"\nhosted_zone_id = \"Z1\"\n",
        at: (7, 1),
        message: "unknown field `hosted_zone_id`, expected one of `type`, `zones`, \
                  `api_token_file`, `api_token_env`, `base_url`, `zone_ids`",
    },
    Case {
        name: "provider missing zones",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.aws]\ntype = \"route53\"\n",
        at: (3, 1),
        message: "missing field `zones`",
    },
    Case {
        name: "cloudflare token missing",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.cf]\ntype = \"cloudflare\"\n\
               zones = [\"example.com\"]\n",
        at: (3, 1),
        message: "provider `cf` needs a secret: set `api_token_file` (a file; relative paths \
                  are read from $CREDENTIALS_DIRECTORY) or `api_token_env` (an environment \
                  variable)",
    },
    Case {
        name: "poll_min greater than poll_max",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[propagation]\npoll_min = \"20s\"\n\
               poll_max = \"10s\"\n",
        at: (4, 12),
        message: "`poll_min` (20s) is greater than `poll_max` (10s)",
    },
    Case {
        name: "poll_max below the default poll_min",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[propagation]\npoll_max = \"100ms\"\n",
        at: (4, 12),
        message: "`poll_min` (250ms) is greater than `poll_max` (100ms)",
    },
    Case {
        name: "min_interval greater than max_interval",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[check]\nmin_interval = \"1h\"\n\
               max_interval = \"10m\"\n",
        at: (4, 16),
        message: "`min_interval` (1h) is greater than `max_interval` (10m)",
    },
    Case {
        name: "max_concurrent zero",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[daemon]\nmax_concurrent = 0\n",
        at: (4, 18),
        message: "`max_concurrent` must be at least 1",
    },
    Case {
        name: "base_url not http(s)",
        toml: "[certcentral]\napi_key_env = \"KEY\"\nbase_url = \"ftp://www.digicert.com\"\n",
        at: (3, 12),
        message: "invalid base_url \"ftp://www.digicert.com\": expected an https:// URL such as \
                  \"https://www.digicert.com/services/v2\" (http:// only to a loopback address)",
    },
    Case {
        name: "base_url plain http to a remote host",
        toml: "[certcentral]\napi_key_env = \"KEY\"\nbase_url = \"http://www.digicert.com/services/v2\"\n",
        at: (3, 12),
        message: "base_url \"http://www.digicert.com/services/v2\" uses plain http to \
                  www.digicert.com, which would send the API key unencrypted: use https:// \
                  (http:// is allowed only to 127.0.0.0/8, ::1 or localhost)",
    },
    Case {
        name: "rate limit of zero requests",
        toml: "[certcentral]\napi_key_env = \"KEY\"\nrate_limits = [{ requests = 100, per = \"5s\" },\n\
               \x20 { requests = 0, per = \"3m\" }]\n",
        at: (4, 16),
        message: "`requests` of a rate limit must be at least 1 (remove the entry to lift the \
                  limit)",
    },
    Case {
        name: "rate limit without window",
        toml: "[certcentral]\napi_key_env = \"KEY\"\nrate_limits = [{ requests = 100 }]\n",
        at: (3, 16),
        message: "missing field `per`",
    },
    Case {
        name: "metrics_listen not an address",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[daemon]\nmetrics_listen = \"localhost:9465\"\n",
        at: (4, 18),
        message: "invalid address \"localhost:9465\": expected IP:PORT such as \
                  \"127.0.0.1:9465\" or \"[::1]:9465\"",
    },
    Case {
        name: "rescan with 5 cron fields",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[daemon]\nrescan = \"*/5 * * * *\"\n",
        at: (4, 10),
        message: "invalid cron expression \"*/5 * * * *\" (Invalid pattern: Pattern must have \
                  6 or 7 fields when seconds are required and years are optional.): expected 6 \
                  fields \"SEC MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK\", such as \
                  \"0 */5 * * * *\", or \"off\"",
    },
    Case {
        name: "rescan field out of range",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[daemon]\nrescan = \"0 75 * * * *\"\n",
        at: (4, 10),
        message: "invalid cron expression \"0 75 * * * *\" (Component error: Number out of \
                  bounds.): expected 6 fields \"SEC MIN \
                  HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK\", such as \"0 */5 * * * *\", or \"off\"",
    },
    Case {
        name: "rfc2136 server not host:port",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.bind]\ntype = \"rfc2136\"\n\
               zones = [\"example.net\"]\nserver = \"ns1 example net:53\"\ntsig_key_name = \"k\"\n\
               tsig_secret_env = \"TSIG\"\n",
        at: (6, 10),
        message: "invalid server \"ns1 example net:53\": expected HOST:PORT such as \
                  \"192.0.2.53:53\" or \"ns1.example.net:53\" (port 53 when omitted)",
    },
    Case {
        name: "tsig secret not base64 (the secret is not echoed)",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.bind]\ntype = \"rfc2136\"\n\
               zones = [\"example.net\"]\nserver = \"192.0.2.53\"\ntsig_key_name = \"k\"\n\
               tsig_secret_file = \"bad-tsig\"\n",
        at: (8, 20),
        message: "the TSIG secret from file \"{dir}/bad-tsig\" (`tsig_secret_file`) is not \
                  valid base64: give the `secret` of the key as `tsig-keygen` prints it",
    },
    Case {
        name: "unknown tsig algorithm",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.bind]\ntype = \"rfc2136\"\n\
               zones = [\"example.net\"]\nserver = \"192.0.2.53\"\ntsig_key_name = \"k\"\n\
               tsig_algorithm = \"hmac-md5\"\ntsig_secret_env = \"TSIG\"\n",
        at: (8, 18),
        message: "unknown variant `hmac-md5`, expected one of `hmac-sha256`, `hmac-sha384`, \
                  `hmac-sha512`",
    },
    Case {
        name: "exec with an empty command",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.hook]\ntype = \"exec\"\n\
               zones = [\"example.io\"]\ncommand = []\n",
        at: (6, 11),
        message: "provider `hook`: `command` must list the program and its arguments, such as \
                  [\"/usr/local/libexec/dns-hook\"]",
    },
    Case {
        name: "secret file with two lines",
        toml: "[certcentral]\napi_key_file = \"two-lines\"\n",
        at: (2, 16),
        message: "`api_key_file` file \"{dir}/two-lines\" has whitespace or a line break inside the \
                  secret, which API keys, tokens and TSIG secrets never contain (two secrets, or a secret \
                  with a label?): store the secret alone, optionally followed by one newline",
    },
    Case {
        name: "secret file with whitespace around the secret",
        toml: "[certcentral]\napi_key_file = \"padded\"\n",
        at: (2, 16),
        message: "`api_key_file` file \"{dir}/padded\" has whitespace (spaces, tabs or extra line \
                  breaks) around the secret, which API keys, tokens and TSIG secrets never contain: store \
                  the secret alone, optionally followed by one newline",
    },
    Case {
        name: "secret variable with a space inside",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.cf]\ntype = \"cloudflare\"\n\
               zones = [\"example.com\"]\napi_token_env = \"LABELLED\"\n",
        at: (6, 17),
        message: "environment variable LABELLED (from `api_token_env`) has whitespace or a line break \
                  inside the secret, which API keys, tokens and TSIG secrets never contain (two secrets, \
                  or a secret with a label?): set it to the secret alone",
    },
    Case {
        name: "route53 hosted_zone_id with two zones",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.aws]\ntype = \"route53\"\n\
               zones = [\"example.com\", \"example.org\"]\nhosted_zone_id = \"Z0123456789\"\n",
        at: (6, 18),
        message: "provider `aws`: `hosted_zone_id` names one hosted zone but `zones` lists 2: use one \
                  provider section per zone, or drop `hosted_zone_id` to look the zones up by name",
    },
    Case {
        name: "cloudflare base_url over plain http to a remote host",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.cf]\ntype = \"cloudflare\"\n\
               zones = [\"example.com\"]\napi_token_env = \"CF\"\nbase_url = \"http://192.0.2.1/client/v4\"\n",
        at: (7, 12),
        message: "provider `cf`: base_url \"http://192.0.2.1/client/v4\" uses plain http to 192.0.2.1, \
                  which would send the API token unencrypted: use https:// (http:// is allowed only to \
                  127.0.0.0/8, ::1 or localhost)",
    },
    Case {
        name: "exec hook passed dcvd's API key variable",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.hook]\ntype = \"exec\"\n\
               zones = [\"example.io\"]\ncommand = [\"/bin/hook\"]\nenv_pass = [\"HOME\", \"KEY\"]\n",
        at: (7, 21),
        message: "provider `hook`: `env_pass` lists KEY, which holds one of dcvd's secrets \
                  (`api_key_env` at dcvd.toml:2:15): a hook never gets dcvd's own secrets; give \
                  the hook its own credential (a file in $CREDENTIALS_DIRECTORY or another variable)",
    },
    Case {
        name: "exec hook passed a later provider's token variable",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.hook]\ntype = \"exec\"\n\
               zones = [\"example.io\"]\ncommand = [\"/bin/hook\"]\nenv_pass = [\"CF\"]\n\
               [providers.cf]\ntype = \"cloudflare\"\nzones = [\"example.com\"]\napi_token_env = \"CF\"\n",
        at: (7, 13),
        message: "provider `hook`: `env_pass` lists CF, which holds one of dcvd's secrets \
                  (`api_token_env` at dcvd.toml:11:17): a hook never gets dcvd's own secrets; give \
                  the hook its own credential (a file in $CREDENTIALS_DIRECTORY or another variable)",
    },
    Case {
        name: "exec hook passed a DCVD_ variable",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.hook]\ntype = \"exec\"\n\
               zones = [\"example.io\"]\ncommand = [\"/bin/hook\"]\nenv_pass = [\"DCVD_NAME\"]\n",
        at: (7, 13),
        message: "provider `hook`: `env_pass` cannot list DCVD_NAME: dcvd sets the DCVD_* variables itself",
    },
    Case {
        name: "exec hook passed a malformed variable name",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.hook]\ntype = \"exec\"\n\
               zones = [\"example.io\"]\ncommand = [\"/bin/hook\"]\nenv_pass = [\"A=B\"]\n",
        at: (7, 13),
        message: "provider `hook`: \"A=B\" in `env_pass` is not an environment variable name \
                  (letters, digits and '_', not starting with a digit)",
    },
    Case {
        name: "zone served by two providers",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.a]\ntype = \"memory\"\n\
               zones = [\"example.com\"]\n[providers.b]\ntype = \"memory\"\n\
               zones = [\"example.org\", \"Example.COM.\"]\n",
        at: (8, 25),
        message: "zone example.com is already served by provider `a`: a zone belongs to \
                  exactly one provider",
    },
    Case {
        name: "on_expiry unknown value",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[daemon]\non_expiry = \"retry\"\n",
        at: (4, 13),
        message: "unknown variant `retry`, expected `renew` or `fail`",
    },
    Case {
        name: "resolver that is a host name",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[propagation]\n\
               resolvers = [\"system\", \"dns.google\"]\n",
        at: (4, 24),
        message: "invalid resolver \"dns.google\": expected \"system\" or an IP address with \
                  optional port, such as \"192.0.2.1\", \"192.0.2.1:5353\" or \"[2001:db8::1]:53\"",
    },
    Case {
        name: "order without id",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n\n[[order]]\nmethod = \"dns-txt-token\"\n",
        at: (4, 1),
        message: "missing field `id`",
    },
    Case {
        name: "order id zero",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[[order]]\nid = 0\nmethod = \"dns-txt-token\"\n",
        at: (4, 6),
        message: "order id must be a positive integer (the id CertCentral shows)",
    },
    Case {
        name: "negative domain id",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[[domain]]\nid = -4\nname = \"a.example\"\n\
               method = \"dns-txt-token\"\n",
        at: (4, 6),
        message: "invalid value: integer `-4`, expected u64",
    },
    Case {
        name: "invalid characters in a domain",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[[domain]]\nid = 4\nname = \"exa mple.com\"\n\
               method = \"dns-txt-token\"\n",
        at: (5, 8),
        message: "invalid domain name \"exa mple.com\": character ' ' is not allowed (letters, \
                  digits, '-' and '_' only)",
    },
    Case {
        name: "domain listed twice in an order",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.m]\ntype = \"memory\"\n\
               zones = [\"example.com\"]\n[[order]]\nid = 1\nmethod = \"dns-txt-token\"\n\
               domains = [\"example.com\", \"EXAMPLE.com.\"]\n",
        at: (9, 27),
        message: "domain example.com is listed twice in order 1",
    },
    Case {
        name: "txt_name on a cname order",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[[order]]\nid = 1\nmethod = \"dns-cname-token\"\n\
               txt_name = \"apex\"\n",
        at: (6, 12),
        message: "`txt_name` applies to method \"dns-txt-token\" only; this order uses \
                  \"dns-cname-token\"",
    },
    Case {
        name: "unknown cname_name",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[[order]]\nid = 1\nmethod = \"dns-cname-token\"\n\
               cname_name = \"dcv\"\n",
        at: (6, 14),
        message: "unknown variant `dcv`, expected `dnsauth` or `token`",
    },
    Case {
        name: "invalid submit validation type",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.m]\ntype = \"memory\"\n\
               zones = [\"example.com\"]\n[[domain]]\nid = 1\nname = \"example.com\"\n\
               method = \"dns-txt-token\"\nsubmit = [\"ov\", \"e v\"]\n",
        at: (10, 17),
        message: "invalid validation type \"e v\" in `submit`: expected CertCentral validation \
                  types such as [\"ov\", \"ev\"]",
    },
    Case {
        name: "zone_ids naming a zone the provider does not serve",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[providers.cf]\ntype = \"cloudflare\"\n\
               zones = [\"example.com\"]\napi_token_env = \"CF\"\nzone_ids = { \"example.org\" = \"abc\" }\n",
        at: (7, 12),
        message: "`zone_ids` names zone example.org, which is not in the `zones` of provider `cf`",
    },
    Case {
        name: "providers is not a table",
        toml: "providers = [\"cf\"]\n[certcentral]\napi_key_env = \"KEY\"\n",
        at: (1, 13),
        message: "`providers` must be a table: write one [providers.NAME] section per provider",
    },
    Case {
        name: "empty resolvers",
        toml: "[certcentral]\napi_key_env = \"KEY\"\n[propagation]\nresolvers = []\n",
        at: (4, 13),
        message: "`resolvers` must list at least one resolver: \"system\" or \"IP:PORT\"",
    },
];

/// Each malformed configuration fails with its exact message at its exact line and column.
#[test]
fn malformed_configurations_report_message_and_position() {
    assert!(CASES.len() >= 30, "only {} cases", CASES.len());
    let (dir, env) = fixture();
    let dir = dir.path().display().to_string();
    let mut failures = Vec::new();
    for case in CASES {
        let want_message = case.message.replace("{dir}", &dir);
        let want_display = if case.at == (0, 0) {
            format!("dcvd.toml: {want_message}")
        } else {
            format!("dcvd.toml:{}:{}: {want_message}", case.at.0, case.at.1)
        };
        match parse(case.toml, &env) {
            Ok(_) => failures.push(format!("{}: parsed, expected an error", case.name)),
            Err(e) => {
                let at = (e.line.unwrap_or(0), e.col.unwrap_or(0));
                if e.message != want_message || at != case.at || e.to_string() != want_display {
                    failures.push(format!("{}:\n   got: {e}\n  want: {want_display}", case.name));
                }
                assert_eq!(e.file, Path::new("dcvd.toml"), "{}", case.name);
            }
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// No error message, whatever the case, contains a secret value.
#[test]
fn errors_never_contain_secret_values() {
    let (dir, env) = fixture();
    write_secret(dir.path(), "bad-tsig", "sup3r-s3cret-not-base64!", 0o600);
    for case in CASES {
        if let Err(e) = parse(case.toml, &env) {
            let text = e.to_string();
            for secret in ["env-api-key", "file-api-key", "cf-token", "c2VjcmV0", "sup3r"] {
                assert!(!text.contains(secret), "{}: {text}", case.name);
            }
        }
    }
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/dcvd.example.toml")
}

/// The shipped example parses (with its secrets in a credentials directory) into what its
/// comments say, and documents every key of the schema.
#[test]
fn example_configuration_parses() {
    let creds = tempfile::tempdir().unwrap();
    write_secret(creds.path(), "certcentral-api-key", "example-key\n", 0o400);
    write_secret(creds.path(), "cloudflare-token", "example-cf-token\n", 0o600);
    write_secret(creds.path(), "tsig", "c2VjcmV0LXRzaWcta2V5\n", 0o600);
    let env = Environment::isolated().with_credentials_dir(creds.path());
    let path = example_path();
    let config = Config::load_with(&path, &env).unwrap_or_else(|e| panic!("{e}"));

    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(config.files, vec![path.clone()]);
    assert_eq!(config.certcentral.api_key.expose_secret(), "example-key");
    assert_eq!(config.certcentral.base_url, "https://www.digicert.com/services/v2");
    assert!(!config.certcentral.allow_insecure_http);
    assert_eq!(config.daemon.state_dir, Path::new("/var/lib/dcvd"));
    assert_eq!(config.daemon.order_files, vec!["orders.d/*.toml".to_owned()]);
    assert_eq!(config.daemon.metrics_listen, Some("127.0.0.1:9465".parse().unwrap()));

    let kinds: Vec<_> = config.providers.iter().map(|(n, p)| (n.as_str(), p.kind())).collect();
    assert_eq!(kinds, [("aws", "route53"), ("bind", "rfc2136"), ("cf", "cloudflare"), ("hook", "exec")]);
    let Some(Cloudflare { api_token, zone_ids, base_url, .. }) = config.providers["cf"].settings() else {
        panic!("cf is not cloudflare");
    };
    assert_eq!(api_token.expose_secret(), "example-cf-token");
    assert_eq!(zone_ids["example.com"], "023e105f4ecef8ad9ca31a8372d0c353");
    assert_eq!(*base_url, None);
    let Some(Rfc2136 { server, tsig_key_name, tsig_algorithm, tsig_secret, timeout, .. }) =
        config.providers["bind"].settings()
    else {
        panic!("bind is not rfc2136");
    };
    assert_eq!(*server, "192.0.2.53:53".parse().unwrap());
    assert_eq!(tsig_key_name, "dcvd");
    assert_eq!(*tsig_algorithm, TsigAlgorithm::HmacSha256);
    assert_eq!(tsig_secret.expose_secret(), "c2VjcmV0LXRzaWcta2V5");
    assert_eq!(*timeout, Duration::from_secs(10));

    let keys: Vec<_> = config.units.iter().map(|u| u.key).collect();
    assert_eq!(
        keys,
        [UnitKey::Order(12345678), UnitKey::Order(12345679), UnitKey::Domain(112233), UnitKey::Domain(112234)]
    );
    let first = config.unit(UnitKey::Order(12345678)).unwrap();
    assert_eq!(first.domains, ["example.com", "*.example.com"]);
    assert_eq!(first.provider.as_deref(), Some("cf"));
    assert_eq!(first.origin.file, path);
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(
        text.lines().nth(first.origin.line - 1).unwrap().trim_end(),
        "[[order]]                              # a DV order"
    );
    let ov = config.unit(UnitKey::Domain(112233)).unwrap();
    assert_eq!(ov.submit, ["ov", "ev"]);
    assert_eq!(ov.method, Method::DnsCnameToken);

    // Every key of the schema appears in the example (set, or commented out).
    for key in [
        "base_url",
        "api_key_file",
        "api_key_env",
        "rate_limits",
        "timeout",
        "state_dir",
        "order_files",
        "rescan",
        "max_concurrent",
        "cleanup",
        "on_expiry",
        "max_renewals",
        "log_format",
        "metrics_listen",
        "resolvers",
        "check",
        "nameserver_port",
        "poll_min",
        "poll_max",
        "max_queries_per_second",
        "min_interval",
        "max_interval",
        "type",
        "zones",
        "api_token_file",
        "api_token_env",
        "zone_ids",
        "hosted_zone_id",
        "region",
        "endpoint_url",
        "server",
        "tsig_key_name",
        "tsig_algorithm",
        "tsig_secret_file",
        "tsig_secret_env",
        "command",
        "env_pass",
        "webhook_url",
        "webhook_secret_file",
        "webhook_secret_env",
        "max_attempts",
        "queue",
        "id",
        "method",
        "domains",
        "provider",
        "txt_name",
        "cname_name",
        "name",
        "submit",
        "listen",
        "lag",
    ] {
        let documented = text.lines().any(|l| {
            let l = l.trim_start().trim_start_matches("# ");
            l.starts_with(&format!("{key} ="))
        });
        assert!(documented, "key `{key}` is not in the example configuration");
    }
}

/// A minimal configuration gets the documented defaults.
#[test]
fn defaults_are_the_documented_ones() {
    let env = Environment::isolated().with_var("KEY", "k");
    let config = parse("[certcentral]\napi_key_env = \"KEY\"\n", &env).unwrap();
    let cc = &config.certcentral;
    assert_eq!(cc.base_url, "https://www.digicert.com/services/v2");
    assert_eq!(
        cc.rate_limits,
        [
            RateLimit { requests: 100, per: Duration::from_secs(5) },
            RateLimit { requests: 1000, per: Duration::from_secs(300) }
        ]
    );
    assert_eq!(cc.timeout, Duration::from_secs(30));
    assert!(!cc.allow_insecure_http);

    let d = &config.daemon;
    assert_eq!(d.state_dir, Path::new("/var/lib/dcvd"));
    assert!(d.order_files.is_empty());
    assert_eq!(d.rescan.as_deref(), Some("0 */5 * * * *"));
    assert_eq!(d.max_concurrent, 64);
    assert!(d.cleanup);
    assert_eq!(d.on_expiry, OnExpiry::Renew);
    assert_eq!(d.max_renewals, 3);
    assert_eq!(d.log_format, LogFormat::Auto);
    assert_eq!(d.metrics_listen, None);

    let p = &config.propagation;
    assert_eq!(p.resolvers, [Resolver::System]);
    assert_eq!(p.check, PropagationMode::Authoritative);
    assert_eq!(p.nameserver_port, 53);
    assert_eq!(p.poll_min, Duration::from_millis(250));
    assert_eq!(p.poll_max, Duration::from_secs(2));
    assert_eq!(p.timeout, Duration::from_secs(3600));
    assert_eq!(p.max_queries_per_second, 3000);

    assert_eq!(config.check.min_interval, Duration::from_secs(5));
    assert_eq!(config.check.max_interval, Duration::from_secs(600));
    assert!(config.providers.is_empty());
    assert!(config.units.is_empty());
    assert_eq!(config.warnings, ["dcvd.toml: no [[order]] or [[domain]] is configured: dcvd has nothing to validate"]);
    assert_eq!(config.files, [PathBuf::from("dcvd.toml")]);

    // $STATE_DIRECTORY (systemd StateDirectory=) replaces the built-in default, not the key.
    let env = env.with_var("STATE_DIRECTORY", "/var/lib/dcvd-test");
    let config = parse("[certcentral]\napi_key_env = \"KEY\"\n", &env).unwrap();
    assert_eq!(config.daemon.state_dir, Path::new("/var/lib/dcvd-test"));
    let config = parse("[certcentral]\napi_key_env = \"KEY\"\n[daemon]\nstate_dir = \"/srv/dcvd\"\n", &env).unwrap();
    assert_eq!(config.daemon.state_dir, Path::new("/srv/dcvd"));
}

/// Units get per-type defaults and explicit values, names are normalized, providers chosen by
/// longest zone suffix, and unit-level options are kept.
#[test]
fn units_and_providers_are_normalized() {
    let env = Environment::isolated().with_var("KEY", "k").with_var("CF", "t");
    let text = r#"
[certcentral]
api_key_env = "KEY"
base_url = "http://127.0.0.1:8443/services/v2/"
rate_limits = []

[daemon]
rescan = "off"
on_expiry = "fail"
log_format = "json"

[propagation]
resolvers = ["system", "127.0.0.1:5353", "::1"]
check = "both"

[providers.parent]
type = "memory"
zones = ["Example.COM."]

[providers.child]
type = "cloudflare"
zones = ["sub.example.com"]
api_token_env = "CF"
base_url = "http://127.0.0.1:8788/client/v4"

[[order]]
id = 10
method = "dns-cname-token"
domains = ["A.Sub.Example.com.", "*.example.com"]
cname_name = "token"

[[order]]
id = 11
method = "dns-txt-token"
txt_name = "apex"

[[domain]]
id = 10
name = "Example.com"
method = "dns-txt-token"
provider = "parent"
submit = ["OV"]
"#;
    let config = parse(text, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.certcentral.base_url, "http://127.0.0.1:8443/services/v2");
    assert!(config.certcentral.allow_insecure_http);
    assert!(config.certcentral.rate_limits.is_empty());
    assert_eq!(config.daemon.rescan, None);
    assert_eq!(config.daemon.on_expiry, OnExpiry::Fail);
    assert_eq!(config.daemon.log_format, LogFormat::Json);
    assert_eq!(
        config.propagation.resolvers,
        [
            Resolver::System,
            Resolver::Addr("127.0.0.1:5353".parse().unwrap()),
            Resolver::Addr("[::1]:53".parse().unwrap())
        ]
    );
    assert_eq!(config.propagation.check, PropagationMode::Both);
    assert_eq!(config.providers["parent"].zones(), ["example.com"]);

    let order = config.unit(UnitKey::Order(10)).unwrap();
    assert_eq!(order.domains, ["a.sub.example.com", "*.example.com"]);
    assert_eq!(order.method.as_str(), "dns-cname-token");
    assert_eq!(order.cname_name, CnameName::Token);
    assert_eq!(order.txt_name, TxtName::Dnsauth);
    assert_eq!(order.origin.to_string(), "dcvd.toml:26:1");
    let empty = config.unit(UnitKey::Order(11)).unwrap();
    assert!(empty.domains.is_empty(), "no domains = the order's dns_names");
    assert_eq!(empty.txt_name, TxtName::Apex);
    let domain = config.unit(UnitKey::Domain(10)).unwrap();
    assert_eq!(domain.domains, ["example.com"]);
    assert_eq!(domain.provider.as_deref(), Some("parent"));
    assert_eq!(domain.submit, ["ov"]);
    assert_eq!(UnitKey::Domain(10).to_string(), "domain 10");
    assert_eq!(UnitKey::Order(10).to_string(), "order 10");

    let m = config.provider_for("A.Sub.Example.com.", None).unwrap();
    assert_eq!((m.name, m.zone), ("child", "sub.example.com"));
    let m = config.provider_for("*.www.example.com", None).unwrap();
    assert_eq!((m.name, m.zone), ("parent", "example.com"));
    let m = config.provider_for("a.sub.example.com", Some("parent")).unwrap();
    assert_eq!((m.name, m.zone), ("parent", "example.com"));
    assert!(config.provider_for("example.org", None).is_none());
    assert!(config.provider_for("example.com", Some("child")).is_none());
}

/// `Debug` of a whole configuration shows no secret.
#[test]
fn debug_output_hides_secrets() {
    let creds = tempfile::tempdir().unwrap();
    write_secret(creds.path(), "tsig", "ZGVidWctdHNpZy1zZWNyZXQ=\n", 0o600);
    let env = Environment::isolated()
        .with_credentials_dir(creds.path())
        .with_var("KEY", "debug-api-key-value")
        .with_var("CF", "debug-cf-token-value");
    let text = r#"
[certcentral]
api_key_env = "KEY"
[providers.cf]
type = "cloudflare"
zones = ["example.com"]
api_token_env = "CF"
[providers.bind]
type = "rfc2136"
zones = ["example.net"]
server = "127.0.0.1:5300"
tsig_key_name = "dcvd."
tsig_algorithm = "hmac-sha512"
tsig_secret_file = "tsig"
"#;
    let config = parse(text, &env).unwrap();
    let debug = format!("{config:?} {env:?}");
    for secret in ["debug-api-key-value", "debug-cf-token-value", "ZGVidWctdHNpZy1zZWNyZXQ"] {
        assert!(!debug.contains(secret), "secret {secret} in Debug: {debug}");
    }
    assert!(debug.contains("REDACTED"), "{debug}");
    let Some(Rfc2136 { tsig_key_name, tsig_algorithm, tsig_secret, .. }) = config.providers["bind"].settings() else {
        panic!("not rfc2136")
    };
    assert_eq!(tsig_key_name, "dcvd");
    assert_eq!(tsig_algorithm.as_str(), "hmac-sha512");
    assert_eq!(tsig_secret.expose_secret(), "ZGVidWctdHNpZy1zZWNyZXQ=");
}

/// A secret file readable by group or others is a warning with its position, not an error;
/// a private one gives none.
#[test]
fn group_or_world_readable_secret_file_warns() {
    let creds = tempfile::tempdir().unwrap();
    let loose = write_secret(creds.path(), "loose", "k1\n", 0o644);
    write_secret(creds.path(), "tight", "k2\n", 0o600);
    let env = Environment::isolated().with_credentials_dir(creds.path());
    let body = "\n[[order]]\nid = 1\nmethod = \"dns-txt-token\"\n";

    let config = parse(&format!("[certcentral]\napi_key_file = \"loose\"\n{body}"), &env).unwrap();
    assert_eq!(config.certcentral.api_key.expose_secret(), "k1");
    assert_eq!(
        config.warnings,
        [format!(
            "dcvd.toml:2:16: secret file {:?} is readable by group or others (mode 0644): \
             restrict it with `chmod 600` or use systemd LoadCredential=",
            loose.display().to_string()
        )]
    );

    let config = parse(&format!("[certcentral]\napi_key_file = \"tight\"\n{body}"), &env).unwrap();
    assert_eq!(config.certcentral.api_key.expose_secret(), "k2");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

/// Relative secret files are read from $CREDENTIALS_DIRECTORY when set, else next to the
/// configuration file; absolute paths are used as written.
#[test]
fn credentials_directory_resolution() {
    let creds = tempfile::tempdir().unwrap();
    let etc = tempfile::tempdir().unwrap();
    write_secret(creds.path(), "api-key", "from-credentials-dir", 0o600);
    write_secret(etc.path(), "api-key", "from-config-dir", 0o600);
    let main = etc.path().join("dcvd.toml");
    fs::write(&main, "[certcentral]\napi_key_file = \"api-key\"\n").unwrap();

    let with_creds = Environment::isolated().with_credentials_dir(creds.path());
    let config = Config::load_with(&main, &with_creds).unwrap();
    assert_eq!(config.certcentral.api_key.expose_secret(), "from-credentials-dir");

    let without = Environment::isolated();
    let config = Config::load_with(&main, &without).unwrap();
    assert_eq!(config.certcentral.api_key.expose_secret(), "from-config-dir");

    let absolute = etc.path().join("api-key");
    let text = format!("[certcentral]\napi_key_file = {:?}\n", absolute.display().to_string());
    let config = Config::from_toml_with(&text, &main, &with_creds).unwrap();
    assert_eq!(config.certcentral.api_key.expose_secret(), "from-config-dir");

    // A directory is not a secret file: the error names the path and the OS error.
    fs::create_dir(creds.path().join("dir")).unwrap();
    let err = Config::from_toml_with("[certcentral]\napi_key_file = \"dir\"\n", &main, &with_creds).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2:16: cannot read `api_key_file` file {:?}: Is a directory (os error 21)",
            main.display(),
            creds.path().join("dir").display().to_string()
        )
    );
}

fn main_with_order_files(dir: &Path, globs: &str) -> PathBuf {
    let main = dir.join("dcvd.toml");
    fs::write(
        &main,
        format!(
            "[certcentral]\napi_key_env = \"KEY\"\n[daemon]\norder_files = {globs}\n\
             [providers.m]\ntype = \"memory\"\nzones = [\"example.com\"]\n\
             [[order]]\nid = 1\nmethod = \"dns-txt-token\"\ndomains = [\"example.com\"]\n"
        ),
    )
    .unwrap();
    main
}

/// Order files matched by relative globs (relative to the main file) are merged in order.
#[test]
fn order_files_are_merged() {
    let dir = tempfile::tempdir().unwrap();
    let env = Environment::isolated().with_var("KEY", "k");
    fs::create_dir(dir.path().join("orders.d")).unwrap();
    let a = dir.path().join("orders.d/a.toml");
    let b = dir.path().join("orders.d/b.toml");
    fs::write(&b, "[[domain]]\nid = 3\nname = \"b.example.com\"\nmethod = \"dns-txt-token\"\n").unwrap();
    fs::write(&a, "\n[[order]]\nid = 2\nmethod = \"dns-cname-token\"\ndomains = [\"a.example.com\"]\n").unwrap();
    fs::write(dir.path().join("orders.d/ignored.txt"), "not toml").unwrap();
    let main = main_with_order_files(dir.path(), r#"["orders.d/*.toml", "orders.d/a.toml"]"#);

    let config = Config::load_with(&main, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.files, [main.clone(), a.clone(), b.clone()]);
    let keys: Vec<_> = config.units.iter().map(|u| u.key).collect();
    assert_eq!(keys, [UnitKey::Order(1), UnitKey::Order(2), UnitKey::Domain(3)]);
    let order = config.unit(UnitKey::Order(2)).unwrap();
    assert_eq!(order.origin.file, a);
    assert_eq!((order.origin.line, order.origin.col), (2, 1));
}

/// The same order id in two files is reported in the second file, naming the first.
#[test]
fn duplicate_id_across_order_files_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let env = Environment::isolated().with_var("KEY", "k");
    fs::create_dir(dir.path().join("orders.d")).unwrap();
    let extra = dir.path().join("orders.d/extra.toml");
    fs::write(&extra, "# more\n[[order]]\nmethod = \"dns-txt-token\"\nid = 1\n").unwrap();
    let main = main_with_order_files(dir.path(), r#"["orders.d/*.toml"]"#);

    let err = Config::load_with(&main, &env).unwrap_err();
    assert_eq!(err.file, extra);
    assert_eq!((err.line, err.col), (Some(4), Some(6)));
    assert_eq!(err.message, format!("duplicate order id 1: already defined at {}:8:1", main.display()));
}

/// Order files hold only [[order]] and [[domain]]; errors in them carry their own position.
#[test]
fn order_file_errors_point_into_the_order_file() {
    let dir = tempfile::tempdir().unwrap();
    let env = Environment::isolated().with_var("KEY", "k");
    let extra = dir.path().join("extra.toml");
    fs::write(&extra, "[[order]]\nid = 9\nmethod = \"dns-txt-token\"\n\n[daemon]\ncleanup = false\n").unwrap();
    let main = main_with_order_files(dir.path(), r#"["extra.toml"]"#);
    let err = Config::load_with(&main, &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}:5:2: unknown field `daemon`, expected `order` or `domain`", extra.display())
    );

    fs::write(&extra, "[[order]]\nid = 9\nmethod = \"dns-txt-token\"\ndomains = [\"example.org\"]\n").unwrap();
    let err = Config::load_with(&main, &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:4:12: no provider serves example.org: add its zone to the `zones` of a \
             [providers.NAME] section",
            extra.display()
        )
    );

    // A file named without wildcards must exist; a wildcard may match nothing.
    fs::remove_file(&extra).unwrap();
    let err = Config::load_with(&main, &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:4:16: order file {:?} does not exist (listed in `order_files`)",
            main.display(),
            extra.display().to_string()
        )
    );
    let main = main_with_order_files(dir.path(), r#"["orders.d/*.toml"]"#);
    let config = Config::load_with(&main, &env).unwrap();
    assert_eq!(config.files, [main]);
}

/// `load` of a missing file and `from_toml` name their file; `from_toml` uses `<string>`.
#[test]
fn file_names_in_errors() {
    let err = Config::load_with(Path::new("/nonexistent/dcvd.toml"), &Environment::isolated()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/dcvd.toml: cannot read configuration: No such file or directory (os error 2)"
    );
    assert_eq!((err.line, err.col), (None, None));
    let err = Config::from_toml("[certcentral]\nbogus = 1\n").unwrap_err();
    assert_eq!(err.file, Path::new("<string>"));
    assert_eq!(err.location().unwrap().to_string(), "<string>:2:1");
}

/// The memory provider (demo, tests) takes its server addresses and lag; the demo
/// configuration shipped in config/ parses.
#[test]
fn memory_provider_and_demo_configuration() {
    let env = Environment::isolated().with_var("KEY", "k");
    let text = "[certcentral]\napi_key_env = \"KEY\"\n[providers.mem]\ntype = \"memory\"\n\
                zones = [\"example.test\"]\nlisten = [\"127.0.0.1:5300\", \"[::1]:5300\"]\n\
                lag = \"1500ms\"\n[providers.bare]\ntype = \"memory\"\nzones = [\"b.test\"]\n";
    let config = parse(text, &env).unwrap();
    let Some(Memory { listen, lag }) = config.providers["mem"].settings() else { panic!("not memory") };
    assert_eq!(config.providers["mem"].zones(), ["example.test"]);
    assert_eq!(listen, &["127.0.0.1:5300".parse().unwrap(), "[::1]:5300".parse().unwrap()]);
    assert_eq!(*lag, Duration::from_millis(1500));
    let Some(Memory { listen, lag }) = config.providers["bare"].settings() else { panic!("not memory") };
    assert!(listen.is_empty());
    assert_eq!(*lag, Duration::ZERO);

    let err = parse(&text.replace("1500ms", "soon"), &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "dcvd.toml:7:7: invalid duration \"soon\": expected number at 0; write it like \
         \"500ms\", \"2s\" or \"1m\""
    );

    // config/demo.toml names an absolute key file; point it at a real one.
    let dir = tempfile::tempdir().unwrap();
    let key = write_secret(dir.path(), "key", "demo-key", 0o600);
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/demo.toml");
    let text =
        fs::read_to_string(&demo).unwrap().replace("/tmp/dcvd-demo/certcentral-api-key", &key.display().to_string());
    let config = Config::from_toml_with(&text, &demo, &Environment::isolated()).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.certcentral.allow_insecure_http);
    assert!(!config.units.is_empty());
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

/// Delegated validation: a TXT unit may name a provider that serves only the zone its
/// `_dnsauth` CNAME points into; that parses, with a warning saying what dcvd expects.
#[test]
fn named_provider_for_delegated_validation_warns() {
    let text = "[certcentral]\napi_key_env = \"KEY\"\n[providers.b]\ntype = \"memory\"\nzones = [\"delegated.org\"]\n\
                [[order]]\nid = 1\nmethod = \"dns-txt-token\"\ndomains = [\"example.com\"]\nprovider = \"b\"\n";
    let env = dcvd::config::Environment::isolated().with_var("KEY", "k");
    let cfg = dcvd::config::Config::from_toml_with(text, std::path::Path::new("d.toml"), &env).expect("parses");
    assert_eq!(cfg.units.len(), 1);
    assert!(
        cfg.warnings.iter().any(|w| w.starts_with("d.toml:9:")
            && w.contains("_dnsauth.example.com to be a CNAME into one of its zones (delegated validation)")),
        "{:?}",
        cfg.warnings
    );
}

/// `env_pass` of an exec provider is kept in order without duplicates; variables that hold no
/// secret of dcvd (AWS credentials when no `*_env` key names them) may be passed explicitly.
#[test]
fn exec_env_pass_is_an_explicit_allow_list() {
    let (_dir, env) = fixture();
    let text = "[certcentral]\napi_key_env = \"KEY\"\n[providers.hook]\ntype = \"exec\"\nzones = [\"example.io\"]\n\
                command = [\"/bin/hook\"]\nenv_pass = [\"AWS_SECRET_ACCESS_KEY\", \"HOME\", \"AWS_SECRET_ACCESS_KEY\"]\n\
                [providers.other]\ntype = \"exec\"\nzones = [\"example.net\"]\ncommand = [\"/bin/hook\"]\n";
    let config = parse(text, &env).unwrap_or_else(|e| panic!("{e}"));
    let Some(Exec { env_pass, .. }) = config.providers["hook"].settings() else { panic!("hook is not exec") };
    assert_eq!(env_pass, &["AWS_SECRET_ACCESS_KEY", "HOME"]);
    let Some(Exec { env_pass, .. }) = config.providers["other"].settings() else { panic!("other is not exec") };
    assert!(env_pass.is_empty(), "nothing is passed by default: {env_pass:?}");
}

/// `metrics_listen` on an address other than loopback is a warning at its position (the
/// endpoint has no authentication); loopback gives none.
#[test]
fn metrics_listen_beyond_loopback_warns() {
    let (_dir, env) = fixture();
    let text = |addr: &str| format!("[certcentral]\napi_key_env = \"KEY\"\n[daemon]\nmetrics_listen = \"{addr}\"\n");
    for addr in ["0.0.0.0:9465", "192.0.2.10:9465", "[::]:9465"] {
        let config = parse(&text(addr), &env).unwrap_or_else(|e| panic!("{e}"));
        let warning = config.warnings.iter().find(|w| w.contains("metrics_listen")).unwrap_or_else(|| {
            panic!("no metrics_listen warning for {addr}: {:?}", config.warnings);
        });
        assert!(warning.starts_with("dcvd.toml:4:18: metrics_listen "), "{warning}");
        assert!(
            warning.contains("is not a loopback address: /metrics and /healthz have no authentication"),
            "{warning}"
        );
    }
    for addr in ["127.0.0.1:9465", "[::1]:9465"] {
        let config = parse(&text(addr), &env).unwrap_or_else(|e| panic!("{e}"));
        assert!(!config.warnings.iter().any(|w| w.contains("metrics_listen")), "{addr}: {:?}", config.warnings);
    }
}

/// The state directory is checked as the running user: a group- or world-writable one warns at
/// the position of `state_dir`; a missing one below a writable directory is fine; a file where
/// the directory should be, or below which it would be created, is an error at `state_dir`.
/// (An unwritable directory needs a user other than root: see `daemon.rs`.)
#[test]
fn state_dir_is_checked_as_the_running_user() {
    let (_dir, env) = fixture();
    let base = tempfile::tempdir().unwrap();
    let config_for = |state: &Path| {
        let text = format!("[certcentral]\napi_key_env = \"KEY\"\n[daemon]\nstate_dir = \"{}\"\n", state.display());
        parse(&text, &env).unwrap_or_else(|e| panic!("{e}"))
    };

    let open = base.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let mut config = config_for(&open);
    config.check_state_dir().unwrap_or_else(|e| panic!("{e}"));
    let want = format!(
        "dcvd.toml:4:13: state_dir {0} is writable by group or others (mode 0777): another user could replace \
         the state store; run `chmod 700 {0}`",
        open.display()
    );
    assert!(config.warnings.contains(&want), "{:?}", config.warnings);

    let private = base.path().join("private");
    fs::create_dir(&private).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let mut config = config_for(&private);
    config.check_state_dir().unwrap_or_else(|e| panic!("{e}"));
    assert!(!config.warnings.iter().any(|w| w.contains("state_dir")), "{:?}", config.warnings);
    assert_eq!(fs::read_dir(&private).unwrap().count(), 0, "the check leaves nothing behind");

    let missing = base.path().join("not/yet");
    config_for(&missing).check_state_dir().unwrap_or_else(|e| panic!("{e}"));
    assert!(!missing.exists() && !base.path().join("not").exists(), "the check creates nothing");

    let file = base.path().join("a-file");
    fs::write(&file, "").unwrap();
    let err = config_for(&file).check_state_dir().unwrap_err();
    assert_eq!(err.to_string(), format!("dcvd.toml:4:13: state_dir {} is not a directory", file.display()));
    let err = config_for(&file.join("below")).check_state_dir().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "dcvd.toml:4:13: state_dir {} cannot be created: {} is not a directory",
            file.join("below").display(),
            file.display()
        )
    );
}

const SCOPE_PROVIDERS: &str = "[providers.shop]\ntype = \"memory\"\nzones = [\"shop.example.com\"]\n";

fn scoped(certcentral_scope: &str, order_scope: &str) -> String {
    format!(
        "[certcentral]\napi_key_env = \"KEY\"\n{certcentral_scope}\n{SCOPE_PROVIDERS}\
         [[order]]\nid = 1\nmethod = \"dns-txt-token\"\ndomains = [\"www.shop.example.com\"]\n{order_scope}\n"
    )
}

/// The default scope is CertCentral's (base domains): a provider that serves only the names'
/// zone does not serve the base domain, and check-config says which scope caused it and what to
/// change, at the domain's position.
#[test]
fn base_scope_needs_a_provider_for_the_base_domain() {
    let env = Environment::isolated().with_var("KEY", "k");
    let err = parse(&scoped("", ""), &env).expect_err("base domain example.com is not served");
    let text = err.to_string();
    assert!(text.starts_with("dcvd.toml:10:12: no provider serves example.com"), "{text}");
    assert!(text.contains("validation_scope = \"base\" (from [certcentral] `validation_scope`)"), "{text}");
    assert!(text.contains("validates www.shop.example.com at its base domain example.com"), "{text}");
    assert!(text.contains("set validation_scope = \"exact\""), "{text}");

    // the order's own scope is named when it set it
    let err = parse(&scoped("validation_scope = \"exact\"", "validation_scope = \"base\""), &env).expect_err("base");
    assert!(err.to_string().contains("(from this order's `validation_scope`)"), "{err}");
}

/// Exact scope, on the account or on the order: the name itself is the owner.
#[test]
fn exact_scope_publishes_at_the_name_itself() {
    let env = Environment::isolated().with_var("KEY", "k");
    for text in [scoped("validation_scope = \"exact\"", ""), scoped("", "validation_scope = \"exact\"")] {
        let cfg = parse(&text, &env).expect("exact scope: www.shop.example.com is served");
        assert_eq!(cfg.units[0].scope, dcvd::config::ValidationScope::Exact);
    }
    let cfg = parse(&scoped("validation_scope = \"exact\"", ""), &env).unwrap();
    assert_eq!(cfg.certcentral.validation_scope, dcvd::config::ValidationScope::Exact);
    // under exact, a name whose base domain alone is served: the hint points at `base`
    let text = "[certcentral]\napi_key_env = \"KEY\"\nvalidation_scope = \"exact\"\n[providers.apex]\ntype = \"memory\"\n\
                zones = [\"example.org\"]\n[providers.other]\ntype = \"memory\"\nzones = [\"www.example.org\"]\n\
                [[order]]\nid = 2\nmethod = \"dns-txt-token\"\ndomains = [\"shop.example.net\"]\n";
    let err = parse(text, &env).expect_err("nobody serves example.net");
    assert!(!err.to_string().contains("validation_scope"), "the scope did not cause this: {err}");
}

/// OV/EV domains always validate their own name, whatever the account's scope; and
/// `validation_scope` is not a `[[domain]]` key.
#[test]
fn domains_ignore_the_validation_scope() {
    let env = Environment::isolated().with_var("KEY", "k");
    let text = format!(
        "[certcentral]\napi_key_env = \"KEY\"\n{SCOPE_PROVIDERS}[[domain]]\nid = 3\nname = \"www.shop.example.com\"\n\
         method = \"dns-txt-token\"\n"
    );
    let cfg = parse(&text, &env).expect("a domain unit validates at its own name");
    assert_eq!(cfg.units[0].scope, dcvd::config::ValidationScope::Exact);
    let err = parse(&format!("{text}validation_scope = \"base\"\n"), &env).expect_err("not a domain key");
    assert!(err.to_string().contains("unknown field `validation_scope`"), "{err}");
}

const AZ_SUB: &str = "0b1f6471-1bf0-4dda-aec3-cb9272f09590";

fn azure_toml(auth_keys: &str) -> String {
    format!(
        "[certcentral]\napi_key_env = \"KEY\"\n[providers.az]\ntype = \"azure\"\nzones = [\"example.com\"]\n\
         subscription_id = \"{AZ_SUB}\"\nresource_group = \"dns-rg\"\n{auth_keys}"
    )
}

fn azure_config(config: &Config) -> &Azure {
    match config.providers["az"].settings::<Azure>() {
        Some(azure) => azure,
        None => panic!("not azure: {:?}", config.providers["az"]),
    }
}

/// Each Azure credential parses from exactly its keys; workload identity falls back to the
/// variables the Azure Workload Identity webhook injects; endpoints can be overridden.
#[test]
fn azure_provider_with_each_credential() {
    use dns_provider::azure::AzureCredential;
    let (dir, env) = fixture();
    write_secret(dir.path(), "az-secret", "az-client-secret-value\n", 0o600);
    let config = parse(
        &azure_toml(
            "auth = \"client_secret\"\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_id = \"app-1\"\n\
             client_secret_file = \"az-secret\"\nmanagement_url = \"http://127.0.0.1:9/arm\"\n",
        ),
        &env,
    )
    .expect("client secret");
    let az = azure_config(&config);
    assert_eq!(config.providers["az"].kind(), "azure");
    assert_eq!(config.providers["az"].zones(), ["example.com".to_string()]);
    assert_eq!((az.subscription_id.as_str(), az.resource_group.as_str()), (AZ_SUB, "dns-rg"));
    assert_eq!(az.management_url.as_deref(), Some("http://127.0.0.1:9/arm"));
    let AzureCredential::ClientSecret { tenant_id, client_id, client_secret } = &az.credential else {
        panic!("{:?}", az.credential)
    };
    assert_eq!((tenant_id.as_str(), client_id.as_str()), ("contoso.onmicrosoft.com", "app-1"));
    assert_eq!(client_secret.expose_secret(), "az-client-secret-value");
    let debug = format!("{config:?}");
    assert!(!debug.contains("az-client-secret-value"), "{debug}");
    // Debug is deterministic (the daemon compares providers by it on reload)
    let again = parse(
        &azure_toml(
            "auth = \"client_secret\"\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_id = \"app-1\"\n\
             client_secret_file = \"az-secret\"\nmanagement_url = \"http://127.0.0.1:9/arm\"\n",
        ),
        &env,
    )
    .expect("again");
    assert_eq!(format!("{:?}", config.providers["az"]), format!("{:?}", again.providers["az"]));

    let config = parse(&azure_toml("auth = \"managed_identity\"\n"), &env).expect("system-assigned");
    assert!(matches!(azure_config(&config).credential, AzureCredential::ManagedIdentity { client_id: None }));
    let config =
        parse(&azure_toml("auth = \"managed_identity\"\nclient_id = \"uai-1\"\n"), &env).expect("user-assigned");
    assert!(
        matches!(&azure_config(&config).credential, AzureCredential::ManagedIdentity { client_id: Some(c) } if c == "uai-1")
    );

    let wi_env = env
        .clone()
        .with_var("AZURE_TENANT_ID", "tenant-from-env")
        .with_var("AZURE_CLIENT_ID", "client-from-env")
        .with_var("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/tokens/azure-identity-token");
    let config = parse(&azure_toml("auth = \"workload_identity\"\n"), &wi_env).expect("workload identity from env");
    let AzureCredential::WorkloadIdentity { tenant_id, client_id, token_file } = &azure_config(&config).credential
    else {
        panic!("not workload identity")
    };
    assert_eq!((tenant_id.as_str(), client_id.as_str()), ("tenant-from-env", "client-from-env"));
    assert_eq!(token_file, Path::new("/var/run/secrets/azure/tokens/azure-identity-token"));
    let config = parse(
        &azure_toml("auth = \"workload_identity\"\nclient_id = \"explicit\"\nfederated_token_file = \"/run/token\"\n"),
        &wi_env,
    )
    .expect("explicit keys win");
    let AzureCredential::WorkloadIdentity { client_id, token_file, .. } = &azure_config(&config).credential else {
        panic!("not workload identity")
    };
    assert_eq!((client_id.as_str(), token_file.as_path()), ("explicit", Path::new("/run/token")));
}

/// Azure settings errors name the key, its position and the fix; none shows the secret.
#[test]
fn azure_settings_errors() {
    let (dir, env) = fixture();
    write_secret(dir.path(), "az-secret", "az-client-secret-value\n", 0o600);
    let cases: &[(&str, String, (usize, usize), &str)] = &[
        (
            "subscription id is not a GUID",
            azure_toml("auth = \"managed_identity\"\n").replace(AZ_SUB, "my-subscription"),
            (6, 19),
            "`subscription_id` \"my-subscription\" is not a subscription id: give the GUID shown by \
             `az account show --query id` (such as \"00000000-0000-0000-0000-000000000000\")",
        ),
        (
            "unknown auth",
            azure_toml("auth = \"password\"\n"),
            (8, 8),
            "unknown variant `password`, expected one of `client_secret`, `managed_identity`, `workload_identity`",
        ),
        ("missing auth", azure_toml(""), (3, 1), "missing field `auth`"),
        (
            "key the credential does not use",
            azure_toml("auth = \"managed_identity\"\nclient_secret_env = \"KEY\"\n"),
            (9, 21),
            "`client_secret_env` is not used with auth = \"managed_identity\": remove it, or choose the `auth` that uses it",
        ),
        (
            "client secret without tenant",
            azure_toml("auth = \"client_secret\"\nclient_id = \"app\"\nclient_secret_file = \"az-secret\"\n"),
            (3, 1),
            "provider `az` (auth = \"client_secret\") needs `tenant_id`: the app registration's Directory (tenant) ID",
        ),
        (
            "client secret without secret",
            azure_toml("auth = \"client_secret\"\ntenant_id = \"t\"\nclient_id = \"app\"\n"),
            (3, 1),
            "provider `az` needs a secret: set `client_secret_file` (a file; relative paths are read from \
             $CREDENTIALS_DIRECTORY) or `client_secret_env` (an environment variable)",
        ),
        (
            "workload identity without token file",
            azure_toml("auth = \"workload_identity\"\ntenant_id = \"t\"\nclient_id = \"app\"\n"),
            (3, 1),
            "provider `az` (auth = \"workload_identity\") needs `federated_token_file`, or the environment \
             variable AZURE_FEDERATED_TOKEN_FILE (set by the Azure Workload Identity webhook)",
        ),
        (
            "plain http to a remote management endpoint",
            azure_toml("auth = \"managed_identity\"\nmanagement_url = \"http://management.azure.com\"\n"),
            (9, 18),
            "`management_url` \"http://management.azure.com\" uses plain http to management.azure.com, which would \
             expose credentials or tokens: use https:// (http:// is allowed only to a loopback test server)",
        ),
        (
            "unknown key lists azure's keys",
            azure_toml("auth = \"managed_identity\"\napi_token_env = \"KEY\"\n"),
            (9, 1),
            "unknown field `api_token_env`, expected one of `type`, `zones`, `subscription_id`, `resource_group`, \
             `auth`, `tenant_id`, `client_id`, `client_secret_file`, `client_secret_env`, `federated_token_file`, \
             `management_url`, `authority_url`, `imds_url`",
        ),
    ];
    let mut failures = Vec::new();
    for (name, toml, at, message) in cases {
        match parse(toml, &env) {
            Ok(_) => failures.push(format!("{name}: parsed, expected an error")),
            Err(e) => {
                let got = (e.line.unwrap_or(0), e.col.unwrap_or(0));
                if e.message != *message || got != *at {
                    failures.push(format!("{name}:\n   got: {e}\n  want: {}:{}: {message}", at.0, at.1));
                }
                assert!(!e.to_string().contains("az-client-secret-value"), "{name}: {e}");
            }
        }
    }
    // IMDS's link-local address is the one plain-http host allowed besides loopback
    assert!(
        parse(
            &azure_toml(
                "auth = \"managed_identity\"\nimds_url = \"http://169.254.169.254/metadata/identity/oauth2/token\"\n"
            ),
            &env
        )
        .is_ok()
    );
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// `type = "gcloud"`: the credentials file is read and checked at load time (from
/// $CREDENTIALS_DIRECTORY when relative), managed zones are normalized, endpoint overrides kept;
/// `Debug` names the account and key id, never the key.
#[test]
fn gcloud_provider_parses_and_hides_its_key() {
    use dns_provider::gcloud::Credentials;
    let creds = tempfile::tempdir().unwrap();
    let (key, _) = test_support::gcloud_fake::service_account_key_file(
        "dcvd@my-project.iam.gserviceaccount.com",
        "my-project",
        "https://oauth2.googleapis.com/token",
    );
    write_secret(creds.path(), "gcp-key.json", &key, 0o600);
    let env = Environment::isolated().with_credentials_dir(creds.path()).with_var("KEY", "k");
    let text = r#"
[certcentral]
api_key_env = "KEY"
[providers.gcp]
type = "gcloud"
project = "my-project"
zones = ["Example.com.", "example.org"]
managed_zones = { "example.com" = "example-com" }
credentials_file = "gcp-key.json"
api_url = "http://127.0.0.1:9/dns/v1"
[providers.gce]
type = "gcloud"
project = "other-project"
zones = ["example.net"]
auth = "metadata"
[[order]]
id = 1
method = "dns-txt-token"
"#;
    let config = parse(text, &env).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let Some(Gcloud { project, managed_zones, credentials, api_url, metadata_url, token_url }) =
        config.providers["gcp"].settings()
    else {
        panic!("not gcloud: {:?}", config.providers["gcp"])
    };
    assert_eq!(config.providers["gcp"].zones(), ["example.com", "example.org"]);
    assert_eq!(project, "my-project");
    assert_eq!(managed_zones.get("example.com").map(String::as_str), Some("example-com"));
    assert_eq!(api_url.as_deref(), Some("http://127.0.0.1:9/dns/v1"));
    assert!(metadata_url.is_none() && token_url.is_none());
    let Credentials::ServiceAccount { client_email, private_key, .. } = credentials else {
        panic!("not a service account: {credentials:?}")
    };
    assert_eq!(client_email, "dcvd@my-project.iam.gserviceaccount.com");
    assert!(private_key.expose_secret().contains("BEGIN PRIVATE KEY"));
    assert!(matches!(config.providers["gce"].settings(), Some(Gcloud { credentials: Credentials::Metadata, .. })));
    assert_eq!(config.providers["gcp"].kind(), "gcloud");

    let debug = format!("{config:?}");
    let key_line = private_key.expose_secret().lines().nth(2).unwrap().to_string();
    assert!(!debug.contains(&key_line) && !debug.contains("PRIVATE KEY"), "key in Debug: {debug}");
    assert!(debug.contains("dcvd@my-project.iam.gserviceaccount.com"), "{debug}");
    // The reload comparison: the same file parsed twice compares equal
    let again = parse(text, &env).unwrap();
    assert_eq!(again.providers["gcp"], config.providers["gcp"]);
    assert_eq!(format!("{:?}", again.providers["gcp"]), format!("{:?}", config.providers["gcp"]));
}

/// `gcloud` sections: each mistake is reported at its line and column, without file content.
#[test]
fn gcloud_provider_errors_have_positions() {
    let creds = tempfile::tempdir().unwrap();
    write_secret(creds.path(), "not-json", "private-bytes-123 {", 0o600);
    write_secret(creds.path(), "user.json", r#"{"type": "authorized_user", "refresh_token": "rt-secret-456"}"#, 0o600);
    let env = Environment::isolated().with_credentials_dir(creds.path()).with_var("KEY", "k");
    let head = "[certcentral]\napi_key_env = \"KEY\"\n[providers.gcp]\ntype = \"gcloud\"\nzones = [\"example.com\"]\n";
    let cases: &[(&str, (usize, usize), &str)] = &[
        ("project = \"p\"\n", (3, 1), "provider `gcp` needs credentials: set `credentials_file`"),
        ("project = \"p\"\nauth = \"adc\"\n", (7, 8), "`auth` must be \"metadata\""),
        (
            "project = \"p\"\nauth = \"metadata\"\ncredentials_file = \"x\"\n",
            (7, 8),
            "give either `credentials_file` or `auth",
        ),
        ("project = \"My Project\"\nauth = \"metadata\"\n", (6, 11), "`project` must be a Google Cloud project id"),
        (
            "project = \"p\"\ncredentials_file = \"not-json\"\n",
            (7, 20),
            "the credentials file is not JSON (line 1, column",
        ),
        (
            "project = \"p\"\ncredentials_file = \"user.json\"\n",
            (7, 20),
            "credentials of type \"authorized_user\" are not supported",
        ),
        ("project = \"p\"\ncredentials_file = \"missing.json\"\n", (7, 20), "cannot read `credentials_file`"),
        (
            "project = \"p\"\nauth = \"metadata\"\nmanaged_zones = { \"example.org\" = \"x\" }\n",
            (8, 17),
            "`managed_zones` names zone example.org",
        ),
        (
            "project = \"p\"\nauth = \"metadata\"\napi_url = \"http://dns.example.net/dns/v1\"\n",
            (8, 11),
            "must be an https:// URL",
        ),
        ("project = \"p\"\nauth = \"metadata\"\nregion = \"x\"\n", (8, 1), "unknown field `region`"),
    ];
    for (rest, at, want) in cases {
        let err = parse(&format!("{head}{rest}"), &env).expect_err(rest);
        let text = err.to_string();
        assert_eq!((err.line.unwrap_or(0), err.col.unwrap_or(0)), *at, "{rest}: {text}");
        assert!(err.message.contains(want), "{rest}: {text}");
        for secret in ["private-bytes-123", "rt-secret-456"] {
            assert!(!text.contains(secret), "secret in {text}");
        }
    }
}

/// `powerdns` and `acmedns` sections parse into their settings (defaults, normalized names,
/// secrets from files and variables); their Debug output shows no secret and is stable.
#[test]
fn powerdns_and_acmedns_providers() {
    let (dir, env) = fixture();
    write_secret(dir.path(), "pdns-key", "pdns-secret-key\n", 0o600);
    write_secret(dir.path(), "adns-example", "acme-password-one\n", 0o600);
    let env = env.with_var("ADNS_SHOP", "acme-password-two");
    let text = r#"
[certcentral]
api_key_env = "KEY"

[providers.pdns]
type = "powerdns"
zones = ["Example.COM."]
api_url = "http://127.0.0.1:8081/"
api_key_file = "pdns-key"

[providers.adns]
type = "acmedns"
zones = ["auth.example.org"]
api_url = "https://auth.example.org"
timeout = "10s"

[providers.adns.accounts."shop.example.net"]
username = "c36f50e8-4632-44f0-83fe-e070fef28a10"
password_env = "ADNS_SHOP"
subdomain = "8E5700EA-a4bf-41c7-8a77-e990661dcc6a"
fulldomain = "8e5700ea-a4bf-41c7-8a77-e990661dcc6a.auth.example.org."

[providers.adns.accounts."example.com"]
username = "d1b2c3d4-4632-44f0-83fe-e070fef28a10"
password_file = "adns-example"
subdomain = "0b1c2d3e-a4bf-41c7-8a77-e990661dcc6a"
fulldomain = "0b1c2d3e-a4bf-41c7-8a77-e990661dcc6a.auth.example.org"

[[order]]
id = 1
method = "dns-txt-token"
domains = ["example.com", "*.example.com"]
provider = "pdns"
"#;
    let config = parse(text, &env).unwrap_or_else(|e| panic!("{e}"));
    let Some(PowerDns { api_url, api_key, server_id, timeout }) = config.providers["pdns"].settings() else {
        panic!("pdns is not powerdns");
    };
    assert_eq!(config.providers["pdns"].zones(), ["example.com"]);
    assert_eq!(api_url, "http://127.0.0.1:8081");
    assert_eq!(api_key.expose_secret(), "pdns-secret-key");
    assert_eq!(server_id, "localhost");
    assert_eq!(*timeout, Duration::from_secs(30));
    let Some(AcmeDns { api_url, accounts, timeout }) = config.providers["adns"].settings() else {
        panic!("adns is not acmedns");
    };
    assert_eq!(config.providers["adns"].zones(), ["auth.example.org"]);
    assert_eq!(api_url, "https://auth.example.org");
    assert_eq!(*timeout, Duration::from_secs(10));
    assert_eq!(accounts.keys().collect::<Vec<_>>(), ["example.com", "shop.example.net"]);
    let shop = &accounts["shop.example.net"];
    assert_eq!(shop.subdomain, "8e5700ea-a4bf-41c7-8a77-e990661dcc6a");
    assert_eq!(shop.fulldomain, "8e5700ea-a4bf-41c7-8a77-e990661dcc6a.auth.example.org");
    assert_eq!(shop.password.expose_secret(), "acme-password-two");
    assert_eq!(accounts["example.com"].password.expose_secret(), "acme-password-one");

    let debug = format!("{:?}", config.providers);
    for secret in ["pdns-secret-key", "acme-password-one", "acme-password-two"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    // deterministic, and a reload compares providers by value, secrets included
    let again = parse(text, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(debug, format!("{:?}", again.providers));
    assert_eq!(again.providers, config.providers);
    // a rotated password is a change, though Debug (which never shows it) stays the same
    let rotated = parse(text, &env.clone().with_var("ADNS_SHOP", "acme-password-three")).unwrap();
    assert_ne!(rotated.providers["adns"], config.providers["adns"], "a changed password is a change");
    assert_eq!(rotated.providers["pdns"], config.providers["pdns"]);
    assert_eq!(debug, format!("{:?}", rotated.providers));
}

/// A command that only removes records (`dcvd cleanup`) reads the DNS providers' secrets and
/// neither the CertCentral key nor the webhook secret: theirs may be missing. A provider's
/// missing secret is still an error; `status` reads `[daemon]` only.
#[test]
fn provider_secrets_only_skips_the_certcentral_key_and_the_webhook_secret() {
    let (dir, env) = fixture();
    let text = r#"
[certcentral]
api_key_file = "no-such-key"

[daemon]
state_dir = "/var/lib/dcvd-test"

[notify]
webhook_url = "https://hooks.example.com/dcvd"
webhook_secret_env = "NO_SUCH_VARIABLE"

[providers.cf]
type = "cloudflare"
api_token_env = "CF"
zones = ["example.com"]
"#;
    let err = parse(text, &env).expect_err("the key is missing");
    assert!(err.to_string().contains("no-such-key"), "{err}");
    let cfg = parse(text, &env.clone().provider_secrets_only()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.providers.len(), 1);
    assert_ne!(cfg.certcentral.api_key.expose_secret(), "", "a placeholder, never sent");
    let without_cf = text.replace("api_token_env = \"CF\"", "api_token_env = \"NO_CF\"");
    let err = parse(&without_cf, &env.clone().provider_secrets_only()).expect_err("the provider's secret is read");
    assert!(err.to_string().contains("NO_CF"), "{err}");
    let path = dir.path().join("dcvd.toml");
    fs::write(&path, &without_cf).unwrap();
    let daemon = Config::load_daemon(&path, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(daemon.state_dir, PathBuf::from("/var/lib/dcvd-test"));
}
