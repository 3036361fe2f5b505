//! An upstream app that verifies portcullis's identity assertion itself, with the `jose` npm
//! library against the published JWKS (`tests/fixtures/op/assertion-upstream.mjs`).

use super::node::NodeServer;
use super::repo_root;

/// `jwks_url`: portcullis's admin `/.well-known/jwks.json`; `issuer`: its public origin.
pub fn start(jwks_url: &str, issuer: &str) -> NodeServer {
    NodeServer::start(
        &repo_root().join("tests/fixtures/op"),
        "assertion-upstream.mjs",
        &[
            ("JWKS_URL", jwks_url.to_string()),
            ("ISSUER", issuer.to_string()),
        ],
        "UPSTREAM_READY",
    )
}
