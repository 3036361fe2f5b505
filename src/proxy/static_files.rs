//! `kind: static` routes: files from a directory (an SPA's build), answered by portcullis
//! itself. The request path (already through the canonical-path rules) loses the route's
//! prefix and names a file inside the root; the file is resolved to its canonical path, so a
//! symlink may point elsewhere inside the root but never out of it. Hidden names (`.env`,
//! `.git/`) are refused, except `.well-known`. A missing path whose last segment has no
//! extension is a client-side route and gets the index; a missing asset (`x.js`) is a 404.
//!
//! Files are streamed from disk in bounded chunks, never held whole: the kernel's page cache
//! already keeps a hot build in memory, and a second cache here would only add a size limit to
//! tune. Lookups and reads are blocking file-system calls, so they run on Tokio's blocking pool,
//! a few at a time (each concurrent one is a thread with its own allocator heap); a file of one
//! chunk or less is read in the lookup's own trip there, so a typical asset costs one.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::HeaderValue;
use http::Method;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;

use super::error::ProxyError;
use crate::config::StaticSite;

/// How much of a file is read into memory at once.
const CHUNK: usize = 64 * 1024;
/// File-system work in flight at once on the blocking pool, for all static routes.
const FILE_IO_TASKS: usize = 4;
static FILE_IO: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(FILE_IO_TASKS);
/// A year: what "immutable" means to caches that ignore the directive.
const IMMUTABLE: &str = "max-age=31536000, immutable";

/// A file chosen for a request, with what its response says about it.
#[derive(Debug)]
pub struct Served {
    pub path: PathBuf,
    pub len: u64,
    pub content_type: &'static str,
    /// `br` or `gzip` when a precompressed copy is sent.
    pub encoding: Option<&'static str>,
    /// Whether precompressed copies exist, so the answer depends on `Accept-Encoding`.
    pub varies: bool,
    pub etag: String,
    pub last_modified: SystemTime,
    pub cache_control: String,
    /// 304: the client's copy is current; headers only.
    pub not_modified: bool,
    /// A HEAD: headers only.
    pub head: bool,
    /// The whole body, read with the lookup when it fits in one chunk.
    pub body: Option<Bytes>,
}

impl Served {
    pub fn is_html(&self) -> bool {
        self.content_type.starts_with("text/html")
    }
}

/// What the request asks of the route, taken from its header before the blocking lookup.
#[derive(Debug, Default)]
pub struct Ask {
    /// The path below the route's prefix, still percent-encoded, without a leading `/`.
    pub rest: String,
    pub accept_encoding: String,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub head: bool,
    /// The route needs a session: caches shared between users must not keep its files.
    pub private: bool,
}

impl Ask {
    pub fn from_request(
        req: &RequestHeader,
        prefix: &str,
        private: bool,
    ) -> Result<Ask, ProxyError> {
        if req.method != Method::GET && req.method != Method::HEAD {
            return Err(ProxyError::OnlyGetAndHead);
        }
        let path = req.uri.path();
        let rest = path.strip_prefix(prefix).unwrap_or_default();
        let header = |name: http::header::HeaderName| {
            let values: Vec<&str> = req
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (!values.is_empty()).then(|| values.join(","))
        };
        Ok(Ask {
            rest: rest.trim_start_matches('/').to_string(),
            accept_encoding: header(http::header::ACCEPT_ENCODING).unwrap_or_default(),
            if_none_match: header(http::header::IF_NONE_MATCH),
            if_modified_since: header(http::header::IF_MODIFIED_SINCE),
            head: req.method == Method::HEAD,
            private,
        })
    }
}

