//! The CertCentral client.
