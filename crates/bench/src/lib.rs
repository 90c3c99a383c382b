//! dcvd-bench: measures dcvd against fixed-interval polling on a simulated CertCentral and an
//! in-process authoritative DNS server whose records propagate with a configurable lag.
//!
//! The runner (parent process) starts one [`certcentral_sim::Sim`] per strategy run and
//! re-executes itself with `--child` for each strategy, so that peak RSS and CPU time belong to
//! one strategy only: the child holds the strategy (dcvd's engine, or the polling baseline), the
//! memory record store and the name servers that serve it; the simulator stays in the parent.
//! It must not talk to anything but loopback, and it never edits what it measures: dcvd runs
//! with its own engine and configuration parser, unchanged.
//!
//! # Modules
//! - [`scenario`]: scenario presets, rate windows and the rate-limit floor.
//! - [`floor`]: the true floor of a run (propagation times and an exact window schedule).
//! - [`child`]: the child side: name servers, the strategies, resource readings.
//! - [`baseline`]: the fixed-interval `check-dcv` polling strategy.
//! - [`daemon`]: dcvd's engine as a strategy.
//! - [`runner`]: the parent side: simulator, child processes, collection.
//! - [`report`]: per-strategy figures and the tables.
//! - [`scale`]: the store-scale scenario (many finished units, a few active; the real binary).
//! - [`procfs`]: `/proc/self` readings (VmHWM, CPU time).

pub mod baseline;
pub mod child;
pub mod daemon;
pub mod floor;
pub mod procfs;
pub mod report;
pub mod runner;
pub mod scale;
pub mod scenario;
