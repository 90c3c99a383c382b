//! dcvd: unattended DigiCert domain control validation by DNS.
//!
//! The daemon reads a TOML file of pending orders (DV) and domains (OV/EV), fetches each DCV
//! token from CertCentral, publishes the TXT/CNAME records through DNS provider plugins, waits
//! until every authoritative name server serves them, asks DigiCert to check, and removes the
//! records again. Its state lives in a crash-safe SQLite store so a restart resumes every unit
//! exactly where it stopped. It must not talk to DNS providers or CertCentral except through
//! the `dns-provider` and `certcentral` crates, and never logs a secret.
//!
//! # Layout
//! - [`cli`]: the command line (`run`, `once`, `check-config`, `status`, `cleanup`, `demo`).
//! - [`config`]: the TOML schema, validated into types that cannot be invalid (errors carry
//!   file:line:col).
//! - [`store`]: the SQLite state store (units, records, intents) with migrations and a lock.
//! - [`engine`]: the orchestrator: one task per unit driving the state machine.
//! - [`discovery`]: `[discovery]` scans of the account (pending orders, domains due for
//!   revalidation) turned into units.
//! - [`records`]: DigiCert's record formats applied to a unit's names.
//! - [`providers`]: builds provider adapters from the configuration.
//! - [`scheduler`]: the `rescan` cron job.
//! - [`shared_limit`]: DigiCert's rate-limit windows shared by instances through PostgreSQL.
//! - [`metrics`], [`logging`]: observability; [`notify`]: `[notify]` hook and webhook delivery.
//! - [`demo`]: the self-contained demo; [`doctor`]: `dcvd doctor`, the operator's health check.
pub mod cli;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod doctor;
pub mod engine;
pub mod logging;
pub mod machine;
pub mod metrics;
pub mod notify;
pub mod providers;
pub mod records;
pub mod scheduler;
pub mod shared_limit;
pub mod store;
