use crate::roles::{MembershipError, OrgRole, WorkspaceRole, check_membership, effective_workspace_role};

#[test]
fn roles_round_trip_through_their_wire_names() {
    for role in OrgRole::ALL {
        assert_eq!(OrgRole::parse(role.as_str()), Some(role));
    }
    for role in WorkspaceRole::ALL {
        assert_eq!(WorkspaceRole::parse(role.as_str()), Some(role));
    }
    assert_eq!(OrgRole::parse("owner"), None);
    assert_eq!(WorkspaceRole::parse("admin"), None);
}

#[test]
fn admin_is_neither_granted_nor_removed_through_the_api() {
    assert!(!OrgRole::Admin.assignable());
    assert!(OrgRole::ALL.iter().filter(|role| role.assignable()).count() == 4);
}

#[test]
fn inherited_workspace_roles_cannot_be_assigned_or_overridden() {
    assert_eq!(
        check_membership(OrgRole::Developer, WorkspaceRole::Billing),
        Err(MembershipError::BillingNotAssignable)
    );
    assert_eq!(
        check_membership(OrgRole::Admin, WorkspaceRole::User),
        Err(MembershipError::AdminIsAdminEverywhere)
    );
    assert_eq!(
        check_membership(OrgRole::Billing, WorkspaceRole::Developer),
        Err(MembershipError::BillingIsBillingEverywhere)
    );
    assert_eq!(check_membership(OrgRole::User, WorkspaceRole::Admin), Ok(()));
}

#[test]
fn org_admins_and_billing_hold_their_role_in_every_workspace() {
    assert_eq!(
        effective_workspace_role(OrgRole::Admin, None),
        Some(WorkspaceRole::Admin)
    );
    assert_eq!(
        effective_workspace_role(OrgRole::Billing, Some(WorkspaceRole::User)),
        Some(WorkspaceRole::Billing)
    );
    assert_eq!(effective_workspace_role(OrgRole::Developer, None), None);
    assert_eq!(
        effective_workspace_role(OrgRole::User, Some(WorkspaceRole::Developer)),
        Some(WorkspaceRole::Developer)
    );
}
