//! The `rfc2136` adapter: TSIG-signed dynamic updates (RFC 2136, RFC 8945) sent to one primary
//! name server (BIND, Knot, PowerDNS, ...).
//!
//! Every change touches exactly one RR: a TXT value is *added* to its RRset and removed *by
//! value* (`delete an RR from an RRset`), never by deleting the RRset, so other tools' values at
//! the same name survive. A CNAME is added with the prerequisite "name is not in use", so the
//! server refuses it atomically when other data owns the name. TXT adds carry the prerequisite
//! "no CNAME at the name" (servers silently ignore a TXT added next to a CNAME).
//!
//! Transport: UDP through hickory-net's `Client` with a `TSigner`, falling back to TCP when an
//! answer is truncated or UDP gets no answer. Reads ([`DnsProvider::list`]) are plain
//! non-recursive queries to the same server.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use hickory_net::NetError;
use hickory_net::client::Client;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::{DnsHandle, DnsMultiplexer, FirstAnswer};
use hickory_proto::op::{DnsRequest, DnsResponse, Message, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{CNAME, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record as DnsRecord, RecordType as DnsType, TSigner};
use secrecy::{ExposeSecret, SecretString};

use crate::{DnsProvider, ProviderError, Published, Record, RecordType, normalize_name};

const KIND: &str = "rfc2136";

/// Largest request sent over UDP (the EDNS default of 1232 bytes, less room for the TSIG RR):
/// larger ones (batches) go over TCP rather than as fragmented datagrams.
const MAX_UDP_MESSAGE: usize = 1100;

/// Records per UPDATE message in batches.
const BATCH_CHUNK: usize = 100;

/// Allowed clock difference between us and the server for TSIG (RFC 8945 recommends 300 s).
const TSIG_FUDGE: u16 = 300;

/// What the `rfc2136` adapter needs (the daemon builds it from `[providers.NAME]`).
#[derive(Debug)]
pub struct Rfc2136Settings {
    /// The primary name server accepting updates (`192.0.2.53:53`).
    pub server: SocketAddr,
    /// Zones updated through this server.
    pub zones: Vec<String>,
    /// TSIG key name as the server knows it (`dcvd`).
    pub tsig_key_name: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub tsig_algorithm: String,
    /// The base64 TSIG secret (what `tsig-keygen` prints in `secret "..."`).
    pub tsig_secret: SecretString,
    /// Time to wait for one answer.
    pub timeout: Duration,
}

/// The `rfc2136` provider.
pub struct Rfc2136Provider {
    server: SocketAddr,
    zones: Vec<String>,
    key_name: String,
    algorithm: &'static str,
    signer: TSigner,
    timeout: Duration,
}

impl fmt::Debug for Rfc2136Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // TSigner's Debug would print the key.
        f.debug_struct("Rfc2136Provider")
            .field("server", &self.server)
            .field("zones", &self.zones)
            .field("tsig_key_name", &self.key_name)
            .field("tsig_algorithm", &self.algorithm)
            .field("tsig_secret", &"[redacted]")
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn config_err(message: impl Into<String>) -> ProviderError {
    ProviderError::Config { provider: KIND, message: message.into() }
}

fn rejected(message: impl Into<String>) -> ProviderError {
    ProviderError::Rejected { provider: KIND, code: None, message: message.into() }
}

fn conflict(message: impl Into<String>) -> ProviderError {
    ProviderError::Conflict { provider: KIND, message: message.into() }
}

fn transient(message: impl Into<String>) -> ProviderError {
    ProviderError::Transient { provider: KIND, message: message.into() }
}

fn fqdn(name: &str) -> Result<Name, ProviderError> {
    Name::from_ascii(format!("{}.", normalize_name(name)))
        .map_err(|e| rejected(format!("invalid DNS name {name:?}: {e}")))
}

fn txt_rdata(value: &str) -> RData {
    // A character-string holds at most 255 bytes: longer values become several strings of one
    // TXT record, which resolvers (and DigiCert) read back concatenated.
    RData::TXT(TXT::from_bytes(value.as_bytes().chunks(255).collect()))
}

fn rdata_of(record: &Record) -> Result<RData, ProviderError> {
    Ok(match record.rtype {
        RecordType::Txt => txt_rdata(&record.value),
        RecordType::Cname => RData::CNAME(CNAME(fqdn(&record.value)?)),
    })
}

fn dns_type(rtype: RecordType) -> DnsType {
    match rtype {
        RecordType::Txt => DnsType::TXT,
        RecordType::Cname => DnsType::CNAME,
    }
}

/// The value as [`DnsProvider::list`] reports it: TXT strings joined, names without the dot.
fn value_of(data: &RData) -> Option<String> {
    match data {
        RData::TXT(t) => Some(t.txt_data.iter().map(|s| String::from_utf8_lossy(s)).collect()),
        RData::CNAME(c) => Some(normalize_name(&c.0.to_ascii())),
        _ => None,
    }
}

/// A prerequisite or deletion record without data (RDLENGTH 0), of class `class`.
fn empty_rr(name: Name, rtype: DnsType, class: DNSClass) -> DnsRecord {
    let mut rr = DnsRecord::update0(name, 0, rtype);
    rr.dns_class = class;
    rr
}

impl Rfc2136Provider {
    /// Validates the settings: the algorithm, the key name and the base64 secret.
    pub fn new(settings: Rfc2136Settings) -> Result<Self, ProviderError> {
        let zones: Vec<String> = settings.zones.iter().map(|z| normalize_name(z)).collect();
        if zones.is_empty() {
            return Err(config_err("no zones configured: set `zones` to the zones this server updates"));
        }
        let (algorithm, tsig_algorithm) =
            match settings.tsig_algorithm.trim().trim_end_matches('.').to_ascii_lowercase().as_str() {
                "hmac-sha256" => ("hmac-sha256", TsigAlgorithm::HmacSha256),
                "hmac-sha384" => ("hmac-sha384", TsigAlgorithm::HmacSha384),
                "hmac-sha512" => ("hmac-sha512", TsigAlgorithm::HmacSha512),
                other => {
                    return Err(config_err(format!(
                        "unsupported tsig_algorithm {other:?}: use hmac-sha256, hmac-sha384 or hmac-sha512"
                    )));
                }
            };
        let key_name = normalize_name(&settings.tsig_key_name);
        let key_dns_name = Name::from_ascii(format!("{key_name}."))
            .map_err(|e| config_err(format!("tsig_key_name {key_name:?} is not a DNS name: {e}")))?;
        let secret = settings.tsig_secret.expose_secret().trim();
        if secret.is_empty() {
            return Err(config_err("the TSIG secret is empty: put the base64 secret of the key in tsig_secret_file"));
        }
        // The error is not printed: it may quote part of the secret.
        let key = base64::engine::general_purpose::STANDARD.decode(secret).map_err(|_| {
            config_err(format!(
                "the TSIG secret of key {key_name:?} is not valid base64: put only the secret (as in `secret \"...\";` \
                 of the server's key clause) in tsig_secret_file"
            ))
        })?;
        let signer = TSigner::new(key, tsig_algorithm, key_dns_name, TSIG_FUDGE)
            .map_err(|e| config_err(format!("cannot use TSIG key {key_name:?}: {e}")))?;
        Ok(Self { server: settings.server, zones, key_name, algorithm, signer, timeout: settings.timeout })
    }

    fn check_zone(&self, zone: &str, name: &str) -> Result<(Name, Name), ProviderError> {
        let (zone, name) = crate::check_owner(KIND, &self.zones, zone, name)?;
        Ok((fqdn(&zone)?, fqdn(&name)?))
    }

    /// An empty UPDATE message for `zone`.
    fn update(zone: &Name) -> Message {
        let mut zone_query = Query::new();
        zone_query.set_name(zone.clone()).set_query_class(DNSClass::IN).set_query_type(DnsType::SOA);
        let mut message = Message::query();
        message.metadata.op_code = OpCode::Update;
        message.metadata.recursion_desired = false;
        message.add_zone(zone_query);
        message
    }

    fn auth_refused(&self) -> ProviderError {
        ProviderError::Auth {
            provider: KIND,
            message: format!(
                "server {} refused the TSIG key {:?}: check tsig_key_name/secret and allow-update \
                 (and that both clocks are right)",
                self.server, self.key_name
            ),
        }
    }

    /// Sends `message` (signed when it is an update) over UDP, or over TCP when it is too large
    /// for one unfragmented UDP datagram, when the UDP answer is truncated or when UDP got none.
    async fn exchange(&self, message: Message, what: &str) -> Result<DnsResponse, ProviderError> {
        let signed = message.metadata.op_code == OpCode::Update;
        let size = message.to_vec().map_or(usize::MAX, |b| b.len());
        if size <= MAX_UDP_MESSAGE {
            match self.send_udp(message.clone(), signed).await {
                Ok(resp) if !resp.metadata.truncation => return Ok(resp),
                Ok(_) => tracing::debug!(server = %self.server, "rfc2136 answer truncated, retrying over tcp"),
                Err(NetError::Timeout) => tracing::debug!(server = %self.server, "rfc2136 no udp answer, trying tcp"),
                Err(e) => return Err(self.net_error(e, what, signed)),
            }
        }
        self.send_tcp(message, signed).await.map_err(|e| self.net_error(e, what, signed))
    }

    async fn send_udp(&self, message: Message, signed: bool) -> Result<DnsResponse, NetError> {
        let udp = UdpClientStream::builder(self.server, TokioRuntimeProvider::default())
            .with_timeout(Some(self.timeout))
            .with_signer(signed.then(|| self.signer.clone()))
            .build();
        let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(udp);
        let bg = tokio::spawn(bg);
        let result = client.send(DnsRequest::from(message)).first_answer().await;
        bg.abort();
        result
    }

    async fn send_tcp(&self, message: Message, signed: bool) -> Result<DnsResponse, NetError> {
        let (connect, handle) =
            TcpClientStream::new(self.server, None, Some(self.timeout), TokioRuntimeProvider::default());
        let stream = tokio::time::timeout(self.timeout, connect).await.map_err(|_| NetError::Timeout)??;
        let mut multiplexer = DnsMultiplexer::new(stream, handle).with_timeout(self.timeout);
        if signed {
            multiplexer = multiplexer.with_signer(self.signer.clone());
        }
        let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(multiplexer);
        let bg = tokio::spawn(bg);
        let result = client.send(DnsRequest::from(message)).first_answer().await;
        bg.abort();
        result
    }

    fn net_error(&self, e: NetError, what: &str, signed: bool) -> ProviderError {
        match e {
            NetError::Timeout => transient(format!(
                "{what}: no answer from {} within {:?}: is the server running and reachable?",
                self.server, self.timeout
            )),
            // A reply to a signed request that fails TSIG verification: the server answered
            // NOTAUTH/BADSIG or BADKEY without a valid signature (wrong secret or key name).
            NetError::Proto(ref p) if signed => {
                tracing::debug!(error = %p, server = %self.server, "rfc2136 tsig verification of the reply failed");
                self.auth_refused()
            }
            NetError::Io(ref io) => transient(format!("{what}: cannot reach {}: {io}", self.server)),
            other => transient(format!("{what}: exchange with {} failed: {other}", self.server)),
        }
    }

    /// Maps an update's response code.
    fn check_update(&self, resp: &DnsResponse, what: &str, zone: &Name) -> Result<(), ProviderError> {
        let zone = zone.to_ascii();
        let zone = zone.trim_end_matches('.');
        match resp.response_code {
            ResponseCode::NoError => Ok(()),
            ResponseCode::YXRRSet | ResponseCode::YXDomain | ResponseCode::NXRRSet => Err(conflict(format!(
                "{what}: the server refused it because of existing records ({})",
                resp.response_code
            ))),
            ResponseCode::BADSIG | ResponseCode::BADKEY | ResponseCode::BADTIME => Err(self.auth_refused()),
            ResponseCode::Refused => Err(ProviderError::Auth {
                provider: KIND,
                message: format!(
                    "{what}: server {} refused the update of zone {zone} (REFUSED): allow key {:?} to update it \
                     (allow-update or update-policy)",
                    self.server, self.key_name
                ),
            }),
            ResponseCode::NotAuth => Err(ProviderError::ZoneNotFound {
                provider: KIND,
                zone: zone.to_string(),
                message: format!("server {} is not authoritative (primary) for it (NOTAUTH)", self.server),
            }),
            ResponseCode::NotZone => Err(rejected(format!("{what}: the name is not inside zone {zone} (NOTZONE)"))),
            ResponseCode::ServFail => {
                Err(transient(format!("{what}: server {} failed (SERVFAIL); will retry", self.server)))
            }
            other => Err(ProviderError::Rejected {
                provider: KIND,
                code: Some(other.to_string()),
                message: format!("{what}: server {} answered {other}", self.server),
            }),
        }
    }

    /// The values at `name`/`rtype` on the server, by a direct non-recursive query.
    async fn read(&self, name: &Name, rtype: DnsType) -> Result<Vec<String>, ProviderError> {
        let what = format!("reading {} {rtype}", name.to_ascii().trim_end_matches('.'));
        let mut message = Message::query();
        message.metadata.recursion_desired = false;
        message.add_query(Query::query(name.clone(), rtype));
        let resp = self.exchange(message, &what).await?;
        match resp.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => {}
            ResponseCode::ServFail => {
                return Err(transient(format!("{what}: server {} failed (SERVFAIL)", self.server)));
            }
            other => {
                return Err(rejected(format!(
                    "{what}: server {} answered {other}: is it authoritative for the zone?",
                    self.server
                )));
            }
        }
        Ok(resp
            .answers
            .iter()
            .filter(|r| r.record_type() == rtype && r.name == *name)
            .filter_map(|r| value_of(&r.data))
            .collect())
    }
}

