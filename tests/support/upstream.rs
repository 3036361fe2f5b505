//! A recording upstream: HTTP/1.1 on a free loopback port, keeping every request it receives
//! (head and body bytes) so tests can assert exactly what portcullis forwarded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long `/…/slow` paths take to answer.
pub const SLOW_RESPONSE: std::time::Duration = std::time::Duration::from_millis(1500);

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub raw: Vec<u8>,
    /// The body as sent, de-chunked when it came chunked.
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

pub struct Upstream {
    pub port: u16,
    records: Arc<Mutex<Vec<Recorded>>>,
    accepted: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Upstream {
    /// Starts on its own thread and runtime so it outlives any one test's runtime.
    pub fn start() -> Upstream {
        let records = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (rec, acc) = (records.clone(), accepted.clone());
        let (port, stop_tx) = super::spawn_server(move |listener| accept_loop(listener, rec, acc));
        Upstream {
            port,
            records,
            accepted,
            stop: Some(stop_tx),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.records.lock().expect("records").clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn count(&self) -> usize {
        self.records.lock().expect("records").len()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the upstream received a request")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    records: Arc<Mutex<Vec<Recorded>>>,
    accepted: Arc<AtomicUsize>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let rec = records.clone();
        tokio::spawn(async move {
            let _ = serve(stream, rec).await;
        });
    }
}

async fn serve(mut stream: TcpStream, records: Arc<Mutex<Vec<Recorded>>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        if req.parse(&buf[..head_end]).is_err() {
            return Ok(());
        }
        let method = req.method.unwrap_or("").to_string();
        let path = req.path.unwrap_or("").to_string();
        let hdrs: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let len: usize = hdrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let chunked = hdrs.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        let body_end = loop {
            let end = if chunked {
                chunked_end(&buf[head_end..]).map(|e| head_end + e)
            } else {
                (buf.len() >= head_end + len).then_some(head_end + len)
            };
            if let Some(end) = end {
                break end;
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let raw: Vec<u8> = buf.drain(..body_end).collect();
        let body = if chunked {
            dechunk(&raw[head_end..])
        } else {
            raw[head_end..].to_vec()
        };
        let upgrade = hdrs
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("upgrade") && v.eq_ignore_ascii_case("websocket"));
        let response = if upgrade {
            SWITCHING_PROTOCOLS.to_string()
        } else {
            respond_to(&path, &hdrs)
        };
        let slow = path.contains("/slow");
        records.lock().expect("records").push(Recorded {
            method,
            path,
            headers: hdrs,
            raw,
            body,
        });
        if slow {
            // Stands in for an upstream doing real work, so shutdown tests have requests in flight.
            tokio::time::sleep(SLOW_RESPONSE).await;
        }
        stream.write_all(response.as_bytes()).await?;
        if upgrade {
            // The handshake is all the tests look at; no frames follow.
            return Ok(());
        }
    }
}

/// A WebSocket handshake answer that also names a field in `Connection` and sends other
/// hop-by-hop fields, none of which may reach the browser.
const SWITCHING_PROTOCOLS: &str = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
    connection: Upgrade, x-hop-secret\r\nx-hop-secret: 1\r\nkeep-alive: timeout=5\r\n\
    sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// Where a chunked body ends in `b` (lenient: this upstream only records what it got).
fn chunked_end(b: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let line_end = pos + find(&b[pos..], b"\r\n")?;
        let size_text = std::str::from_utf8(&b[pos..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            return find(&b[pos..], b"\r\n\r\n")
                .map(|i| pos + i + 4)
                .or_else(|| b[pos..].starts_with(b"\r\n").then_some(pos + 2));
        }
        if b.len() < pos + size + 2 {
            return None;
        }
        pos += size + 2;
    }
}

fn dechunk(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(line_end) = find(&b[pos..], b"\r\n").map(|i| pos + i) {
        let size = std::str::from_utf8(&b[pos..line_end])
            .ok()
            .and_then(|t| usize::from_str_radix(t.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || b.len() < line_end + 2 + size {
            break;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + size]);
        pos = line_end + 2 + size + 2;
    }
    out
}

/// Scripted answers: `/…/hop-by-hop` sends every kind of hop-by-hop field (none may reach the
/// browser); `/…/set-cookie` tries to set portcullis's cookie (which must be dropped);
/// `/…/whoami` describes what arrived (as the demo upstream does) without echoing secrets.
fn respond_to(path: &str, headers: &[(String, String)]) -> String {
    let mut extra = "";
    let body = if path.ends_with("/hop-by-hop") {
        extra = "connection: x-hop-secret, close\r\nx-hop-secret: 1\r\nkeep-alive: timeout=5\r\n\
            proxy-authenticate: Basic realm=\"x\"\r\nproxy-connection: keep-alive\r\nte: trailers\r\n\
            trailer: x-checksum\r\nupgrade: h2c\r\nx-kept: 1\r\n";
        "{\"ok\":true}".to_string()
    } else if path.ends_with("/set-cookie") {
        extra =
            "set-cookie: __Host-portcullis=planted; Path=/\r\nset-cookie: theme=dark; Path=/\r\n";
        "{\"ok\":true}".to_string()
    } else if path.ends_with("/whoami") {
        let find = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_str())
        };
        let authorization = find("authorization")
            .map(|a| format!("Bearer ({} characters)", a.len().saturating_sub(7)));
        let cookies: Vec<&str> = find("cookie")
            .unwrap_or("")
            .split(';')
            .filter_map(|c| c.split('=').next().map(str::trim))
            .filter(|c| !c.is_empty())
            .collect();
        serde_json::json!({ "path": path, "authorization": authorization, "cookies_received": cookies }).to_string()
    } else {
        "{\"ok\":true}".to_string()
    };
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
