//! `dcvd cleanup`: removes every record the store still lists as live, trying each one even when
//! others fail, and reports what could not be removed.
//!
//! Each group of records (one unit, one provider zone) is one provider call, with the remove
//! intent written first and the removal confirmed after, exactly as a unit task does; a failed
//! group stays listed as live, so running `dcvd cleanup` again (or the daemon) retries it. It
//! must not change unit states: it only removes records.

use std::collections::BTreeMap;
use std::time::Instant;

use dns_provider::Record;
use tracing::{Instrument as _, error, info};

use super::env::Env;
use crate::store::{RecordRow, UnitId};

/// What a cleanup did.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Records removed (confirmed in the store).
    pub removed: usize,
    /// One line per group of records that could not be removed: unit, provider, zone, names and
    /// the provider's error. They stay listed as live.
    pub failures: Vec<String>,
}

/// Removes every live record of the store; a failure does not stop the others.
pub(super) async fn remove_every_record(env: &Env) -> anyhow::Result<CleanupReport> {
    let live = env.store.read(|s| s.live_records()).await?;
    let mut groups: BTreeMap<(UnitId, String, String), Vec<RecordRow>> = BTreeMap::new();
    for r in live {
        groups.entry((r.unit, r.provider.clone(), r.zone.clone())).or_default().push(r);
    }
    let mut report = CleanupReport::default();
    for ((unit, provider, zone), rows) in groups {
        let names: Vec<String> = rows.iter().map(|r| format!("{} {}", r.name, r.rtype)).collect();
        let outcome = remove_group(env, &provider, &zone, &rows).instrument(super::unit::unit_span(unit)).await;
        match outcome {
            Ok(()) => report.removed += rows.len(),
            Err(e) => {
                let line = format!("{unit}: {} in zone {zone} (provider {provider}): {e}", names.join(", "));
                let _span = super::unit::unit_span(unit).entered();
                error!(provider = %provider, zone = %zone, records = %names.join(", "), error = %e, "record removal failed; it stays listed");
                report.failures.push(line);
            }
        }
    }
    Ok(report)
}

async fn remove_group(env: &Env, provider: &str, zone: &str, rows: &[RecordRow]) -> Result<(), String> {
    let p = env.router.provider(provider).ok_or_else(|| {
        format!("provider {provider} is not in the configuration any more: add it back to remove these records")
    })?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let intent = ids.clone();
    // Intent first, as the unit tasks do: a crash during the call leaves the records `removing`.
    env.store.write(move |s| s.record_remove_intent(&intent)).await.map_err(|e| e.to_string())?;
    let records: Vec<Record> = rows.iter().map(to_record).collect();
    let started = Instant::now();
    let result = p.remove_batch(zone, &records).await;
    env.metrics.observe_provider(provider, "remove", result.is_ok(), started.elapsed());
    result.map_err(|e| e.to_string())?;
    env.store.write(move |s| s.mark_removed(&ids)).await.map_err(|e| e.to_string())?;
    for r in rows {
        info!(record = %r.name, rtype = %r.rtype, provider = %provider, "record removed");
    }
    Ok(())
}

fn to_record(r: &RecordRow) -> Record {
    let mut rec = match r.rtype.as_str() {
        "CNAME" => Record::cname(&r.name, &r.value),
        _ => Record::txt(&r.name, &r.value),
    };
    rec.ttl = r.ttl;
    rec
}
