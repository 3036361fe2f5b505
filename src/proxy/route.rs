//! The route table: a route for the request's host (an exact name, then the narrowest
//! wildcard, then routes without a host), and among those the longest prefix that ends at a
//! path-segment boundary; each route with its policy resolved at load.

use super::policy::RoutePolicy;
use crate::config::{HostPattern, RouteConfig};

/// A configured route, its position in the configuration (which names its upstream peer) and
/// what it asks of a request.
pub struct Route {
    pub index: usize,
    pub config: RouteConfig,
    pub policy: RoutePolicy,
}

pub struct RouteTable {
    /// In configuration order.
    routes: Vec<Route>,
    /// Indices, most specific host first and then longest prefix first, so the first match is
    /// the one that wins.
    by_precedence: Vec<usize>,
}

impl RouteTable {
    pub fn new(routes: &[RouteConfig]) -> RouteTable {
        let routes: Vec<Route> = routes
            .iter()
            .enumerate()
            .map(|(index, config)| Route {
                index,
                config: config.clone(),
                policy: RoutePolicy::resolve(config),
            })
            .collect();
        let mut by_precedence: Vec<usize> = (0..routes.len()).collect();
        by_precedence.sort_by_key(|&i| {
            let route = &routes[i].config;
            std::cmp::Reverse((host_rank(route.host.as_ref()), route.prefix.len()))
        });
        RouteTable {
            routes,
            by_precedence,
        }
    }

    /// The route serving `path` on `host` (a name without port, any case). `host_of` gives
    /// names in lower case already; only another caller's pays for a lower-case copy.
    pub fn find(&self, host: &str, path: &str) -> Option<&Route> {
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.find(&host.to_ascii_lowercase(), path);
        }
        self.by_precedence
            .iter()
            .map(|&i| &self.routes[i])
            .find(|r| {
                r.config.host.as_ref().is_none_or(|h| h.matches(host))
                    && matches_at_boundary(&r.config.prefix, path)
            })
    }

    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    pub fn policy(&self, index: usize) -> Option<&RoutePolicy> {
        self.get(index).map(|r| &r.policy)
    }
}

/// How specific a route's host is: an exact name beats any wildcard, a narrower wildcard a
/// wider one, and any host beats none.
fn host_rank(host: Option<&HostPattern>) -> (u8, usize) {
    match host {
        Some(HostPattern::Exact(_)) => (2, 0),
        Some(HostPattern::Under(suffix)) => (1, suffix.len()),
        None => (0, 0),
    }
}

/// `/api/` matches `/api/` and `/api/x`; `/api` matches `/api`, `/api/` and `/api/x` but never
/// `/apiary`.
pub(super) fn matches_at_boundary(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteKind;

    fn route(prefix: &str, kind: RouteKind) -> RouteConfig {
        RouteConfig::for_test(prefix, kind, None)
    }

    #[test]
    fn longest_prefix_at_a_segment_boundary_wins() {
        let t = RouteTable::new(&[
            route("/", RouteKind::Page),
            route("/api/", RouteKind::Api),
            route("/api/public", RouteKind::Public),
        ]);
        let found = |path| t.find("app.example.com", path).map(|r| r.index);
        assert_eq!(found("/api/x"), Some(1));
        assert_eq!(found("/api/"), Some(1));
        assert_eq!(found("/api/public"), Some(2));
        assert_eq!(found("/api/public/x"), Some(2));
        assert_eq!(found("/api/publicity"), Some(1));
        assert_eq!(found("/apiary/x"), Some(0));
        assert_eq!(found("/api"), Some(0));
        assert_eq!(t.policy(2).map(|p| p.kind), Some(RouteKind::Public));
        assert_eq!(t.get(1).map(|r| r.config.prefix.as_str()), Some("/api/"));
    }

    #[test]
    fn no_match_without_a_catch_all() {
        let t = RouteTable::new(&[route("/api/", RouteKind::Api)]);
        assert!(t.find("a", "/").is_none());
        assert!(t.find("a", "/apix").is_none());
    }

    #[test]
    fn the_most_specific_host_wins_then_the_longest_path() {
        let on = |host: Option<HostPattern>, prefix: &str| RouteConfig {
            host,
            ..route(prefix, RouteKind::Page)
        };
        let exact = || Some(HostPattern::Exact("app.example.com".into()));
        let under = |s: &str| Some(HostPattern::Under(s.into()));
        let t = RouteTable::new(&[
            on(None, "/"),
            on(None, "/api/"),
            on(exact(), "/"),
            on(under(".example.com"), "/"),
            on(under(".admin.example.com"), "/"),
        ]);
        let found = |host, path| t.find(host, path).map(|r| r.index);
        assert_eq!(
            found("APP.example.com", "/api/x"),
            Some(2),
            "host before path"
        );
        assert_eq!(found("shop.example.com", "/x"), Some(3));
        assert_eq!(
            found("a.admin.example.com", "/x"),
            Some(4),
            "narrowest wildcard"
        );
        assert_eq!(
            found("example.com", "/api/x"),
            Some(1),
            "a wildcard needs a label"
        );
        assert_eq!(found("other.test", "/x"), Some(0));
    }
}
