//! The role matrix and the sign-in window, which the Console's pages rely on.

use tollgate_core::roles::OrgRole;

use crate::console::{Access, ConsoleArea, role_allows, window_start};

#[test]
fn billing_is_reachable_only_by_admins_and_billing_users() {
    for role in [OrgRole::User, OrgRole::Developer, OrgRole::ClaudeCodeUser] {
        assert!(!role_allows(role, ConsoleArea::Billing, Access::View), "{role:?}");
        assert!(
            !role_allows(role, ConsoleArea::Billing, Access::Change),
            "{role:?}"
        );
    }
    for role in [OrgRole::Admin, OrgRole::Billing] {
        assert!(
            role_allows(role, ConsoleArea::Billing, Access::Change),
            "{role:?}"
        );
    }
}

#[test]
fn keys_are_managed_by_admins_and_developers_and_seen_by_users() {
    assert!(role_allows(
        OrgRole::Developer,
        ConsoleArea::ApiKeys,
        Access::Change
    ));
    assert!(role_allows(OrgRole::Admin, ConsoleArea::ApiKeys, Access::Change));
    assert!(role_allows(OrgRole::User, ConsoleArea::ApiKeys, Access::View));
    assert!(!role_allows(OrgRole::User, ConsoleArea::ApiKeys, Access::Change));
    assert!(!role_allows(
        OrgRole::Billing,
        ConsoleArea::ApiKeys,
        Access::Change
    ));
    assert!(!role_allows(
        OrgRole::Developer,
        ConsoleArea::Workspaces,
        Access::Change
    ));
    assert!(!role_allows(
        OrgRole::Developer,
        ConsoleArea::Members,
        Access::Change
    ));
    // Alerts are the organization admins' alone.
    assert!(role_allows(OrgRole::Admin, ConsoleArea::Alerts, Access::Change));
    for role in [OrgRole::Billing, OrgRole::Developer, OrgRole::User] {
        assert!(!role_allows(role, ConsoleArea::Alerts, Access::View));
    }
}

#[test]
fn failures_are_counted_in_fixed_quarter_hours() {
    let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc();
    assert_eq!(
        window_start(at("2026-03-01T10:14:59Z")),
        at("2026-03-01T10:00:00Z")
    );
    assert_eq!(
        window_start(at("2026-03-01T10:15:00Z")),
        at("2026-03-01T10:15:00Z")
    );
}
