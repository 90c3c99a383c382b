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
//! - [`RateWindow`]: one rate-limit window (`100 per 5 s`).
#![warn(missing_docs)]

mod client;
mod error;
mod limiter;
pub mod types;

pub use client::{Client, ClientConfig, Endpoint, RateWindow, RetryPolicy};
pub use error::Error;
pub use secrecy::SecretString;
