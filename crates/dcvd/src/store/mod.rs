//! State store (being written).
