//! Conformance of the Message Batches tables: a batch round-trips with its requests, only
//! one runner holds a live claim on a request, a lapsed claim can be taken over, each
//! request ends once, and a batch ends when none of its requests is pending. The money of a
//! batch goes through `reserve` and `settle` like any request's; these tests reserve for
//! each request so that the ledger stays whole.

use tollgate_core::ledger::LotKind;
use tollgate_store::{
    BatchDeletion, BatchPage, BatchRequestCounts, BatchRequestState, BatchStatus, NewBatchRequest,
    NewMessageBatch,
};

use crate::conformance::Backend;
use crate::fixtures::{TestOrg, assert_healthy, at, cents, create_org, grant, new_reservation, usd};

async fn insert_batch(backend: &impl Backend, org: &TestOrg, batch_id: &str, requests: usize) {
    let store = backend.store();
    let mut rows = Vec::new();
    for index in 0..requests {
        let reservation_id = format!("rsv_{batch_id}_{index}");
        let mut reservation = new_reservation(org, &reservation_id, cents(1), at(0), at(60 * 25));
        reservation.request_id = format!("req_{batch_id}_{index}");
        store.reserve(reservation).await.expect("reserve");
        rows.push(NewBatchRequest {
            custom_id: format!("item-{index}"),
            request_id: format!("req_{batch_id}_{index}"),
            model: "claude-haiku-4-5".to_owned(),
            params: format!("{{\"n\":{index}}}"),
            reservation_id,
            amount: cents(1),
            upstream_provider: None,
        });
    }
    let batch = NewMessageBatch {
        id: batch_id.to_owned(),
        org_id: org.org_id.clone(),
        workspace_id: org.workspace_id.clone(),
        api_key_id: "apikey_test".to_owned(),
        created_at: at(0),
        expires_at: at(60 * 24),
        anthropic_version: None,
        anthropic_beta: None,
    };
    store
        .insert_message_batch(&batch, &rows)
        .await
        .expect("insert batch");
}

