//! The HTTP/1 edge: what a downstream connection must satisfy before Pingora parses a request
//! from it. Between the listener and the proxy (`server` → `edge` → `proxy`).
//!
//! Pingora 0.9 reads a request head with a per-read timeout only (a client sending one byte a
//! second holds its connection for ever), answers every head it cannot parse with 400 (also
//! a head too large or with too many lines), accepts framing that other parsers read
//! differently, and takes any number of connections. So portcullis reads each request head
//! itself, with a deadline for the whole head and the limits of `security.*`, refuses what it
//! must with the status that names the problem and `Connection: close`, and only then hands
//! Pingora the bytes, which it parses without another read. A chunked body, on the routes that
//! accept one, is read strictly and buffered whole first, so a malformed one reaches nobody; a
//! body declared larger than a `/bff/` endpoint reads is refused here too, so the refusal can
//! close the connection gently.
//! Each connection holds a permit of `server.max_connections`.

pub mod chunked;
pub mod head;

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use pingora::time::fast_timeout::fast_timeout;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::time::Sleep;

use crate::metrics::{Metrics, CONNECTION_CLOSE_REASONS};
use crate::proxy::{host_of, EdgeSettings, Live, LiveConfig, Portcullis, MAX_LOCAL_BODY};
use chunked::ChunkedReader;
use head::{Framing, Head, HeadScanner};

/// First allocation for a request head; most browser requests fit.
const HEAD_BUFFER: usize = 4096;
/// After refusing a request, its remaining bytes are read and dropped for at most this long
/// (and this much) before closing, so the client's kernel does not answer our response with a
/// reset that destroys it unread (nginx's lingering close, bounded).
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// Why the edge refuses a request: each maps to one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UriTooLong,
    HeadersTooLarge(&'static str),
    BadRequest(&'static str),
    /// Message framing that could be read two ways (a smuggling primitive).
    BadFraming(&'static str),
    BodyTooLarge,
}

impl Refusal {
    fn status(self) -> u16 {
        match self {
            Refusal::UriTooLong => 414,
            Refusal::HeadersTooLarge(_) => 431,
            Refusal::BadRequest(_) | Refusal::BadFraming(_) => 400,
            Refusal::BodyTooLarge => 413,
        }
    }

    /// The detailed reason, for the log line.
    fn reason(self) -> &'static str {
        match self {
            Refusal::UriTooLong => "uri_too_long",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::HeadersTooLarge(r) | Refusal::BadRequest(r) | Refusal::BadFraming(r) => r,
        }
    }

    /// The `reason` label of `portcullis_connections_closed_total`.
    fn metric_reason(self) -> &'static str {
        match self {
            Refusal::UriTooLong => "uri_too_long",
            Refusal::HeadersTooLarge(_) => "headers_too_large",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::BadFraming(_) => "bad_framing",
            Refusal::BodyTooLarge => "body_too_large",
        }
    }
}

