//! The Admin API's directory and reports in the conformance suite: keys with their
//! creator, capped workspace creation, renames and archives, users, invites, members, and
//! the usage rollup, which must agree with the ledger's settled charges.

use std::sync::Arc;

use tollgate_core::keys::{AllowedModels, KeyKind};
use tollgate_core::ledger::LotKind;
use tollgate_core::money::NanoUsd;
use tollgate_core::reports::ContextWindow;
use tollgate_core::roles::{OrgRole, WorkspaceRole};
use tollgate_store::{
    AuditEntry, CreatedBy, DirectoryRejection, InviteRecord, InviteState, KeyStatus, MemberRecord, NewKey,
    ServiceAccountMembership, ServiceAccountRecord, StoreError, TxError, UsageRollupRow, UsageStatus,
    UserRecord, WorkspaceRejection,
};

use crate::conformance::Backend;
use crate::fixtures::{
    TestOrg, assert_healthy, at, cents, create_org, grant, new_reservation, settlement, usage_record, usd,
};

fn new_key(org: &TestOrg, id: &str, workspace_id: Option<&str>, minute: i64) -> NewKey {
    NewKey {
        id: id.to_owned(),
        kind: KeyKind::Api,
        org_id: org.org_id.clone(),
        workspace_id: workspace_id.map(str::to_owned),
        name: format!("{id} name"),
        secret_hash: format!("hash_of_{id}"),
        hint: format!("sk-tg-...{id}"),
        created_at: at(minute),
        expires_at: None,
        user_id: None,
        service_account_id: None,
        allowed_models: Default::default(),
    }
}

fn audit_entry(org: &TestOrg, action: &str, subject: &str) -> AuditEntry {
    AuditEntry {
        org_id: org.org_id.clone(),
        actor: "user_admin".to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        details: String::new(),
        reason: None,
        at: at(30),
    }
}

fn user(org: &TestOrg, id: &str, email: &str, minute: i64) -> UserRecord {
    UserRecord {
        id: id.to_owned(),
        org_id: org.org_id.clone(),
        email: email.to_owned(),
        name: format!("{id} name"),
        role: OrgRole::Developer,
        added_at: at(minute),
    }
}

fn invite(org: &TestOrg, id: &str, email: &str, minute: i64) -> InviteRecord {
    InviteRecord {
        id: id.to_owned(),
        org_id: org.org_id.clone(),
        email: email.to_owned(),
        role: OrgRole::Billing,
        state: InviteState::Pending,
        invited_at: at(minute),
        expires_at: at(minute + 60),
    }
}