#[async_trait]
impl DnsProvider for Rfc2136Provider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn zones(&self) -> &[String] {
        &self.zones
    }

    async fn publish(&self, zone: &str, record: &Record) -> Result<Published, ProviderError> {
        let (zone_name, name) = self.check_zone(zone, &record.name)?;
        let rr = DnsRecord::from_rdata(name.clone(), record.ttl, rdata_of(record)?);
        let mut message = Self::update(&zone_name);
        let what = format!("publishing {record}");
        match record.rtype {
            RecordType::Txt => {
                // "no CNAME RRset at the name": YXRRSET if a CNAME owns it
                message.add_pre_requisite(empty_rr(name.clone(), DnsType::CNAME, DNSClass::NONE));
            }
            RecordType::Cname => {
                // "name is not in use": YXDOMAIN if anything (even our own CNAME) is there
                message.add_pre_requisite(empty_rr(name.clone(), DnsType::ANY, DNSClass::NONE));
            }
        }
        message.add_update(rr);
        let resp = self.exchange(message, &what).await?;
        match (record.rtype, resp.response_code) {
            (RecordType::Cname, ResponseCode::YXDomain) => {
                let target = normalize_name(&record.value);
                let cnames = self.read(&name, DnsType::CNAME).await?;
                if cnames == [target.clone()] {
                    return Ok(Published::default()); // already ours: idempotent
                }
                let holder = match cnames.first() {
                    Some(other) => format!("is already a CNAME to {other}"),
                    None => "already holds other records".to_string(),
                };
                Err(conflict(format!(
                    "cannot publish CNAME at {} -> {target}: the name {holder} and a CNAME cannot share its name; \
                     remove them or use the dns-txt-token method",
                    record.name
                )))
            }
            (RecordType::Txt, ResponseCode::YXRRSet) => Err(conflict(format!(
                "cannot publish TXT at {}: the name is a CNAME; publish at the CNAME's target",
                record.name
            ))),
            _ => self.check_update(&resp, &what, &zone_name).map(|()| Published::default()),
        }
    }

    /// TXT records go in UPDATE messages of up to 100 records (atomic on the server, over TCP
    /// when large); a batch holding a CNAME, or a chunk refused because one of its names is a
    /// CNAME, is published record by record (for the per-record checks and a precise error).
    async fn publish_batch(&self, zone: &str, records: &[Record]) -> Result<Vec<Published>, ProviderError> {
        if records.len() < 2 || records.iter().any(|r| r.rtype == RecordType::Cname) {
            let mut out = Vec::with_capacity(records.len());
            for record in records {
                out.push(self.publish(zone, record).await?);
            }
            return Ok(out);
        }
        for chunk in records.chunks(BATCH_CHUNK) {
            let mut message = Self::update(&fqdn(zone)?);
            let mut zone_name = None;
            for record in chunk {
                let (z, name) = self.check_zone(zone, &record.name)?;
                message.add_pre_requisite(empty_rr(name.clone(), DnsType::CNAME, DNSClass::NONE));
                message.add_update(DnsRecord::from_rdata(name, record.ttl, rdata_of(record)?));
                zone_name = Some(z);
            }
            let Some(zone_name) = zone_name else { continue };
            let what = format!("publishing {} TXT records in zone {}", chunk.len(), normalize_name(zone));
            let resp = self.exchange(message, &what).await?;
            if resp.response_code == ResponseCode::YXRRSet {
                for record in chunk {
                    self.publish(zone, record).await?;
                }
                continue;
            }
            self.check_update(&resp, &what, &zone_name)?;
        }
        Ok(vec![Published::default(); records.len()])
    }

    /// Deletes by value in UPDATE messages of up to 100 records.
    async fn remove_batch(&self, zone: &str, records: &[Record]) -> Result<(), ProviderError> {
        for chunk in records.chunks(BATCH_CHUNK) {
            let mut message = Self::update(&fqdn(zone)?);
            let mut zone_name = None;
            for record in chunk {
                let (z, name) = self.check_zone(zone, &record.name)?;
                let mut rr = DnsRecord::from_rdata(name, 0, rdata_of(record)?);
                rr.dns_class = DNSClass::NONE;
                message.add_update(rr);
                zone_name = Some(z);
            }
            let Some(zone_name) = zone_name else { continue };
            let what = format!("removing {} records in zone {}", chunk.len(), normalize_name(zone));
            let resp = self.exchange(message, &what).await?;
            self.check_update(&resp, &what, &zone_name)?;
        }
        Ok(())
    }

    async fn remove(&self, zone: &str, record: &Record) -> Result<(), ProviderError> {
        let (zone_name, name) = self.check_zone(zone, &record.name)?;
        // Class NONE + the RR's data = "delete this RR from the RRset" (RFC 2136 2.5.4): other
        // values of the RRset stay; an absent value is a no-op.
        let mut rr = DnsRecord::from_rdata(name, 0, rdata_of(record)?);
        rr.dns_class = DNSClass::NONE;
        let mut message = Self::update(&zone_name);
        message.add_update(rr);
        let what = format!("removing {record}");
        let resp = self.exchange(message, &what).await?;
        self.check_update(&resp, &what, &zone_name)
    }

    async fn preflight(&self) -> Result<(), ProviderError> {
        for zone in &self.zones {
            // An update whose only content is a prerequisite that always holds ("the apex is in
            // use"): the server checks the key and the zone's update permission, changes nothing.
            let zone_name = fqdn(zone)?;
            let mut message = Self::update(&zone_name);
            message.add_pre_requisite(empty_rr(zone_name.clone(), DnsType::ANY, DNSClass::ANY));
            let what = format!("checking update access to zone {zone}");
            let resp = self.exchange(message, &what).await?;
            self.check_update(&resp, &what, &zone_name)?;
        }
        Ok(())
    }

    async fn list(&self, zone: &str, name: &str, rtype: RecordType) -> Result<Vec<String>, ProviderError> {
        let (_, name) = self.check_zone(zone, name)?;
        self.read(&name, dns_type(rtype)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(secret: &str, algorithm: &str) -> Rfc2136Settings {
        Rfc2136Settings {
            server: "127.0.0.1:53".parse().unwrap(),
            zones: vec!["Example.NET.".into()],
            tsig_key_name: "dcvd".into(),
            tsig_algorithm: algorithm.into(),
            tsig_secret: SecretString::from(secret.to_string()),
            timeout: Duration::from_secs(1),
        }
    }

    /// A secret that is not base64 is a Config error that does not quote the secret.
    #[test]
    fn secret_must_be_base64() {
        let err = Rfc2136Provider::new(settings("not base64 at all!", "hmac-sha256")).unwrap_err();
        assert!(matches!(err, ProviderError::Config { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with("rfc2136: the TSIG secret of key \"dcvd\" is not valid base64"), "{text}");
        assert!(!text.contains("not base64 at all"), "the secret leaked: {text}");
        let err = Rfc2136Provider::new(settings("  \n", "hmac-sha256")).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    /// Only the HMAC-SHA2 algorithms BIND generates by default are accepted.
    #[test]
    fn algorithms() {
        for a in ["hmac-sha256", "HMAC-SHA384", "hmac-sha512."] {
            Rfc2136Provider::new(settings("c2VjcmV0", a)).unwrap_or_else(|e| panic!("{a}: {e}"));
        }
        let err = Rfc2136Provider::new(settings("c2VjcmV0", "hmac-md5")).unwrap_err();
        assert!(err.to_string().contains("use hmac-sha256, hmac-sha384 or hmac-sha512"), "{err}");
    }

    /// Debug never shows the key; zones are normalized; names outside the zone are refused.
    #[test]
    fn debug_and_zone_checks() {
        let p = Rfc2136Provider::new(settings("c2VjcmV0LWtleQ==", "hmac-sha256")).unwrap();
        let debug = format!("{p:?}");
        assert!(
            debug.contains("[redacted]") && !debug.contains("c2VjcmV0") && !debug.contains("secret-key"),
            "{debug}"
        );
        assert_eq!(p.zones(), ["example.net"]);
        assert!(p.check_zone("example.net", "_dnsauth.example.net").is_ok());
        let err = p.check_zone("example.net", "_dnsauth.example.com").unwrap_err();
        assert_eq!(err.to_string(), "rfc2136: _dnsauth.example.com is not inside zone example.net");
        assert!(matches!(p.check_zone("example.org", "x.example.org"), Err(ProviderError::ZoneNotFound { .. })));
    }

    /// Update response codes map to the documented error kinds.
    #[test]
    fn response_codes() {
        let p = Rfc2136Provider::new(settings("c2VjcmV0LWtleQ==", "hmac-sha256")).unwrap();
        let zone = fqdn("example.net").unwrap();
        let check = |code| {
            let mut m = Message::response(1, OpCode::Update);
            m.metadata.response_code = code;
            p.check_update(&DnsResponse::from_message(m).unwrap(), "publishing x", &zone)
        };
        assert!(check(ResponseCode::NoError).is_ok());
        assert!(matches!(check(ResponseCode::YXRRSet), Err(ProviderError::Conflict { .. })));
        assert!(matches!(check(ResponseCode::YXDomain), Err(ProviderError::Conflict { .. })));
        let refused = check(ResponseCode::Refused).unwrap_err();
        assert!(matches!(refused, ProviderError::Auth { .. }), "{refused:?}");
        assert!(refused.to_string().contains("allow key \"dcvd\" to update it"), "{refused}");
        for code in [ResponseCode::BADSIG, ResponseCode::BADKEY] {
            let err = check(code).unwrap_err();
            assert!(err.to_string().contains("refused the TSIG key \"dcvd\""), "{err}");
        }
        assert!(matches!(check(ResponseCode::NotAuth), Err(ProviderError::ZoneNotFound { .. })));
        assert!(check(ResponseCode::ServFail).unwrap_err().is_retryable());
        assert!(matches!(check(ResponseCode::FormErr), Err(ProviderError::Rejected { code: Some(_), .. })));
    }

    /// Values longer than 255 bytes become several strings and read back joined.
    #[test]
    fn long_txt_split() {
        let value = "v".repeat(600);
        let data = txt_rdata(&value);
        let RData::TXT(t) = &data else { unreachable!() };
        assert_eq!(t.txt_data.iter().map(|s| s.len()).collect::<Vec<_>>(), [255, 255, 90]);
        assert_eq!(value_of(&data).unwrap(), value);
    }
}
