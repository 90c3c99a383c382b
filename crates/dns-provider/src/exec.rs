//! exec adapter (to be written).
