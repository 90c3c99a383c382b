//! Temporary stub.
use crate::child::{ChildSpec, Outcome};
/// stub
pub async fn run(_spec: &ChildSpec) -> anyhow::Result<Outcome> {
    anyhow::bail!("dcvd strategy not available yet")
}