fn rejection<T: std::fmt::Debug, E: std::fmt::Debug>(result: Result<T, TxError<E>>) -> E {
    match result {
        Err(TxError::Rejected(rejection)) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Goal: a key remembers who created it, lists newest first with it, and renames in place.
pub(crate) async fn keys_remember_their_creator(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let by_user = store
        .insert_key_by(
            new_key(&org, "apikey_1", Some(&org.workspace_id), 1),
            &CreatedBy::User("user_1".to_owned()),
        )
        .await
        .unwrap();
    assert_eq!(by_user.created_by, CreatedBy::User("user_1".to_owned()));
    assert_eq!(by_user.record.status, KeyStatus::Active);
    assert_eq!(by_user.record.created_at, at(1));
    let by_key = store
        .insert_key_by(
            new_key(&org, "apikey_2", None, 2),
            &CreatedBy::AdminKey("adminkey_1".to_owned()),
        )
        .await
        .unwrap();
    assert_eq!(store.key_view("apikey_1").await.unwrap(), Some(by_user.clone()));
    assert_eq!(store.key_view("apikey_missing").await.unwrap(), None);
    assert_eq!(
        store.key_views(&org.org_id, KeyKind::Api).await.unwrap(),
        vec![by_key, by_user]
    );
    assert!(
        store
            .key_views(&org.org_id, KeyKind::Admin)
            .await
            .unwrap()
            .is_empty()
    );

    assert!(store.rename_key("apikey_1", "renamed").await.unwrap());
    assert_eq!(store.key("apikey_1").await.unwrap().unwrap().name, "renamed");
    assert!(!store.rename_key("apikey_missing", "renamed").await.unwrap());
}

/// Goal: the active-workspace cap counts neither the Default workspace nor archived ones,
/// and a name stays taken after its workspace is archived.
pub(crate) async fn capped_workspace_creation_counts_only_active_ones(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let first = store
        .create_workspace_capped(&org.org_id, "wrkspc_one", "one", at(1), 2)
        .await
        .unwrap();
    assert_eq!(first.name, "one");
    assert!(!first.is_default);
    assert_eq!(first.created_at, at(1));
    store
        .create_workspace_capped(&org.org_id, "wrkspc_two", "two", at(2), 2)
        .await
        .unwrap();
    assert_eq!(
        rejection(
            store
                .create_workspace_capped(&org.org_id, "wrkspc_three", "three", at(3), 2)
                .await
        ),
        WorkspaceRejection::TooManyWorkspaces(2)
    );
    assert_eq!(
        rejection(
            store
                .create_workspace_capped(&org.org_id, "wrkspc_again", "one", at(3), 5)
                .await
        ),
        WorkspaceRejection::NameTaken("one".to_owned())
    );
    store
        .archive_workspace(
            "wrkspc_one",
            at(4),
            audit_entry(&org, "workspace.archived", "wrkspc_one"),
        )
        .await
        .unwrap();
    store
        .create_workspace_capped(&org.org_id, "wrkspc_three", "three", at(5), 2)
        .await
        .unwrap();
    assert_eq!(
        rejection(
            store
                .create_workspace_capped(&org.org_id, "wrkspc_again", "one", at(6), 5)
                .await
        ),
        WorkspaceRejection::NameTaken("one".to_owned())
    );
    assert_eq!(store.workspace("wrkspc_again").await.unwrap(), None);
    assert_eq!(store.list_workspaces(&org.org_id).await.unwrap().len(), 4);
}

/// Goal: admins racing to create workspaces under one cap never get past it together.
pub(crate) async fn racing_capped_creations_respect_the_cap(backend: &impl Backend) {
    let store = Arc::new(backend.store().clone());
    let org = create_org(&store, "acme").await;
    let mut tasks = Vec::new();
    for index in 0..8 {
        let store = Arc::clone(&store);
        let org_id = org.org_id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .create_workspace_capped(
                    &org_id,
                    &format!("wrkspc_{index}"),
                    &format!("workspace {index}"),
                    at(1),
                    3,
                )
                .await
        }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => created += 1,
            Err(TxError::Rejected(WorkspaceRejection::TooManyWorkspaces(3))) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 3);
    assert_eq!(store.list_workspaces(&org.org_id).await.unwrap().len(), 4);
}

/// Goal: a rename keeps names unique in the organization, is a no-op to the same name, and
/// is refused for an archived or unknown workspace.
pub(crate) async fn workspaces_are_renamed_and_archived(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let other = create_org(store, "globex").await;
    store
        .create_workspace(&org.org_id, "wrkspc_research", "research", at(1))
        .await
        .unwrap();
    store
        .create_workspace(&other.org_id, "wrkspc_globex_labs", "labs", at(1))
        .await
        .unwrap();

    let renamed = store.rename_workspace("wrkspc_research", "labs").await.unwrap();
    assert_eq!(renamed.name, "labs");
    assert_eq!(renamed.created_at, at(1));
    assert_eq!(
        store.workspace("wrkspc_research").await.unwrap(),
        Some(renamed.clone())
    );
    assert_eq!(
        store.rename_workspace("wrkspc_research", "labs").await.unwrap(),
        renamed
    );
    assert_eq!(
        rejection(store.rename_workspace("wrkspc_research", "Default").await),
        WorkspaceRejection::NameTaken("Default".to_owned())
    );
    assert_eq!(
        rejection(store.rename_workspace("wrkspc_missing", "x").await),
        WorkspaceRejection::Unknown
    );

    for (id, status) in [("apikey_1", KeyStatus::Active), ("apikey_2", KeyStatus::Inactive)] {
        store
            .insert_key(new_key(&org, id, Some("wrkspc_research"), 2))
            .await
            .unwrap();
        store.set_key_status(id, status).await.unwrap();
    }
    store
        .insert_key(new_key(&org, "apikey_3", Some(&org.workspace_id), 2))
        .await
        .unwrap();

    // An entry filed under another organization is a bug, and nothing is archived.
    let misfiled = store
        .archive_workspace(
            "wrkspc_research",
            at(3),
            audit_entry(&other, "workspace.archived", "wrkspc_research"),
        )
        .await;
    assert!(
        matches!(misfiled, Err(TxError::Store(StoreError::Invariant(_)))),
        "{misfiled:?}"
    );
    assert_eq!(
        store
            .workspace("wrkspc_research")
            .await
            .unwrap()
            .unwrap()
            .archived_at,
        None
    );

    let (archived, keys) = store
        .archive_workspace(
            "wrkspc_research",
            at(3),
            audit_entry(&org, "workspace.archived", "wrkspc_research"),
        )
        .await
        .unwrap();
    assert_eq!(archived.archived_at, Some(at(3)));
    assert_eq!(keys, 2);
    assert_eq!(store.workspace("wrkspc_research").await.unwrap(), Some(archived));
    for id in ["apikey_1", "apikey_2"] {
        assert_eq!(store.key(id).await.unwrap().unwrap().status, KeyStatus::Archived);
    }
    assert_eq!(
        store.key("apikey_3").await.unwrap().unwrap().status,
        KeyStatus::Active
    );
    let events = store.audit_events(&org.org_id).await.unwrap();
    assert_eq!(
        events,
        vec![audit_entry(&org, "workspace.archived", "wrkspc_research")]
    );
    assert!(store.audit_events(&other.org_id).await.unwrap().is_empty());

    assert_eq!(
        rejection(
            store
                .archive_workspace(
                    "wrkspc_research",
                    at(4),
                    audit_entry(&org, "workspace.archived", "wrkspc_research"),
                )
                .await
        ),
        WorkspaceRejection::Archived
    );
    assert_eq!(
        rejection(store.rename_workspace("wrkspc_research", "other").await),
        WorkspaceRejection::Archived
    );
    assert_eq!(
        rejection(
            store
                .archive_workspace(
                    "wrkspc_missing",
                    at(4),
                    audit_entry(&org, "workspace.archived", "wrkspc_missing"),
                )
                .await
        ),
        WorkspaceRejection::Unknown
    );
    assert_eq!(store.audit_events(&org.org_id).await.unwrap().len(), 1);
}

/// Goal: users are unique by email in an organization; deleting one drops their
/// memberships.
pub(crate) async fn users_and_members_round_trip(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let other = create_org(store, "globex").await;
    let alice = store
        .insert_user(&user(&org, "user_alice", "alice@example.com", 1))
        .await
        .unwrap();
    assert_eq!(alice.added_at, at(1));
    let bob = store
        .insert_user(&user(&org, "user_bob", "bob@example.com", 2))
        .await
        .unwrap();
    assert_eq!(
        rejection(
            store
                .insert_user(&user(&org, "user_alice_2", "alice@example.com", 3))
                .await
        ),
        DirectoryRejection::AlreadyMember("alice@example.com".to_owned())
    );
    // The same email in another organization is another user.
    let elsewhere = store
        .insert_user(&user(&other, "user_alice_globex", "alice@example.com", 3))
        .await
        .unwrap();
    assert_eq!(store.user("user_alice").await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user("user_missing").await.unwrap(), None);
    assert_eq!(
        store.users(&org.org_id).await.unwrap(),
        vec![alice.clone(), bob.clone()]
    );
    assert_eq!(store.users(&other.org_id).await.unwrap(), vec![elsewhere]);

    assert!(store.set_user_role("user_bob", OrgRole::Admin).await.unwrap());
    assert_eq!(
        store.user("user_bob").await.unwrap().unwrap().role,
        OrgRole::Admin
    );
    assert!(!store.set_user_role("user_missing", OrgRole::Admin).await.unwrap());

    let member = |user_id: &str, role: WorkspaceRole, minute: i64| MemberRecord {
        workspace_id: org.workspace_id.clone(),
        user_id: user_id.to_owned(),
        role,
        added_at: at(minute),
    };
    let alice_member = store
        .set_member(&org.org_id, &member("user_alice", WorkspaceRole::Developer, 4))
        .await
        .unwrap();
    assert_eq!(alice_member, member("user_alice", WorkspaceRole::Developer, 4));
    // A second set changes the role and keeps when the member was added.
    assert_eq!(
        store
            .set_member(&org.org_id, &member("user_alice", WorkspaceRole::Admin, 9))
            .await
            .unwrap(),
        member("user_alice", WorkspaceRole::Admin, 4)
    );
    store
        .set_member(&org.org_id, &member("user_bob", WorkspaceRole::User, 5))
        .await
        .unwrap();
    assert_eq!(
        store.members(&org.workspace_id).await.unwrap(),
        vec![
            member("user_alice", WorkspaceRole::Admin, 4),
            member("user_bob", WorkspaceRole::User, 5)
        ]
    );
    assert_eq!(
        store.member(&org.workspace_id, "user_bob").await.unwrap(),
        Some(member("user_bob", WorkspaceRole::User, 5))
    );
    // A user of another organization can't join this one's workspace.
    let cross = store
        .set_member(&org.org_id, &member("user_alice_globex", WorkspaceRole::User, 6))
        .await;
    assert!(matches!(cross, Err(StoreError::Database(_))), "{cross:?}");
    let cross = store
        .set_member(
            &other.org_id,
            &member("user_alice_globex", WorkspaceRole::User, 6),
        )
        .await;
    assert!(matches!(cross, Err(StoreError::Database(_))), "{cross:?}");

    assert!(store.delete_member(&org.workspace_id, "user_bob").await.unwrap());
    assert!(!store.delete_member(&org.workspace_id, "user_bob").await.unwrap());
    assert!(store.delete_user("user_alice").await.unwrap());
    assert!(!store.delete_user("user_alice").await.unwrap());
    assert_eq!(store.user("user_alice").await.unwrap(), None);
    assert!(store.members(&org.workspace_id).await.unwrap().is_empty());
    assert_eq!(
        store.users(&org.org_id).await.unwrap(),
        vec![UserRecord {
            role: OrgRole::Admin,
            ..bob
        }]
    );
}

/// Goal: a service account's name is unique in its organization; its key names it; leaving
/// a workspace archives its keys there and archiving it archives the rest, each in the
/// transaction that audits it, and an archived account changes no more. A key written
/// where the account is no member (as one racing the change would be) is swept up too.
pub(crate) async fn archiving_a_service_account_archives_its_keys(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let account = ServiceAccountRecord {
        id: "svac_robot".to_owned(),
        org_id: org.org_id.clone(),
        name: "robot".to_owned(),
        description: "deploys".to_owned(),
        role: OrgRole::Developer,
        created_at: at(1),
        updated_at: at(1),
        archived_at: None,
    };
    let audit = |action: &str| audit_entry(&org, action, "svac_robot");
    assert!(
        store
            .insert_service_account(&account, audit("create"))
            .await
            .unwrap()
    );
    let twin = ServiceAccountRecord {
        id: "svac_twin".to_owned(),
        ..account.clone()
    };
    assert!(
        !store
            .insert_service_account(&twin, audit("create"))
            .await
            .unwrap(),
        "the name is taken"
    );
    assert_eq!(
        store.service_account("svac_robot").await.unwrap(),
        Some(account.clone())
    );
    assert_eq!(store.service_account("svac_twin").await.unwrap(), None);

    let other_workspace = store
        .create_workspace(&org.org_id, "wrkspc_other", "Other", at(2))
        .await
        .unwrap();
    for workspace_id in [org.workspace_id.as_str(), other_workspace.id.as_str()] {
        let membership = ServiceAccountMembership {
            service_account_id: "svac_robot".to_owned(),
            workspace_id: workspace_id.to_owned(),
            role: WorkspaceRole::Developer,
            added_at: at(3),
        };
        store
            .set_service_account_membership(&membership, audit("join"))
            .await
            .unwrap();
        assert_eq!(
            store
                .service_account_membership("svac_robot", workspace_id)
                .await
                .unwrap(),
            Some(membership)
        );
    }
    let bound_key = |id: &str, workspace_id: &str| NewKey {
        service_account_id: Some("svac_robot".to_owned()),
        ..new_key(&org, id, Some(workspace_id), 4)
    };
    let creator = CreatedBy::User("user_admin".to_owned());
    let here = store
        .insert_key_by(bound_key("apikey_here", &org.workspace_id), &creator)
        .await
        .unwrap();
    assert_eq!(here.record.service_account_id.as_deref(), Some("svac_robot"));
    store
        .insert_key_by(bound_key("apikey_there", &other_workspace.id), &creator)
        .await
        .unwrap();
    store
        .insert_key_by(
            new_key(&org, "apikey_shared", Some(&org.workspace_id), 5),
            &creator,
        )
        .await
        .unwrap();
    let third_workspace = store
        .create_workspace(&org.org_id, "wrkspc_third", "Third", at(2))
        .await
        .unwrap();
    store
        .insert_key_by(bound_key("apikey_late", &third_workspace.id), &creator)
        .await
        .unwrap();
    let status = |id: &'static str| async move { store.key(id).await.unwrap().unwrap().status };

    assert!(
        store
            .remove_service_account_membership("svac_robot", &other_workspace.id, audit("leave"))
            .await
            .unwrap()
    );
    assert_eq!(status("apikey_there").await, KeyStatus::Archived);
    assert_eq!(status("apikey_late").await, KeyStatus::Archived, "swept up");
    assert_eq!(status("apikey_here").await, KeyStatus::Active);

    assert!(
        store
            .archive_service_account("svac_robot", at(6), audit("archive"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .archive_service_account("svac_robot", at(7), audit("archive"))
            .await
            .unwrap()
    );
    assert_eq!(status("apikey_here").await, KeyStatus::Archived);
    assert_eq!(status("apikey_shared").await, KeyStatus::Active, "only its keys");
    assert_eq!(
        store
            .service_account("svac_robot")
            .await
            .unwrap()
            .unwrap()
            .archived_at,
        Some(at(6))
    );
    assert!(
        !store
            .update_service_account("svac_robot", "again", OrgRole::User, at(8), audit("update"))
            .await
            .unwrap(),
        "an archived account changes no more"
    );
    let actions: Vec<String> = store
        .audit_events(&org.org_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|entry| entry.subject == "svac_robot")
        .map(|entry| entry.action)
        .collect();
    assert_eq!(actions, ["create", "join", "join", "leave", "archive"]);
}

/// Goal: a personal key keeps its user and allowed models, and removing the user archives
/// their personal keys (and only theirs) in the same transaction, so no process that reads
/// the key afterwards accepts it.
pub(crate) async fn removing_a_user_archives_their_personal_keys(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    store
        .insert_user(&user(&org, "user_alice", "alice@example.com", 1))
        .await
        .unwrap();
    let allowed = AllowedModels::from_stored(vec!["claude-sonnet-4-6".to_owned(), "sonnet".to_owned()]);
    let personal = store
        .insert_key_by(
            NewKey {
                user_id: Some("user_alice".to_owned()),
                allowed_models: allowed.clone(),
                ..new_key(&org, "apikey_alice", Some(&org.workspace_id), 2)
            },
            &CreatedBy::User("user_alice".to_owned()),
        )
        .await
        .unwrap();
    assert_eq!(personal.record.user_id.as_deref(), Some("user_alice"));
    assert!(personal.record.is_personal());
    assert_eq!(personal.record.allowed_models, allowed);
    let workspace_key = store
        .insert_key_by(
            new_key(&org, "apikey_shared", Some(&org.workspace_id), 3),
            &CreatedBy::User("user_alice".to_owned()),
        )
        .await
        .unwrap();
    assert!(!workspace_key.record.is_personal());
    assert!(workspace_key.record.allowed_models.allows_all());
    assert!(
        store
            .set_key_allowed_models(
                "apikey_shared",
                &AllowedModels::from_stored(vec!["gpt-4o".to_owned()])
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .key_by_hash("hash_of_apikey_shared")
            .await
            .unwrap()
            .unwrap()
            .allowed_models
            .entries(),
        ["gpt-4o"]
    );

    assert!(store.delete_user("user_alice").await.unwrap());
    let personal = store.key_by_hash("hash_of_apikey_alice").await.unwrap().unwrap();
    assert_eq!(personal.status, KeyStatus::Archived);
    assert_eq!(
        personal.user_id.as_deref(),
        Some("user_alice"),
        "the key still names its owner"
    );
    assert_eq!(
        store.key("apikey_shared").await.unwrap().unwrap().status,
        KeyStatus::Active,
        "keys the user only created stay"
    );
}

/// Goal: one pending invite per email, none for a member, and an invite is accepted once,
/// before it expires, adding its user in the same transaction.
pub(crate) async fn invites_are_pending_until_accepted_once(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    store
        .insert_user(&user(&org, "user_alice", "alice@example.com", 1))
        .await
        .unwrap();
    assert_eq!(
        rejection(
            store
                .insert_invite(&invite(&org, "invite_alice", "alice@example.com", 2))
                .await
        ),
        DirectoryRejection::AlreadyMember("alice@example.com".to_owned())
    );
    let carol = store
        .insert_invite(&invite(&org, "invite_carol", "carol@example.com", 2))
        .await
        .unwrap();
    assert_eq!(carol.invited_at, at(2));
    assert_eq!(carol.expires_at, at(62));
    assert_eq!(
        rejection(
            store
                .insert_invite(&invite(&org, "invite_carol_2", "carol@example.com", 3))
                .await
        ),
        DirectoryRejection::AlreadyInvited("carol@example.com".to_owned())
    );
    // Once the first has expired, the email may be invited again.
    let carol_again = store
        .insert_invite(&invite(&org, "invite_carol_2", "carol@example.com", 70))
        .await
        .unwrap();
    let dave = store
        .insert_invite(&invite(&org, "invite_dave", "dave@example.com", 71))
        .await
        .unwrap();
    assert_eq!(store.invite("invite_carol").await.unwrap(), Some(carol.clone()));
    assert_eq!(store.invite("invite_missing").await.unwrap(), None);
    assert_eq!(
        store.invites(&org.org_id).await.unwrap(),
        vec![carol, carol_again, dave]
    );

    // Past its expiry an invite can't be accepted.
    assert_eq!(
        rejection(
            store
                .accept_invite("invite_carol", &user(&org, "user_carol", "carol@example.com", 63))
                .await
        ),
        DirectoryRejection::InviteNotPending
    );
    // Nor by someone else's email.
    assert_eq!(
        rejection(
            store
                .accept_invite("invite_carol_2", &user(&org, "user_eve", "eve@example.com", 72))
                .await
        ),
        DirectoryRejection::InviteNotPending
    );
    let carol_user = store
        .accept_invite(
            "invite_carol_2",
            &user(&org, "user_carol", "carol@example.com", 72),
        )
        .await
        .unwrap();
    assert_eq!(carol_user.added_at, at(72));
    assert_eq!(store.user("user_carol").await.unwrap(), Some(carol_user));
    assert_eq!(
        store.invite("invite_carol_2").await.unwrap().unwrap().state,
        InviteState::Accepted
    );
    assert_eq!(
        rejection(
            store
                .accept_invite(
                    "invite_carol_2",
                    &user(&org, "user_carol_2", "carol@example.com", 73)
                )
                .await
        ),
        DirectoryRejection::InviteNotPending
    );

    // An invite whose email became a member meanwhile is refused whole: still pending.
    store
        .insert_user(&user(&org, "user_dave", "dave@example.com", 72))
        .await
        .unwrap();
    assert_eq!(
        rejection(
            store
                .accept_invite("invite_dave", &user(&org, "user_dave_2", "dave@example.com", 73))
                .await
        ),
        DirectoryRejection::AlreadyMember("dave@example.com".to_owned())
    );
    assert_eq!(
        store.invite("invite_dave").await.unwrap().unwrap().state,
        InviteState::Pending
    );
    assert!(store.delete_invite("invite_dave").await.unwrap());
    assert!(!store.delete_invite("invite_dave").await.unwrap());
    assert_eq!(store.invites(&org.org_id).await.unwrap().len(), 2);
}

/// Goal: the hourly rollup the trigger keeps and the minute buckets read from the records
/// agree with the records: only billed statuses count, by workspace, key, model and
/// context window, and the recomputation finds nothing wrong.
pub(crate) async fn usage_reports_roll_records_up(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let other = create_org(store, "globex").await;
    store
        .insert_key(new_key(&org, "apikey_1", Some(&org.workspace_id), 0))
        .await
        .unwrap();
    let mut keyed = usage_record(&org, "req_keyed", NanoUsd::ZERO, at(1), at(2));
    keyed.api_key_id = Some("apikey_1".to_owned());
    keyed.status = UsageStatus::Succeeded;
    let mut same_minute = usage_record(&org, "req_same_minute", NanoUsd::ZERO, at(1), at(2));
    same_minute.api_key_id = Some("apikey_1".to_owned());
    same_minute.status = UsageStatus::ClientDisconnected;
    let mut long = usage_record(&org, "req_long", NanoUsd::ZERO, at(3), at(5));
    long.status = UsageStatus::Succeeded;
    long.usage.input_tokens = 250_000;
    let mut failed = usage_record(&org, "req_failed", NanoUsd::ZERO, at(3), at(5));
    failed.status = UsageStatus::Failed;
    let mut next_hour = usage_record(&org, "req_next_hour", NanoUsd::ZERO, at(59), at(61));
    next_hour.status = UsageStatus::Succeeded;
    let mut elsewhere = usage_record(&other, "req_elsewhere", NanoUsd::ZERO, at(1), at(2));
    elsewhere.status = UsageStatus::Succeeded;
    for record in [&keyed, &same_minute, &long, &failed, &next_hour, &elsewhere] {
        store.insert_usage_record(record.clone()).await.unwrap();
    }

    let hourly = store.usage_hourly(&org.org_id, at(0), at(120)).await.unwrap();
    let summary: Vec<_> = hourly
        .iter()
        .map(|row| {
            (
                row.bucket_start,
                row.api_key_id.clone(),
                row.context_window,
                row.requests,
                row.usage.input_tokens,
                row.charged,
            )
        })
        .collect();
    assert_eq!(summary.len(), 3, "{hourly:#?}");
    assert!(summary.contains(&(
        at(0),
        Some("apikey_1".to_owned()),
        ContextWindow::UpTo200k,
        2,
        240,
        NanoUsd::ZERO
    )));
    assert!(summary.contains(&(at(0), None, ContextWindow::Over200k, 1, 250_000, NanoUsd::ZERO)));
    assert!(summary.contains(&(at(60), None, ContextWindow::UpTo200k, 1, 120, NanoUsd::ZERO)));
    assert_eq!(
        store
            .usage_hourly(&org.org_id, at(60), at(120))
            .await
            .unwrap()
            .len(),
        1
    );

    let by_minute = store.usage_by_minute(&org.org_id, at(0), at(60)).await.unwrap();
    let minutes: Vec<_> = by_minute
        .iter()
        .map(|row| (row.bucket_start, row.api_key_id.clone(), row.requests))
        .collect();
    assert_eq!(
        minutes,
        vec![(at(2), Some("apikey_1".to_owned()), 2), (at(5), None, 1)]
    );
    assert_eq!(by_minute[0].usage.output_tokens, 90);
    assert_eq!(by_minute[0].workspace_id, org.workspace_id);
    assert_eq!(by_minute[0].model, "claude-haiku-4-5");

    assert_eq!(
        store.settled_charges(&org.org_id, at(0), at(120)).await.unwrap(),
        NanoUsd::ZERO
    );
    assert_eq!(store.usage_rollup_problems().await.unwrap(), Vec::<String>::new());
}

/// Goal: what the reports charge is what the ledger settled: the hourly rollup and the
/// minute buckets carry each settlement's charge, and their sum equals the settled charges
/// of the window.
pub(crate) async fn usage_reports_equal_the_settled_charges(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_a", LotKind::Purchase, usd(10), at(0), None).await;
    for (id, cost, minute) in [
        ("rsv_1", cents(150), 2),
        ("rsv_2", cents(25), 2),
        ("rsv_3", usd(1), 75),
    ] {
        store
            .reserve(new_reservation(&org, id, usd(2), at(minute - 1), at(minute + 10)))
            .await
            .unwrap();
        store
            .settle(settlement(&org, id, cost, at(minute)))
            .await
            .unwrap();
    }
    // A voided reservation's failed request is recorded but never charged.
    store
        .reserve(new_reservation(&org, "rsv_void", usd(2), at(3), at(13)))
        .await
        .unwrap();
    store
        .settle(settlement(&org, "rsv_void", NanoUsd::ZERO, at(4)))
        .await
        .unwrap();

    let charged = |rows: &[UsageRollupRow]| -> NanoUsd {
        rows.iter().fold(NanoUsd::ZERO, |total, row| {
            total.checked_add(row.charged).unwrap()
        })
    };
    let first_hour = store.usage_hourly(&org.org_id, at(0), at(60)).await.unwrap();
    assert_eq!(first_hour.len(), 1, "{first_hour:#?}");
    assert_eq!(first_hour[0].requests, 2);
    assert_eq!(first_hour[0].charged, cents(175));
    assert_eq!(
        store.settled_charges(&org.org_id, at(0), at(60)).await.unwrap(),
        cents(175)
    );
    let both_hours = store.usage_hourly(&org.org_id, at(0), at(120)).await.unwrap();
    assert_eq!(charged(&both_hours), cents(275));
    assert_eq!(
        store.settled_charges(&org.org_id, at(0), at(120)).await.unwrap(),
        cents(275)
    );
    let by_minute = store.usage_by_minute(&org.org_id, at(0), at(120)).await.unwrap();
    assert_eq!(
        by_minute
            .iter()
            .map(|row| (row.bucket_start, row.requests, row.charged))
            .collect::<Vec<_>>(),
        vec![(at(2), 2, cents(175)), (at(75), 1, usd(1))]
    );
    assert_eq!(store.usage_rollup_problems().await.unwrap(), Vec::<String>::new());
    assert_healthy(store).await;
}

/// Goal: admins racing to invite the same email leave exactly one pending invite.
pub(crate) async fn racing_invites_leave_one_pending(backend: &impl Backend) {
    let store = Arc::new(backend.store().clone());
    let org = create_org(&store, "acme").await;
    let mut tasks = Vec::new();
    for index in 0..8 {
        let store = Arc::clone(&store);
        let invite = invite(&org, &format!("invite_{index}"), "carol@example.com", 1);
        tasks.push(tokio::spawn(async move { store.insert_invite(&invite).await }));
    }
    let mut invited = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => invited += 1,
            Err(TxError::Rejected(DirectoryRejection::AlreadyInvited(_))) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(invited, 1);
    assert_eq!(store.invites(&org.org_id).await.unwrap().len(), 1);
}

/// Goal: deactivating a user records when, archives their personal keys (only theirs) and
/// ends their Console sessions in one transaction; a second deactivation changes nothing;
/// reactivating removes only the record, so the keys stay archived.
pub(crate) async fn deactivating_a_user_archives_their_keys_and_ends_their_sessions(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    for (id, email, minute) in [
        ("user_alice", "alice@example.com", 1),
        ("user_bob", "bob@example.com", 2),
    ] {
        store.insert_user(&user(&org, id, email, minute)).await.unwrap();
        store
            .insert_key_by(
                NewKey {
                    user_id: Some(id.to_owned()),
                    ..new_key(&org, &format!("apikey_{id}"), Some(&org.workspace_id), minute)
                },
                &CreatedBy::User(id.to_owned()),
            )
            .await
            .unwrap();
        store
            .insert_console_session(&tollgate_store::ConsoleSession {
                token_hash: format!("session_of_{id}"),
                user_id: id.to_owned(),
                csrf_token: "csrf".to_owned(),
                created_at: at(minute),
                expires_at: at(minute + 100_000),
            })
            .await
            .unwrap();
    }
    assert_eq!(store.user_deactivated_at("user_alice").await.unwrap(), None);

    assert!(store.deactivate_user("user_alice", at(10)).await.unwrap());
    assert!(
        !store.deactivate_user("user_alice", at(20)).await.unwrap(),
        "once"
    );
    assert_eq!(
        store.user_deactivated_at("user_alice").await.unwrap(),
        Some(at(10))
    );
    assert_eq!(
        store
            .deactivated_users(&org.org_id)
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![("user_alice".to_owned(), at(10))]
    );
    let status = async |id: &str| {
        store
            .key_by_hash(&format!("hash_of_apikey_{id}"))
            .await
            .unwrap()
            .unwrap()
            .status
    };
    assert_eq!(status("user_alice").await, KeyStatus::Archived);
    assert_eq!(status("user_bob").await, KeyStatus::Active, "only hers");
    assert!(
        store
            .console_session("session_of_user_alice", at(50))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .console_session("session_of_user_bob", at(50))
            .await
            .unwrap()
            .is_some()
    );
    assert!(!store.deactivate_user("user_nobody", at(10)).await.unwrap());

    assert!(store.reactivate_user("user_alice").await.unwrap());
    assert!(!store.reactivate_user("user_alice").await.unwrap());
    assert_eq!(store.user_deactivated_at("user_alice").await.unwrap(), None);
    assert_eq!(
        status("user_alice").await,
        KeyStatus::Archived,
        "keys stay archived"
    );
}

/// Goal: ending a person's access (single sign-on's lost groups) archives their personal
/// keys and ends their sessions as deactivating does, but records no deactivation; and
/// their kept refresh token is checked by one claimant at a time, rotated only from the
/// token that was read, and gone with the user.
pub(crate) async fn ending_access_and_refresh_tokens_of_single_sign_on(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    for (id, email, minute) in [
        ("user_alice", "alice@example.com", 1),
        ("user_bob", "bob@example.com", 2),
    ] {
        store.insert_user(&user(&org, id, email, minute)).await.unwrap();
        store
            .insert_key_by(
                NewKey {
                    user_id: Some(id.to_owned()),
                    ..new_key(&org, &format!("apikey_{id}"), Some(&org.workspace_id), minute)
                },
                &CreatedBy::User(id.to_owned()),
            )
            .await
            .unwrap();
        store
            .insert_console_session(&tollgate_store::ConsoleSession {
                token_hash: format!("session_of_{id}"),
                user_id: id.to_owned(),
                csrf_token: "csrf".to_owned(),
                created_at: at(minute),
                expires_at: at(minute + 100_000),
            })
            .await
            .unwrap();
        store
            .keep_sso_refresh_token(&tollgate_store::SsoRefreshToken {
                user_id: id.to_owned(),
                subject: format!("sub-{id}"),
                refresh_token: format!("refresh-{id}-1"),
                checked_at: at(minute),
            })
            .await
            .unwrap();
    }

    assert_eq!(store.end_user_access("user_alice").await.unwrap(), 1);
    assert_eq!(store.end_user_access("user_alice").await.unwrap(), 0, "once");
    let status = async |id: &str| {
        store
            .key_by_hash(&format!("hash_of_apikey_{id}"))
            .await
            .unwrap()
            .unwrap()
            .status
    };
    assert_eq!(status("user_alice").await, KeyStatus::Archived);
    assert_eq!(status("user_bob").await, KeyStatus::Active, "only hers");
    let session = async |id: &str| {
        store
            .console_session(&format!("session_of_{id}"), at(50))
            .await
            .unwrap()
            .is_some()
    };
    assert!(!session("user_alice").await);
    assert!(session("user_bob").await);
    assert_eq!(
        store.user_deactivated_at("user_alice").await.unwrap(),
        None,
        "not deactivated"
    );

    // Due: only the tokens last checked by then, the longest unchecked first.
    let due = store.sso_refresh_tokens_checked_before(at(1)).await.unwrap();
    assert_eq!(
        due.iter().map(|token| token.user_id.as_str()).collect::<Vec<_>>(),
        vec!["user_alice"]
    );
    let due = store.sso_refresh_tokens_checked_before(at(5)).await.unwrap();
    assert_eq!(due.len(), 2);
    let bob = due[1].clone();
    assert_eq!(
        (bob.user_id.as_str(), bob.subject.as_str()),
        ("user_bob", "sub-user_bob")
    );
    assert!(store.claim_sso_refresh_check(&bob, at(10)).await.unwrap());
    assert!(
        !store.claim_sso_refresh_check(&bob, at(10)).await.unwrap(),
        "one claimant"
    );
    assert!(
        store
            .checked_sso_refresh_token("user_bob", "refresh-user_bob-1", "refresh-user_bob-2", at(11))
            .await
            .unwrap()
    );
    assert!(
        !store
            .checked_sso_refresh_token("user_bob", "refresh-user_bob-1", "refresh-user_bob-3", at(12))
            .await
            .unwrap(),
        "only from the token read"
    );
    let kept = store.sso_refresh_tokens_checked_before(at(20)).await.unwrap();
    let bob = kept.iter().find(|token| token.user_id == "user_bob").unwrap();
    assert_eq!(
        (bob.refresh_token.as_str(), bob.checked_at),
        ("refresh-user_bob-2", at(11))
    );
    assert!(
        !store
            .delete_sso_refresh_token("user_bob", "refresh-user_bob-1")
            .await
            .unwrap(),
        "a replaced token is not deleted"
    );
    assert!(
        store
            .delete_sso_refresh_token("user_bob", "refresh-user_bob-2")
            .await
            .unwrap()
    );
    store.delete_user("user_alice").await.unwrap();
    assert!(
        store
            .sso_refresh_tokens_checked_before(at(20))
            .await
            .unwrap()
            .is_empty(),
        "gone with the user"
    );
}
