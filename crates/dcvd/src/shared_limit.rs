//! DigiCert's rate-limit windows shared through PostgreSQL: the [`certcentral::SharedWindows`]
//! ledger of instances that use one API key on one database.
//!
//! DigiCert counts requests per API key, so every instance using the key must count together.
//! Each admission is one transaction on the table `dcvd_rate_admissions(key_id, at_ms)`:
//! `pg_advisory_xact_lock` on the key serialises the instances (the lock is taken in its own
//! statement, so the counting statement's snapshot sees every admission committed before it),
//! then one statement reads the database's clock (`clock_timestamp()`: one clock for every
//! host, so the hosts' clocks do not matter), looks up the N-th newest admission for each window
//! (an index scan of at most N rows), inserts the admission when every window has room and
//! otherwise answers how long until the oldest blocking admission ages out. The same statement
//! prunes the key's admissions older than the longest span (a short index range, usually one
//! row). `BEGIN` with the lock, the admission and `COMMIT` are pipelined: one network round trip
//! per admission. The admission's instant is the database's, taken before the answer travels
//! back and the request goes out: the windows' safety margin
//! ([`certcentral::safety_margin`], at least 250 ms) must cover that hop's jitter too.
//!
//! `key_id` is [`crate::providers::fingerprint`] of the API key (64 bits of its SHA-256): it
//! tells keys apart without revealing them. Every instance must enforce the same windows (they
//! are the key's, from the same configuration); rows are kept for the longest span of the
//! instance that prunes.
//!
//! The server ends a session's admission transaction left idle for 5 s, and a session stops
//! waiting for the lock after 5 s, so an instance paused inside one (SIGSTOP, a VM migration) blocks the others for
//! 5 s at most.
//!
//! The connection is made on first use (then the table and its index are created if missing)
//! and made again after any failure; a request that fails or takes longer than
//! [`REQUEST_TIMEOUT`] is an error, which the limiter answers with a backoff and one WARN per
//! outage: nothing is admitted while the database is unreachable. An admission committed whose
//! answer was lost stays recorded unused (the safe side).
//!
//! What it must not do: log or return the connection password or the API key; hold a
//! connection per caller (the limiter asks one request at a time); decide anything about the
//! lanes (the limiter's).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use certcentral::{Admission, SharedWindows, SharedWindowsError, WindowSpan};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Socket, Statement};
use tracing::debug;

/// The table of admissions (one row per admitted CertCentral request).
pub const TABLE: &str = "dcvd_rate_admissions";

/// The advisory lock class of this module (`pg_advisory_xact_lock(class, key)`): "dcvd" in ASCII.
/// Object 0 guards the creation of the table; the others are API keys.
pub const LOCK_CLASS: i32 = 0x6463_7664;

/// Longest a connection or an admission may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An instance stopped (SIGSTOP, a VM paused) inside an admission must not hold the key's lock
/// for long: the server ends such a transaction after 5 s, and a waiter gives up after 5 s (and
/// asks again after the limiter's backoff) instead of hanging.
const SESSION_SETTINGS: &str = "SET idle_in_transaction_session_timeout = '5s'; SET lock_timeout = '5s';";

const CREATE_SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS dcvd_rate_admissions (key_id TEXT NOT NULL, at_ms BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS dcvd_rate_admissions_key_at ON dcvd_rate_admissions (key_id, at_ms);";

/// $1 key_id, $2 requests per window, $3 span per window in ms, $4 the longest span in ms.
/// Answers NULL when admitted, else the milliseconds until the blocking admission ages out.
const ADMIT: &str = "\
WITH clock AS MATERIALIZED (
    SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::int8 AS now_ms
), blocking AS (
    SELECT max(nth.at_ms + w.span_ms) AS free_at_ms
    FROM unnest($2::int4[], $3::int8[]) AS w(requests, span_ms)
    CROSS JOIN clock
    CROSS JOIN LATERAL (
        SELECT a.at_ms FROM dcvd_rate_admissions a
        WHERE a.key_id = $1
        ORDER BY a.at_ms DESC
        OFFSET w.requests - 1 LIMIT 1
    ) nth
    WHERE nth.at_ms + w.span_ms > clock.now_ms
), admitted AS (
    INSERT INTO dcvd_rate_admissions (key_id, at_ms)
    SELECT $1, clock.now_ms FROM clock, blocking WHERE blocking.free_at_ms IS NULL
    RETURNING at_ms
), pruned AS (
    DELETE FROM dcvd_rate_admissions
    WHERE key_id = $1 AND at_ms <= (SELECT now_ms FROM clock) - $4::int8 AND EXISTS (SELECT 1 FROM admitted)
)
SELECT blocking.free_at_ms - clock.now_ms FROM blocking, clock";

/// One connection and its prepared statements.
struct Connected {
    client: Client,
    lock: String,
    admit: Statement,
}

/// The PostgreSQL ledger of one API key's admissions; plug it into
/// [`certcentral::ClientConfig::shared_windows`].
///
/// `T` is the TLS connector (`tokio_postgres::NoTls` for loopback, a rustls connector otherwise).
pub struct PgSharedWindows<T> {
    config: Config,
    tls: T,
    key_id: String,
    /// Where the database is (hosts, ports, database name), for errors: never the password.
    location: String,
    connection: Mutex<Option<Connected>>,
}

impl<T> fmt::Debug for PgSharedWindows<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSharedWindows").field("database", &self.location).field("key_id", &self.key_id).finish()
    }
}

