//! Conformance of the Console's sign-in state: sessions are found only by their token hash
//! and only until they expire; there is one setup link at a time, it is redeemed once and
//! is dead once an admin exists; sign-in attempts are claimed per window, before the
//! password check, never past their limit.

use tollgate_core::roles::OrgRole;
use tollgate_store::{ConsoleSession, UserRecord};

use crate::conformance::Backend;
use crate::fixtures::{at, create_org};

fn user(org_id: &str, id: &str, email: &str) -> UserRecord {
    UserRecord {
        id: id.to_owned(),
        org_id: org_id.to_owned(),
        email: email.to_owned(),
        name: format!("{id} name"),
        role: OrgRole::Admin,
        added_at: at(0),
    }
}

pub(crate) async fn sessions_are_found_by_hash_until_they_expire(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    store
        .insert_user(&user(&org.org_id, "user_ada", "ada@example.com"))
        .await
        .unwrap();
    assert!(!store.any_password_set().await.unwrap());
    assert!(
        store
            .set_password_hash("user_ada", "$argon2id$first", at(1))
            .await
            .unwrap()
    );
    assert!(
        store
            .set_password_hash("user_ada", "$argon2id$second", at(2))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_password_hash("user_nobody", "$argon2id$x", at(2))
            .await
            .unwrap()
    );
    assert!(store.any_password_set().await.unwrap());
    let candidates = store.sign_in_candidates("ada@example.com").await.unwrap();
    assert_eq!(candidates.len(), 1);
    assert_eq!(candidates[0].0.id, "user_ada");
    assert_eq!(candidates[0].1, "$argon2id$second");
    assert!(
        store
            .sign_in_candidates("bob@example.com")
            .await
            .unwrap()
            .is_empty()
    );

    let session = ConsoleSession {
        token_hash: "hash_one".into(),
        user_id: "user_ada".into(),
        csrf_token: "csrf_one".into(),
        created_at: at(10),
        expires_at: at(70),
    };
    store.insert_console_session(&session).await.unwrap();
    let (found, found_user) = store.console_session("hash_one", at(69)).await.unwrap().unwrap();
    assert_eq!(found, session);
    assert_eq!(found_user.email, "ada@example.com");
    assert!(store.console_session("hash_two", at(11)).await.unwrap().is_none());
    assert!(
        store.console_session("hash_one", at(70)).await.unwrap().is_none(),
        "expired"
    );
    assert_eq!(store.delete_expired_console_sessions(at(70)).await.unwrap(), 1);
    store
        .insert_console_session(&ConsoleSession {
            token_hash: "hash_two".into(),
            expires_at: at(200),
            ..session.clone()
        })
        .await
        .unwrap();
    assert!(store.delete_console_session("hash_two").await.unwrap());
    assert!(!store.delete_console_session("hash_two").await.unwrap());
    assert!(
        store.console_session("hash_two", at(11)).await.unwrap().is_none(),
        "signed out"
    );
}

/// Goal: a setup link works once, until it expires.
pub(crate) async fn a_setup_link_is_redeemed_once(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    assert!(
        store
            .mint_setup_link("old_hash", &org.org_id, at(0), at(5))
            .await
            .unwrap()
    );
    assert!(!store.setup_link_valid("old_hash", at(5)).await.unwrap());
    assert_eq!(
        store.redeem_setup_link("old_hash", at(5)).await.unwrap(),
        None,
        "expired"
    );
    assert!(
        store
            .mint_setup_link("setup_hash", &org.org_id, at(0), at(60))
            .await
            .unwrap()
    );
    assert!(store.setup_link_valid("setup_hash", at(1)).await.unwrap());
    assert_eq!(
        store.redeem_setup_link("setup_hash", at(1)).await.unwrap(),
        Some(org.org_id.clone())
    );
    assert_eq!(
        store.redeem_setup_link("setup_hash", at(2)).await.unwrap(),
        None,
        "used"
    );
    assert!(!store.setup_link_valid("setup_hash", at(2)).await.unwrap());
}

/// Goal: minting a setup link (each start of each replica does) replaces the one before.
pub(crate) async fn only_the_latest_setup_link_is_valid(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    for hash in ["first_hash", "second_hash"] {
        assert!(
            store
                .mint_setup_link(hash, &org.org_id, at(0), at(60))
                .await
                .unwrap()
        );
    }
    assert!(!store.setup_link_valid("first_hash", at(1)).await.unwrap());
    assert_eq!(store.redeem_setup_link("first_hash", at(1)).await.unwrap(), None);
    assert_eq!(
        store.redeem_setup_link("second_hash", at(1)).await.unwrap(),
        Some(org.org_id.clone())
    );
}

