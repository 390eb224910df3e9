//! A raw HTTP/1.1 and WebSocket client over a TCP socket, for what a library client cannot do:
//! send any header (Origin, Host, tokens), never answer pings, never read.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The answer to a WebSocket handshake: the status, the response head, and the stream (open
/// if the status is 101).
pub struct Handshake {
    pub status: u16,
    pub head: String,
    pub body: String,
    pub stream: TcpStream,
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Opens a socket (with a small receive buffer if asked) and sends a WebSocket handshake for
/// `path` with `headers` (a `Host` header is added unless given).
pub async fn ws_handshake(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    recv_buffer: Option<u32>,
) -> Handshake {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let stream = socket.connect(addr).await.unwrap();
    handshake_on(stream, addr, path, headers).await
}

/// A socket to `addr` from the loopback address `source` (127.0.0.0/8 is all local on Linux:
/// several "clients" on one machine).
pub async fn connect_from(source: std::net::IpAddr, addr: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(source, 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A WebSocket handshake for `path` over an open `stream`.
pub async fn handshake_on(
    mut stream: TcpStream,
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Handshake {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read_exact(&mut byte).await.is_err() {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = status_of(&head);
    let mut body = String::new();
    if status != 101 {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_to_end(&mut rest),
        )
        .await;
        body = String::from_utf8_lossy(&rest).to_string();
    }
    Handshake {
        status,
        head,
        body,
        stream,
    }
}

/// A WebSocket handshake that must succeed.
pub async fn ws_connect(addr: std::net::SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    let h = ws_handshake(addr, "/", &[], recv_buffer).await;
    assert_eq!(h.status, 101, "{}{}", h.head, h.body);
    h.stream
}

/// Sends one masked text frame.
pub async fn send_text(stream: &mut TcpStream, text: &str) {
    let payload = text.as_bytes();
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut frame = vec![0x81];
    if payload.len() < 126 {
        frame.push(0x80 | payload.len() as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).await.unwrap();
}

/// The next frame: its opcode and payload, or None once the connection is closed.
pub async fn read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    stream.read_exact(&mut h).await.ok()?;
    let mut len = (h[1] & 0x7f) as u64;
    if len == 126 {
        let mut l = [0u8; 2];
        stream.read_exact(&mut l).await.ok()?;
        len = u16::from_be_bytes(l) as u64;
    } else if len == 127 {
        let mut l = [0u8; 8];
        stream.read_exact(&mut l).await.ok()?;
        len = u64::from_be_bytes(l);
    }
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload).await.ok()?;
    Some((h[0] & 0x0f, payload))
}

/// The next text frame's payload (skipping control frames, never answering pings).
pub async fn read_text(stream: &mut TcpStream) -> String {
    loop {
        let (opcode, payload) = read_frame(stream).await.expect("connection closed");
        if opcode == 1 {
            return String::from_utf8(payload).unwrap();
        }
    }
}

/// One JSON-RPC call over an open raw WebSocket: the response object.
pub async fn ws_call(stream: &mut TcpStream, method: &str, params: &str) -> serde_json::Value {
    send_text(
        stream,
        &format!(r#"{{"jsonrpc":"2.0","id":7,"method":"{method}","params":{params}}}"#),
    )
    .await;
    serde_json::from_str(&read_text(stream).await).unwrap()
}

/// A minimal HTTP/1.1 request over a fresh socket: status, response head and body.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before reading the whole body.
    let _ = stream.write_all(body.as_bytes()).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status_of(head), head.to_string(), body.to_string())
}

/// A GET (or HEAD) of `path` over a fresh HTTP/1.1 socket: status, response head and body bytes.
pub async fn http_get(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let body = response.get(split + 4..).unwrap_or_default().to_vec();
    (status_of(&head), head, body)
}
