//! The HTTP edge under hostile clients, over raw sockets against the real binary: slow and idle
//! clients are cut off in bounded time, the connection cap holds, every limit answers with the
//! status that names it and closes, framing that could smuggle a request reaches nobody,
//! upstream hop-by-hop fields never reach the browser, and requests for other hosts get 421.
//! Time bounds are asserted with margins and every wait polls against a deadline.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{metric, status_of, World, WorldOptions};

/// Generous room for a loaded CI machine above each configured timeout.
const MARGIN: Duration = Duration::from_secs(4);

/// An edge with short header and body timeouts, a small connection cap, a host for in-cluster
/// callers and a route that accepts chunked bodies. The keep-alive timeout stays long, so the
/// HTTP clients of the harness never race a server closing their pooled connections.
async fn edge_world() -> World {
    let mut w = World::start(WorldOptions {
        redis: false,
        extra_config: "server:\n  request_header_timeout: 2s\n  request_body_timeout: 1s\n  keepalive_timeout: 30s\n  \
                       max_connections: 6\n  allowed_hosts: [\"shop.shop.svc\"]\n\
                       security:\n  max_chunked_body_bytes: 4096\n"
            .to_string(),
        ..WorldOptions::default()
    })
    .await;
    let up = w.upstream.url();
    w.reconfigure(
        "routes:\n",
        &format!("routes:\n  - {{ path: \"/upload/\", upstream: \"{up}\", kind: public, allow_chunked_requests: true }}\n"),
    )
    .await;
    w
}

/// A raw client connection. What the server sent is kept across calls, so bytes that arrive
/// just as one wait ends are not lost.
struct Conn {
    stream: TcpStream,
    received: Vec<u8>,
}

/// How reading on a `Conn` ended.
enum Got {
    /// The server closed the connection (or reset it).
    Closed,
    More,
    Nothing,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Conn {
            stream,
            received: Vec::new(),
        }
    }

    /// Writes what it can; false once the server has closed.
    fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    fn read_some(&mut self) -> Got {
        let mut buf = [0u8; 16384];
        match self.stream.read(&mut buf) {
            Ok(0) => Got::Closed,
            Ok(n) => {
                self.received.extend_from_slice(&buf[..n]);
                Got::More
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Got::Nothing
            }
            Err(_) => Got::Closed,
        }
    }

    /// Everything the server sent once it has closed, or `None` if it has not by `deadline`.
    fn read_until_closed(&mut self, deadline: Duration) -> Option<String> {
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if let Got::Closed = self.read_some() {
                return Some(String::from_utf8_lossy(&self.received).into_owned());
            }
        }
        None
    }

    /// One response (head and a `content-length` body), leaving the connection open.
    fn read_response(&mut self, deadline: Duration) -> String {
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if let Some(text) = complete_response(&self.received) {
                self.received.drain(..text.len());
                return text;
            }
            if let Got::Closed = self.read_some() {
                break;
            }
        }
        panic!(
            "no complete response: {}",
            String::from_utf8_lossy(&self.received)
        );
    }
}

