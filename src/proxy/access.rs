//! The login-time access policy (`access.*`): an ID token whose claims the policy does not
//! admit creates no session, like oauth2-proxy's e-mail domain and group restrictions.

use serde_json::{Map, Value};

use super::error::ProxyError;
use crate::config::AccessConfig;

/// Admits the claims, or names the rule that refused them.
pub fn check_access(policy: &AccessConfig, claims: &Map<String, Value>) -> Result<(), ProxyError> {
    if !policy.email_domains.is_empty() && !email_admitted(&policy.email_domains, claims) {
        return Err(ProxyError::AccessDenied("access_denied_email"));
    }
    if !policy.groups.is_empty() && !group_admitted(policy, claims) {
        return Err(ProxyError::AccessDenied("access_denied_group"));
    }
    Ok(())
}

/// The `email` claim's domain, compared whole and case-insensitively, on an address the OP did
/// not mark unverified.
fn email_admitted(domains: &[String], claims: &Map<String, Value>) -> bool {
    if claims.get("email_verified") == Some(&Value::Bool(false)) {
        return false;
    }
    let Some((_, domain)) = claims
        .get("email")
        .and_then(Value::as_str)
        .and_then(|e| e.rsplit_once('@'))
    else {
        return false;
    };
    domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
}

/// OPs send groups as an array of strings, some as a single string.
fn group_admitted(policy: &AccessConfig, claims: &Map<String, Value>) -> bool {
    let member = |g: &str| policy.groups.iter().any(|allowed| allowed == g);
    match claims.get(&policy.groups_claim) {
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(member),
        Some(Value::String(one)) => member(one),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(domains: &[&str], groups: &[&str]) -> AccessConfig {
        AccessConfig {
            email_domains: domains.iter().map(|d| d.to_string()).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            groups_claim: "groups".into(),
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn an_empty_policy_admits_everyone() {
        assert!(check_access(&policy(&[], &[]), &claims(json!({}))).is_ok());
    }

    #[test]
    fn email_domains_match_whole_and_verified() {
        let p = policy(&["example.com"], &[]);
        for ok in [
            json!({ "email": "a@example.com" }),
            json!({ "email": "a@EXAMPLE.com", "email_verified": true }),
        ] {
            assert!(check_access(&p, &claims(ok.clone())).is_ok(), "{ok}");
        }
        for bad in [
            json!({}),
            json!({ "email": "a@example.com", "email_verified": false }),
            json!({ "email": "a@example.com.evil.test" }),
            json!({ "email": "a@sub.example.com" }),
            json!({ "email": "example.com" }),
            json!({ "email": "a@evil.test@example.com.evil" }),
            json!({ "email": 7 }),
        ] {
            assert!(check_access(&p, &claims(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn groups_need_one_exact_member_in_an_array_or_a_string() {
        let p = policy(&[], &["admins"]);
        assert!(check_access(&p, &claims(json!({ "groups": ["users", "admins"] }))).is_ok());
        assert!(check_access(&p, &claims(json!({ "groups": "admins" }))).is_ok());
        for bad in [
            json!({}),
            json!({ "groups": [] }),
            json!({ "groups": ["Admins", "admins-x"] }),
            json!({ "groups": { "admins": true } }),
        ] {
            assert!(check_access(&p, &claims(bad.clone())).is_err(), "{bad}");
        }
    }
}
