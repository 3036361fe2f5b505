//! `access.*`: which users may log in, by e-mail domain and group claims.

use super::Checker;
use crate::config::raw::{RawAccess, RawClaimRule};
use crate::config::types::{AccessConfig, ClaimRule, ClaimTest, Require};

impl Checker<'_> {
    pub(super) fn access(&mut self, raw: RawAccess) -> AccessConfig {
        self.access_rules("access", raw, "groups")
    }

    /// Access rules under `section` (`access`, or a host's own); `groups_claim` when unset.
    pub(super) fn access_rules(
        &mut self,
        section: &str,
        raw: RawAccess,
        default_groups_claim: &str,
    ) -> AccessConfig {
        let mut email_domains = Vec::new();
        for (i, domain) in raw
            .email_domains
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let domain = domain.trim().to_ascii_lowercase();
            let plausible = !domain.is_empty()
                && !domain.starts_with('.')
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if plausible {
                email_domains.push(domain);
            } else {
                self.problem(
                    format!("{section}.email_domains[{i}]"),
                    "must be a domain such as example.com (no @, no leading dot, no wildcard)",
                );
            }
        }
        let mut groups = Vec::new();
        for (i, group) in raw.groups.unwrap_or_default().into_iter().enumerate() {
            if group.is_empty() {
                self.problem(
                    format!("{section}.groups[{i}]"),
                    "must not be empty (list group names as the OP puts them in the groups claim)",
                );
            } else {
                groups.push(group);
            }
        }
        let groups_claim = raw
            .groups_claim
            .unwrap_or_else(|| default_groups_claim.to_string());
        if groups_claim.is_empty() {
            self.problem(
                format!("{section}.groups_claim"),
                "must name a claim (default \"groups\")",
            );
        }
        let claims = raw
            .claims
            .into_iter()
            .enumerate()
            .filter_map(|(i, rule)| self.claim_rule(&format!("{section}.claims[{i}]"), rule))
            .collect();
        let require = match raw.require.as_deref() {
            None | Some("all") => Require::All,
            Some("any") => Require::Any,
            Some(other) => {
                self.problem(
                    format!("{section}.require"),
                    format!("{other:?} is not allowed (use all: every rule must admit, or any: one is enough)"),
                );
                Require::All
            }
        };
        AccessConfig {
            email_domains,
            groups,
            groups_claim,
            claims,
            require,
        }
    }

    fn claim_rule(&mut self, key: &str, raw: RawClaimRule) -> Option<ClaimRule> {
        let claim = match raw.claim {
            Some(c) if !c.is_empty() => c,
            _ => {
                self.problem(
                    format!("{key}.claim"),
                    "is required (the ID-token claim to test, e.g. department)",
                );
                return None;
            }
        };
        let test = match (raw.equals, raw.contains) {
            (Some(v), None) => ClaimTest::Equals(v),
            (None, Some(v)) => ClaimTest::Contains(v),
            _ => {
                self.problem(
                    key,
                    "needs exactly one of equals (the claim is this string) or contains (the claim, an array or a string, holds this string)",
                );
                return None;
            }
        };
        Some(ClaimRule { claim, test })
    }
}
