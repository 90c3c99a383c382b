//! dcvd binary
fn main() {}
