//! Test-only support for dcvd's crates: launchers for real servers (BIND 9, moto, PowerDNS), the
//! stateful Cloudflare and acme-dns fakes, and small helpers (free ports). Never a dependency of shipped code.
//!
//! Launchers *fail loudly*: when a server cannot start, they panic with a message that says what
//! is missing and how to install it (`scripts/test` installs everything), so no test is skipped
//! silently.
//!
//! # Layout
//! - [`harness`]: runs the real dcvd binary (clean environment, working directory, one log)
//!   against the CertCentral simulator, in-process or as its binary; waiting helpers.
//! - [`bind`]: BIND 9 primary (and optional lagging secondary on 127.0.0.2) with TSIG updates.
//! - [`ports`]: free-port helpers.
//! - [`moto`]: moto (Route53) behind a proxy that enforces Route53's change-batch rules, counts
//!   change requests and injects throttling.
//! - [`azure_fake`]: a stateful fake of Azure DNS's record-set API (ETags, 412 on stale
//!   `If-Match`), Entra ID's token endpoint and IMDS.
//! - [`cloudflare_fake`]: a stateful fake of Cloudflare's v4 DNS API (zones, records, pagination,
//!   token scopes, 429 with `Retry-After`).
//! - [`gcloud_fake`]: a stateful fake of Google Cloud DNS v1 and Google's token endpoints
//!   (service-account JWTs verified, metadata server, STS, impersonation, exact-match deletions).
//! - [`acmedns_fake`]: a stateful fake of joohoi/acme-dns's `/register` and `/update` (two TXT
//!   slots per account, its auth and validation errors).
//! - [`powerdns`]: PowerDNS Authoritative (SQLite backend) with its HTTP API behind a proxy that
//!   counts requests and injects 429/503.
//! - [`fleet`]: several `dcvd run` instances on one PostgreSQL store, and a monitor that flags
//!   a name holding two values or a value published again.
//! - [`postgres`]: a private PostgreSQL cluster (initdb/pg_ctl in a temp dir, as an unprivileged
//!   user), which a test can stop and start again.
//! - [`frontend`]: DNS front-ends serving what moto's Route53 or the Cloudflare fake holds, over
//!   real DNS on two name servers (one optionally lagging).

pub mod acmedns_fake;
pub mod azure_fake;
pub mod bind;
pub mod cloudflare_fake;
pub mod fleet;
pub mod frontend;
pub mod gcloud_fake;
pub mod harness;
pub mod moto;
pub mod ports;
pub mod postgres;
pub mod powerdns;
