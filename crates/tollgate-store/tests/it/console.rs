//! Conformance of the Console's sign-in state: sessions are found only by their token hash
//! and only until they expire, setup tokens are redeemed once, and failed sign-ins are
//! counted per window.

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

pub(crate) async fn a_setup_token_is_redeemed_once(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    store
        .insert_setup_token("setup_hash", &org.org_id, at(0), at(60))
        .await
        .unwrap();
    store
        .insert_setup_token("old_hash", &org.org_id, at(0), at(5))
        .await
        .unwrap();
    assert!(store.setup_token_valid("setup_hash", at(1)).await.unwrap());
    assert!(!store.setup_token_valid("old_hash", at(5)).await.unwrap());
    assert_eq!(
        store.redeem_setup_token("old_hash", at(5)).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        store.redeem_setup_token("setup_hash", at(1)).await.unwrap(),
        Some(org.org_id.clone())
    );
    assert_eq!(
        store.redeem_setup_token("setup_hash", at(2)).await.unwrap(),
        None,
        "used"
    );
    assert!(!store.setup_token_valid("setup_hash", at(2)).await.unwrap());
}

pub(crate) async fn sign_in_failures_are_counted_per_window(backend: &impl Backend) {
    let store = backend.store();
    assert_eq!(
        store
            .sign_in_failures("email:a@example.com", at(0))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .record_sign_in_failure("email:a@example.com", at(0))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .record_sign_in_failure("email:a@example.com", at(0))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store.record_sign_in_failure("ip:127.0.0.1", at(0)).await.unwrap(),
        1
    );
    assert_eq!(
        store
            .sign_in_failures("email:a@example.com", at(0))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .sign_in_failures("email:a@example.com", at(15))
            .await
            .unwrap(),
        0,
        "a new window"
    );
    assert_eq!(
        store
            .record_sign_in_failure("email:a@example.com", at(15))
            .await
            .unwrap(),
        1
    );
    store.clear_sign_in_failures("email:a@example.com").await.unwrap();
    assert_eq!(
        store
            .sign_in_failures("email:a@example.com", at(15))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.sign_in_failures("ip:127.0.0.1", at(0)).await.unwrap(), 1);
}
