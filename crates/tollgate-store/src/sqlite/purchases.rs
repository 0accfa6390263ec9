//! Credit purchases and auto-reload.
//!
//! A purchase is claimed (`pending`, idempotent by organization and key) before the payment
//! provider is charged, and completed exactly once afterwards: a success grants the lot,
//! raises the organization's cumulative purchases (so the tier advances with the credit,
//! atomically) and logs both, in one transaction. A refund or lost dispute reverses part
//! of a paid purchase in the transaction of its provider event (`reverse_in`: the core's
//! `plan_reversal`, the lot's remainder posted back, the rest recorded unrecovered,
//! cumulative purchases lowered). The store never talks to the provider.
//!
//! Auto-reload keeps one claim per organization (`in_flight_since`), taken under the write
//! lock, so at most one process buys a reload at a time; a claim older than the caller's
//! stale bound belonged to a process that died and may be taken over.

use sqlx::SqliteConnection;
use tollgate_core::Timestamp;
use tollgate_core::ledger::LotKind;
use tollgate_core::money::NanoUsd;
use tollgate_core::refunds::{PurchaseReversals, ReversalKind, plan_reversal};

use crate::error::{StoreError, TxError};
use crate::journal::{reversal_entry, reversed_lot_id, unpaid_purchase_entry};
use crate::model::{
    AuditEntry, AutoReload, IdempotencyKeyReused, NewPurchase, PaymentEvent, PaymentEventEffect, Purchase,
    PurchaseClaim, PurchaseOutcome, PurchaseStatus, Reversal,
};
use crate::rows::{AUTO_RELOAD_SELECT, PURCHASE_SELECT, auto_reload_from_row, purchase_from_row};
use crate::rules::check_amount_positive;
use crate::sqlite::audit_log::{
    AUTO_RELOAD_DISABLED, CREDIT_PURCHASE_DECLINED, CREDIT_PURCHASE_FAILED, CREDIT_PURCHASED, SYSTEM_ACTOR,
    check_entry_scope, insert_audit_event,
};
use crate::sqlite::ledger::{grant_in, load_lot_in, reverse_lot_in};
use crate::sqlite::{SqliteStore, invariant, millis, store_error, truncate_to_millis};

impl SqliteStore {
    // Purchases.

