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
//!   rolling windows at once on tokio's clock, checks ([`Lane::Check`]) before token requests;
//!   [`SharedWindows`] is the interface of a ledger that shares the windows with the other
//!   processes using the API key (the crate has no implementation: it knows no database).
//! - [`RetryPolicy`]: bounded attempts with jittered exponential backoff, `Retry-After` honoured
//!   (the workspace's one policy, from the `retry` crate).
//! - [`ValidationScope`]: where DigiCert looks for a DV order's record (base domain or exact
//!   name; the Public Suffix List decides the base domain).
//! - [`Endpoint`], [`CallRecord`]: labels and per-attempt records for metrics (see
//!   [`Client::set_observer`]).
//!
//! - [`OrderFilter`], [`DomainFilter`], [`Listing`]: List orders and List domains, one page
//!   per call ([`Client::list_orders`], [`Client::list_domains`]) or every page
//!   ([`Client::list_all_orders`], [`Client::list_all_domains`]).
//!
//! # What dcvd relies on from each endpoint
//!
//! Sources: DigiCert's API reference ("documented"), real answers recorded in public test
//! fixtures ("recorded"), and third-party clients ("inferred"; every such point is marked
//! *inference* below). Parsing ignores unknown fields, treats absent arrays as empty and absent
//! objects as `None`, and reads timestamps with `Z` or `+00:00`.
//!
//! - **List orders**, `GET /order/certificate` ([`Client::list_orders`]): documented filters
//!   `filters[status]` (`pending`, `issued`, ...), `filters[product_name_id]`,
//!   `filters[container_id]`, paging by `offset` and `limit`. Each entry has `id`, `status`,
//!   `certificate{common_name, dns_names}`, `product{name_id}`, `container{id}`. There is no
//!   DCV method in a list entry, so a new candidate costs one Order info call. A result with
//!   no match has no `orders` key at all (recorded), only `page`. *Inference*: the largest
//!   `limit` is 1000 (the docs give a maximum whose value was not found; other clients send
//!   1000); and `page.limit` cannot be trusted (the documented example shows `0`).
//! - **Order info**, `GET /order/certificate/{id}` ([`Client::order_info`]): documented `id`,
//!   `status`, `certificate{common_name, dns_names}`. *Inference* (third-party clients, not in
//!   the reference's field table): the top-level `dcv_method`, `product{name_id, type}` and
//!   `container{id}`. Some products answer `dns_names: [" "]`, hence [`types::OrderInfo::dns_names`].
//!   The EV value of `product.type` was not found: filter on `product.name_id`.
//! - **Order validation status**, `GET /order/certificate/{id}/validation`
//!   ([`Client::order_validation`]): documented `order_name_scope` (`base_domain` or `fqdn`) and
//!   per entry of `dns_name_validations` the `name_scope` that covers its `dns_names`, with ids
//!   sent as strings. It tells where DigiCert will look for an order's record. Discovery reads
//!   a new candidate's DCV method from its documented `order_dcv_method` (List orders has none)
//!   and whether its DCV is complete from each entry's `status` (`approved` in DigiCert's
//!   example; `valid` is taken as done too, anything else as not done).
//! - **Change order DCV method**, `PUT /order/certificate/{id}/dcv-method`
//!   ([`Client::change_order_dcv_method`]): documented, pending orders only; the answer body
//!   (204, or 200 with a random value) is not used.
//! - **List domains**, `GET /domain?include_dcv_expiration_time=true`
//!   ([`Client::list_domains`]): documented `limit` maximum and default 1000, `filters[status]`
//!   (`active`/`inactive`). Each entry has `id`, `name`, `is_active`, `container{id}`,
//!   `dcv_method`, `validations[{type, status, validated_until}]` and `dcv_expiration{ov, ev}`.
//!   Documented absences: `validations` lists active validations only and is missing when
//!   there is none; `dcv_expiration` is missing until DCV was completed once; `dcv_token` is
//!   never listed. With `include_dcv_expiration_time=true` the `dcv_expiration` values are
//!   UTC ISO-8601 timestamps; without it, dates in Mountain Time, which [`types::DcvExpiration`]
//!   reads as 06:00 UTC of that date (*inference*, the earliest start of that date there).
//! - **Domain info**, `GET /domain/{id}?include_dcv=true&include_validation=true`
//!   ([`Client::domain_info`]): documented; with `include_validation` the validations include
//!   pending and expired ones, each with `dcv_status` (`complete` documented, `pending`
//!   *inferred*); with `include_dcv` the `dcv_method`, `dcv_token` and `dcv_expiration`. The
//!   top-level `status` is deprecated. `include_validation` is no longer on the current List
//!   domains page but is still documented for Domain info.
//!
//! # Secrets
//! The API key lives in a [`SecretString`]; it is sent only as the (sensitive) `X-DC-DEVKEY`
//! header and never appears in `Debug` output, error messages or logs. Plain `http://` base URLs
//! are refused unless explicitly allowed, and then only to loopback hosts.
#![warn(missing_docs)]

mod client;
mod error;
mod limiter;
mod listing;
mod scope;
pub mod types;

pub use client::{CallRecord, Client, ClientConfig, Endpoint, Observer, RateWindow, RetryPolicy, SendGuard};
pub use error::Error;
pub use limiter::{
    Admission, COMPLETION_MARGIN, Lane, Permit, RateLimiter, SharedWindows, SharedWindowsError, TOKENS_PER_CHECK,
    WindowSpan, safety_margin,
};
pub use listing::{DomainFilter, Listing, MAX_PAGE_SIZE, OrderFilter};
pub use scope::{ValidationScope, base_domain};
pub use secrecy::SecretString;