/// Goal: once someone can sign in, no setup link is minted and the one minted before is
/// dead.
pub(crate) async fn no_setup_link_once_someone_can_sign_in(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    assert!(
        store
            .mint_setup_link("setup_hash", &org.org_id, at(0), at(60))
            .await
            .unwrap()
    );
    store
        .insert_user(&UserRecord {
            role: OrgRole::Developer,
            ..user(&org.org_id, "user_dev", "dev@example.com")
        })
        .await
        .unwrap();
    assert!(
        store
            .set_password_hash("user_dev", "$argon2id$x", at(1))
            .await
            .unwrap()
    );
    assert!(!store.setup_link_valid("setup_hash", at(2)).await.unwrap());
    assert_eq!(store.redeem_setup_link("setup_hash", at(2)).await.unwrap(), None);
    assert!(
        !store
            .mint_setup_link("later_hash", &org.org_id, at(2), at(60))
            .await
            .unwrap(),
        "someone can sign in"
    );
    assert!(!store.setup_link_valid("later_hash", at(3)).await.unwrap());
}

/// Goal: an admin without a password (yet) is enough to kill the setup link too.
pub(crate) async fn no_setup_link_once_an_organization_has_an_admin(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    assert!(
        store
            .mint_setup_link("setup_hash", &org.org_id, at(0), at(60))
            .await
            .unwrap()
    );
    store
        .insert_user(&user(&org.org_id, "user_ada", "ada@example.com"))
        .await
        .unwrap();
    assert!(!store.setup_link_valid("setup_hash", at(1)).await.unwrap());
    assert_eq!(store.redeem_setup_link("setup_hash", at(1)).await.unwrap(), None);
    assert!(
        !store
            .mint_setup_link("later_hash", &org.org_id, at(1), at(60))
            .await
            .unwrap()
    );
}

/// Goal: an attempt is counted before the password is checked, in every bucket or none,
/// and refused once a bucket is full; a new window starts from zero.
pub(crate) async fn sign_in_attempts_are_claimed_per_window(backend: &impl Backend) {
    let store = backend.store();
    let email = "email:a@example.com";
    let client = "client:127.0.0.1";
    assert_eq!(store.sign_in_attempts(email, at(0)).await.unwrap(), 0);
    for _ in 0..2 {
        assert!(
            store
                .claim_sign_in_attempt(&[(email, 2), (client, 3)], at(0))
                .await
                .unwrap()
        );
    }
    assert!(
        !store
            .claim_sign_in_attempt(&[(email, 2), (client, 3)], at(0))
            .await
            .unwrap(),
        "the email's bucket is full"
    );
    assert_eq!(store.sign_in_attempts(email, at(0)).await.unwrap(), 2);
    assert_eq!(
        store.sign_in_attempts(client, at(0)).await.unwrap(),
        2,
        "a refused claim counts in no bucket"
    );
    store.return_sign_in_attempt(email, at(0)).await.unwrap();
    assert_eq!(store.sign_in_attempts(email, at(0)).await.unwrap(), 1);
    assert!(
        store
            .claim_sign_in_attempt(&[(email, 2), (client, 3)], at(0))
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_sign_in_attempt(&[("email:b@example.com", 2), (client, 3)], at(0))
            .await
            .unwrap(),
        "the client's bucket is full"
    );
    assert_eq!(
        store
            .sign_in_attempts("email:b@example.com", at(0))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.sign_in_attempts(email, at(15)).await.unwrap(),
        0,
        "a new window"
    );
    assert!(store.claim_sign_in_attempt(&[(email, 2)], at(15)).await.unwrap());
    assert_eq!(store.sign_in_attempts(email, at(15)).await.unwrap(), 1);
    store.return_sign_in_attempt(email, at(0)).await.unwrap();
    assert_eq!(
        store.sign_in_attempts(email, at(15)).await.unwrap(),
        1,
        "an older window's return takes nothing from this one"
    );
    store.clear_sign_in_attempts(email).await.unwrap();
    assert_eq!(store.sign_in_attempts(email, at(15)).await.unwrap(), 0);
    assert_eq!(store.sign_in_attempts(client, at(0)).await.unwrap(), 3);
}

