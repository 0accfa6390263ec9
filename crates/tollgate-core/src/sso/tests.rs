use std::collections::BTreeMap;

use chrono::TimeZone;
use proptest::prelude::*;

use crate::Timestamp;
use crate::roles::{OrgRole, WorkspaceRole};
use crate::sso::{
    ClaimsPolicy, EXPIRY_LEEWAY_SECONDS, GroupGrant, GroupMap, IdTokenClaims, SsoRefusal, assign_roles,
    check_claims, check_refreshed_claims,
};

fn now() -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap()
}

fn policy() -> ClaimsPolicy {
    ClaimsPolicy {
        issuer: "https://id.example.com".into(),
        client_id: "tollgate".into(),
        allowed_email_domains: vec!["example.com".into()],
        require_verified_email: true,
    }
}

fn claims() -> IdTokenClaims {
    IdTokenClaims {
        issuer: "https://id.example.com".into(),
        audiences: vec!["tollgate".into()],
        authorized_party: None,
        subject: "user-1".into(),
        expires_at: now() + chrono::Duration::minutes(5),
        nonce: Some("n-1".into()),
        email: Some(" Ada@Example.com ".into()),
        email_verified: Some(true),
        name: Some("Ada".into()),
        groups: vec!["eng".into()],
    }
}

/// Goal: a refreshed ID token passes the sign-in's rules without the sign-in's nonce, but
/// only for the same person, and every other rule still holds.
#[test]
fn refreshed_claims_need_no_nonce_but_the_same_person() {
    let refreshed = IdTokenClaims {
        nonce: None,
        ..claims()
    };
    let identity = check_refreshed_claims(&refreshed, &policy(), "user-1", now()).unwrap();
    assert_eq!(identity.email, "ada@example.com");
    assert_eq!(
        check_refreshed_claims(&refreshed, &policy(), "user-2", now()),
        Err(SsoRefusal::ProviderRefused),
        "another person"
    );
    let expired = IdTokenClaims {
        expires_at: now() - chrono::Duration::hours(1),
        ..refreshed.clone()
    };
    assert_eq!(
        check_refreshed_claims(&expired, &policy(), "user-1", now()),
        Err(SsoRefusal::Expired)
    );
    assert_eq!(
        check_claims(&refreshed, &policy(), "n-1", now()),
        Err(SsoRefusal::NonceMismatch),
        "a sign-in still needs its nonce"
    );
}

#[test]
fn good_claims_name_the_person_with_a_lowercase_email() {
    let identity = check_claims(&claims(), &policy(), "n-1", now()).unwrap();
    assert_eq!(identity.email, "ada@example.com");
    assert_eq!(identity.name, "Ada");
    assert_eq!(identity.subject, "user-1");
}

/// A change that breaks good claims, and the refusal it must get.
type Case = (fn(&mut IdTokenClaims), SsoRefusal);

#[test]
fn each_broken_claim_is_refused_for_its_own_reason() {
    let cases: Vec<Case> = vec![
        (
            |c| c.issuer = "https://evil.example.com".into(),
            SsoRefusal::WrongIssuer,
        ),
        (|c| c.audiences = vec!["other".into()], SsoRefusal::WrongAudience),
        (
            |c| c.audiences = vec!["tollgate".into(), "other".into()],
            SsoRefusal::WrongAudience,
        ),
        (
            |c| c.expires_at = now() - chrono::Duration::seconds(EXPIRY_LEEWAY_SECONDS),
            SsoRefusal::Expired,
        ),
        (|c| c.nonce = Some("n-2".into()), SsoRefusal::NonceMismatch),
        (|c| c.nonce = None, SsoRefusal::NonceMismatch),
        (|c| c.email = None, SsoRefusal::NoEmail),
        (|c| c.email = Some("nobody".into()), SsoRefusal::NoEmail),
        (|c| c.email_verified = Some(false), SsoRefusal::EmailNotVerified),
        (|c| c.email_verified = None, SsoRefusal::EmailNotVerified),
        (
            |c| c.email = Some("eve@elsewhere.com".into()),
            SsoRefusal::DomainNotAllowed,
        ),
        (
            |c| c.email = Some("eve@sub.example.com".into()),
            SsoRefusal::DomainNotAllowed,
        ),
    ];
    for (change, refusal) in cases {
        let mut broken = claims();
        change(&mut broken);
        assert_eq!(
            check_claims(&broken, &policy(), "n-1", now()),
            Err(refusal),
            "{broken:?}"
        );
    }
}

#[test]
fn a_second_audience_is_fine_when_the_token_was_issued_to_us() {
    let mut claims = claims();
    claims.audiences.push("other".into());
    claims.authorized_party = Some("tollgate".into());
    assert!(check_claims(&claims, &policy(), "n-1", now()).is_ok());
}

#[test]
fn an_unverified_email_passes_only_when_verification_is_not_required() {
    let mut claims = claims();
    claims.email_verified = None;
    let mut lenient = policy();
    lenient.require_verified_email = false;
    assert!(check_claims(&claims, &lenient, "n-1", now()).is_ok());
    claims.email_verified = Some(false);
    assert_eq!(
        check_claims(&claims, &lenient, "n-1", now()),
        Err(SsoRefusal::EmailNotVerified)
    );
}

#[test]
fn any_domain_is_allowed_when_none_is_configured() {
    let mut claims = claims();
    claims.email = Some("eve@elsewhere.com".into());
    let mut open = policy();
    open.allowed_email_domains.clear();
    assert!(check_claims(&claims, &open, "n-1", now()).is_ok());
}