fn complete_response(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let head_end = text.find("\r\n\r\n")? + 4;
    let len: usize = header_of(&text[..head_end], "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (text.len() >= head_end + len).then(|| text[..head_end + len].to_string())
}

fn header_of<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = &response[..response.find("\r\n\r\n").unwrap_or(response.len())];
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Sends `request` on a new connection; the answer must be `expected` with `Connection: close`,
/// and the server must close the connection. Returns the answer.
fn refused_and_closed(port: u16, name: &str, request: &str, expected: u16) -> String {
    let mut c = Conn::open(port);
    c.send(request.as_bytes());
    let response = c
        .read_until_closed(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{name}: the connection stayed open"));
    assert_eq!(status_of(&response), expected, "{name}: {response:.300}");
    assert_eq!(header_of(&response, "connection"), Some("close"), "{name}");
    response
}

async fn upstream_opened(w: &World) -> u64 {
    let (_, text) = w.proxy.admin_get("/metrics").await;
    metric(&text, "portcullis_upstream_connections_opened_total")
}

async fn closes(w: &World, reason: &str) -> u64 {
    let (_, text) = w.proxy.admin_get("/metrics").await;
    metric(
        &text,
        &format!("portcullis_connections_closed_total{{reason=\"{reason}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_sent_one_byte_at_a_time_is_cut_off_at_the_header_deadline() {
    let w = edge_world().await;
    let port = w.proxy.port;
    let started = Instant::now();
    let mut c = Conn::open(port);
    let head = format!("GET /public/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ");
    // The attack: a byte every 100 ms, for at most 15 s, while the server keeps listening.
    let mut response = None;
    for byte in head.bytes().chain(std::iter::repeat(b'a')).take(150) {
        let sent = c.send(&[byte]);
        let wait = if sent {
            Duration::from_millis(100)
        } else {
            MARGIN
        };
        if let Some(r) = c.read_until_closed(wait) {
            response = Some(r);
            break;
        }
    }
    let elapsed = started.elapsed();
    let response = response.expect("the server closed the connection");
    assert_eq!(status_of(&response), 408, "{response}");
    assert_eq!(header_of(&response, "connection"), Some("close"));
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(2) + MARGIN,
        "closed after {elapsed:?} (request_header_timeout is 2s)"
    );
    assert_eq!(w.upstream.count(), 0);
    assert!(closes(&w, "header_timeout").await >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_closed_before_and_between_requests() {
    let mut w = edge_world().await;
    w.reconfigure("keepalive_timeout: 30s", "keepalive_timeout: 1s")
        .await;
    let port = w.proxy.port;
    // A connection that never sends anything: closed at the header deadline, silently.
    let started = Instant::now();
    let mut silent = Conn::open(port);
    let said = silent
        .read_until_closed(Duration::from_secs(2) + MARGIN)
        .expect("an idle new connection is closed");
    assert_eq!(said, "");
    assert!(started.elapsed() >= Duration::from_millis(1900));
    // A kept-alive connection: one request answered, then closed after the keep-alive timeout.
    let mut kept = Conn::open(port);
    let request = format!("GET /public/a HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    assert!(kept.send(request.as_bytes()));
    let first = kept.read_response(Duration::from_secs(5));
    assert_eq!(status_of(&first), 200, "{first}");
    assert_eq!(header_of(&first, "connection"), Some("keep-alive"));
    let idle_from = Instant::now();
    assert_eq!(
        kept.read_until_closed(Duration::from_secs(1) + MARGIN),
        Some(String::new()),
        "closed without another word"
    );
    // The server's wait began when it wrote the response, a little before `idle_from`.
    assert!(idle_from.elapsed() >= Duration::from_millis(500));
    assert!(closes(&w, "header_timeout").await >= 1);
    assert!(closes(&w, "keepalive_timeout").await >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_stops_arriving_gets_408_on_proxied_and_local_routes() {
    let w = edge_world().await;
    let port = w.proxy.port;
    for target in ["/public/upload", "/bff/backchannel-logout"] {
        let started = Instant::now();
        let mut c = Conn::open(port);
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nlogout_token=ab"
        );
        assert!(c.send(head.as_bytes()));
        let response = c
            .read_until_closed(Duration::from_secs(1) + MARGIN)
            .expect("the connection is closed");
        assert_eq!(status_of(&response), 408, "{target}: {response}");
        assert_eq!(
            header_of(&response, "connection"),
            Some("close"),
            "{target}"
        );
        assert!(started.elapsed() >= Duration::from_millis(900), "{target}");
    }
    assert!(closes(&w, "body_timeout").await >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_are_refused_and_room_comes_back() {
    let w = edge_world().await;
    let port = w.proxy.port;
    // Readiness probes (admin → proxy port) may hold a slot for a moment: fill the cap,
    // checking each connection is accepted by sending a request on it.
    let mut held = Vec::new();
    let request = format!("GET /public/h HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    for _ in 0..6 {
        let mut c = Conn::open(port);
        assert!(c.send(request.as_bytes()));
        assert_eq!(status_of(&c.read_response(Duration::from_secs(5))), 200);
        held.push(c);
    }
    let (_, text) = w.proxy.admin_get("/metrics").await;
    assert_eq!(metric(&text, "portcullis_connections_open"), 6);
    let mut over = Conn::open(port);
    let refused = over
        .read_until_closed(Duration::from_secs(5))
        .expect("the connection over the cap is closed");
    assert_eq!(status_of(&refused), 503, "{refused}");
    assert_eq!(header_of(&refused, "retry-after"), Some("1"));
    assert!(closes(&w, "connection_limit").await >= 1);
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Conn::open(port);
        c.send(request.as_bytes());
        match c.read_until_closed(Duration::from_secs(2)) {
            Some(r) if status_of(&r) == 503 => {}
            _ => break,
        }
        assert!(Instant::now() < deadline, "no room came back after a close");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_limit_answers_with_its_status_and_closes() {
    let w = edge_world().await;
    let port = w.proxy.port;
    let big = "a".repeat(100 * 1024);
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "1 000 header lines",
            format!(
                "GET /public/x HTTP/1.1\r\nHost: h\r\n{}\r\n",
                (0..1000).map(|i| format!("X-H{i}: 1\r\n")).collect::<String>()
            ),
            431,
        ),
        (
            "a 64 KB path",
            format!("GET /public/{} HTTP/1.1\r\nHost: h\r\n\r\n", &big[..64 * 1024]),
            414,
        ),
        ("a 100 KB request line", format!("GET /public/{big} HTTP/1.1\r\n\r\n"), 414),
        (
            "a 100 KB header",
            format!("GET /public/x HTTP/1.1\r\nHost: h\r\nX-Big: {big}\r\n\r\n"),
            431,
        ),
        (
            "a 64 KB cookie",
            format!(
                "GET /public/x HTTP/1.1\r\nHost: h\r\nCookie: a={}\r\n\r\n",
                &big[..64 * 1024]
            ),
            431,
        ),
        (
            "a 1 MB back-channel logout body",
            format!(
                "POST /bff/backchannel-logout HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\nlogout_token={}",
                1024 * 1024 + 13,
                "b".repeat(1024 * 1024)
            ),
            413,
        ),
    ];
    for (name, request, expected) in cases {
        let response = refused_and_closed(port, name, &request, expected);
        assert!(!response.contains("aaaa"), "{name}: input reflected");
    }
    assert_eq!(w.upstream.count(), 0, "nothing reached the upstream");
    assert!(closes(&w, "uri_too_long").await >= 2);
    assert!(closes(&w, "headers_too_large").await >= 3);
    assert!(closes(&w, "body_too_large").await >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn framing_that_could_smuggle_a_request_reaches_nobody() {
    let w = edge_world().await;
    let port = w.proxy.port;
    let head = |target: &str, te: &str| {
        format!("POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{te}\r\n")
    };
    let chunked = |target: &str, body: &str| head(target, "Transfer-Encoding: chunked\r\n") + body;
    let long_extension = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(100 * 1024));
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "chunked on a route that did not opt in",
            chunked("/public/x", "1\r\nx\r\n0\r\n\r\n"),
            400,
        ),
        (
            "0x chunk size",
            chunked("/upload/x", "0x1\r\nx\r\n0\r\n\r\n"),
            400,
        ),
        (
            "chunk size past 64 bits",
            chunked("/upload/x", "10000000000000001\r\nx\r\n0\r\n\r\n"),
            400,
        ),
        (
            "bare LF after an extension",
            chunked("/upload/x", "1;ext\nx\r\n0\r\n\r\n"),
            400,
        ),
        (
            "a 100 KB chunk extension",
            chunked("/upload/x", &long_extension),
            400,
        ),
        (
            "data not ended by CRLF",
            chunked("/upload/x", "1\r\nxy0\r\n\r\n"),
            400,
        ),
        (
            "a body past max_chunked_body_bytes",
            chunked("/upload/x", "2000\r\n"),
            413,
        ),
        (
            "Content-Length with Transfer-Encoding",
            head(
                "/upload/x",
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            ) + "0\r\n\r\nGET /api/admin HTTP/1.1\r\n\r\n",
            400,
        ),
        (
            "two Content-Lengths",
            head("/public/x", "Content-Length: 1\r\nContent-Length: 2\r\n") + "ab",
            400,
        ),
        (
            "a coding besides chunked",
            head("/upload/x", "Transfer-Encoding: gzip, chunked\r\n") + "0\r\n\r\n",
            400,
        ),
    ];
    for (name, request, expected) in cases {
        refused_and_closed(port, name, &request, expected);
    }
    assert_eq!(w.upstream.count(), 0, "something reached the upstream");
    assert!(closes(&w, "bad_framing").await >= 8);

    // A well-formed chunked body on the route that accepts it arrives whole, and its trailer
    // fields never become request headers.
    let mut c = Conn::open(port);
    c.send(chunked("/upload/file", "5;name=v\r\nhello\r\n7\r\n, world\r\n0\r\nX-Injected: 1\r\nAuthorization: Bearer forged\r\n\r\n").as_bytes());
    let response = c.read_response(Duration::from_secs(5));
    assert_eq!(status_of(&response), 200, "{response}");
    let got = w.upstream.last();
    assert_eq!(got.path, "/upload/file");
    assert_eq!(got.body, b"hello, world");
    assert!(
        got.header("x-injected").is_none(),
        "a trailer became a header"
    );
    assert!(
        got.header("authorization").is_none(),
        "a trailer became a header"
    );
    assert!(
        !String::from_utf8_lossy(&got.raw).contains("X-Injected"),
        "trailers were forwarded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_hop_by_hop_fields_never_reach_the_browser() {
    let mut w = edge_world().await;
    let up = w.upstream.url();
    w.reconfigure(
        "routes:\n",
        &format!("routes:\n  - {{ path: \"/ws/\", upstream: \"{up}\", kind: public, websocket: true }}\n"),
    )
    .await;
    let mut b = w.browser();
    b.login("alice", "/").await;
    let hop = [
        "x-hop-secret",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ];
    for (path, headers) in [
        ("/api/hop-by-hop", vec![("x-csrf", "1")]),
        ("/public/hop-by-hop", vec![]),
        ("/page/hop-by-hop", vec![]),
    ] {
        let resp = b.get(path, &headers).await;
        assert_eq!(resp.status, 200, "{path}");
        for name in hop {
            assert!(
                resp.header(name).is_none(),
                "{path}: {name} reached the browser"
            );
        }
        assert_eq!(resp.header("x-kept"), Some("1"), "{path}");
        assert_ne!(
            resp.header("connection"),
            Some("x-hop-secret, close"),
            "{path}"
        );
    }
    let port = w.proxy.port;
    let mut c = Conn::open(port);
    c.send(format!(
        "GET /ws/feed HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n\r\n"
    ).as_bytes());
    let handshake = c
        .read_until_closed(Duration::from_secs(5))
        .expect("the tunnel ends when the upstream closes");
    assert_eq!(status_of(&handshake), 101, "{handshake}");
    assert_eq!(header_of(&handshake, "upgrade"), Some("websocket"));
    assert_eq!(header_of(&handshake, "connection"), Some("upgrade"));
    assert!(
        header_of(&handshake, "x-hop-secret").is_none(),
        "{handshake}"
    );
    assert!(header_of(&handshake, "keep-alive").is_none(), "{handshake}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_for_another_host_gets_421_and_reaches_nothing() {
    let w = edge_world().await;
    let port = w.proxy.port;
    for (name, request) in [
        (
            "foreign Host",
            "GET /public/x HTTP/1.1\r\nHost: evil.test\r\n\r\n".to_string(),
        ),
        (
            "foreign Host with our port",
            format!("GET /public/x HTTP/1.1\r\nHost: evil.test:{port}\r\n\r\n"),
        ),
        (
            "foreign absolute-form target",
            "GET http://evil.test/public/x HTTP/1.1\r\nHost: evil.test\r\n\r\n".to_string(),
        ),
        (
            "a login for another host",
            "GET /bff/login?returnTo=/ HTTP/1.1\r\nHost: evil.test\r\n\r\n".to_string(),
        ),
    ] {
        let mut c = Conn::open(port);
        c.send(request.as_bytes());
        let response = c.read_response(Duration::from_secs(5));
        assert_eq!(status_of(&response), 421, "{name}: {response}");
    }
    let mut c = Conn::open(port);
    c.send(b"GET /public/x HTTP/1.1\r\n\r\n");
    assert_eq!(
        status_of(&c.read_response(Duration::from_secs(5))),
        400,
        "no Host"
    );
    assert_eq!(w.upstream.count(), 0, "a misdirected request was forwarded");
    for host in ["shop.shop.svc", "SHOP.shop.svc:8080", "127.0.0.1"] {
        let mut c = Conn::open(port);
        c.send(format!("GET /public/ok HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert_eq!(
            status_of(&c.read_response(Duration::from_secs(5))),
            200,
            "{host}"
        );
    }
    // The admin listener answers whatever the Host.
    let mut admin = Conn::open(w.proxy.admin_port);
    admin.send(b"GET /healthz HTTP/1.1\r\nHost: evil.test\r\n\r\n");
    assert_eq!(status_of(&admin.read_response(Duration::from_secs(5))), 200);
}

/// Requests in a row reuse one upstream connection; concurrent clients need no more upstream
/// connections than there are clients with the default pool, and many more with a pool of one.
/// The metric counts exactly the connections the upstream accepted.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_connections_are_pooled_and_counted() {
    let mut w = edge_world().await;
    // One proxy thread: with several, the kernel spreads the clients over the threads' pools by
    // their source ports, so how many land on one thread (and overflow its share) is chance.
    w.reconfigure("max_connections: 6\n", "max_connections: 6\n  threads: 1\n")
        .await;
    let port = w.proxy.port;
    let request = format!("GET /public/p HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut c = Conn::open(port);
    for _ in 0..20 {
        assert!(c.send(request.as_bytes()));
        assert_eq!(status_of(&c.read_response(Duration::from_secs(5))), 200);
    }
    assert_eq!(
        w.upstream.connections(),
        1,
        "requests in a row share one connection"
    );
    assert_eq!(upstream_opened(&w).await, 1);
    // Five clients at once, five rounds: the pool (server.max_connections, 6, by default) keeps
    // every connection a round needed for the next.
    let mut clients: Vec<Conn> = (0..5).map(|_| Conn::open(port)).collect();
    for _ in 0..5 {
        for c in &mut clients {
            assert!(c.send(request.as_bytes()));
        }
        for c in &mut clients {
            assert_eq!(status_of(&c.read_response(Duration::from_secs(5))), 200);
        }
    }
    let after_rounds = w.upstream.connections();
    assert!(
        after_rounds <= 6,
        "{after_rounds} upstream connections for 5 clients"
    );
    assert_eq!(upstream_opened(&w).await, after_rounds as u64);

    // A pool of one: each round's extra connections are closed and opened again.
    w.reconfigure(
        "max_connections: 6\n",
        "max_connections: 6\n  upstream_keepalive_pool_size: 1\n",
    )
    .await;
    // The upstream's slow path holds each connection for a while, so the five requests of a
    // round certainly overlap.
    let slow = format!("GET /public/slow HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let before = w.upstream.connections();
    let mut clients: Vec<Conn> = (0..5).map(|_| Conn::open(port)).collect();
    for _ in 0..2 {
        for c in &mut clients {
            assert!(c.send(slow.as_bytes()));
        }
        for c in &mut clients {
            assert_eq!(status_of(&c.read_response(Duration::from_secs(10))), 200);
        }
    }
    // Round one opens five; the pool keeps one of them.
    let churn = w.upstream.connections() - before;
    assert!(
        churn >= 8,
        "only {churn} upstream connections with a pool of one"
    );
    assert_eq!(upstream_opened(&w).await, churn as u64);
}
