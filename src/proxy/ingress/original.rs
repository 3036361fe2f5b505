//! The request an ingress controller asks about, as each controller describes it. Only read
//! from a trusted ingress address (see `super`); anything missing, repeated or malformed is
//! refused rather than guessed, since a guess is where auth bypasses live.

use http::header::HeaderName;
use http::Method;
use pingora::http::RequestHeader;

use crate::config::IngressController;
use crate::proxy::host::host_of;

/// Where Envoy's ext_authz (HTTP service, `path_prefix`) puts the original path.
pub const ENVOY_PREFIX: &str = "/bff/auth";

/// The original request: its method, `Host` (as the browser sent it, port included), lower-case
/// host name, and raw target (path and query, as received).
#[derive(Debug, PartialEq, Eq)]
pub struct Original {
    pub method: Method,
    pub authority: String,
    pub host: String,
    pub target: String,
}

impl Original {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }
}

const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// The original request, or the reason its description is refused.
pub fn describe(
    controller: IngressController,
    req: &RequestHeader,
) -> Result<Original, &'static str> {
    let (method, authority, target) = match controller {
        IngressController::Nginx => {
            let url = single(req, &X_ORIGINAL_URL)?;
            let (authority, target) = split_absolute_url(url).ok_or("original_url_malformed")?;
            (single(req, &X_ORIGINAL_METHOD)?, authority, target)
        }
        IngressController::Traefik => (
            single(req, &X_FORWARDED_METHOD)?,
            single(req, &X_FORWARDED_HOST)?,
            single(req, &X_FORWARDED_URI)?,
        ),
        IngressController::Envoy => {
            let raw = std::str::from_utf8(req.raw_path()).map_err(|_| "original_uri_malformed")?;
            let rest = raw
                .strip_prefix(ENVOY_PREFIX)
                .ok_or("original_uri_malformed")?;
            let target = if rest.is_empty() || rest.starts_with('?') {
                // `/bff/auth?q` asks about `/?q`.
                return envoy_original(req, &format!("/{rest}"));
            } else {
                rest
            };
            return envoy_original(req, target);
        }
    };
    build(method, authority, target)
}

fn envoy_original(req: &RequestHeader, target: &str) -> Result<Original, &'static str> {
    let authority = single(req, &http::header::HOST)?;
    build(req.method.as_str(), authority, target)
}

fn build(method: &str, authority: &str, target: &str) -> Result<Original, &'static str> {
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| "original_method_malformed")?;
    let host = host_of(authority).ok_or("original_host_malformed")?;
    if !target.starts_with('/') {
        return Err("original_uri_malformed");
    }
    Ok(Original {
        method,
        authority: authority.to_ascii_lowercase(),
        host: host.into_owned(),
        target: target.to_string(),
    })
}

/// The value of a header sent exactly once, as text.
fn single<'r>(req: &'r RequestHeader, name: &HeaderName) -> Result<&'r str, &'static str> {
    let mut values = req.headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().map_err(|_| "original_request_malformed"),
        (None, _) => Err("original_request_missing"),
        (Some(_), Some(_)) => Err("original_request_repeated"),
    }
}

/// `scheme://authority/target` → (authority, target). The scheme is not used: TLS is often
/// ended before the ingress, and the browser's origin is rebuilt from `public_url`'s scheme.
fn split_absolute_url(url: &str) -> Option<(&str, &str)> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let slash = rest.find('/')?;
    Some(rest.split_at(slash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn nginx_describes_with_the_original_url_and_method() {
        let r = req(
            "/bff/auth",
            &[
                ("x-original-url", "https://App.Example.com:8443/api/x?y=1"),
                ("x-original-method", "POST"),
            ],
        );
        let o = describe(IngressController::Nginx, &r).unwrap();
        assert_eq!(o.method, Method::POST);
        assert_eq!(o.authority, "app.example.com:8443");
        assert_eq!(o.host, "app.example.com");
        assert_eq!(o.target, "/api/x?y=1");
        assert_eq!(o.path(), "/api/x");
    }

    #[test]
    fn traefik_describes_with_forwarded_headers() {
        let r = req(
            "/bff/auth",
            &[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "app.example.com"),
                ("x-forwarded-uri", "/"),
            ],
        );
        let o = describe(IngressController::Traefik, &r).unwrap();
        assert_eq!(
            (o.host.as_str(), o.target.as_str()),
            ("app.example.com", "/")
        );
    }

    #[test]
    fn envoy_describes_with_the_request_itself() {
        let r = req("/bff/auth/api/x?y=1", &[("host", "app.example.com")]);
        let o = describe(IngressController::Envoy, &r).unwrap();
        assert_eq!(o.target, "/api/x?y=1");
        let root = req("/bff/auth?y=1", &[("host", "app.example.com")]);
        assert_eq!(
            describe(IngressController::Envoy, &root).unwrap().target,
            "/?y=1"
        );
        let other = req("/bff/authx/y", &[("host", "app.example.com")]);
        assert!(describe(IngressController::Envoy, &other).is_err());
    }

    #[test]
    fn missing_repeated_or_malformed_descriptions_are_refused() {
        let nginx = |headers: &[(&str, &str)]| {
            describe(IngressController::Nginx, &req("/bff/auth", headers))
        };
        assert_eq!(
            nginx(&[("x-original-method", "GET")]),
            Err("original_request_missing")
        );
        assert_eq!(
            nginx(&[
                ("x-original-url", "https://a.example/x"),
                ("x-original-url", "https://b.example/x"),
                ("x-original-method", "GET"),
            ]),
            Err("original_request_repeated")
        );
        for bad in [
            "app.example.com/x",
            "https://app.example.com",
            "https://user@app.example.com/x",
            "https://app.example.com:x/y",
            "https://app example.com/x",
            "ftp://app.example.com/x",
            "https:///x",
        ] {
            let r = nginx(&[("x-original-url", bad), ("x-original-method", "GET")]);
            assert!(r.is_err(), "{bad} accepted: {r:?}");
        }
    }
}
