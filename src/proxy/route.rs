//! The route table: longest configured prefix that ends at a path-segment boundary, each route
//! with its policy resolved at load.

use super::policy::RoutePolicy;
use crate::config::RouteConfig;

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
    /// Indices, longest prefix first, so the first match is the longest.
    by_length: Vec<usize>,
}

impl RouteTable {
    pub fn new(routes: &[RouteConfig]) -> RouteTable {
        let routes: Vec<Route> = routes
            .iter()
            .enumerate()
            .map(|(index, config)| Route {
                index,
                config: config.clone(),
                policy: RoutePolicy::of(config.kind),
            })
            .collect();
        let mut by_length: Vec<usize> = (0..routes.len()).collect();
        by_length.sort_by_key(|&i| std::cmp::Reverse(routes[i].config.prefix.len()));
        RouteTable { routes, by_length }
    }

    /// The route serving `path`.
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.by_length
            .iter()
            .map(|&i| &self.routes[i])
            .find(|r| matches_at_boundary(&r.config.prefix, path))
    }

    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    pub fn policy(&self, index: usize) -> Option<&RoutePolicy> {
        self.get(index).map(|r| &r.policy)
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
    use crate::config::{RouteKind, Upstream};

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
        let found = |path| t.find(path).map(|r| r.index);
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
        assert!(t.find("/").is_none());
        assert!(t.find("/apix").is_none());
    }
}
