//! The naming and role rules of service accounts.

use crate::roles::{MembershipError, OrgRole, WorkspaceRole};
use crate::service_accounts::{
    ServiceAccountName, ServiceAccountRejection, check_role, check_workspace_role, description,
};

#[test]
fn names_are_lowercase_slugs() {
    for good in ["ci-deploy-bot", "a", "bot-2", &"x".repeat(255)] {
        assert_eq!(
            ServiceAccountName::parse(good).map(|name| name.as_str().to_owned()),
            Ok(good.to_owned())
        );
    }
    for bad in ["", "CI", "ci bot", "ci_bot", "bot!", "é", &"x".repeat(256)] {
        assert_eq!(
            ServiceAccountName::parse(bad),
            Err(ServiceAccountRejection::BadName),
            "{bad:?}"
        );
    }
}

#[test]
fn descriptions_are_trimmed_and_bounded() {
    assert_eq!(description("  deploys  "), Ok("deploys".to_owned()));
    assert_eq!(description(&"d".repeat(2000)).map(|text| text.len()), Ok(2000));
    assert_eq!(
        description(&"d".repeat(2001)),
        Err(ServiceAccountRejection::DescriptionTooLong)
    );
}

#[test]
fn an_account_holds_any_assignable_role_but_admin() {
    for role in OrgRole::ALL {
        let expected = if role == OrgRole::Admin {
            Err(ServiceAccountRejection::RoleNotAssignable)
        } else {
            Ok(role)
        };
        assert_eq!(check_role(role), expected, "{role:?}");
    }
}

#[test]
fn workspace_roles_follow_the_rule_for_users() {
    assert_eq!(
        check_workspace_role(OrgRole::Developer, WorkspaceRole::Developer),
        Ok(WorkspaceRole::Developer)
    );
    assert_eq!(
        check_workspace_role(OrgRole::User, WorkspaceRole::Billing),
        Err(ServiceAccountRejection::Membership(
            MembershipError::BillingNotAssignable
        ))
    );
    assert_eq!(
        check_workspace_role(OrgRole::Billing, WorkspaceRole::User),
        Err(ServiceAccountRejection::Membership(
            MembershipError::BillingIsBillingEverywhere
        ))
    );
}
