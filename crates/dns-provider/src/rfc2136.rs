//! rfc2136 adapter (to be written).
