//! `access.*`: which users may log in, by e-mail domain and group claims.

use super::Checker;
use crate::config::raw::RawAccess;
use crate::config::types::AccessConfig;

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
        AccessConfig {
            email_domains,
            groups,
            groups_claim,
        }
    }
}
