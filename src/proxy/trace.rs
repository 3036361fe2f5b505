//! The proxy's hooks into a request's trace (`telemetry::propagation`), one per phase that
//! needs one: start in `request_filter`, propagate in `upstream_request_filter`, finish in
//! `logging`.

use std::net::IpAddr;

use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::bff::Endpoint;
use super::{Portcullis, RequestCtx};
use crate::telemetry::propagation::RequestTrace;

impl Portcullis {
    pub(super) fn start_trace(&self, session: &Session, request_id: &str) -> RequestTrace {
        self.traces
            .start(session.req_header(), client_ip(session), request_id)
    }

    pub(super) fn propagate_trace(
        &self,
        session: &Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) {
        if !self.traces.is_active() {
            return;
        }
        let server = ctx
            .route
            .and_then(|i| ctx.live.routes.get(i))
            .and_then(|r| r.config.upstream());
        self.traces.propagate(
            session.req_header(),
            client_ip(session),
            upstream,
            &mut ctx.trace,
            server,
        );
    }

    /// `status`: what the client was answered (0: nothing); `failed`: Pingora reported an
    /// error for the request (the upstream or the client broke off).
    pub(super) fn finish_trace(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        status: u16,
        failed: bool,
    ) {
        if !ctx.trace.is_recording() {
            return;
        }
        let path = session.req_header().uri.path();
        // A configured prefix, or one of portcullis's own endpoints: never a path a client made up.
        let route = match ctx.route.and_then(|i| ctx.live.routes.get(i)) {
            Some(route) => Some(route.config.prefix.as_str()),
            None => Endpoint::from_path(path).map(|_| path),
        };
        ctx.trace.finish(route, ctx.label, status, failed);
    }
}

/// The client's IP address, for trust decisions and `X-Forwarded-For`.
pub(super) fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}