/// Finds the file for `ask` and decides how it is answered (blocking: file-system calls).
pub fn locate(site: &StaticSite, ask: &Ask) -> Result<Served, ProxyError> {
    let segments = decode_segments(&ask.rest)?;
    let wanted = site.root.join(segments.iter().collect::<PathBuf>());
    let last = segments.last().map(String::as_str).unwrap_or_default();
    let (path, meta, is_index) = match regular_file_inside(&site.root, &wanted)? {
        Some((path, meta)) => {
            let is_index = path == site.root.join(&site.index);
            (path, meta, is_index)
        }
        None if last.is_empty() || (site.fallback && !last.contains('.')) => {
            let index = site.root.join(&site.index);
            let (path, meta) = regular_file_inside(&site.root, &index)?
                .ok_or(ProxyError::NotFound("static_index_missing"))?;
            (path, meta, true)
        }
        None => return Err(ProxyError::NotFound("static_not_found")),
    };
    let is_map = |name: &Path| name.extension().is_some_and(|e| e == "map");
    if !site.serve_source_maps && (is_map(Path::new(last)) || is_map(&path)) {
        // A source map publishes the app's original source, comments and all.
        return Err(ProxyError::NotFound("static_source_map"));
    }
    let content_type = content_type(&path);
    let immutable = !is_index && is_immutable(site, &ask.rest, &path);
    let variants = precompressed(&site.root, &path)?;
    let chosen = variants
        .iter()
        .find(|v| accepts(&ask.accept_encoding, v.encoding));
    let (path, meta, encoding) = match chosen {
        Some(v) => (v.path.clone(), v.meta.clone(), Some(v.encoding)),
        None => (path, meta, None),
    };
    let last_modified = meta.modified().unwrap_or(UNIX_EPOCH);
    let etag = etag(&meta, encoding);
    Ok(Served {
        path,
        len: meta.len(),
        content_type,
        encoding,
        varies: !variants.is_empty(),
        not_modified: not_modified(ask, &etag, last_modified),
        etag,
        last_modified,
        cache_control: cache_control(immutable, ask.private),
        head: ask.head,
        body: None,
    })
}

/// A body of one chunk or less, read now; `len` becomes what was read, so `Content-Length`
/// matches even if the file changed since its size was taken.
fn read_small_body(served: &mut Served) -> std::io::Result<()> {
    if served.head || served.not_modified || served.len > CHUNK as u64 {
        return Ok(());
    }
    let body = std::fs::read(&served.path)?;
    served.len = body.len() as u64;
    served.body = Some(Bytes::from(body));
    Ok(())
}

/// The path's segments, decoded. Canonical-path checks have already refused `.`/`..`,
/// encoded separators and control characters; what is left to refuse here is hidden names.
fn decode_segments(rest: &str) -> Result<Vec<String>, ProxyError> {
    let mut out = Vec::new();
    for raw in rest.split('/') {
        let bytes = crate::percent::decode(raw.as_bytes());
        let segment =
            String::from_utf8(bytes).map_err(|_| ProxyError::NotFound("static_bad_name"))?;
        if segment == "." || segment == ".." || segment.contains(['/', '\\', '\0']) {
            return Err(ProxyError::NotFound("static_bad_name"));
        }
        if segment.starts_with('.') && segment != ".well-known" {
            return Err(ProxyError::NotFound("static_hidden_name"));
        }
        out.push(segment);
    }
    Ok(out)
}

/// The file at `wanted` when it is a regular file whose real location is inside `root`
/// (canonical, as configuration loading made it); `None` when nothing is there or it is not a
/// file (a directory is never listed).
fn regular_file_inside(
    root: &Path,
    wanted: &Path,
) -> Result<Option<(PathBuf, Metadata)>, ProxyError> {
    let real = match std::fs::canonicalize(wanted) {
        Ok(real) => real,
        Err(e) if is_missing(&e) => return Ok(None),
        // A name no file can have, or a symlink loop: the client's path, not a broken disk.
        Err(e) if is_unnameable(&e) => return Err(ProxyError::NotFound("static_bad_name")),
        Err(_) => return Err(ProxyError::Internal("static_unreadable")),
    };
    if !real.starts_with(root) {
        return Err(ProxyError::NotFound("static_outside_root"));
    }
    match std::fs::metadata(&real) {
        Ok(meta) if meta.is_file() => Ok(Some((real, meta))),
        Ok(_) => Ok(None),
        Err(e) if is_missing(&e) => Ok(None),
        Err(_) => Err(ProxyError::Internal("static_unreadable")),
    }
}

