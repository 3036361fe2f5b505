//! Pushed Authorization Requests (RFC 9126): the authorization request's parameters go to the
//! OP over the back channel, authenticated as the client, and the browser carries only
//! `client_id` and the `request_uri` the OP answered with — nothing it could read or alter.

use serde::Deserialize;
use url::Url;

use super::op_http::form_request;
use super::{ExtraMetadata, Oidc, OidcError, Provider};
use crate::config::ParMode;

#[derive(Deserialize)]
struct PushedRequest {
    request_uri: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// The PAR endpoint to use under `mode`, or `None` to send the request through the browser:
/// `auto` pushes when the OP offers PAR, and any mode pushes when the OP requires it.
pub(super) fn endpoint(mode: ParMode, extra: &ExtraMetadata) -> Result<Option<&Url>, OidcError> {
    let advertised = extra.pushed_authorization_request_endpoint.as_ref();
    let required_by_op = extra.require_pushed_authorization_requests;
    match (mode, advertised) {
        (ParMode::Off, _) if !required_by_op => Ok(None),
        (_, Some(endpoint)) => Ok(Some(endpoint)),
        (ParMode::Auto, None) if !required_by_op => Ok(None),
        (_, None) => Err(OidcError::Par {
            reason: "par_unavailable",
            detail: "the provider does not advertise pushed_authorization_request_endpoint".into(),
        }),
    }
}

impl Oidc {
    /// Pushes the parameters of `authorization_url` to `endpoint` and returns the URL the
    /// browser is sent to: the authorization endpoint with `client_id` and `request_uri` only.
    pub(super) async fn push(
        &self,
        provider: &Provider,
        endpoint: &Url,
        authorization_url: &Url,
    ) -> Result<Url, OidcError> {
        let current = self.current.load_full();
        let pairs = authorization_url.query_pairs().into_owned().collect();
        let request = form_request(endpoint, pairs, &current.cfg).map_err(par_failed)?;
        let response = self
            .timed("par", self.op_call(&current, None).send(request))
            .await
            .map_err(par_failed)?;
        let status = response.status().as_u16();
        if status != 201 && status != 200 {
            let code = serde_json::from_slice::<ErrorBody>(response.body())
                .map(|b| b.error)
                .unwrap_or_else(|_| format!("HTTP {status}"));
            return Err(OidcError::Par {
                reason: "par_rejected",
                detail: format!("the provider refused the pushed request: {code}"),
            });
        }
        let pushed: PushedRequest =
            serde_json::from_slice(response.body()).map_err(|_| OidcError::Par {
                reason: "par_response_invalid",
                detail: "the answer has no request_uri".into(),
            })?;
        let mut url = provider.metadata.authorization_endpoint().url().clone();
        url.query_pairs_mut()
            .append_pair("client_id", &current.cfg.client_id)
            .append_pair("request_uri", &pushed.request_uri);
        Ok(url)
    }
}

fn par_failed(e: super::op_http::OpCallError) -> OidcError {
    OidcError::Par {
        reason: "par_failed",
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(endpoint: bool, required: bool) -> ExtraMetadata {
        ExtraMetadata {
            pushed_authorization_request_endpoint: endpoint
                .then(|| Url::parse("https://op.test/par").unwrap()),
            require_pushed_authorization_requests: required,
            ..ExtraMetadata::default()
        }
    }

    #[test]
    fn auto_pushes_only_when_offered_and_every_mode_when_required() {
        let pushes = |mode, e: &ExtraMetadata| endpoint(mode, e).map(|u| u.is_some()).ok();
        assert_eq!(pushes(ParMode::Off, &extra(true, false)), Some(false));
        assert_eq!(pushes(ParMode::Auto, &extra(true, false)), Some(true));
        assert_eq!(pushes(ParMode::Auto, &extra(false, false)), Some(false));
        assert_eq!(pushes(ParMode::Required, &extra(true, false)), Some(true));
        assert_eq!(pushes(ParMode::Off, &extra(true, true)), Some(true));
        let err = endpoint(ParMode::Required, &extra(false, false)).unwrap_err();
        assert_eq!(err.reason(), "par_unavailable");
        assert!(endpoint(ParMode::Auto, &extra(false, true)).is_err());
    }
}
