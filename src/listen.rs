//! The start-up check that every address portcullis (proxy or injector) will listen on is free.

use std::net::SocketAddr;

/// A listen address another process holds, or one that is not this host's.
#[derive(Debug, thiserror::Error)]
#[error("{key}: cannot listen on {addr}: {error}")]
pub struct ListenError {
    key: &'static str,
    addr: SocketAddr,
    error: std::io::Error,
}

/// Pingora retries a taken address for 30 s and then gives up on that service alone, so a port
/// another container of the pod already uses would leave the admin port answering "ready" with
/// no proxy behind it. Binding once first turns that into a failed start naming the setting.
/// std binds with SO_REUSEADDR as Pingora does, so a socket lingering in TIME_WAIT from a
/// previous run does not count as taken.
pub fn check_listen_addresses(addrs: &[(&'static str, SocketAddr)]) -> Result<(), ListenError> {
    for &(key, addr) in addrs {
        std::net::TcpListener::bind(addr).map_err(|error| ListenError { key, addr, error })?;
    }
    Ok(())
}
