//! Access rules on the ID token's claims: at login (`access.*`: claims the policy does not admit
//! create no session, like oauth2-proxy's e-mail domain and group restrictions), and on every
//! request to a route (`routes[].access`) or an ingress host that has its own.

use serde_json::{Map, Value};

use super::error::ProxyError;
use crate::config::{AccessConfig, ClaimRule, ClaimTest, Require};

/// Admits the claims, or names the rule that refused them (with `require: any`, that none did).
pub fn check_access(policy: &AccessConfig, claims: &Map<String, Value>) -> Result<(), ProxyError> {
    let mut verdicts = rule_verdicts(policy, claims).peekable();
    if verdicts.peek().is_none() {
        return Ok(());
    }
    match policy.require {
        Require::All => verdicts
            .find_map(|(admitted, reason)| (!admitted).then_some(reason))
            .map_or(Ok(()), |reason| Err(ProxyError::AccessDenied(reason))),
        Require::Any => {
            if verdicts.any(|(admitted, _)| admitted) {
                Ok(())
            } else {
                Err(ProxyError::AccessDenied("access_denied_any"))
            }
        }
    }
}

/// Each configured rule's verdict on the claims, with the reason it gives when it refuses.
fn rule_verdicts<'a>(
    policy: &'a AccessConfig,
    claims: &'a Map<String, Value>,
) -> impl Iterator<Item = (bool, &'static str)> + 'a {
    let email = (!policy.email_domains.is_empty()).then(|| {
        (
            email_admitted(&policy.email_domains, claims),
            "access_denied_email",
        )
    });
    let groups = (!policy.groups.is_empty())
        .then(|| (group_admitted(policy, claims), "access_denied_group"));
    let rules = policy
        .claims
        .iter()
        .map(|rule| (claim_admitted(rule, claims), "access_denied_claim"));
    email.into_iter().chain(groups).chain(rules)
}

/// `equals`: the claim is that string (or that number or boolean, written out). `contains`: the
/// claim is an array holding that string, or a string containing it as a whole
/// space-separated word (as `scope`-like claims are written).
fn claim_admitted(rule: &ClaimRule, claims: &Map<String, Value>) -> bool {
    let value = claims.get(&rule.claim);
    match (&rule.test, value) {
        (ClaimTest::Equals(want), Some(Value::String(s))) => s == want,
        // `equals: "3"` admits the number 3, `equals: "true"` the boolean.
        (ClaimTest::Equals(want), Some(v @ (Value::Number(_) | Value::Bool(_)))) => {
            serde_json::from_str::<Value>(want).is_ok_and(|w| w == *v)
        }
        (ClaimTest::Contains(want), Some(Value::Array(items))) => {
            items.iter().any(|i| i.as_str() == Some(want.as_str()))
        }
        (ClaimTest::Contains(want), Some(Value::String(s))) => {
            s.split(' ').any(|word| word == want)
        }
        _ => false,
    }
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
            ..AccessConfig::default()
        }
    }

    fn rule(claim: &str, test: ClaimTest) -> ClaimRule {
        ClaimRule {
            claim: claim.into(),
            test,
        }
    }

    #[test]
    fn claim_rules_test_equality_and_membership() {
        let p = AccessConfig {
            claims: vec![
                rule("department", ClaimTest::Equals("finance".into())),
                rule("roles", ClaimTest::Contains("approver".into())),
            ],
            ..policy(&[], &[])
        };
        let ok = json!({ "department": "finance", "roles": ["viewer", "approver"] });
        assert!(check_access(&p, &claims(ok)).is_ok());
        let spaced = json!({ "department": "finance", "roles": "viewer approver" });
        assert!(check_access(&p, &claims(spaced)).is_ok());
        for bad in [
            json!({ "department": "Finance", "roles": ["approver"] }),
            json!({ "department": "finance", "roles": ["approvers"] }),
            json!({ "department": "finance", "roles": "disapprover" }),
            json!({ "department": ["finance"], "roles": ["approver"] }),
            json!({ "roles": ["approver"] }),
        ] {
            let got = check_access(&p, &claims(bad.clone()));
            assert!(
                matches!(got, Err(ProxyError::AccessDenied("access_denied_claim"))),
                "{bad}: {got:?}"
            );
        }
        let level = AccessConfig {
            claims: vec![rule("level", ClaimTest::Equals("3".into()))],
            ..policy(&[], &[])
        };
        assert!(check_access(&level, &claims(json!({ "level": 3 }))).is_ok());
    }

    #[test]
    fn any_admits_on_one_rule_all_needs_every_rule() {
        let all = AccessConfig {
            claims: vec![rule("department", ClaimTest::Equals("finance".into()))],
            ..policy(&["example.com"], &["admins"])
        };
        let any = AccessConfig {
            require: Require::Any,
            ..all.clone()
        };
        let only_group = json!({ "email": "a@other.test", "groups": ["admins"] });
        assert!(matches!(
            check_access(&all, &claims(only_group.clone())),
            Err(ProxyError::AccessDenied("access_denied_email"))
        ));
        assert!(check_access(&any, &claims(only_group)).is_ok());
        let none = json!({ "email": "a@other.test", "groups": [] });
        assert!(matches!(
            check_access(&any, &claims(none)),
            Err(ProxyError::AccessDenied("access_denied_any"))
        ));
        let empty_any = AccessConfig {
            require: Require::Any,
            ..AccessConfig::default()
        };
        assert!(check_access(&empty_any, &claims(json!({}))).is_ok());
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
