//! Times the state store with its real settings (WAL, `synchronous=FULL`: one fsync per write
//! transaction), and a bare SQLite commit with `synchronous=FULL` against `NORMAL`, so the price
//! of never losing an intent on power loss is on record.
//!
//! ```text
//! cargo run --release -p dcvd --example store_bench [-- UNITS [DIR]]
//! ```
//!
//! `UNITS` (default 10000) units get one transition and one publish intent each (the headline
//! figures); other operations run on a sample of at most 2000. `DIR` (a directory on the file system to measure, e.g. one under
//! /var/lib) defaults to a fresh temporary directory.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dcvd::store::{NewRecord, Store, UnitId, UnitSource, UnitSpec, UnitState};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let units: u64 = match args.next() {
        Some(n) => n.parse().map_err(|e| format!("UNITS must be a number: {e}"))?,
        None => 10_000,
    };
    let tmp;
    let base: PathBuf = match args.next() {
        Some(dir) => PathBuf::from(dir),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    let dir = base.join(format!("dcvd-store-bench-{}", std::process::id()));
    println!("store benchmark: {units} units in {}", dir.display());

    let result = run(&dir, units);
    std::fs::remove_dir_all(&dir).ok();
    result
}

fn run(dir: &Path, units: u64) -> Result<(), Box<dyn Error>> {
    let store = Store::open(dir)?;
    let info = store.info()?;
    println!(
        "settings: journal_mode={} synchronous={} (2 = FULL) schema_version={}",
        info.journal_mode, info.synchronous, info.schema_version
    );
    let ids: Vec<UnitId> = (1..=units).map(UnitId::order).collect();
    let domains = vec!["example.com".to_owned(), "www.example.com".to_owned()];
    // Operations that are not the headline figures run on a sample, to keep the run short on
    // slow disks (every write transaction waits for one fsync).
    let sample = &ids[..ids.len().min(2_000)];

    report("sync_units (all in one transaction)", units, || {
        let specs: Vec<UnitSpec<'_>> = ids
            .iter()
            .map(|&unit| UnitSpec {
                unit,
                method: "dns-txt-token",
                domains: &domains,
                provider: Some("cf"),
                source: UnitSource::Config,
            })
            .collect();
        store.sync_units(&specs)?;
        Ok(())
    })?;
    report("transition (one transaction each)", units, || {
        for &unit in &ids {
            store.transition(unit, UnitState::TokenIssued, |row| {
                row.token = Some(format!("token-{}", unit.id));
                row.token_expires_at = Some(1_900_000_000);
            })?;
        }
        Ok(())
    })?;
    let mut record_ids = Vec::with_capacity(ids.len());
    report("record_publish_intent (1 record each)", units, || {
        for &unit in &ids {
            let rec = record(unit, "_dnsauth.example.com");
            record_ids.push(store.record_publish_intent(unit, &[rec])?[0].id);
        }
        Ok(())
    })?;
    report("record_publish_intent (100 records per call)", units, || {
        for chunk in ids.chunks(100) {
            let unit = chunk[0];
            let recs: Vec<NewRecord> =
                chunk.iter().map(|u| record(unit, &format!("_dnsauth.d{}.example.com", u.id))).collect();
            store.record_publish_intent(unit, &recs)?;
        }
        Ok(())
    })?;
    report("mark_published", sample.len() as u64, || {
        for &id in &record_ids[..sample.len()] {
            store.mark_published(id, Some("provider-id"), None)?;
        }
        Ok(())
    })?;
    report("record_remove_intent (1 record each)", sample.len() as u64, || {
        for &id in &record_ids[..sample.len()] {
            store.record_remove_intent(&[id])?;
        }
        Ok(())
    })?;
    report("mark_removed (100 records per call)", units, || {
        for chunk in record_ids.chunks(100) {
            store.mark_removed(chunk)?;
        }
        Ok(())
    })?;
    report("append_event", sample.len() as u64, || {
        for &unit in sample {
            store.append_event(unit, "published", "_dnsauth.www.example.com")?;
        }
        Ok(())
    })?;
    report("unit (read)", units, || {
        for &unit in &ids {
            store.unit(unit)?;
        }
        Ok(())
    })?;
    report("live_records (whole table)", 10, || {
        for _ in 0..10 {
            store.live_records()?;
        }
        Ok(())
    })?;
    report("counts_by_state", 100, || {
        for _ in 0..100 {
            store.counts_by_state()?;
        }
        Ok(())
    })?;
    drop(store);

    // The cost of FULL: one-row UPDATE commits on a bare connection, WAL mode, both settings.
    let commits = units.min(2_000);
    for sync in ["FULL", "NORMAL"] {
        let path = dir.join(format!("raw-{sync}.sqlite3"));
        let conn = rusqlite::Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", sync)?;
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER); INSERT INTO t VALUES (1, 0);")?;
        report(&format!("bare commit, WAL, synchronous={sync}"), commits, || {
            for _ in 0..commits {
                conn.execute("UPDATE t SET n = n + 1 WHERE id = 1", [])?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

fn record(unit: UnitId, name: &str) -> NewRecord {
    NewRecord {
        provider: "cf".to_owned(),
        zone: "example.com".to_owned(),
        name: name.to_owned(),
        rtype: dns_provider::RecordType::Txt,
        value: format!("token-{}", unit.id),
        ttl: 60,
    }
}

fn report(what: &str, ops: u64, f: impl FnOnce() -> Result<(), Box<dyn Error>>) -> Result<(), Box<dyn Error>> {
    let start = Instant::now();
    f()?;
    let elapsed = start.elapsed().max(Duration::from_nanos(1));
    let per_sec = ops as f64 / elapsed.as_secs_f64();
    let micros = elapsed.as_secs_f64() * 1e6 / ops as f64;
    println!("{what:<48} {ops:>7} ops {:>9.3} s {per_sec:>10.0} ops/s {micros:>9.1} us/op", elapsed.as_secs_f64());
    Ok(())
}