/// ELOOP: too many levels of symbolic links (Linux's errno 40; std has no stable kind for it).
const ELOOP: i32 = 40;

fn is_unnameable(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::InvalidFilename || e.raw_os_error() == Some(ELOOP)
}

fn is_missing(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

struct Variant {
    encoding: &'static str,
    path: PathBuf,
    meta: Metadata,
}

/// The file's precompressed copies (`x.js.br`, `x.js.gz`), in order of preference.
fn precompressed(root: &Path, file: &Path) -> Result<Vec<Variant>, ProxyError> {
    let mut out = Vec::new();
    for (encoding, suffix) in [("br", "br"), ("gzip", "gz")] {
        let mut name = file.as_os_str().to_owned();
        name.push(".");
        name.push(suffix);
        if let Some((path, meta)) = regular_file_inside(root, Path::new(&name))? {
            out.push(Variant {
                encoding,
                path,
                meta,
            });
        }
    }
    Ok(out)
}

/// Whether `Accept-Encoding` admits `coding`: named with a non-zero weight, or not named and
/// `*` admitted.
pub fn accepts(accept_encoding: &str, coding: &str) -> bool {
    let mut wildcard = false;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let weighted = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
            .next()
            .is_none_or(|q| q.trim().parse::<f32>().is_ok_and(|q| q > 0.0));
        if name.eq_ignore_ascii_case(coding) {
            return weighted;
        }
        if name == "*" {
            wildcard = weighted;
        }
    }
    wildcard
}

/// A strong validator from the file's size and modification time (nanoseconds), distinct per
/// encoding since each is a different representation.
fn etag(meta: &Metadata, encoding: Option<&str>) -> String {
    let modified = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    match encoding {
        Some(e) => format!("\"{modified:x}-{:x}-{e}\"", meta.len()),
        None => format!("\"{modified:x}-{:x}\"", meta.len()),
    }
}

/// RFC 9110 §13.1.2–3: `If-None-Match` (weak comparison) decides when present; otherwise
/// `If-Modified-Since`, to the second.
fn not_modified(ask: &Ask, etag: &str, modified: SystemTime) -> bool {
    if let Some(tags) = &ask.if_none_match {
        let bare = etag.trim_start_matches("W/");
        return tags
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == bare);
    }
    let Some(since) = ask
        .if_modified_since
        .as_deref()
        .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
    else {
        return false;
    };
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    secs(modified) <= secs(since)
}

/// Whether the file may be cached for good: it sits under one of `immutable_paths`, or its
/// name carries a content hash.
fn is_immutable(site: &StaticSite, rest: &str, file: &Path) -> bool {
    let request_path = format!("/{rest}");
    site.immutable_paths
        .iter()
        .any(|p| super::route::matches_at_boundary(p, &request_path))
        || (site.immutable_hashed
            && file
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(has_content_hash))
}

/// A bundler's content hash in a file name: after a `-` or `.`, up to the next `.`, at least 8
/// characters of the hash alphabets (hex, base32, base64url) with a digit among them, as in
/// `index-BdE3fX9a.js` (Vite), `app-5KQHQWPF.js` (esbuild), `main.3f2a1b9c.chunk.js` (webpack).
/// A name without a digit there (`my-component.js`) is not taken for one; `immutable_paths`
/// covers hashes that happen to have none.
pub fn has_content_hash(name: &str) -> bool {
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    stem.char_indices()
        .filter(|&(i, c)| i > 0 && (c == '-' || c == '.'))
        .any(|(i, _)| {
            let token = stem[i + 1..].split('.').next().unwrap_or_default();
            (8..=64).contains(&token.len())
                && token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && token.chars().any(|c| c.is_ascii_digit())
                && token.chars().any(|c| c.is_ascii_alphabetic())
        })
}

