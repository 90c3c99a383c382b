//! cloudflare adapter (to be written).
