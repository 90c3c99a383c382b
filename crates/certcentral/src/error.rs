//! The client's error type.
