//! Merging DCV values into a record set, for adapters whose backend holds one set per name and
//! type and replaces it whole (Route53 change batches, Cloud DNS changes): the CNAME rules and
//! the set to write, and what a stored value means ([`decode_value`], [`same_value`]). Pure but
//! for [`apply_optimistically`]'s loop: every adapter shares one tested implementation.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use crate::{ProviderError, Record, RecordType, normalize_name};

/// A stored value in zone-file form as bare DNS data: a TXT value unquoted, a CNAME target
/// normalized (no trailing dot, lower case).
pub(crate) fn decode_value(rtype: RecordType, raw: &str) -> String {
    match rtype {
        RecordType::Txt => crate::txt::unquote(raw),
        RecordType::Cname => normalize_name(raw),
    }
}

/// Whether a stored value (TXT quoted or not; CNAME with or without its dot) means the bare
/// `value` of a record.
pub(crate) fn same_value(rtype: RecordType, raw: &str, value: &str) -> bool {
    let stored = decode_value(rtype, raw);
    stored == decode_value(rtype, value) || (rtype == RecordType::Txt && stored == value)
}

/// A record set's key: owner name and type.
pub(crate) type Key = (String, RecordType);

/// What submitting one chunk of planned changes came to.
pub(crate) enum Submitted {
    /// Accepted under this change id.
    Done(String),
    /// Refused because another writer changed a set since it was read: read again, re-plan.
    Race(String),
}

/// The optimistic-concurrency loop of adapters that replace whole sets (Route53, Cloud DNS):
/// `plan` reads the sets of the pending keys and returns the chunks of changes to submit;
/// `submit` sends one chunk (given the round number, for its log line). A chunk that loses a race,
/// and every chunk after it, is planned again from a fresh read, after `pause(round)`, at most
/// `max_rounds` rounds. Returns the change id that carried each key that needed a change.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn apply_optimistically<P, PlanFut, SubmitFut>(
    provider: &'static str,
    zone: &str,
    keys: Vec<Key>,
    max_rounds: u32,
    pause: impl Fn(u32) -> Duration,
    key_of: impl Fn(&P) -> Key,
    mut plan: impl FnMut(Vec<Key>) -> PlanFut,
    mut submit: impl FnMut(u32, Vec<P>) -> SubmitFut,
) -> Result<HashMap<Key, String>, ProviderError>
where
    PlanFut: Future<Output = Result<Vec<Vec<P>>, ProviderError>>,
    SubmitFut: Future<Output = Result<Submitted, ProviderError>>,
{
    let mut done = HashMap::new();
    let mut pending = keys;
    let mut round = 0;
    while !pending.is_empty() {
        round += 1;
        let mut next_pending = Vec::new();
        let mut lost_race = None;
        for chunk in plan(pending).await? {
            let keys: Vec<Key> = chunk.iter().map(&key_of).collect();
            if lost_race.is_none() {
                match submit(round, chunk).await? {
                    Submitted::Done(id) => {
                        done.extend(keys.into_iter().map(|key| (key, id.clone())));
                        continue;
                    }
                    Submitted::Race(message) => lost_race = Some(message),
                }
            }
            next_pending.extend(keys);
        }
        if let Some(message) = lost_race {
            if round >= max_rounds {
                return Err(ProviderError::Transient {
                    provider,
                    message: format!(
                        "record sets in zone {zone} kept changing under concurrent writers ({round} attempts, last: {message}); try again"
                    ),
                });
            }
            // let the other writer finish before reading again
            tokio::time::sleep(pause(round)).await;
        }
        pending = next_pending;
    }
    Ok(done)
}

/// Adding or removing one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Add the record's value (idempotent).
    Add,
    /// Remove exactly the record's value (absent is fine).
    Remove,
}

/// A record set as the backend holds it: raw values (TXT quoted, ...) and the TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValueSet {
    /// Time to live.
    pub(crate) ttl: i64,
    /// Values exactly as the backend writes them.
    pub(crate) values: Vec<String>,
}

/// How one backend writes values.
pub(crate) struct Encoding {
    /// A record's value as the backend writes it.
    pub(crate) encode: fn(&Record) -> String,
    /// Whether a raw value means the given bare value (TXT string / CNAME target).
    pub(crate) same: fn(RecordType, &str, &str) -> bool,
}