/// Goal: attempts claimed at the same time, from several tasks, never pass the limit.
pub(crate) async fn racing_sign_in_claims_never_exceed_the_limit(backend: &impl Backend) {
    let store = std::sync::Arc::new(backend.store().clone());
    let mut tasks = Vec::new();
    for index in 0..40 {
        let store = std::sync::Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let client = format!("client:10.0.0.{}", index % 4);
            store
                .claim_sign_in_attempt(&[("email:a@example.com", 10), (client.as_str(), 100)], at(0))
                .await
        }));
    }
    let mut claimed = 0;
    for task in tasks {
        if task.await.expect("task").expect("claim") {
            claimed += 1;
        }
    }
    assert_eq!(claimed, 10);
    assert_eq!(
        store
            .sign_in_attempts("email:a@example.com", at(0))
            .await
            .unwrap(),
        10
    );
}

/// Goal: a device grant is found by its user code while pending, approved once, polled
/// too soon or in time, issued to one poll only, and expired after its time; a refresh
/// token is taken once and not after its expiry; a key's secret rotates only while active.
pub(crate) async fn device_grants_are_approved_once_and_issued_once(backend: &impl Backend) {
    use tollgate_store::DevicePoll;

    let store = backend.store();
    let org = create_org(store, "acme").await;
    store
        .insert_user(&user(&org.org_id, "user_dev", "dev@example.com"))
        .await
        .unwrap();
    assert!(
        store
            .insert_device_grant("hash_a", "BCDF-GHJK", at(1), at(11))
            .await
            .unwrap()
    );
    assert!(
        !store
            .insert_device_grant("hash_b", "BCDF-GHJK", at(1), at(11))
            .await
            .unwrap(),
        "a user code is unique among live grants"
    );
    assert!(store.device_grant_pending("BCDF-GHJK", at(2)).await.unwrap());
    assert_eq!(
        store.poll_device_grant("hash_a", at(2), 4_000).await.unwrap(),
        DevicePoll::Pending { too_soon: false }
    );
    assert_eq!(
        store.poll_device_grant("hash_a", at(2), 4_000).await.unwrap(),
        DevicePoll::Pending { too_soon: true }
    );
    assert!(
        store
            .approve_device_grant("BCDF-GHJK", "user_dev", &org.workspace_id, at(3))
            .await
            .unwrap()
    );
    assert!(
        !store
            .approve_device_grant("BCDF-GHJK", "user_dev", &org.workspace_id, at(3))
            .await
            .unwrap(),
        "approved once"
    );
    assert!(!store.device_grant_pending("BCDF-GHJK", at(3)).await.unwrap());
    assert_eq!(
        store.poll_device_grant("hash_a", at(4), 4_000).await.unwrap(),
        DevicePoll::Issued {
            user_id: "user_dev".to_owned(),
            workspace_id: org.workspace_id.clone(),
        }
    );
    assert_eq!(
        store.poll_device_grant("hash_a", at(4), 4_000).await.unwrap(),
        DevicePoll::Expired,
        "issued once"
    );
    assert!(
        store
            .insert_device_grant("hash_c", "CDFG-HJKL", at(5), at(6))
            .await
            .unwrap()
    );
    assert_eq!(
        store.poll_device_grant("hash_c", at(7), 4_000).await.unwrap(),
        DevicePoll::Expired
    );
    assert!(
        !store
            .approve_device_grant("CDFG-HJKL", "user_dev", &org.workspace_id, at(7))
            .await
            .unwrap()
    );

    store
        .insert_device_refresh_token("refresh_1", "apikey_x", "user_dev", at(1), at(100))
        .await
        .unwrap();
    store
        .insert_device_refresh_token("refresh_2", "apikey_x", "user_dev", at(1), at(2))
        .await
        .unwrap();
    assert_eq!(
        store.take_device_refresh_token("refresh_1", at(3)).await.unwrap(),
        Some(("apikey_x".to_owned(), "user_dev".to_owned()))
    );
    assert_eq!(
        store.take_device_refresh_token("refresh_1", at(3)).await.unwrap(),
        None,
        "once"
    );
    assert_eq!(
        store.take_device_refresh_token("refresh_2", at(3)).await.unwrap(),
        None,
        "expired"
    );
    assert!(
        !store
            .rotate_key_secret("apikey_missing", "h", "hint", at(9))
            .await
            .unwrap()
    );
}