/// `host:port[,host:port]/dbname` of `config`.
fn location(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let host = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    format!("{}/{}", hosts.join(","), config.get_dbname().unwrap_or("(default database)"))
}

impl<T> PgSharedWindows<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    /// A ledger on the database `config` points to (reached through `tls`) for the admissions
    /// of `api_key`. Connects on first use.
    pub fn new(config: Config, tls: T, api_key: &SecretString) -> Self {
        let key_id = crate::providers::fingerprint(api_key.expose_secret().trim());
        Self { location: location(&config), config, tls, key_id, connection: Mutex::new(None) }
    }

    /// The identifier of the API key in the table (not the key).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Connects now and creates the table if missing (a start-up check; [`SharedWindows::try_admit`]
    /// does the same on first use).
    pub async fn check(&self) -> Result<(), SharedWindowsError> {
        let mut connection = self.connection.lock().await;
        self.connected(&mut connection).await.map(drop)
    }

    fn error(&self, what: &str, error: impl fmt::Display) -> SharedWindowsError {
        format!("rate-limit ledger at {}: {what}: {error}", self.location).into()
    }

    /// The open connection, made (with the table) when there is none or it broke.
    async fn connected<'a>(&self, slot: &'a mut Option<Connected>) -> Result<&'a Connected, SharedWindowsError> {
        if slot.as_ref().is_some_and(|c| c.client.is_closed()) {
            *slot = None;
        }
        if slot.is_none() {
            let connect = self.config.connect(self.tls.clone());
            let (client, connection) = tokio::time::timeout(REQUEST_TIMEOUT, connect)
                .await
                .map_err(|_| self.error("connect", format_args!("no answer within {REQUEST_TIMEOUT:?}")))?
                .map_err(|e| self.error("connect", e))?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    debug!(%error, "rate-limit ledger connection ended");
                }
            });
            let schema = format!(
                "{SESSION_SETTINGS} BEGIN; SELECT pg_advisory_xact_lock({LOCK_CLASS}, 0); {CREATE_SCHEMA} COMMIT;"
            );
            let setup = async {
                client.batch_execute(&schema).await.map_err(|e| self.error(&format!("create table {TABLE}"), e))?;
                client.prepare(ADMIT).await.map_err(|e| self.error("prepare the admission", e))
            };
            let admit = tokio::time::timeout(REQUEST_TIMEOUT, setup)
                .await
                .map_err(|_| self.error("set-up", format_args!("no answer within {REQUEST_TIMEOUT:?}")))??;
            // The key's first 32 bits, wrapped into the `int4` the lock takes.
            let lock_key = u32::from_str_radix(&self.key_id[..8], 16).map_or(1, |bits| bits as i32);
            let lock = format!("BEGIN; SELECT pg_advisory_xact_lock({LOCK_CLASS}, {lock_key})");
            *slot = Some(Connected { client, lock, admit });
        }
        Ok(slot.as_ref().expect("connected above"))
    }
}

#[async_trait]
impl<T> SharedWindows for PgSharedWindows<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    async fn try_admit(&self, windows: &[WindowSpan]) -> Result<Admission, SharedWindowsError> {
        let requests: Vec<i32> = windows.iter().map(|w| i32::try_from(w.requests).unwrap_or(i32::MAX)).collect();
        let spans: Vec<i64> = windows.iter().map(|w| span_ms(w.span)).collect();
        let longest = spans.iter().copied().max().unwrap_or(0);
        let mut slot = self.connection.lock().await;
        let connection = self.connected(&mut slot).await?;
        let client = &connection.client;
        // Pipelined (each request is sent when first polled, in this order): one round trip.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&self.key_id, &requests, &spans, &longest];
        let admission = async {
            let (_, row, _) = tokio::try_join!(
                client.batch_execute(&connection.lock),
                client.query_one(&connection.admit, &params),
                client.batch_execute("COMMIT"),
            )?;
            row.try_get::<_, Option<i64>>(0)
        };
        let answer = match tokio::time::timeout(REQUEST_TIMEOUT, admission).await {
            Ok(Ok(None)) => Ok(Admission::Admitted),
            Ok(Ok(Some(wait_ms))) => Ok(Admission::RetryIn(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1)))),
            Ok(Err(e)) => Err(self.error("admission", e)),
            Err(_) => Err(self.error("admission", format_args!("no answer within {REQUEST_TIMEOUT:?}"))),
        };
        if answer.is_err() {
            // The connection may be mid-transaction or broken: start afresh next time.
            *slot = None;
        }
        answer
    }
}

/// A span in whole milliseconds, rounded up (the ledger's clock counts milliseconds).
fn span_ms(span: Duration) -> i64 {
    i64::try_from(span.as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_names_hosts_ports_and_database_but_not_the_password() {
        let config: Config = "postgres://dcvd:s3cret-pw@db1:5433,db2/ha".parse().unwrap();
        let ledger = PgSharedWindows::new(config, tokio_postgres::NoTls, &SecretString::from("dk-SECRET-KEY"));
        let shown = format!("{ledger:?}");
        assert!(shown.contains("db1:5433,db2:5432/ha"), "{shown}");
        assert!(!shown.contains("s3cret-pw") && !shown.contains("SECRET-KEY"), "{shown}");
        assert_eq!(ledger.key_id(), crate::providers::fingerprint("dk-SECRET-KEY"));
        assert_eq!(span_ms(Duration::from_micros(1_250_001)), 1251);
    }
}