fn cache_control(immutable: bool, private: bool) -> String {
    let scope = if private { "private" } else { "public" };
    if immutable {
        format!("{scope}, {IMMUTABLE}")
    } else {
        // Stored, but revalidated (ETag) before each use: a new deploy is seen at once.
        format!("{scope}, no-cache")
    }
}

/// The media type by extension; text types in UTF-8, as bundlers write them.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" | "cjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        _ => "application/octet-stream",
    }
}

/// The response header for `served`; the caller adds the security headers.
pub fn response_header(served: &Served) -> pingora::Result<ResponseHeader> {
    let status = if served.not_modified { 304 } else { 200 };
    let mut resp = ResponseHeader::build(status, Some(12))?;
    resp.insert_header("etag", served.etag.as_str())?;
    resp.insert_header(
        "last-modified",
        httpdate::fmt_http_date(served.last_modified),
    )?;
    resp.insert_header("cache-control", served.cache_control.as_str())?;
    if served.varies {
        resp.insert_header("vary", "Accept-Encoding")?;
    }
    if !served.not_modified {
        resp.insert_header("content-type", served.content_type)?;
        resp.insert_header("content-length", served.len.to_string())?;
        if let Some(encoding) = served.encoding {
            resp.insert_header("content-encoding", encoding)?;
        }
    }
    Ok(resp)
}

/// Sends the file's body in chunks of at most `CHUNK` bytes; exactly `len` bytes, as
/// `Content-Length` promised (a file that shrank mid-way ends the connection instead).
pub async fn write_body(session: &mut Session, served: &Served) -> pingora::Result<()> {
    if let Some(body) = &served.body {
        return session.write_response_body(Some(body.clone()), true).await;
    }
    let path = served.path.clone();
    let mut file = blocking(move || File::open(path)).await?;
    let mut left = served.len;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        let (back, chunk) = blocking(move || {
            let mut buf = vec![0; want];
            let n = file.read(&mut buf)?;
            buf.truncate(n);
            Ok((file, buf))
        })
        .await?;
        file = back;
        if chunk.is_empty() {
            return Err(pingora::Error::explain(
                pingora::ErrorType::ReadError,
                "static file shorter than its length",
            ));
        }
        left -= chunk.len() as u64;
        session
            .write_response_body(Some(Bytes::from(chunk)), left == 0)
            .await?;
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> pingora::Result<T> {
    let _permit = FILE_IO.acquire().await.map_err(|e| {
        pingora::Error::because(pingora::ErrorType::InternalError, "static file task", e)
    })?;
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(pingora::Error::because(
            pingora::ErrorType::ReadError,
            "reading a static file",
            e,
        )),
        Err(e) => Err(pingora::Error::because(
            pingora::ErrorType::InternalError,
            "static file task",
            e,
        )),
    }
}

/// `locate` on the blocking pool, with a small body read in the same trip.
pub async fn locate_blocking(site: Arc<StaticSite>, ask: Ask) -> Result<Served, ProxyError> {
    let _permit = FILE_IO
        .acquire()
        .await
        .map_err(|_| ProxyError::Internal("static_lookup_failed"))?;
    tokio::task::spawn_blocking(move || {
        let mut served = locate(&site, &ask)?;
        read_small_body(&mut served).map_err(|_| ProxyError::Internal("static_unreadable"))?;
        Ok(served)
    })
    .await
    .map_err(|_| ProxyError::Internal("static_lookup_failed"))?
}

