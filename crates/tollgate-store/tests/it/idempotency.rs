//! Conformance of the control plane's idempotency keys: a key is claimed once per
//! organization, holds its request until answered or given back, keeps its answer, is
//! taken over once expired and purged after; only the claim that took a key may answer it
//! or give it back; and of racing claims exactly one lands.

use tollgate_core::Timestamp;
use tollgate_core::idempotency::{FirstUse, RequestFingerprint, expires_at};
use tollgate_store::{ClaimOutcome, IdempotencyClaim, IdempotentAnswer};

use crate::conformance::Backend;
use crate::fixtures::{at, create_org};

fn claim(org_id: &str, key: &str, body: &str, claimed_at: Timestamp) -> IdempotencyClaim {
    IdempotencyClaim {
        org_id: org_id.to_owned(),
        key: key.to_owned(),
        request: RequestFingerprint::of("POST", "/v1/organizations/workspaces", body.as_bytes()),
        claimed_at,
        expires_at: expires_at(claimed_at),
    }
}

fn answer(body: &str) -> IdempotentAnswer {
    IdempotentAnswer {
        status: 200,
        content_type: Some("application/json".to_owned()),
        location: None,
        body: body.to_owned(),
    }
}

const DAY_MINUTES: i64 = 24 * 60;

pub(crate) async fn idempotency_keys_are_claimed_once_per_organization(backend: &impl Backend) {
    let store = backend.store();
    let acme = create_org(store, "acme").await;
    let globex = create_org(store, "globex").await;
    let first = claim(&acme.org_id, "key-1", r#"{"name":"A"}"#, at(1));
    assert_eq!(
        store.claim_idempotency_key(&first).await.unwrap(),
        ClaimOutcome::Claimed
    );

    // Found again, in flight, with its request.
    let again = claim(&acme.org_id, "key-1", r#"{"name":"B"}"#, at(2));
    let ClaimOutcome::Taken(record) = store.claim_idempotency_key(&again).await.unwrap() else {
        panic!("the key was claimed already");
    };
    assert_eq!(record.request, first.request);
    assert_eq!(record.first_use(), FirstUse::InFlight);
    assert_eq!(record.answer, None);
    assert_eq!((record.claimed_at, record.expires_at), (at(1), expires_at(at(1))));

    // Another organization's key of the same text is its own.
    let other = claim(&globex.org_id, "key-1", r#"{"name":"A"}"#, at(2));
    assert_eq!(
        store.claim_idempotency_key(&other).await.unwrap(),
        ClaimOutcome::Claimed
    );

    // The answer is kept once, by the claim that took the key, and found by repeats.
    let kept = answer(r#"{"id":"wrkspc_1"}"#);
    assert!(
        !store
            .answer_idempotency_key(&acme.org_id, "key-1", at(2), &kept)
            .await
            .unwrap(),
        "another claim's time does not answer it"
    );
    assert!(
        store
            .answer_idempotency_key(&acme.org_id, "key-1", at(1), &kept)
            .await
            .unwrap()
    );
    assert!(
        !store
            .answer_idempotency_key(&acme.org_id, "key-1", at(1), &answer("other"))
            .await
            .unwrap(),
        "an answered key is not answered again"
    );
    assert!(
        !store
            .release_idempotency_key(&acme.org_id, "key-1", at(1))
            .await
            .unwrap(),
        "an answered key is not given back"
    );
    let ClaimOutcome::Taken(record) = store.claim_idempotency_key(&first).await.unwrap() else {
        panic!("the key is answered");
    };
    assert_eq!(record.first_use(), FirstUse::Answered);
    assert_eq!(record.answer, Some(kept));

    // A redirect keeps its location; an empty body stays empty.
    let redirect = claim(&acme.org_id, "key-2", "amount=10", at(3));
    assert_eq!(
        store.claim_idempotency_key(&redirect).await.unwrap(),
        ClaimOutcome::Claimed
    );
    let see_other = IdempotentAnswer {
        status: 303,
        content_type: None,
        location: Some("/console/billing/receipts/purchase_1".to_owned()),
        body: String::new(),
    };
    assert!(
        store
            .answer_idempotency_key(&acme.org_id, "key-2", at(3), &see_other)
            .await
            .unwrap()
    );
    let ClaimOutcome::Taken(record) = store.claim_idempotency_key(&redirect).await.unwrap() else {
        panic!("the key is answered");
    };
    assert_eq!(record.answer, Some(see_other));
}

pub(crate) async fn an_idempotency_key_given_back_may_be_claimed_again(backend: &impl Backend) {
    let store = backend.store();
    let acme = create_org(store, "acme").await;
    let first = claim(&acme.org_id, "key-1", r#"{"name":"A"}"#, at(1));
    assert_eq!(
        store.claim_idempotency_key(&first).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert!(
        !store
            .release_idempotency_key(&acme.org_id, "key-1", at(5))
            .await
            .unwrap(),
        "only the claim that took the key gives it back"
    );
    assert!(
        store
            .release_idempotency_key(&acme.org_id, "key-1", at(1))
            .await
            .unwrap()
    );
    let retry = claim(&acme.org_id, "key-1", r#"{"name":"A"}"#, at(2));
    assert_eq!(
        store.claim_idempotency_key(&retry).await.unwrap(),
        ClaimOutcome::Claimed
    );
}

pub(crate) async fn an_expired_idempotency_key_is_taken_over_and_purged(backend: &impl Backend) {
    let store = backend.store();
    let acme = create_org(store, "acme").await;
    let first = claim(&acme.org_id, "key-1", r#"{"name":"A"}"#, at(0));
    let forgotten = claim(&acme.org_id, "key-2", r#"{"name":"A"}"#, at(0));
    for claimed in [&first, &forgotten] {
        assert_eq!(
            store.claim_idempotency_key(claimed).await.unwrap(),
            ClaimOutcome::Claimed
        );
    }
    // A minute before its expiry the key still holds; at its expiry it is as if unused.
    let early = claim(&acme.org_id, "key-1", r#"{"name":"B"}"#, at(DAY_MINUTES - 1));
    assert!(matches!(
        store.claim_idempotency_key(&early).await.unwrap(),
        ClaimOutcome::Taken(_)
    ));
    let later = claim(&acme.org_id, "key-1", r#"{"name":"B"}"#, at(DAY_MINUTES));
    assert_eq!(
        store.claim_idempotency_key(&later).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert!(
        !store
            .answer_idempotency_key(&acme.org_id, "key-1", at(0), &answer("late"))
            .await
            .unwrap(),
        "the expired claim cannot answer the claim that took its key over"
    );
    let ClaimOutcome::Taken(record) = store.claim_idempotency_key(&later).await.unwrap() else {
        panic!("the key is the later claim's");
    };
    assert_eq!(record.request, later.request);
    assert_eq!(record.answer, None);

    // The pass at a day deletes the key nobody took over, not the new claim.
    assert_eq!(
        store
            .delete_expired_idempotency_keys(at(DAY_MINUTES - 1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .delete_expired_idempotency_keys(at(DAY_MINUTES))
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        store.claim_idempotency_key(&later).await.unwrap(),
        ClaimOutcome::Taken(_)
    ));
    let reused = claim(&acme.org_id, "key-2", r#"{"name":"C"}"#, at(DAY_MINUTES + 1));
    assert_eq!(
        store.claim_idempotency_key(&reused).await.unwrap(),
        ClaimOutcome::Claimed
    );
}

pub(crate) async fn racing_idempotency_claims_leave_one_claimant(backend: &impl Backend) {
    let store = std::sync::Arc::new(backend.store().clone());
    let acme = create_org(&store, "acme").await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = std::sync::Arc::clone(&store);
        let claimed = claim(&acme.org_id, "key-1", r#"{"name":"A"}"#, at(1));
        tasks.push(tokio::spawn(async move {
            store.claim_idempotency_key(&claimed).await
        }));
    }
    let mut claimants = 0;
    for task in tasks {
        match task.await.expect("task").expect("claim") {
            ClaimOutcome::Claimed => claimants += 1,
            ClaimOutcome::Taken(record) => assert_eq!(record.first_use(), FirstUse::InFlight),
        }
    }
    assert_eq!(claimants, 1);
}