/// The set at `name`/`rtype` after `ops`, given the set read (`old`) and the other types present
/// at the name; `None` when no value is left. A CNAME beside another type, a second CNAME target,
/// or a TXT at a CNAME is a [`ProviderError::Conflict`]. Added values get the lower of the set's
/// TTL and the record's (a DCV record wants a short TTL; never lengthen someone else's).
#[allow(clippy::too_many_arguments)]
pub(crate) fn merge(
    provider: &'static str,
    zone: &str,
    name: &str,
    rtype: RecordType,
    ops: &[(Op, &Record)],
    old: Option<&ValueSet>,
    other_types: &[&str],
    encoding: &Encoding,
) -> Result<Option<ValueSet>, ProviderError> {
    let adds: Vec<&Record> = ops.iter().filter(|(op, _)| *op == Op::Add).map(|(_, r)| *r).collect();
    if let Some(first) = adds.first() {
        match rtype {
            RecordType::Cname => {
                if let Some(other) = other_types.first() {
                    return Err(ProviderError::Conflict {
                        provider,
                        message: format!(
                            "cannot publish CNAME at {name}: a {other} record already exists there (zone {zone}); a CNAME cannot share its name: remove the {other} record or use the TXT method"
                        ),
                    });
                }
                let target = &first.value;
                let differs = adds.iter().any(|r| !(encoding.same)(rtype, &(encoding.encode)(r), target))
                    || old.is_some_and(|s| s.values.iter().any(|v| !(encoding.same)(rtype, v, target)));
                if differs {
                    let existing = old.map(|s| s.values.iter().map(|v| normalize_name(v)).collect::<Vec<_>>());
                    return Err(ProviderError::Conflict {
                        provider,
                        message: format!(
                            "cannot publish CNAME {name} -> {target}: it already points to {} (zone {zone}); remove that CNAME first",
                            existing.map_or_else(|| "another target".to_string(), |e| e.join(", "))
                        ),
                    });
                }
            }
            RecordType::Txt => {
                if other_types.contains(&"CNAME") {
                    return Err(ProviderError::Conflict {
                        provider,
                        message: format!(
                            "cannot publish TXT at {name}: the name is a CNAME (zone {zone}); publish at the CNAME's target instead"
                        ),
                    });
                }
            }
        }
    }
    let mut values: Vec<String> = old.map(|s| s.values.clone()).unwrap_or_default();
    let mut ttl = old.map(|s| s.ttl);
    for (op, record) in ops {
        match op {
            Op::Add => {
                if !values.iter().any(|v| (encoding.same)(rtype, v, &record.value)) {
                    values.push((encoding.encode)(record));
                }
                let ours = i64::from(record.ttl);
                ttl = Some(ttl.map_or(ours, |t| t.min(ours)));
            }
            Op::Remove => values.retain(|v| !(encoding.same)(rtype, v, &record.value)),
        }
    }
    Ok((!values.is_empty()).then(|| ValueSet { ttl: ttl.unwrap_or(60), values }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        (name.to_string(), RecordType::Txt)
    }

    /// A lost race re-plans the losing chunk and every later one from a fresh read, and the ids
    /// of the chunks that went through are kept.
    #[tokio::test(start_paused = true)]
    async fn lost_race_replans_the_rest() {
        let submits = std::sync::Mutex::new(Vec::new());
        let plans = std::sync::Mutex::new(Vec::new());
        let done = apply_optimistically(
            "test",
            "example.com",
            vec![key("a.example.com"), key("b.example.com"), key("c.example.com")],
            3,
            |_| Duration::from_millis(10),
            |k: &Key| k.clone(),
            |pending| {
                plans.lock().unwrap().push(pending.len());
                async move { Ok(pending.into_iter().map(|k| vec![k]).collect()) }
            },
            |round, chunk: Vec<Key>| {
                submits.lock().unwrap().push((round, chunk[0].0.clone()));
                let lose = round == 1 && chunk[0].0 == "b.example.com";
                async move {
                    Ok(if lose { Submitted::Race("changed".into()) } else { Submitted::Done(format!("id{round}")) })
                }
            },
        )
        .await
        .expect("applied");
        assert_eq!(*plans.lock().unwrap(), vec![3, 2], "round 2 re-plans b and c only");
        let submits = submits.lock().unwrap().clone();
        let expected: Vec<(u32, String)> = [(1, "a"), (1, "b"), (2, "b"), (2, "c")]
            .into_iter()
            .map(|(round, name)| (round, format!("{name}.example.com")))
            .collect();
        assert_eq!(submits, expected, "nothing after the lost chunk is sent in round 1");
        assert_eq!(done[&key("a.example.com")], "id1");
        assert_eq!(done[&key("c.example.com")], "id2");
    }

    #[tokio::test(start_paused = true)]
    async fn endless_races_give_up_after_max_rounds() {
        let err = apply_optimistically(
            "test",
            "example.com",
            vec![key("a.example.com")],
            3,
            |_| Duration::from_millis(10),
            |k: &Key| k.clone(),
            |pending| async move { Ok(vec![pending]) },
            |_, _| async { Ok(Submitted::Race("values provided do not match".into())) },
        )
        .await
        .expect_err("gives up");
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("kept changing under concurrent writers (3 attempts"), "{err}");
    }

    const QUOTED: Encoding =
        Encoding { encode: |r| format!("\"{}\"", r.value), same: |_, raw, value| raw.trim_matches('"') == value };

    #[test]
    fn values_merge_and_unmerge_keeping_foreign_ones() {
        let ours = Record::txt("_dnsauth.example.com", "tok");
        let foreign = ValueSet { ttl: 300, values: vec!["\"spf\"".into()] };
        let added = merge(
            "t",
            "example.com",
            "_dnsauth.example.com",
            RecordType::Txt,
            &[(Op::Add, &ours)],
            Some(&foreign),
            &[],
            &QUOTED,
        )
        .expect("no conflict")
        .expect("a set");
        assert_eq!(added, ValueSet { ttl: 60, values: vec!["\"spf\"".into(), "\"tok\"".into()] });
        let again = merge(
            "t",
            "example.com",
            "_dnsauth.example.com",
            RecordType::Txt,
            &[(Op::Add, &ours)],
            Some(&added),
            &[],
            &QUOTED,
        )
        .expect("ok");
        assert_eq!(again.as_ref(), Some(&added), "adding again changes nothing");
        let removed = merge(
            "t",
            "example.com",
            "_dnsauth.example.com",
            RecordType::Txt,
            &[(Op::Remove, &ours)],
            Some(&added),
            &[],
            &QUOTED,
        )
        .expect("ok");
        assert_eq!(removed, Some(ValueSet { ttl: 60, values: vec!["\"spf\"".into()] }));
        let only_ours = ValueSet { ttl: 60, values: vec!["\"tok\"".into()] };
        assert_eq!(
            merge("t", "z", "n", RecordType::Txt, &[(Op::Remove, &ours)], Some(&only_ours), &[], &QUOTED).expect("ok"),
            None
        );
    }

    #[test]
    fn cname_rules() {
        let cname = Record::cname("_dnsauth.example.com", "a.dcv.digicert.com");
        let err = merge(
            "t",
            "example.com",
            "_dnsauth.example.com",
            RecordType::Cname,
            &[(Op::Add, &cname)],
            None,
            &["TXT"],
            &QUOTED,
        )
        .expect_err("beside a TXT");
        assert!(
            matches!(err, ProviderError::Conflict { .. }) && err.to_string().starts_with("t: cannot publish CNAME"),
            "{err}"
        );
        let other = ValueSet { ttl: 60, values: vec!["\"b.dcv.digicert.com\"".into()] };
        assert!(merge("t", "z", "n", RecordType::Cname, &[(Op::Add, &cname)], Some(&other), &[], &QUOTED).is_err());
        let txt = Record::txt("_dnsauth.example.com", "v");
        assert!(merge("t", "z", "n", RecordType::Txt, &[(Op::Add, &txt)], None, &["CNAME"], &QUOTED).is_err());
        assert!(
            merge("t", "z", "n", RecordType::Txt, &[(Op::Remove, &txt)], None, &["CNAME"], &QUOTED).is_ok(),
            "removal is never a conflict"
        );
    }
}
