//! A typed async client for the DCV endpoints of DigiCert's CertCentral Services API v2.
//!
//! It speaks HTTP and JSON only: it knows no DNS, no daemon state and no validation policy. What
//! it does own is how to talk to CertCentral well: the `X-DC-DEVKEY` header, typed bodies parsed
//! defensively, DigiCert's error codes, retries with jittered backoff for what is retryable, and a
//! client-side rate limiter (shared by every clone) that keeps the process under DigiCert's limits.
//!
//! # Layout
//! - [`Client`], [`ClientConfig`]: the client and its settings.
//! - [`types`]: request and response bodies.
//! - [`Error`]: one error type with predicates (`is_not_found_yet`, `is_retryable`, ...).
//! - [`RateWindow`]: one rate-limit window (`100 per 5 s`); [`RateLimiter`] enforces several
//!   rolling windows at once on tokio's clock, checks ([`Lane::Check`]) before token requests.
//! - [`RetryPolicy`]: bounded attempts with jittered exponential backoff, `Retry-After` honoured
//!   (the workspace's one policy, from the `retry` crate).
//! - [`ValidationScope`]: where DigiCert looks for a DV order's record (base domain or exact
//!   name; the Public Suffix List decides the base domain).
//! - [`Endpoint`], [`CallRecord`]: labels and per-attempt records for metrics (see
//!   [`Client::set_observer`]).
//!
//! # Secrets
//! The API key lives in a [`SecretString`]; it is sent only as the (sensitive) `X-DC-DEVKEY`
//! header and never appears in `Debug` output, error messages or logs. Plain `http://` base URLs
//! are refused unless explicitly allowed, and then only to loopback hosts.
#![warn(missing_docs)]

mod client;
mod error;
mod limiter;
mod scope;
pub mod types;

pub use client::{CallRecord, Client, ClientConfig, Endpoint, Observer, RateWindow, RetryPolicy};
pub use error::Error;
pub use limiter::{Lane, RateLimiter, TOKENS_PER_CHECK, safety_margin};
pub use scope::{ValidationScope, base_domain};
pub use secrecy::SecretString;