    pub(crate) async fn claim_purchase(
        &self,
        purchase: NewPurchase,
    ) -> Result<PurchaseClaim, TxError<IdempotencyKeyReused>> {
        check_amount_positive("purchase", &purchase.purchase_id, purchase.amount)?;
        let created_at = truncate_to_millis(purchase.created_at)?;
        let mut transaction = self.begin_write().await?;
        // The write lock is held, so no other claim of the key can slip in between.
        let existing =
            load_purchase_by_key(&mut transaction, &purchase.org_id, &purchase.idempotency_key).await?;
        if let Some(existing) = existing {
            transaction.rollback().await.map_err(store_error)?;
            if existing.amount != purchase.amount {
                return Err(TxError::Rejected(IdempotencyKeyReused {
                    existing_amount: existing.amount,
                }));
            }
            return Ok(PurchaseClaim::Existing(existing));
        }
        sqlx::query(
            "INSERT INTO purchases
                (id, org_id, idempotency_key, amount_nanos, source, status, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&purchase.purchase_id)
        .bind(&purchase.org_id)
        .bind(&purchase.idempotency_key)
        .bind(purchase.amount.nanos())
        .bind(purchase.source.as_str())
        .bind(PurchaseStatus::Pending.as_str())
        .bind(millis(created_at))
        .execute(&mut *transaction)
        .await
        .map_err(store_error)?;
        transaction.commit().await.map_err(store_error)?;
        Ok(PurchaseClaim::New(Purchase {
            id: purchase.purchase_id,
            org_id: purchase.org_id,
            idempotency_key: purchase.idempotency_key,
            amount: purchase.amount,
            source: purchase.source,
            status: PurchaseStatus::Pending,
            payment_reference: None,
            failure_reason: None,
            lot_id: None,
            created_at,
            completed_at: None,
            refunded: NanoUsd::ZERO,
            disputed: NanoUsd::ZERO,
            unrecovered: NanoUsd::ZERO,
        }))
    }

    pub(crate) async fn complete_purchase(
        &self,
        purchase_id: &str,
        outcome: PurchaseOutcome,
        actor: &str,
        now: Timestamp,
    ) -> Result<Purchase, StoreError> {
        let now = truncate_to_millis(now)?;
        let mut transaction = self.begin_write().await?;
        let completed = complete_in(&mut transaction, purchase_id, outcome, actor, now).await?;
        transaction.commit().await.map_err(store_error)?;
        Ok(completed)
    }

    pub(crate) async fn complete_purchase_on_event(
        &self,
        event: &PaymentEvent,
        purchase_id: &str,
        effect: PaymentEventEffect,
        actor: &str,
    ) -> Result<Option<Purchase>, StoreError> {
        let now = truncate_to_millis(event.received_at)?;
        let mut transaction = self.begin_write().await?;
        // The write lock is held: a concurrent delivery of the same event finds the id.
        let recorded = sqlx::query(
            "INSERT INTO payment_events (event_id, event_type, purchase_id, received_at)
             VALUES (?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&event.event_id)
        .bind(&event.event_type)
        .bind(purchase_id)
        .bind(millis(now))
        .execute(&mut *transaction)
        .await
        .map_err(store_error)?;
        if recorded.rows_affected() == 0 {
            transaction.rollback().await.map_err(store_error)?;
            return Ok(None);
        }
        let purchase = match effect {
            PaymentEventEffect::Complete(outcome) => {
                complete_in(&mut transaction, purchase_id, outcome, actor, now).await?
            }
            PaymentEventEffect::AttemptFailed { reason } => {
                sqlx::query("UPDATE purchases SET failure_reason = ? WHERE id = ? AND status = 'pending'")
                    .bind(reason)
                    .bind(purchase_id)
                    .execute(&mut *transaction)
                    .await
                    .map_err(store_error)?;
                load_purchase_by_id(&mut transaction, purchase_id)
                    .await?
                    .ok_or_else(|| invariant(format!("an event for an unknown purchase {purchase_id}")))?
            }
            PaymentEventEffect::Reverse(reversal) => {
                reverse_in(
                    &mut transaction,
                    purchase_id,
                    &event.event_id,
                    &reversal,
                    actor,
                    now,
                )
                .await?
            }
        };
        transaction.commit().await.map_err(store_error)?;
        Ok(Some(purchase))
    }
    pub(crate) async fn purchases(&self, org_id: &str) -> Result<Vec<Purchase>, StoreError> {
        sqlx::query(&format!(
            "{PURCHASE_SELECT} WHERE org_id = ? ORDER BY created_at DESC, rowid DESC"
        ))
        .bind(org_id)
        .fetch_all(&self.reader)
        .await
        .map_err(store_error)?
        .iter()
        .map(purchase_from_row)
        .collect()
    }

    pub(crate) async fn purchase_by_key(
        &self,
        org_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<Purchase>, StoreError> {
        let mut connection = self.reader.acquire().await.map_err(store_error)?;
        load_purchase_by_key(&mut connection, org_id, idempotency_key).await
    }

    // Auto-reload.

    pub(crate) async fn auto_reload(&self, org_id: &str) -> Result<Option<AutoReload>, StoreError> {
        let mut connection = self.reader.acquire().await.map_err(store_error)?;
        load_auto_reload(&mut connection, org_id).await
    }

    pub(crate) async fn set_auto_reload(
        &self,
        settings: &AutoReload,
        audit: AuditEntry,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        check_entry_scope(&audit, &settings.org_id)?;
        if !settings.threshold.is_positive() || !settings.amount.is_positive() {
            return Err(invariant(format!(
                "auto-reload of {} set with threshold {} and amount {}; both must be positive",
                settings.org_id, settings.threshold, settings.amount
            )));
        }
        let mut transaction = self.begin_write().await?;
        // A claim in flight is kept: the process holding it still finishes its purchase.
        // Enabling clears the notice of an earlier shut-off, which the customer has now seen.
        sqlx::query(
            "INSERT INTO auto_reload
                (org_id, enabled, threshold_nanos, amount_nanos, payment_method, in_flight_since,
                 notice, updated_at)
             VALUES (?, ?, ?, ?, ?, NULL, NULL, ?)
             ON CONFLICT (org_id) DO UPDATE SET
                enabled = excluded.enabled,
                threshold_nanos = excluded.threshold_nanos,
                amount_nanos = excluded.amount_nanos,
                payment_method = excluded.payment_method,
                notice = CASE WHEN excluded.enabled = 1 THEN NULL ELSE auto_reload.notice END,
                updated_at = excluded.updated_at",
        )
        .bind(&settings.org_id)
        .bind(settings.enabled)
        .bind(settings.threshold.nanos())
        .bind(settings.amount.nanos())
        .bind(&settings.payment_method)
        .bind(millis(now))
        .execute(&mut *transaction)
        .await
        .map_err(store_error)?;
        insert_audit_event(&mut transaction, &audit).await?;
        transaction.commit().await.map_err(store_error)?;
        Ok(())
    }

    pub(crate) async fn disable_auto_reload(
        &self,
        org_id: &str,
        notice: Option<&str>,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        check_entry_scope(&audit, org_id)?;
        let mut transaction = self.begin_write().await?;
        let updated =
            sqlx::query("UPDATE auto_reload SET enabled = 0, notice = ?, updated_at = ? WHERE org_id = ?")
                .bind(notice)
                .bind(millis(audit.at))
                .bind(org_id)
                .execute(&mut *transaction)
                .await
                .map_err(store_error)?;
        if updated.rows_affected() == 0 {
            transaction.rollback().await.map_err(store_error)?;
            return Ok(false);
        }
        insert_audit_event(&mut transaction, &audit).await?;
        transaction.commit().await.map_err(store_error)?;
        Ok(true)
    }

    pub(crate) async fn claim_auto_reload(
        &self,
        org_id: &str,
        now: Timestamp,
        stale_after: chrono::Duration,
    ) -> Result<Option<AutoReload>, StoreError> {
        let now = truncate_to_millis(now)?;
        let stale_before = now
            .checked_sub_signed(stale_after)
            .ok_or_else(|| invariant(format!("the stale bound {stale_after} is out of range")))?;
        let mut transaction = self.begin_write().await?;
        let Some(settings) = load_auto_reload(&mut transaction, org_id).await? else {
            transaction.rollback().await.map_err(store_error)?;
            return Ok(None);
        };
        // In flight since before the stale bound: its claimer died without finishing.
        let claimable = settings.enabled
            && settings
                .in_flight_since
                .is_none_or(|in_flight_since| in_flight_since < stale_before);
        if !claimable {
            transaction.rollback().await.map_err(store_error)?;
            return Ok(None);
        }
        let claimed = sqlx::query(
            "UPDATE auto_reload SET in_flight_since = ?
             WHERE org_id = ? AND enabled = 1 AND in_flight_since IS ?",
        )
        .bind(millis(now))
        .bind(org_id)
        .bind(settings.in_flight_since.map(millis))
        .execute(&mut *transaction)
        .await
        .map_err(store_error)?;
        if claimed.rows_affected() != 1 {
            return Err(invariant(format!(
                "the auto-reload of {org_id} changed after it was loaded in the same transaction"
            )));
        }
        transaction.commit().await.map_err(store_error)?;
        Ok(Some(AutoReload {
            in_flight_since: Some(now),
            ..settings
        }))
    }

    pub(crate) async fn finish_auto_reload(
        &self,
        org_id: &str,
        disable_with_notice: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        match disable_with_notice {
            None => {
                sqlx::query("UPDATE auto_reload SET in_flight_since = NULL WHERE org_id = ?")
                    .bind(org_id)
                    .execute(&mut *transaction)
                    .await
                    .map_err(store_error)?;
            }
            Some(notice) => {
                let updated = sqlx::query(
                    "UPDATE auto_reload
                     SET in_flight_since = NULL, enabled = 0, notice = ?, updated_at = ?
                     WHERE org_id = ?",
                )
                .bind(notice)
                .bind(millis(now))
                .bind(org_id)
                .execute(&mut *transaction)
                .await
                .map_err(store_error)?;
                if updated.rows_affected() == 1 {
                    insert_audit_event(
                        &mut transaction,
                        &AuditEntry {
                            org_id: org_id.to_owned(),
                            actor: SYSTEM_ACTOR.to_owned(),
                            action: AUTO_RELOAD_DISABLED.to_owned(),
                            subject: org_id.to_owned(),
                            details: "auto-reload turned off after a reload could not be bought".to_owned(),
                            reason: Some(notice.to_owned()),
                            at: now,
                        },
                    )
                    .await?;
                }
            }
        }
        transaction.commit().await.map_err(store_error)?;
        Ok(())
    }
}

/// Completes a purchase inside the caller's write transaction: only a pending one is ended;
/// an ended one (a retry, or another process) is returned as it first ended.
async fn complete_in(
    connection: &mut SqliteConnection,
    purchase_id: &str,
    outcome: PurchaseOutcome,
    actor: &str,
    now: Timestamp,
) -> Result<Purchase, StoreError> {
    let Some(purchase) = load_purchase_by_id(&mut *connection, purchase_id).await? else {
        return Err(invariant(format!("completed an unknown purchase {purchase_id}")));
    };
    if purchase.status != PurchaseStatus::Pending {
        return Ok(purchase);
    }
    let audit = match outcome {
        PurchaseOutcome::Succeeded {
            payment_reference,
            lot,
        } => {
            if lot.org_id != purchase.org_id || lot.kind != LotKind::Purchase || lot.amount != purchase.amount
            {
                return Err(invariant(format!(
                    "purchase {purchase_id} of {} for {} would grant a {} lot of {} to {}",
                    purchase.org_id,
                    purchase.amount,
                    lot.kind.as_str(),
                    lot.amount,
                    lot.org_id
                )));
            }
            grant_in(&mut *connection, &lot)
                .await
                .map_err(|error| match error {
                    TxError::Rejected(rejection) => invariant(format!(
                        "the lot of paid purchase {purchase_id} was refused: {rejection}"
                    )),
                    TxError::Store(error) => error,
                })?;
            end_purchase(
                &mut *connection,
                purchase_id,
                PurchaseStatus::Succeeded,
                Some(&payment_reference),
                None,
                Some(&lot.lot_id),
                now,
            )
            .await?;
            let cumulative = change_cumulative_purchases(&mut *connection, &purchase.org_id, |loaded| {
                loaded.checked_add(purchase.amount)
            })
            .await?;
            AuditEntry {
                org_id: purchase.org_id.clone(),
                actor: actor.to_owned(),
                action: CREDIT_PURCHASED.to_owned(),
                subject: purchase.id.clone(),
                details: format!(
                    "{} purchase of {} paid ({payment_reference}) as lot {}; cumulative purchases now {cumulative}",
                    purchase.source.as_str(),
                    purchase.amount,
                    lot.lot_id
                ),
                reason: None,
                at: now,
            }
        }
        PurchaseOutcome::Declined { reason } => {
            end_unpaid(
                &mut *connection,
                &purchase,
                (PurchaseStatus::Declined, CREDIT_PURCHASE_DECLINED),
                reason,
                actor,
                now,
            )
            .await?
        }
        PurchaseOutcome::Failed { reason } => {
            end_unpaid(
                &mut *connection,
                &purchase,
                (PurchaseStatus::Failed, CREDIT_PURCHASE_FAILED),
                reason,
                actor,
                now,
            )
            .await?
        }
    };
    insert_audit_event(&mut *connection, &audit).await?;
    load_purchase_by_id(&mut *connection, purchase_id)
        .await?
        .ok_or_else(|| invariant(format!("purchase {purchase_id} vanished while it was completed")))
}

/// Marks a pending purchase ended; the `status = 'pending'` guard makes it exactly once.
async fn end_purchase(
    connection: &mut SqliteConnection,
    purchase_id: &str,
    status: PurchaseStatus,
    payment_reference: Option<&str>,
    failure_reason: Option<&str>,
    lot_id: Option<&str>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let ended = sqlx::query(
        "UPDATE purchases
         SET status = ?, payment_reference = ?, failure_reason = ?, lot_id = ?, completed_at = ?
         WHERE id = ? AND status = 'pending'",
    )
    .bind(status.as_str())
    .bind(payment_reference)
    .bind(failure_reason)
    .bind(lot_id)
    .bind(millis(now))
    .bind(purchase_id)
    .execute(&mut *connection)
    .await
    .map_err(store_error)?;
    if ended.rows_affected() != 1 {
        // Unreachable under the write lock; roll back rather than end it twice.
        return Err(invariant(format!(
            "purchase {purchase_id} ended under a transaction that holds the write lock"
        )));
    }
    Ok(())
}

/// Ends a purchase the provider did not pay (declined or failed, logged as `action`): no
/// lot, no change to the tier.
async fn end_unpaid(
    connection: &mut SqliteConnection,
    purchase: &Purchase,
    (status, action): (PurchaseStatus, &str),
    reason: String,
    actor: &str,
    now: Timestamp,
) -> Result<AuditEntry, StoreError> {
    end_purchase(connection, &purchase.id, status, None, Some(&reason), None, now).await?;
    Ok(unpaid_purchase_entry(
        purchase,
        (status, action),
        reason,
        actor,
        now,
    ))
}

/// Changes the organization's cumulative purchases by `change` (a paid purchase adds, a
/// reversal subtracts), compare-and-set against the total loaded and read back. Returns
/// the new total.
async fn change_cumulative_purchases(
    connection: &mut SqliteConnection,
    org_id: &str,
    change: impl FnOnce(NanoUsd) -> Option<NanoUsd>,
) -> Result<NanoUsd, StoreError> {
    let loaded = load_cumulative_purchases(&mut *connection, org_id).await?;
    let total = change(loaded)
        .filter(|total| !total.is_negative())
        .ok_or_else(|| invariant(format!("the cumulative purchases of {org_id} leave their range")))?;
    let updated = sqlx::query(
        "UPDATE organizations SET cumulative_purchases_nanos = ?
         WHERE id = ? AND cumulative_purchases_nanos = ?",
    )
    .bind(total.nanos())
    .bind(org_id)
    .bind(loaded.nanos())
    .execute(&mut *connection)
    .await
    .map_err(store_error)?;
    if updated.rows_affected() != 1 {
        return Err(invariant(format!(
            "the cumulative purchases of {org_id} changed after they were loaded in the same transaction"
        )));
    }
    let stored = load_cumulative_purchases(&mut *connection, org_id).await?;
    if stored != total {
        return Err(invariant(format!(
            "the cumulative purchases of {org_id} read back as {stored} after writing {total}"
        )));
    }
    Ok(total)
}

/// Applies a reversal (a refund or a lost dispute) of a paid purchase inside the caller's
/// write transaction, as the core plans it from the purchase and its lot as they stand:
/// what the lot still has is posted back, the rest recorded unrecovered, the reversal
/// row written with `event_id`, the purchase's totals and the organization's cumulative
/// purchases changed compare-and-set, and the change logged. Nothing new to reverse (an
/// older refund total, a dispute reversed before) changes nothing.
async fn reverse_in(
    connection: &mut SqliteConnection,
    purchase_id: &str,
    event_id: &str,
    reversal: &Reversal,
    actor: &str,
    now: Timestamp,
) -> Result<Purchase, StoreError> {
    let purchase = load_purchase_by_id(&mut *connection, purchase_id)
        .await?
        .ok_or_else(|| invariant(format!("a reversal of an unknown purchase {purchase_id}")))?;
    let lot_id = reversed_lot_id(&purchase)?;
    let kind = reversal.claim.kind();
    if kind == ReversalKind::Dispute {
        let recorded: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM purchase_reversals
             WHERE purchase_id = ? AND kind = 'dispute' AND reference = ?",
        )
        .bind(purchase_id)
        .bind(&reversal.reference)
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?;
        if recorded.is_some() {
            return Ok(purchase);
        }
    }
    let lot = load_lot_in(&mut *connection, lot_id).await?;
    let state = PurchaseReversals {
        amount: purchase.amount,
        refunded: purchase.refunded,
        disputed: purchase.disputed,
        lot_available: lot.lot.account.available(),
    };
    let Some(plan) = plan_reversal(state, reversal.claim) else {
        return Ok(purchase);
    };
    if plan.recovered.is_positive() {
        reverse_lot_in(&mut *connection, &purchase.org_id, &lot.lot, plan.recovered, now).await?;
    }
    sqlx::query(
        "INSERT INTO purchase_reversals
            (purchase_id, org_id, event_id, kind, reference, amount_nanos, recovered_nanos,
             unrecovered_nanos, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(purchase_id)
    .bind(&purchase.org_id)
    .bind(event_id)
    .bind(kind.as_str())
    .bind(&reversal.reference)
    .bind(plan.reversed.nanos())
    .bind(plan.recovered.nanos())
    .bind(plan.unrecovered.nanos())
    .bind(millis(now))
    .execute(&mut *connection)
    .await
    .map_err(store_error)?;
    let unrecovered = purchase
        .unrecovered
        .checked_add(plan.unrecovered)
        .ok_or_else(|| {
            invariant(format!(
                "the unrecovered amount of purchase {purchase_id} overflows"
            ))
        })?;
    let updated = sqlx::query(
        "UPDATE purchases SET refunded_nanos = ?, disputed_nanos = ?, unrecovered_nanos = ?
         WHERE id = ? AND refunded_nanos = ? AND disputed_nanos = ? AND unrecovered_nanos = ?",
    )
    .bind(plan.refunded.nanos())
    .bind(plan.disputed.nanos())
    .bind(unrecovered.nanos())
    .bind(purchase_id)
    .bind(purchase.refunded.nanos())
    .bind(purchase.disputed.nanos())
    .bind(purchase.unrecovered.nanos())
    .execute(&mut *connection)
    .await
    .map_err(store_error)?;
    if updated.rows_affected() != 1 {
        return Err(invariant(format!(
            "purchase {purchase_id} changed after it was loaded in the same transaction"
        )));
    }
    let cumulative = change_cumulative_purchases(&mut *connection, &purchase.org_id, |loaded| {
        loaded.checked_sub(plan.reversed)
    })
    .await?;
    insert_audit_event(
        &mut *connection,
        &reversal_entry(&purchase, &plan, &reversal.reference, cumulative, actor, now),
    )
    .await?;
    load_purchase_by_id(&mut *connection, purchase_id)
        .await?
        .ok_or_else(|| invariant(format!("purchase {purchase_id} vanished while it was reversed")))
}

async fn load_cumulative_purchases(
    connection: &mut SqliteConnection,
    org_id: &str,
) -> Result<NanoUsd, StoreError> {
    let total: Option<i64> =
        sqlx::query_scalar("SELECT cumulative_purchases_nanos FROM organizations WHERE id = ?")
            .bind(org_id)
            .fetch_optional(&mut *connection)
            .await
            .map_err(store_error)?;
    total
        .map(NanoUsd::from_nanos)
        .ok_or_else(|| invariant(format!("purchase of unknown organization {org_id}")))
}

async fn load_purchase_by_id(
    connection: &mut SqliteConnection,
    purchase_id: &str,
) -> Result<Option<Purchase>, StoreError> {
    sqlx::query(&format!("{PURCHASE_SELECT} WHERE id = ?"))
        .bind(purchase_id)
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?
        .map(|row| purchase_from_row(&row))
        .transpose()
}

async fn load_purchase_by_key(
    connection: &mut SqliteConnection,
    org_id: &str,
    idempotency_key: &str,
) -> Result<Option<Purchase>, StoreError> {
    sqlx::query(&format!(
        "{PURCHASE_SELECT} WHERE org_id = ? AND idempotency_key = ?"
    ))
    .bind(org_id)
    .bind(idempotency_key)
    .fetch_optional(&mut *connection)
    .await
    .map_err(store_error)?
    .map(|row| purchase_from_row(&row))
    .transpose()
}

async fn load_auto_reload(
    connection: &mut SqliteConnection,
    org_id: &str,
) -> Result<Option<AutoReload>, StoreError> {
    sqlx::query(&format!("{AUTO_RELOAD_SELECT} WHERE org_id = ?"))
        .bind(org_id)
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?
        .map(|row| auto_reload_from_row(&row))
        .transpose()
}