/// The page CSP goes on HTML only: scripts, styles and images carry no policy of their own.
pub fn page_csp_for<'a>(served: &Served, csp: Option<&'a HeaderValue>) -> Option<&'a HeaderValue> {
    csp.filter(|_| served.is_html())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(root: &Path) -> StaticSite {
        StaticSite {
            root: std::fs::canonicalize(root).unwrap(),
            index: "index.html".into(),
            fallback: true,
            immutable_hashed: true,
            immutable_paths: vec!["/media/".into()],
            serve_source_maps: false,
        }
    }

    /// index.html, a hashed script with both precompressed copies, a plain file, a hidden file,
    /// a file under `media/`, and a symlink out of the root.
    fn build() -> (tempfile::TempDir, tempfile::TempDir) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let w = |name: &str, body: &str| {
            let p = root.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        };
        w("index.html", "<!doctype html><title>spa</title>");
        w("assets/app-5KQHQWPF.js", "console.log('app')");
        w("assets/app-5KQHQWPF.js.br", "BR");
        w("assets/app-5KQHQWPF.js.gz", "GZ");
        w("robots.txt", "User-agent: *");
        w(".env", "SECRET=1");
        w("media/logo.svg", "<svg/>");
        w("a b.txt", "spaced");
        std::fs::write(outside.path().join("secret.txt"), "outside").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.txt"),
            root.path().join("leak.txt"),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        std::os::unix::fs::symlink(
            root.path().join("robots.txt"),
            root.path().join("inside.txt"),
        )
        .unwrap();
        (root, outside)
    }

    fn ask(rest: &str) -> Ask {
        Ask {
            rest: rest.into(),
            ..Ask::default()
        }
    }

    fn served_name(s: &Served) -> String {
        s.path.file_name().unwrap().to_string_lossy().into_owned()
    }

    #[test]
    fn files_the_index_and_client_side_routes() {
        let (root, _outside) = build();
        let site = site(root.path());
        let got = |rest: &str| locate(&site, &ask(rest)).map(|s| served_name(&s));
        assert_eq!(got("").unwrap(), "index.html");
        assert_eq!(got("robots.txt").unwrap(), "robots.txt");
        assert_eq!(got("orders/42").unwrap(), "index.html", "deep link");
        assert_eq!(
            got("orders/").unwrap(),
            "index.html",
            "a directory is not listed"
        );
        assert_eq!(
            got("assets").unwrap(),
            "index.html",
            "a directory is not listed"
        );
        assert_eq!(got("a%20b.txt").unwrap(), "a b.txt");
        assert_eq!(
            got("inside.txt").unwrap(),
            "robots.txt",
            "symlink inside the root"
        );
        assert!(matches!(
            got("assets/missing-5KQHQWPF.js"),
            Err(ProxyError::NotFound("static_not_found"))
        ));
        let no_fallback = StaticSite {
            fallback: false,
            ..site.clone()
        };
        assert!(locate(&no_fallback, &ask("orders/42")).is_err());
        assert!(locate(&no_fallback, &ask("")).is_ok());
    }

    #[test]
    fn hidden_names_and_escapes_are_refused() {
        let (root, _outside) = build();
        let site = site(root.path());
        let reason = |rest: &str| match locate(&site, &ask(rest)) {
            Err(e) => e.reason(),
            Ok(s) => panic!("{rest} served {}", s.path.display()),
        };
        assert_eq!(reason(".env"), "static_hidden_name");
        assert_eq!(reason("%2eenv"), "static_hidden_name");
        assert_eq!(reason("x/.git/config"), "static_hidden_name");
        assert_eq!(reason("leak.txt"), "static_outside_root");
        assert_eq!(reason("out/secret.txt"), "static_outside_root");
        assert_eq!(reason(".."), "static_bad_name");
        assert_eq!(reason("%2e%2e/x"), "static_bad_name");
        assert_eq!(reason("a%2f..%2fb"), "static_bad_name");
        assert_eq!(reason("a%5cb"), "static_bad_name");
        assert_eq!(reason("a%00b"), "static_bad_name");
        assert_eq!(reason("%ff.js"), "static_bad_name");
        // Names the file system refuses are the client's doing: 404, not a 500 to repeat.
        assert_eq!(
            reason(&format!("{}.js", "a".repeat(300))),
            "static_bad_name"
        );
        std::os::unix::fs::symlink(root.path().join("loop.js"), root.path().join("loop.js"))
            .unwrap();
        assert_eq!(reason("loop.js"), "static_bad_name");
        std::fs::write(root.path().join("assets/app-5KQHQWPF.js.map"), "{}").unwrap();
        assert_eq!(reason("assets/app-5KQHQWPF.js.map"), "static_source_map");
        let with_maps = StaticSite {
            serve_source_maps: true,
            ..site.clone()
        };
        assert!(locate(&with_maps, &ask("assets/app-5KQHQWPF.js.map")).is_ok());
    }

    #[test]
    fn cache_rules_follow_the_name_and_the_path() {
        let (root, _outside) = build();
        let site = site(root.path());
        let cc = |rest: &str| locate(&site, &ask(rest)).unwrap().cache_control;
        assert_eq!(
            cc("assets/app-5KQHQWPF.js"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(cc("media/logo.svg"), "public, max-age=31536000, immutable");
        assert_eq!(cc(""), "public, no-cache");
        assert_eq!(cc("index.html"), "public, no-cache");
        assert_eq!(cc("robots.txt"), "public, no-cache");
        let private = Ask {
            private: true,
            ..ask("orders/1")
        };
        assert_eq!(
            locate(&site, &private).unwrap().cache_control,
            "private, no-cache"
        );
    }

    #[test]
    fn the_precompressed_copy_the_client_accepts_is_chosen() {
        let (root, _outside) = build();
        let site = site(root.path());
        let with = |ae: &str| {
            let a = Ask {
                accept_encoding: ae.into(),
                ..ask("assets/app-5KQHQWPF.js")
            };
            let s = locate(&site, &a).unwrap();
            (s.encoding, s.len, s.varies, s.content_type)
        };
        let js = "text/javascript; charset=utf-8";
        assert_eq!(with("gzip, deflate, br, zstd"), (Some("br"), 2, true, js));
        assert_eq!(with("gzip"), (Some("gzip"), 2, true, js));
        assert_eq!(with("br;q=0, gzip;q=0.5"), (Some("gzip"), 2, true, js));
        assert_eq!(with(""), (None, 18, true, js));
        assert_eq!(with("identity"), (None, 18, true, js));
        let robots = locate(
            &site,
            &Ask {
                accept_encoding: "br".into(),
                ..ask("robots.txt")
            },
        )
        .unwrap();
        assert_eq!((robots.encoding, robots.varies), (None, false));
    }

    #[test]
    fn validators_answer_conditional_requests() {
        let (root, _outside) = build();
        let site = site(root.path());
        let first = locate(&site, &ask("robots.txt")).unwrap();
        assert!(!first.not_modified);
        let again = |inm: Option<&str>, ims: Option<String>| {
            let a = Ask {
                if_none_match: inm.map(str::to_string),
                if_modified_since: ims,
                ..ask("robots.txt")
            };
            locate(&site, &a).unwrap().not_modified
        };
        assert!(again(Some(&first.etag), None));
        assert!(again(Some(&format!("\"x\", W/{}", first.etag)), None));
        assert!(again(Some("*"), None));
        assert!(!again(Some("\"other\""), None));
        let date = |t: SystemTime| Some(httpdate::fmt_http_date(t));
        assert!(again(None, date(first.last_modified)));
        assert!(!again(
            None,
            date(first.last_modified - std::time::Duration::from_secs(10))
        ));
        assert!(
            !again(Some("\"other\""), date(first.last_modified)),
            "If-None-Match decides"
        );
        assert!(!again(None, Some("yesterday".into())));
        let br = locate(
            &site,
            &Ask {
                accept_encoding: "br".into(),
                ..ask("assets/app-5KQHQWPF.js")
            },
        )
        .unwrap();
        let plain = locate(&site, &ask("assets/app-5KQHQWPF.js")).unwrap();
        assert_ne!(br.etag, plain.etag, "each encoding has its own tag");
    }

    #[test]
    fn content_hashes_are_recognised_in_bundler_names() {
        for hashed in [
            "index-BdE3fX9a.js",
            "app-5KQHQWPF.js",
            "main.3f2a1b9c.chunk.js",
            "chunk-D-5Ab_x2.css",
            "logo.4f1c2a9e7b.svg",
        ] {
            assert!(has_content_hash(hashed), "{hashed}");
        }
        for plain in [
            "index.html",
            "my-component.js",
            "react-dom.production.min.js",
            "THIRD-PARTY-LICENSES.txt",
            "favicon.ico",
            "v1.js",
            "20240101.log",
        ] {
            assert!(!has_content_hash(plain), "{plain}");
        }
    }

    #[test]
    fn media_types_by_extension() {
        let ct = |name: &str| content_type(Path::new(name));
        assert_eq!(ct("index.html"), "text/html; charset=utf-8");
        assert_eq!(ct("app.JS"), "text/javascript; charset=utf-8");
        assert_eq!(ct("app.mjs"), "text/javascript; charset=utf-8");
        assert_eq!(ct("app.css"), "text/css; charset=utf-8");
        assert_eq!(ct("app.js.map"), "application/json");
        assert_eq!(ct("logo.svg"), "image/svg+xml");
        assert_eq!(ct("font.woff2"), "font/woff2");
        assert_eq!(ct("mod.wasm"), "application/wasm");
        assert_eq!(ct("site.webmanifest"), "application/manifest+json");
        assert_eq!(ct("LICENSE"), "application/octet-stream");
        assert_eq!(ct("archive.tar.gz"), "application/octet-stream");
    }

    #[test]
    fn the_request_is_read_below_the_route_and_only_get_or_head() {
        let req = |method: &str, target: &str| {
            let mut r = RequestHeader::build(method, target.as_bytes(), None).unwrap();
            r.insert_header("accept-encoding", "gzip").unwrap();
            r.append_header("accept-encoding", "br").unwrap();
            r.insert_header("if-none-match", "\"a\"").unwrap();
            r
        };
        let ask = Ask::from_request(&req("GET", "/app/orders/42?x=1"), "/app/", false).unwrap();
        assert_eq!(ask.rest, "orders/42");
        assert_eq!(ask.accept_encoding, "gzip,br");
        assert_eq!(ask.if_none_match.as_deref(), Some("\"a\""));
        assert!(!ask.head && ask.if_modified_since.is_none());
        let bare = Ask::from_request(&req("HEAD", "/app"), "/app", true).unwrap();
        assert_eq!(bare.rest, "");
        assert!(bare.head && bare.private);
        let under = Ask::from_request(&req("GET", "/app/x.js"), "/app", false).unwrap();
        assert_eq!(under.rest, "x.js");
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
            assert!(matches!(
                Ask::from_request(&req(method, "/app/"), "/app/", false),
                Err(ProxyError::OnlyGetAndHead)
            ));
        }
        let refused = crate::proxy::respond::error_reply(
            &ProxyError::OnlyGetAndHead,
            crate::proxy::respond::Format::Text,
        );
        assert_eq!(refused.status, 405);
        assert!(refused
            .headers
            .contains(&("allow", "GET, HEAD".to_string())));
    }

    #[test]
    fn accept_encoding_weights() {
        assert!(accepts("gzip, br", "br"));
        assert!(accepts("BR;q=0.1", "br"));
        assert!(!accepts("br;q=0", "br"));
        assert!(!accepts("br;q=0.000", "br"));
        assert!(accepts("*", "gzip"));
        assert!(!accepts("*, gzip;q=0", "gzip"));
        assert!(!accepts("*;q=0", "br"));
        assert!(!accepts("", "br"));
        assert!(!accepts("brotli", "br"));
    }
}
