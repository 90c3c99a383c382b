//! An in-process record store (the `memory` provider), and an authoritative DNS server that
//! serves it over UDP and TCP with an optional propagation lag per name server.
//! Used by `dcvd demo`, the benchmarks and tests.
