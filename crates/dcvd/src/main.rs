//! The `dcvd` binary (being assembled).
fn main() {}
