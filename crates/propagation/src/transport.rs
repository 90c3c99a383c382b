//! The one step that touches the network: one DNS message to one address.
//!
//! Everything above it (discovery, polling, backoff, deadlines, the query cap) talks to a
//! [`Transport`], so tests can replace the network with a scripted fake and run under paused
//! tokio time.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use async_trait::async_trait;
use hickory_proto::op::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// One datagram each way; the answer may come back truncated (TC bit).
    Udp,
    /// A TCP connection with the two-byte length prefix (RFC 1035 4.2.2).
    Tcp,
}

/// Sends one DNS query to one address and returns the matching response.
///
/// The caller bounds every call with its own timeout, so an implementation may wait forever; it
/// must not retry (the caller decides on retries and TCP fallback, and counts every query
/// against the global cap).
#[async_trait]
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Sends `query` to `server` over `protocol` and returns the response with the same id.
    async fn exchange(&self, server: SocketAddr, query: &Message, protocol: Protocol) -> io::Result<Message>;

    /// Whether IPv6 name server addresses can be reached from this host. When not, only IPv4
    /// addresses are required to serve the record (they cannot be checked from here).
    fn ipv6_usable(&self) -> bool {
        true
    }
}

/// The real network: tokio UDP and TCP sockets, messages encoded by hickory-proto.
#[derive(Debug, Default)]
pub struct NetTransport {
    ipv6: std::sync::OnceLock<bool>,
}

impl NetTransport {
    /// A transport over the host's network.
    pub fn new() -> Self {
        Self::default()
    }

    async fn udp(server: SocketAddr, bytes: &[u8], query: &Message) -> io::Result<Message> {
        let local: SocketAddr =
            if server.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
        let socket = UdpSocket::bind(local).await?;
        // A connected socket only accepts datagrams from `server` and reports ICMP errors
        // (port unreachable -> "connection refused") on the next receive.
        socket.connect(server).await?;
        socket.send(bytes).await?;
        loop {
            // The buffer exists only once a datagram is there: thousands of queries in flight
            // (the poller at its query cap, a slow server) then hold no 64 KiB each.
            socket.readable().await?;
            let mut buf = Vec::with_capacity(usize::from(u16::MAX));
            match socket.try_recv_buf(&mut buf) {
                // Anything that is not our answer (garbage, a late answer to another id) is
                // skipped; the caller's timeout bounds the wait.
                Ok(_) => {
                    if let Ok(msg) = Message::from_vec(&buf)
                        && answers(query, &msg)
                    {
                        return Ok(msg);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    async fn tcp(server: SocketAddr, bytes: &[u8], query: &Message) -> io::Result<Message> {
        let mut stream = TcpStream::connect(server).await?;
        let len =
            u16::try_from(bytes.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
        let mut out = Vec::with_capacity(bytes.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
        stream.write_all(&out).await?;
        loop {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).await?;
            let msg = Message::from_vec(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if answers(query, &msg) {
                return Ok(msg);
            }
        }
    }
}

#[async_trait]
impl Transport for NetTransport {
    async fn exchange(&self, server: SocketAddr, query: &Message, protocol: Protocol) -> io::Result<Message> {
        let bytes = query.to_vec().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        match protocol {
            Protocol::Udp => Self::udp(server, &bytes, query).await,
            Protocol::Tcp => Self::tcp(server, &bytes, query).await,
        }
    }

    fn ipv6_usable(&self) -> bool {
        *self.ipv6.get_or_init(|| {
            // Connecting a UDP socket sends nothing but fails without an IPv6 route.
            std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).and_then(|s| s.connect(("2001:db8::53", 53))).is_ok()
        })
    }
}

/// Whether `msg` is the response to `query`: same id, a response, and the same question (some
/// servers drop the question from error answers, which is accepted).
fn answers(query: &Message, msg: &Message) -> bool {
    msg.metadata.id == query.metadata.id
        && msg.metadata.message_type == MessageType::Response
        && (msg.queries.is_empty() || msg.queries == query.queries)
}
