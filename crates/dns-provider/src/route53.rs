//! route53 adapter (to be written).
