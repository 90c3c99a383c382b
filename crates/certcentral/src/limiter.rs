//! Multi-window client-side rate limiter.
