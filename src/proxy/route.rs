//! The route table: longest configured prefix that ends at a path-segment boundary.

use crate::config::{RouteConfig, RouteKind};

pub struct RouteTable {
    /// Sorted longest prefix first, so the first match is the longest.
    routes: Vec<(usize, RouteConfig)>,
}

impl RouteTable {
    pub fn new(routes: &[RouteConfig]) -> RouteTable {
        let mut routes: Vec<(usize, RouteConfig)> = routes.iter().cloned().enumerate().collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.1.prefix.len()));
        RouteTable { routes }
    }

    /// The index (in configuration order) of the route serving `path`.
    pub fn find(&self, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .find(|(_, r)| matches_at_boundary(&r.prefix, path))
            .map(|(i, _)| *i)
    }

    pub fn kind(&self, index: usize) -> Option<RouteKind> {
        self.get(index).map(|r| r.kind)
    }

    pub fn get(&self, index: usize) -> Option<&RouteConfig> {
        self.routes
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, r)| r)
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
    use crate::config::Upstream;

    fn route(prefix: &str, kind: RouteKind) -> RouteConfig {
        RouteConfig {
            prefix: prefix.into(),
            upstream: Upstream {
                host: "127.0.0.1".into(),
                port: 1,
                tls: false,
            },
            kind,
            methods: None,
            websocket: false,
            allow_ambiguous_paths: false,
            allow_chunked_requests: false,
            dpop: false,
        }
    }

    #[test]
    fn longest_prefix_at_a_segment_boundary_wins() {
        let t = RouteTable::new(&[
            route("/", RouteKind::Page),
            route("/api/", RouteKind::Api),
            route("/api/public", RouteKind::Public),
        ]);
        assert_eq!(t.find("/api/x"), Some(1));
        assert_eq!(t.find("/api/"), Some(1));
        assert_eq!(t.find("/api/public"), Some(2));
        assert_eq!(t.find("/api/public/x"), Some(2));
        assert_eq!(t.find("/api/publicity"), Some(1));
        assert_eq!(t.find("/apiary/x"), Some(0));
        assert_eq!(t.find("/api"), Some(0));
        assert_eq!(t.kind(2), Some(RouteKind::Public));
    }

    #[test]
    fn no_match_without_a_catch_all() {
        let t = RouteTable::new(&[route("/api/", RouteKind::Api)]);
        assert_eq!(t.find("/"), None);
        assert_eq!(t.find("/apix"), None);
    }
}
