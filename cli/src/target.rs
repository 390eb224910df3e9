//! Parsing of the `--rpc` argument: `host:port`, `:port`, or a `ws://` / `http://` URL.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// The WebSocket URL a client connects to.
pub fn client_url(arg: &str) -> Result<String, String> {
    let arg = arg.trim();
    if let Some(rest) = arg
        .strip_prefix("ws://")
        .or_else(|| arg.strip_prefix("wss://"))
    {
        if rest.is_empty() {
            return Err(format!("`{arg}` has no host"));
        }
        return Ok(arg.to_string());
    }
    if let Some(rest) = arg.strip_prefix("http://") {
        return Ok(format!("ws://{rest}"));
    }
    if let Some(rest) = arg.strip_prefix("https://") {
        return Ok(format!("wss://{rest}"));
    }
    if arg.contains("://") {
        return Err(format!(
            "`{arg}`: only ws://, wss://, http:// and https:// URLs are supported"
        ));
    }
    let (host, port) = split_host_port(arg)?;
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Ok(format!("ws://{host}:{port}"))
}

/// A listen address for the server side: `host:port` or `:port` (loopback).
pub fn listen_addr(arg: &str) -> Result<SocketAddr, String> {
    let (host, port) = split_host_port(arg.trim())?;
    if host.is_empty() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{arg}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{arg}` resolves to no address"))
}

fn split_host_port(arg: &str) -> Result<(&str, u16), String> {
    let (host, port) = arg
        .rsplit_once(':')
        .ok_or_else(|| format!("`{arg}` is not host:port, :port or a ws:// URL"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("`{port}` in `{arg}` is not a port number"))?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_forms() {
        assert_eq!(client_url("127.0.0.1:8080").unwrap(), "ws://127.0.0.1:8080");
        assert_eq!(client_url(":9000").unwrap(), "ws://127.0.0.1:9000");
        assert_eq!(client_url("localhost:1").unwrap(), "ws://localhost:1");
        assert_eq!(client_url("ws://h:2/x").unwrap(), "ws://h:2/x");
        assert_eq!(client_url("http://h:3").unwrap(), "ws://h:3");
        assert_eq!(client_url("[::1]:4").unwrap(), "ws://[::1]:4");
        assert!(client_url("nonsense").is_err());
        assert!(client_url("h:notaport").is_err());
        assert!(client_url("ftp://h:1").is_err());
    }

    #[test]
    fn listen_forms() {
        assert_eq!(listen_addr(":0").unwrap(), "127.0.0.1:0".parse().unwrap());
        assert_eq!(
            listen_addr("0.0.0.0:7").unwrap(),
            "0.0.0.0:7".parse().unwrap()
        );
        assert_eq!(listen_addr("[::1]:8").unwrap(), "[::1]:8".parse().unwrap());
        assert!(listen_addr("8080").is_err());
    }
}
