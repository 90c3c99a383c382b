//! Test-only support for dcvd's crates: launchers for real servers (BIND 9, moto), the stateful
//! Cloudflare fake, and small helpers (free ports). Never a dependency of shipped code.
//!
//! Launchers *fail loudly*: when a server cannot start, they panic with a message that says what
//! is missing and how to install it (`scripts/test` installs everything), so no test is skipped
//! silently.
//!
//! # Layout
//! - [`bind`]: BIND 9 primary (and optional lagging secondary on 127.0.0.2) with TSIG updates.
//! - [`ports`]: free-port helpers.

pub mod bind;
pub mod ports;
