//! Free ports on loopback.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};

/// A port that is free for both UDP and TCP on every given address (best effort: another process
/// can still take it before the caller binds it, so callers retry on failure).
pub fn free_port_on(ips: &[IpAddr]) -> u16 {
    for _ in 0..200 {
        let port = 20_000 + (rand::random::<u16>() % 40_000);
        let all_free = ips.iter().all(|ip| {
            let addr = SocketAddr::new(*ip, port);
            TcpListener::bind(addr).is_ok() && UdpSocket::bind(addr).is_ok()
        });
        if all_free {
            return port;
        }
    }
    panic!("no free port found on {ips:?}");
}

/// A port free for UDP and TCP on 127.0.0.1.
pub fn free_port() -> u16 {
    free_port_on(&["127.0.0.1".parse().expect("ip")])
}

/// Makes 127.0.0.2 usable by servers that only listen on interface addresses (BIND): adds it to
/// `lo` when missing. Panics with instructions when that is impossible.
pub fn ensure_loopback_alias(ip: &str) {
    let shown = std::process::Command::new("ip").args(["-4", "addr", "show", "dev", "lo"]).output();
    if let Ok(out) = &shown
        && String::from_utf8_lossy(&out.stdout).contains(&format!("inet {ip}/"))
    {
        return;
    }
    let added = std::process::Command::new("ip").args(["addr", "add", &format!("{ip}/32"), "dev", "lo"]).output();
    match added {
        Ok(out) if out.status.success() || String::from_utf8_lossy(&out.stderr).contains("File exists") => {}
        Ok(out) => panic!(
            "cannot add {ip} to lo (needed for a second name server): {}; run as root: ip addr add {ip}/32 dev lo",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("cannot run `ip` to add {ip} to lo: {e}; install iproute2 or run scripts/test"),
    }
}