/// How a connection's wait for its next request ended, when no request came of it.
enum End {
    /// The client closed, or the server is shutting down: nothing to say.
    Quiet,
    /// No (further) request began in time; closed without a word, as nginx does.
    Idle(&'static str),
    /// A request began but did not arrive in time: 408.
    TooSlow(&'static str),
    Refused(Refusal),
}

enum Read {
    Bytes,
    Closed,
    TimedOut,
    ShuttingDown,
}

pub struct Edge {
    proxy: Arc<HttpProxy<Portcullis>>,
    /// The routes, limits and timeouts; each request reads them from one snapshot.
    live: LiveConfig,
    connections: Arc<Semaphore>,
    open: IntGauge,
    closed: ClosedSeries,
}

impl Edge {
    /// `connections`: the permits of `server.max_connections`, shared by every proxy thread.
    pub fn new(
        live: LiveConfig,
        proxy: HttpProxy<Portcullis>,
        connections: Arc<Semaphore>,
        metrics: &Metrics,
    ) -> Edge {
        Edge {
            proxy: Arc::new(proxy),
            live,
            connections,
            open: metrics.connections_open.clone(),
            closed: ClosedSeries::new(metrics),
        }
    }

    /// Reads the next request on `stream` up to where Pingora can take over: its head and, for
    /// a chunked body, the whole body re-encoded.
    async fn next_request(
        &self,
        live: &Live,
        stream: &mut Stream,
        waits: &mut Waits,
        first: bool,
    ) -> Result<BytesMut, End> {
        let settings = &live.edge;
        let mut buf = BytesMut::with_capacity(HEAD_BUFFER);
        // A new connection has `request_header_timeout` for its whole first head, counted from
        // the accept; a kept-alive one may idle for `keepalive_timeout` first.
        let (idle, idle_reason) = if first {
            (settings.header_timeout, "header_timeout")
        } else {
            (settings.keepalive_timeout, "keepalive_timeout")
        };
        let begun = Instant::now();
        match waits.read(stream, &mut buf, begun + idle, true).await {
            Read::Bytes => {}
            Read::TimedOut => return Err(End::Idle(idle_reason)),
            Read::Closed | Read::ShuttingDown => return Err(End::Quiet),
        }
        // A kept-alive request's head is timed from its first bytes; that clock is read only if
        // the head did not arrive whole (it nearly always does).
        let head_deadline = first.then(|| begun + settings.header_timeout);
        let head = Self::read_head(settings, stream, waits, &mut buf, head_deadline).await?;
        if head.framing != Framing::NoBody {
            Self::check_body(live, stream, waits, &mut buf, &head).await?;
        }
        Ok(buf)
    }

    /// What a request with a body may send, by where it goes: `/bff/` endpoints read at most
    /// `MAX_LOCAL_BODY` and never a chunked body; elsewhere a chunked body needs a route that
    /// accepts one and is read here whole.
    async fn check_body(
        live: &Live,
        stream: &mut Stream,
        waits: &mut Waits,
        buf: &mut BytesMut,
        head: &Head,
    ) -> Result<(), End> {
        let uri = http::Uri::try_from(head.target(buf)).ok();
        let path = uri.as_ref().map_or("", |u| u.path());
        // The route is chosen as the proxy will choose it: by the target's authority when it
        // has one, else by Host.
        let host = uri
            .as_ref()
            .and_then(|u| u.host().map(Cow::Borrowed))
            .or_else(|| head.host(buf).and_then(host_of))
            .unwrap_or_default();
        let local = path == "/bff" || path.starts_with("/bff/");
        let chunked_refused = head.framing == Framing::Chunked
            && (local || !Self::accepts_chunked(live, &host, path));
        match head.framing {
            Framing::Length(n) if local && n > MAX_LOCAL_BODY as u64 => {
                Err(End::Refused(Refusal::BodyTooLarge))
            }
            Framing::Chunked if chunked_refused => {
                // Browsers never send chunked request bodies; only routes that opted in take one.
                Err(End::Refused(Refusal::BadFraming("chunked_not_accepted")))
            }
            Framing::Chunked => Self::read_chunked_body(&live.edge, stream, waits, buf, head).await,
            Framing::Length(_) | Framing::NoBody => Ok(()),
        }
    }

    async fn read_head(
        settings: &EdgeSettings,
        stream: &mut Stream,
        waits: &mut Waits,
        buf: &mut BytesMut,
        mut deadline: Option<Instant>,
    ) -> Result<Head, End> {
        let mut scanner = HeadScanner::default();
        loop {
            if let Some(head) = scanner.scan(buf, &settings.limits).map_err(End::Refused)? {
                return Ok(head);
            }
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + settings.header_timeout);
            match waits.read(stream, buf, deadline, false).await {
                Read::Bytes => {}
                Read::TimedOut => return Err(End::TooSlow("header_timeout")),
                Read::Closed | Read::ShuttingDown => return Err(End::Quiet),
            }
        }
    }

    /// Reads a chunked body strictly and replaces it in `buf` by its canonical encoding.
    async fn read_chunked_body(
        settings: &EdgeSettings,
        stream: &mut Stream,
        waits: &mut Waits,
        buf: &mut BytesMut,
        head: &Head,
    ) -> Result<(), End> {
        if head.expects_continue {
            // The client waits for this before sending the body portcullis must read first.
            let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        }
        let mut reader = ChunkedReader::new(
            head.len,
            settings.max_chunked_body,
            settings.limits.max_header_bytes,
        );
        let end = loop {
            if let Some(end) = reader.feed(buf).map_err(End::Refused)? {
                break end;
            }
            match waits
                .read(stream, buf, Instant::now() + settings.body_timeout, false)
                .await
            {
                Read::Bytes => {}
                Read::TimedOut => return Err(End::TooSlow("body_timeout")),
                Read::Closed | Read::ShuttingDown => return Err(End::Quiet),
            }
        };
        let after = buf.split_off(end);
        buf.truncate(head.len);
        buf.extend_from_slice(&reader.canonical_body());
        buf.extend_from_slice(&after);
        Ok(())
    }

    fn accepts_chunked(live: &Live, host: &str, path: &str) -> bool {
        live.routes
            .find(host, path)
            .is_some_and(|r| r.config.allow_chunked_requests)
    }

    /// Ends a connection that produced no request for Pingora, saying why where there is
    /// something to say.
    async fn close(&self, mut stream: Stream, end: End) {
        match end {
            End::Quiet => {}
            End::Idle(reason) => {
                self.closed.count(reason);
                tracing::debug!(reason, "connection closed");
            }
            End::TooSlow(reason) => {
                self.closed.count(reason);
                tracing::debug!(reason, "connection closed");
                answer_and_close(&mut stream, 408, &[]).await;
            }
            End::Refused(refusal) => {
                self.closed.count(refusal.metric_reason());
                tracing::info!(
                    reason = refusal.reason(),
                    status = refusal.status(),
                    "request rejected"
                );
                answer_and_close(&mut stream, refusal.status(), &[]).await;
            }
        }
    }
}

#[async_trait]
impl ServerApp for Edge {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Ok(_permit) = self.connections.clone().try_acquire_owned() else {
            self.closed.count("connection_limit");
            tracing::debug!(reason = "connection_limit", "connection refused");
            let mut stream = stream;
            answer_and_close(&mut stream, 503, &["retry-after: 1"]).await;
            return None;
        };
        self.open.inc();
        let _open = DecOnDrop(&self.open);
        let mut stream = stream;
        let mut waits = Waits::new(shutdown);
        let mut first = true;
        loop {
            let live = self.live.load_full();
            let prefix = match self
                .next_request(&live, &mut stream, &mut waits, first)
                .await
            {
                Ok(prefix) => prefix,
                Err(end) => {
                    self.close(stream, end).await;
                    return None;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            // `Some(0)`: the connection may be kept, with no keep-alive timer of Pingora's;
            // the edge reads (and times) the next request head itself.
            session.set_keepalive(Some(0));
            session.set_read_timeout(Some(live.edge.body_timeout));
            session.set_pipelined_prefix(prefix);
            let reused = HttpServerApp::process_new_http(&self.proxy, session, shutdown).await?;
            stream = reused.consume().0;
            first = false;
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

/// A connection's waits for bytes: one timer and one shutdown subscription for the
/// connection's life. Arming a new timer and subscribing to shutdown anew for each request head
/// cost a kept-alive request more than parsing its head (callgrind, `make bench`'s public
/// row); moving a timer's deadline later is a store, since the timer wheel re-files an entry
/// only when it comes due.
struct Waits {
    timer: Pin<Box<Sleep>>,
    watch: ShutdownWatch,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Waits {
    fn new(shutdown: &ShutdownWatch) -> Waits {
        let mut changes = shutdown.clone();
        Waits {
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            watch: shutdown.clone(),
            // Resolves when shutdown begins (or the server is gone); never polled again after.
            shutdown: Box::pin(async move {
                let _ = changes.changed().await;
            }),
        }
    }

    fn shutting_down(&self) -> bool {
        *self.watch.borrow()
    }

    /// Reads what is available into `buf`, waiting until `deadline` at most (and, with
    /// `until_shutdown`, until shutdown begins).
    async fn read(
        &mut self,
        stream: &mut Stream,
        buf: &mut BytesMut,
        deadline: Instant,
        until_shutdown: bool,
    ) -> Read {
        if until_shutdown && self.shutting_down() {
            return Read::ShuttingDown;
        }
        if buf.capacity() == buf.len() {
            buf.reserve(HEAD_BUFFER);
        }
        self.timer.as_mut().reset(deadline.into());
        tokio::select! {
            biased;
            read = stream.read_buf(buf) => match read {
                Ok(0) | Err(_) => Read::Closed,
                Ok(_) => Read::Bytes,
            },
            () = self.shutdown.as_mut(), if until_shutdown => Read::ShuttingDown,
            () = self.timer.as_mut() => Read::TimedOut,
        }
    }
}

/// Writes a fixed response that closes the connection, then closes it gently (see
/// `LINGER_TIME`).
async fn answer_and_close(stream: &mut Stream, status: u16, extra_headers: &[&str]) {
    let response = fixed_response(status, extra_headers);
    if stream.write_all(&response).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let deadline = Instant::now() + LINGER_TIME;
    // On the heap: on the stack it would make every connection's future 16 KiB larger.
    let mut scratch = vec![0u8; 16 * 1024];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        match fast_timeout(left, stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

/// A response the edge writes itself: fixed body, never anything from the request, the same
/// protective headers as every response portcullis generates, and `Connection: close`.
fn fixed_response(status: u16, extra_headers: &[&str]) -> Vec<u8> {
    let (phrase, body) = match status {
        408 => ("Request Timeout", "Request timeout\n"),
        413 => ("Content Too Large", "Content too large\n"),
        414 => ("URI Too Long", "URI too long\n"),
        431 => (
            "Request Header Fields Too Large",
            "Request header fields too large\n",
        ),
        503 => ("Service Unavailable", "Service unavailable\n"),
        _ => ("Bad Request", "Bad request\n"),
    };
    let mut out = format!(
        "HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
         connection: close\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\n\
         referrer-policy: no-referrer\r\ncontent-security-policy: default-src 'none'; frame-ancestors 'none'\r\n",
        body.len()
    );
    for h in extra_headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// `portcullis_connections_closed_total`, one series per reason, resolved once.
struct ClosedSeries(Vec<(&'static str, IntCounter)>);

impl ClosedSeries {
    fn new(metrics: &Metrics) -> ClosedSeries {
        ClosedSeries(
            CONNECTION_CLOSE_REASONS
                .iter()
                .map(|r| (*r, metrics.connections_closed.with_label_values(&[r])))
                .collect(),
        )
    }

    fn count(&self, reason: &str) {
        if let Some((_, c)) = self.0.iter().find(|(r, _)| *r == reason) {
            c.inc();
        }
    }
}

struct DecOnDrop<'a>(&'a IntGauge);

impl Drop for DecOnDrop<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