#[test]
fn a_missing_name_falls_back_to_the_emails_local_part() {
    let mut claims = claims();
    claims.name = None;
    assert_eq!(
        check_claims(&claims, &policy(), "n-1", now()).unwrap().name,
        "ada"
    );
}

fn map() -> GroupMap {
    let grant = |org_role, workspaces: &[(&str, WorkspaceRole)]| GroupGrant {
        org_role,
        workspace_roles: workspaces
            .iter()
            .map(|(workspace, role)| ((*workspace).to_owned(), *role))
            .collect(),
    };
    GroupMap {
        grants: BTreeMap::from([
            (
                "admins".to_owned(),
                grant(OrgRole::Admin, &[("Research", WorkspaceRole::User)]),
            ),
            (
                "eng".to_owned(),
                grant(OrgRole::Developer, &[("Research", WorkspaceRole::Developer)]),
            ),
            (
                "leads".to_owned(),
                grant(
                    OrgRole::User,
                    &[("Research", WorkspaceRole::Admin), ("Ops", WorkspaceRole::User)],
                ),
            ),
            ("finance".to_owned(), grant(OrgRole::Billing, &[])),
            (
                "readers".to_owned(),
                grant(OrgRole::User, &[("Ops", WorkspaceRole::User)]),
            ),
        ]),
    }
}

fn groups(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

#[test]
fn the_most_reaching_roles_of_the_mapped_groups_win() {
    let assignment = assign_roles(&groups(&["readers", "eng", "leads", "unknown"]), &map()).unwrap();
    assert_eq!(assignment.org_role, OrgRole::Developer);
    assert_eq!(
        assignment.workspace_roles,
        BTreeMap::from([
            ("Ops".to_owned(), WorkspaceRole::User),
            ("Research".to_owned(), WorkspaceRole::Admin),
        ])
    );
}

#[test]
fn an_org_admin_or_billing_user_gets_no_explicit_workspace_role() {
    let admin = assign_roles(&groups(&["admins", "eng"]), &map()).unwrap();
    assert_eq!(admin.org_role, OrgRole::Admin);
    assert!(admin.workspace_roles.is_empty());
    let billing = assign_roles(&groups(&["finance", "readers"]), &map()).unwrap();
    assert_eq!(billing.org_role, OrgRole::Billing);
    assert!(billing.workspace_roles.is_empty());
}

#[test]
fn without_a_mapped_group_nobody_gets_in() {
    assert_eq!(
        assign_roles(&groups(&["unknown"]), &map()),
        Err(SsoRefusal::NoAllowedGroup)
    );
    assert_eq!(assign_roles(&[], &map()), Err(SsoRefusal::NoAllowedGroup));
}

#[test]
fn the_managed_workspaces_are_those_any_group_names() {
    assert_eq!(map().workspaces(), vec!["Ops".to_owned(), "Research".to_owned()]);
}

fn any_groups() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        prop_oneof![
            Just("admins"),
            Just("eng"),
            Just("leads"),
            Just("finance"),
            Just("readers"),
            Just("unknown"),
            Just("other")
        ]
        .prop_map(str::to_owned),
        0..8,
    )
}

proptest! {
    /// The groups' order and repetition never change the roles.
    #[test]
    fn roles_do_not_depend_on_the_order_of_the_groups(groups in any_groups(), seed in any::<u64>()) {
        let mut shuffled = groups.clone();
        let length = shuffled.len();
        if length > 1 {
            for index in 0..length {
                let other = usize::try_from(seed.rotate_left(u32::try_from(index).unwrap()) % length as u64).unwrap();
                shuffled.swap(index, other);
            }
        }
        shuffled.extend(groups.iter().take(2).cloned());
        prop_assert_eq!(assign_roles(&groups, &map()), assign_roles(&shuffled, &map()));
    }

    /// The organization role is one a mapped group gives, and each workspace role is one
    /// some group gives in that workspace and may be given explicitly.
    #[test]
    fn roles_come_only_from_the_mapped_groups(groups in any_groups()) {
        let map = map();
        match assign_roles(&groups, &map) {
            Ok(assignment) => {
                let grants: Vec<&GroupGrant> = groups.iter().filter_map(|group| map.grants.get(group)).collect();
                prop_assert!(grants.iter().any(|grant| grant.org_role == assignment.org_role));
                for (workspace, role) in &assignment.workspace_roles {
                    prop_assert!(grants.iter().any(|grant| grant.workspace_roles.get(workspace) == Some(role)));
                    prop_assert!(crate::roles::check_membership(assignment.org_role, *role).is_ok());
                }
            }
            Err(refusal) => {
                prop_assert_eq!(refusal, SsoRefusal::NoAllowedGroup);
                prop_assert!(groups.iter().all(|group| !map.grants.contains_key(group)));
            }
        }
    }

    /// A token is refused as expired exactly when `exp` plus the leeway is not after `now`.
    #[test]
    fn expiry_is_judged_against_the_given_clock(offset_seconds in -600_i64..600) {
        let mut claims = claims();
        claims.expires_at = now() + chrono::Duration::seconds(offset_seconds);
        let result = check_claims(&claims, &policy(), "n-1", now());
        prop_assert_eq!(result == Err(SsoRefusal::Expired), offset_seconds + EXPIRY_LEEWAY_SECONDS <= 0);
    }
}