/// Goal: a batch is found by its workspace only, listed newest first with both cursors,
/// claimed by one runner at a time, ended request by request, and deleted once ended.
pub(crate) async fn a_batch_is_claimed_once_and_ends_with_its_requests(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    let other = create_org(store, "other").await;
    grant(store, &org, "lot_acme", LotKind::Purchase, usd(10), at(0), None).await;
    insert_batch(backend, &org, "msgbatch_a", 3).await;
    insert_batch(backend, &org, "msgbatch_b", 1).await;

    let batch = store
        .message_batch(&org.workspace_id, "msgbatch_a")
        .await
        .unwrap()
        .expect("found");
    assert_eq!(batch.status, BatchStatus::InProgress);
    assert_eq!(
        batch.counts,
        BatchRequestCounts {
            processing: 3,
            ..Default::default()
        }
    );
    assert_eq!(
        store
            .message_batch(&other.workspace_id, "msgbatch_a")
            .await
            .unwrap(),
        None
    );

    let ids =
        |batches: Vec<tollgate_store::MessageBatch>| batches.into_iter().map(|b| b.id).collect::<Vec<_>>();
    let newest = store
        .message_batches(&org.workspace_id, &BatchPage::Newest, 10)
        .await
        .unwrap();
    assert_eq!(ids(newest), ["msgbatch_b", "msgbatch_a"]);
    let after = store
        .message_batches(&org.workspace_id, &BatchPage::After("msgbatch_b".into()), 10)
        .await
        .unwrap();
    assert_eq!(ids(after), ["msgbatch_a"]);
    let before = store
        .message_batches(&org.workspace_id, &BatchPage::Before("msgbatch_a".into()), 10)
        .await
        .unwrap();
    assert_eq!(ids(before), ["msgbatch_b"]);

    // One runner takes two; the other gets what is left, never the same request.
    let first = store
        .claim_batch_requests("runner-1", at(1), at(2), 2)
        .await
        .unwrap();
    let second = store
        .claim_batch_requests("runner-2", at(1), at(2), 10)
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(second.len(), 2);
    assert_eq!(first[0].custom_id, "item-0");
    assert_eq!(first[0].org_id, org.org_id);
    assert!(
        first
            .iter()
            .all(|one| second.iter().all(|two| two.request_id != one.request_id))
    );
    assert!(
        store
            .claim_batch_requests("runner-3", at(1), at(2), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Runner 2 dies; its lease lapses and runner 3 takes its requests over.
    let taken_over = store
        .claim_batch_requests("runner-3", at(3), at(4), 10)
        .await
        .unwrap();
    assert_eq!(taken_over.len(), 4, "every lease lapsed at minute 2");
    assert_eq!(first[0].attempt, 1);
    assert_eq!(first[0].batch_created_at, at(0));
    let first_again = taken_over
        .iter()
        .find(|claimed| claimed.request_id == first[0].request_id)
        .expect("taken over");
    assert_eq!(first_again.attempt, 2, "each claim is one more attempt");
    // Runner 1 stalled past its lease: its late fence and its late result are refused;
    // runner 3's own fence passes.
    assert!(
        !store
            .fence_batch_claim(&first[0].request_id, first[0].attempt, at(4))
            .await
            .unwrap()
    );
    assert!(
        !store
            .end_batch_request(
                &first[0].request_id,
                first[0].attempt,
                BatchRequestState::Errored,
                "{}",
                at(3)
            )
            .await
            .unwrap(),
        "a stalled runner's late result does not end a request another holds"
    );
    assert!(
        store
            .fence_batch_claim(&first_again.request_id, first_again.attempt, at(4))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .extend_batch_claims("runner-1", &[first[0].request_id.clone()], at(9))
            .await
            .unwrap(),
        0
    );

    for (index, claimed) in taken_over.iter().enumerate() {
        let state = if index == 0 {
            BatchRequestState::Errored
        } else {
            BatchRequestState::Succeeded
        };
        assert!(
            store
                .end_batch_request(&claimed.request_id, claimed.attempt, state, "{}", at(5))
                .await
                .unwrap()
        );
        assert!(
            !store
                .end_batch_request(&claimed.request_id, claimed.attempt, state, "{}", at(5))
                .await
                .unwrap(),
            "ends once"
        );
        store
            .settle(crate::fixtures::settlement(
                &org,
                &claimed.reservation_id,
                cents(1),
                at(5),
            ))
            .await
            .expect("settle");
    }
    let batch = store
        .message_batch(&org.workspace_id, "msgbatch_a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.status, BatchStatus::Ended);
    assert_eq!(batch.ended_at, Some(at(5)));
    assert_eq!(
        batch.counts,
        BatchRequestCounts {
            succeeded: 2,
            errored: 1,
            ..Default::default()
        }
    );
    let results = store
        .message_batch_results(&org.workspace_id, "msgbatch_a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        results.iter().map(|r| r.custom_id.as_str()).collect::<Vec<_>>(),
        ["item-0", "item-1", "item-2"]
    );
    assert_eq!(
        store
            .message_batch_results(&other.workspace_id, "msgbatch_a")
            .await
            .unwrap(),
        None
    );

    assert_eq!(store.archive_message_batches(at(5), at(6)).await.unwrap(), 2);
    let archived = store
        .message_batch(&org.workspace_id, "msgbatch_a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(archived.archived_at, Some(at(6)));
    assert_eq!(archived.counts.succeeded, 2, "counts outlive the results");

    assert_eq!(
        store
            .delete_message_batch(&other.workspace_id, "msgbatch_a")
            .await
            .unwrap(),
        BatchDeletion::NotFound
    );
    assert_eq!(
        store
            .delete_message_batch(&org.workspace_id, "msgbatch_a")
            .await
            .unwrap(),
        BatchDeletion::Deleted
    );
    assert_eq!(
        store
            .message_batch(&org.workspace_id, "msgbatch_a")
            .await
            .unwrap(),
        None
    );
    assert_healthy(store).await;
}

/// Goal: canceling ends the requests no runner holds, expiry ends the unclaimed rest of a
/// batch past its expiry, both hand back the reservations to void, and a held request still
/// ends its batch when it finishes.
pub(crate) async fn cancel_and_expiry_end_only_unclaimed_requests(backend: &impl Backend) {
    let store = backend.store();
    let org = create_org(store, "acme").await;
    grant(store, &org, "lot_acme", LotKind::Purchase, usd(10), at(0), None).await;
    insert_batch(backend, &org, "msgbatch_c", 3).await;
    insert_batch(backend, &org, "msgbatch_d", 2).await;
    let held = store
        .claim_batch_requests("runner-1", at(1), at(30), 1)
        .await
        .unwrap();
    assert_eq!(held[0].batch_id, "msgbatch_c");

    let canceled = store
        .cancel_message_batch(&org.workspace_id, "msgbatch_c", at(2))
        .await
        .unwrap()
        .expect("found");
    assert_eq!(canceled.len(), 2);
    assert!(
        canceled
            .iter()
            .all(|request| request.state == BatchRequestState::Canceled)
    );
    let batch = store
        .message_batch(&org.workspace_id, "msgbatch_c")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (batch.status, batch.cancel_initiated_at),
        (BatchStatus::Canceling, Some(at(2)))
    );
    assert!(
        store
            .claim_batch_requests("runner-2", at(2), at(3), 10)
            .await
            .unwrap()
            .iter()
            .all(|r| r.batch_id == "msgbatch_d")
    );
    assert_eq!(
        store
            .cancel_message_batch(&org.workspace_id, "msgbatch_c", at(3))
            .await
            .unwrap(),
        Some(Vec::new()),
        "a second cancel changes nothing"
    );
    assert!(
        store
            .end_batch_request(
                &held[0].request_id,
                held[0].attempt,
                BatchRequestState::Succeeded,
                "{}",
                at(4)
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .message_batch(&org.workspace_id, "msgbatch_c")
            .await
            .unwrap()
            .unwrap()
            .status,
        BatchStatus::Ended
    );

    // Past its expiry, the batch's requests whose claims lapsed expire.
    let expired = store.expire_message_batches(at(60 * 24)).await.unwrap();
    assert_eq!(expired.len(), 2);
    assert!(
        expired
            .iter()
            .all(|request| request.state == BatchRequestState::Expired && request.batch_id == "msgbatch_d")
    );
    assert_eq!(store.end_finished_batches(at(60 * 24)).await.unwrap(), 1);
    let batch = store
        .message_batch(&org.workspace_id, "msgbatch_d")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        batch.counts,
        BatchRequestCounts {
            expired: 2,
            ..Default::default()
        }
    );
    for request in canceled
        .iter()
        .chain(&expired)
        .map(|r| &r.reservation_id)
        .chain([&held[0].reservation_id])
    {
        store
            .settle(crate::fixtures::settlement(&org, request, cents(0), at(60 * 24)))
            .await
            .expect("void");
    }
    assert_healthy(store).await;
}
