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
//! Auto-reload keeps one claim per organization (`in_flight_since`), so at most one process
//! buys a reload at a time; a claim older than the caller's stale bound belonged to a
//! process that died and may be taken over.
//!
//! Written once for both backends over `Dialect`; what differs is the locking around the
//! same SQL. Every script is a write transaction (`Dialect::begin_write`: SQLite's `BEGIN
//! IMMEDIATE`, whose one write lock already orders them) that holds the organization first
//! (`Dialect::lock_organization`, `Dialect::lock_organization_of_purchase`: PostgreSQL's
//! row lock, so one organization's claims, completions and reload claims run one at a time
//! across replicas), reads the purchase it ends `Dialect::for_update`, and is run again on
//! contention where the backend does so (`Dialect::busy_pause`: PostgreSQL). Purchases are
//! listed in insertion order by `Dialect::insertion_order` (SQLite's `rowid`, PostgreSQL's
//! `seq`). The ledger's own steps (granting a lot, loading one, posting a reversal back)
//! are each adapter's, reached through the trait's required methods.

use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};
use tollgate_core::Timestamp;
use tollgate_core::ledger::LotKind;
use tollgate_core::money::NanoUsd;
use tollgate_core::refunds::{PurchaseReversals, ReversalKind, plan_reversal};

use crate::audit_log::AuditLog;
use crate::book::HeldInMemory;
use crate::codec::{invariant, millis, truncate_to_millis};
use crate::dialect::{Dialect, retrying};
use crate::error::{StoreError, TxError};
use crate::journal::{
    AUTO_RELOAD_DISABLED, CREDIT_PURCHASE_DECLINED, CREDIT_PURCHASE_FAILED, CREDIT_PURCHASED, SYSTEM_ACTOR,
    check_entry_scope, reversal_entry, reversed_lot_id, unpaid_purchase_entry,
};
use crate::ledger::Ledger;
use crate::model::{
    AuditEntry, AutoReload, IdempotencyKeyReused, NewPurchase, PaymentEvent, PaymentEventEffect, Purchase,
    PurchaseClaim, PurchaseOutcome, PurchaseStatus, Reversal,
};
use crate::rows::{
    AUTO_RELOAD_SELECT, DbRow, PURCHASE_SELECT, auto_reload_from_row, column, purchase_from_row,
};
use crate::rules::check_amount_positive;

/// The purchases' and auto-reload's queries, the same on every backend.
pub(crate) trait Purchases: Dialect + AuditLog + Ledger
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'c> &'c Pool<Self::Db>: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<&'q str>: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<i64>: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> bool: Encode<'q, Self::Db> + Type<Self::Db>,
{
    // Purchases.

    async fn claim_purchase(
        &self,
        purchase: NewPurchase,
    ) -> Result<PurchaseClaim, TxError<IdempotencyKeyReused>> {
        check_amount_positive("purchase", &purchase.purchase_id, purchase.amount)?;
        let created_at = truncate_to_millis(purchase.created_at)?;
        let purchase = &purchase;
        retrying::<Self, _, _, _, _>(|| async move {
            let mut transaction = self.begin_write().await?;
            // Holding the organization, no other claim of the key can slip in between.
            Self::lock_organization(&mut transaction, &purchase.org_id).await?;
            let existing =
                Self::load_purchase_by_key(&mut transaction, &purchase.org_id, &purchase.idempotency_key)
                    .await?;
            if let Some(existing) = existing {
                transaction.rollback().await.map_err(Self::store_error)?;
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
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(purchase.purchase_id.as_str())
            .bind(purchase.org_id.as_str())
            .bind(purchase.idempotency_key.as_str())
            .bind(purchase.amount.nanos())
            .bind(purchase.source.as_str())
            .bind(PurchaseStatus::Pending.as_str())
            .bind(millis(created_at))
            .execute(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
            transaction.commit().await.map_err(Self::store_error)?;
            Ok(PurchaseClaim::New(Purchase {
                id: purchase.purchase_id.clone(),
                org_id: purchase.org_id.clone(),
                idempotency_key: purchase.idempotency_key.clone(),
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
        })
        .await
    }

    async fn complete_purchase(
        &self,
        purchase_id: &str,
        outcome: PurchaseOutcome,
        actor: &str,
        now: Timestamp,
    ) -> Result<Purchase, StoreError> {
        let now = truncate_to_millis(now)?;
        let outcome = &outcome;
        retrying::<Self, _, _, _, _>(|| async move {
            let mut transaction = self.begin_write().await?;
            Self::hold_purchase_organization(&mut transaction, purchase_id).await?;
            let completed = Self::complete_in(&mut transaction, purchase_id, outcome, actor, now).await?;
            transaction.commit().await.map_err(Self::store_error)?;
            Ok(completed)
        })
        .await
    }

    async fn complete_purchase_on_event(
        &self,
        event: &PaymentEvent,
        purchase_id: &str,
        effect: PaymentEventEffect,
        actor: &str,
    ) -> Result<Option<Purchase>, StoreError> {
        let now = truncate_to_millis(event.received_at)?;
        let effect = &effect;
        retrying::<Self, _, _, _, _>(|| async move {
            let mut transaction = self.begin_write().await?;
            Self::hold_purchase_organization(&mut transaction, purchase_id).await?;
            // A concurrent delivery of the same event waits for the organization (SQLite: the
            // write lock), then finds the id.
            let recorded = sqlx::query(
                "INSERT INTO payment_events (event_id, event_type, purchase_id, received_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(event.event_id.as_str())
            .bind(event.event_type.as_str())
            .bind(purchase_id)
            .bind(millis(now))
            .execute(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
            if Self::rows_affected(&recorded) == 0 {
                transaction.rollback().await.map_err(Self::store_error)?;
                return Ok(None);
            }
            let purchase = match effect {
                PaymentEventEffect::Complete(outcome) => {
                    Self::complete_in(&mut transaction, purchase_id, outcome, actor, now).await?
                }
                PaymentEventEffect::AttemptFailed { reason } => {
                    sqlx::query(
                        "UPDATE purchases SET failure_reason = $1 WHERE id = $2 AND status = 'pending'",
                    )
                    .bind(reason.as_str())
                    .bind(purchase_id)
                    .execute(&mut *transaction)
                    .await
                    .map_err(Self::store_error)?;
                    Self::load_purchase_by_id(&mut transaction, purchase_id)
                        .await?
                        .ok_or_else(|| invariant(format!("an event for an unknown purchase {purchase_id}")))?
                }
                PaymentEventEffect::Reverse(reversal) => {
                    Self::reverse_in(
                        &mut transaction,
                        purchase_id,
                        &event.event_id,
                        (reversal, &self.hot_writer().held_in_memory()),
                        actor,
                        now,
                    )
                    .await?
                }
            };
            transaction.commit().await.map_err(Self::store_error)?;
            Ok(Some(purchase))
        })
        .await
    }

    /// Newest first; purchases made in the same millisecond, last inserted first.
    async fn purchases(&self, org_id: &str) -> Result<Vec<Purchase>, StoreError> {
        sqlx::query(&format!(
            "{PURCHASE_SELECT} WHERE org_id = $1 ORDER BY created_at DESC, {} DESC",
            Self::insertion_order()
        ))
        .bind(org_id)
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?
        .iter()
        .map(purchase_from_row)
        .collect()
    }

    async fn purchase_by_key(
        &self,
        org_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<Purchase>, StoreError> {
        let mut connection = self.read_pool().acquire().await.map_err(Self::store_error)?;
        Self::load_purchase_by_key(&mut connection, org_id, idempotency_key).await
    }

    // Auto-reload.

    async fn auto_reload(&self, org_id: &str) -> Result<Option<AutoReload>, StoreError> {
        let mut connection = self.read_pool().acquire().await.map_err(Self::store_error)?;
        Self::load_auto_reload(&mut connection, org_id).await
    }

    async fn set_auto_reload(
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
        let audit = &audit;
        retrying::<Self, _, _, _, _>(|| async move {
            let mut transaction = self.begin_write().await?;
            Self::lock_organization(&mut transaction, &settings.org_id).await?;
            // A claim in flight is kept: the process holding it still finishes its purchase.
            // Enabling clears the notice of an earlier shut-off, which the customer has now
            // seen.
            sqlx::query(
                "INSERT INTO auto_reload
                    (org_id, enabled, threshold_nanos, amount_nanos, payment_method, in_flight_since,
                     notice, updated_at)
                 VALUES ($1, $2, $3, $4, $5, NULL, NULL, $6)
                 ON CONFLICT (org_id) DO UPDATE SET
                    enabled = excluded.enabled,
                    threshold_nanos = excluded.threshold_nanos,
                    amount_nanos = excluded.amount_nanos,
                    payment_method = excluded.payment_method,
                    notice = CASE WHEN excluded.enabled THEN NULL ELSE auto_reload.notice END,
                    updated_at = excluded.updated_at",
            )
            .bind(settings.org_id.as_str())
            .bind(settings.enabled)
            .bind(settings.threshold.nanos())
            .bind(settings.amount.nanos())
            .bind(settings.payment_method.as_str())
            .bind(millis(now))
            .execute(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
            Self::insert_audit_event(&mut transaction, audit).await?;
            transaction.commit().await.map_err(Self::store_error)?;
            Ok(())
        })
        .await
    }

    async fn disable_auto_reload(
        &self,
        org_id: &str,
        notice: Option<&str>,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        check_entry_scope(&audit, org_id)?;
        let audit = &audit;
        retrying::<Self, _, _, _, _>(|| async move {
            let mut transaction = self.begin_write().await?;
            Self::lock_organization(&mut transaction, org_id).await?;
            let updated = sqlx::query(
                "UPDATE auto_reload SET enabled = FALSE, notice = $1, updated_at = $2 WHERE org_id = $3",
            )
            .bind(notice)
            .bind(millis(audit.at))
            .bind(org_id)
            .execute(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
            if Self::rows_affected(&updated) == 0 {
                transaction.rollback().await.map_err(Self::store_error)?;
                return Ok(false);
            }
            Self::insert_audit_event(&mut transaction, audit).await?;
            transaction.commit().await.map_err(Self::store_error)?;
            Ok(true)
        })
        .await
    }

    /// Takes the organization's auto-reload claim if nobody holds it (or its holder's claim
    /// is stale): holding the organization, then written compare-and-set against the claim
    /// that was read, so of any number of claimers across processes exactly one wins.
    async fn claim_auto_reload(
        &self,
        org_id: &str,
        now: Timestamp,
        stale_after: chrono::Duration,
    ) -> Result<Option<AutoReload>, StoreError> {
        let now = truncate_to_millis(now)?;
        let stale_before = now
            .checked_sub_signed(stale_after)
            .ok_or_else(|| invariant(format!("the stale bound {stale_after} is out of range")))?;
        retrying::<Self, _, _, _, _>(|| async move {
            let mut transaction = self.begin_write().await?;
            Self::lock_organization(&mut transaction, org_id).await?;
            let Some(settings) = Self::load_auto_reload(&mut transaction, org_id).await? else {
                transaction.rollback().await.map_err(Self::store_error)?;
                return Ok(None);
            };
            // In flight since before the stale bound: its claimer died without finishing.
            let claimable = settings.enabled
                && settings
                    .in_flight_since
                    .is_none_or(|in_flight_since| in_flight_since < stale_before);
            if !claimable {
                transaction.rollback().await.map_err(Self::store_error)?;
                return Ok(None);
            }
            let claimed = sqlx::query(
                "UPDATE auto_reload SET in_flight_since = $1
                 WHERE org_id = $2 AND enabled AND in_flight_since IS NOT DISTINCT FROM $3",
            )
            .bind(millis(now))
            .bind(org_id)
            .bind(settings.in_flight_since.map(millis))
            .execute(&mut *transaction)
            .await
            .map_err(Self::store_error)?;
            if Self::rows_affected(&claimed) != 1 {
                return Err(invariant(format!(
                    "the auto-reload of {org_id} changed after it was loaded in the same transaction"
                )));
            }
            transaction.commit().await.map_err(Self::store_error)?;
            Ok(Some(AutoReload {
                in_flight_since: Some(now),
                ..settings
            }))
        })
        .await
    }

    async fn finish_auto_reload(
        &self,
        org_id: &str,
        disable_with_notice: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        retrying::<Self, _, _, _, _>(|| async move {
            let mut transaction = self.begin_write().await?;
            Self::lock_organization(&mut transaction, org_id).await?;
            match disable_with_notice {
                None => {
                    sqlx::query("UPDATE auto_reload SET in_flight_since = NULL WHERE org_id = $1")
                        .bind(org_id)
                        .execute(&mut *transaction)
                        .await
                        .map_err(Self::store_error)?;
                }
                Some(notice) => {
                    let updated = sqlx::query(
                        "UPDATE auto_reload
                         SET in_flight_since = NULL, enabled = FALSE, notice = $1, updated_at = $2
                         WHERE org_id = $3",
                    )
                    .bind(notice)
                    .bind(millis(now))
                    .bind(org_id)
                    .execute(&mut *transaction)
                    .await
                    .map_err(Self::store_error)?;
                    if Self::rows_affected(&updated) == 1 {
                        Self::insert_audit_event(
                            &mut transaction,
                            &AuditEntry {
                                org_id: org_id.to_owned(),
                                actor: SYSTEM_ACTOR.to_owned(),
                                action: AUTO_RELOAD_DISABLED.to_owned(),
                                subject: org_id.to_owned(),
                                details: "auto-reload turned off after a reload could not be bought"
                                    .to_owned(),
                                reason: Some(notice.to_owned()),
                                at: now,
                            },
                        )
                        .await?;
                    }
                }
            }
            transaction.commit().await.map_err(Self::store_error)?;
            Ok(())
        })
        .await
    }

    // Inside the caller's write transaction.

    /// Holds the organization a purchase belongs to until the transaction ends (an unknown
    /// purchase is a bug).
    async fn hold_purchase_organization(
        connection: &mut <Self::Db as Database>::Connection,
        purchase_id: &str,
    ) -> Result<(), StoreError> {
        match Self::lock_organization_of_purchase(connection, purchase_id).await? {
            Some(_) => Ok(()),
            None => Err(invariant(format!("completed an unknown purchase {purchase_id}"))),
        }
    }

    /// Completes a purchase holding its organization (which the caller does): re-read, and
    /// only a pending one is ended; an ended one (a retry, or another process) is returned
    /// as it first ended.
    async fn complete_in(
        connection: &mut <Self::Db as Database>::Connection,
        purchase_id: &str,
        outcome: &PurchaseOutcome,
        actor: &str,
        now: Timestamp,
    ) -> Result<Purchase, StoreError> {
        let Some(purchase) = Self::load_purchase_for_update(&mut *connection, purchase_id).await? else {
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
                if lot.org_id != purchase.org_id
                    || lot.kind != LotKind::Purchase
                    || lot.amount != purchase.amount
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
                Self::grant_in(&mut *connection, lot)
                    .await
                    .map_err(|error| match error {
                        TxError::Rejected(rejection) => invariant(format!(
                            "the lot of paid purchase {purchase_id} was refused: {rejection}"
                        )),
                        TxError::Store(error) => error,
                    })?;
                Self::end_purchase(
                    &mut *connection,
                    purchase_id,
                    PurchaseStatus::Succeeded,
                    Some(payment_reference),
                    None,
                    Some(&lot.lot_id),
                    now,
                )
                .await?;
                let cumulative =
                    Self::change_cumulative_purchases(&mut *connection, &purchase.org_id, |loaded| {
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
                Self::end_unpaid(
                    &mut *connection,
                    &purchase,
                    (PurchaseStatus::Declined, CREDIT_PURCHASE_DECLINED),
                    reason.clone(),
                    actor,
                    now,
                )
                .await?
            }
            PurchaseOutcome::Failed { reason } => {
                Self::end_unpaid(
                    &mut *connection,
                    &purchase,
                    (PurchaseStatus::Failed, CREDIT_PURCHASE_FAILED),
                    reason.clone(),
                    actor,
                    now,
                )
                .await?
            }
        };
        Self::insert_audit_event(&mut *connection, &audit).await?;
        Self::load_purchase_by_id(&mut *connection, purchase_id)
            .await?
            .ok_or_else(|| invariant(format!("purchase {purchase_id} vanished while it was completed")))
    }

    /// Marks a pending purchase ended; the `status = 'pending'` guard makes it exactly once.
    async fn end_purchase(
        connection: &mut <Self::Db as Database>::Connection,
        purchase_id: &str,
        status: PurchaseStatus,
        payment_reference: Option<&str>,
        failure_reason: Option<&str>,
        lot_id: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let ended = sqlx::query(
            "UPDATE purchases
             SET status = $1, payment_reference = $2, failure_reason = $3, lot_id = $4, completed_at = $5
             WHERE id = $6 AND status = 'pending'",
        )
        .bind(status.as_str())
        .bind(payment_reference)
        .bind(failure_reason)
        .bind(lot_id)
        .bind(millis(now))
        .bind(purchase_id)
        .execute(&mut *connection)
        .await
        .map_err(Self::store_error)?;
        if Self::rows_affected(&ended) != 1 {
            // Unreachable holding the organization; roll back rather than end it twice.
            return Err(invariant(format!(
                "purchase {purchase_id} ended under a transaction that holds its organization"
            )));
        }
        Ok(())
    }

    /// Ends a purchase the provider did not pay (declined or failed, logged as `action`):
    /// no lot, no change to the tier.
    async fn end_unpaid(
        connection: &mut <Self::Db as Database>::Connection,
        purchase: &Purchase,
        (status, action): (PurchaseStatus, &str),
        reason: String,
        actor: &str,
        now: Timestamp,
    ) -> Result<AuditEntry, StoreError> {
        Self::end_purchase(connection, &purchase.id, status, None, Some(&reason), None, now).await?;
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
        connection: &mut <Self::Db as Database>::Connection,
        org_id: &str,
        change: impl FnOnce(NanoUsd) -> Option<NanoUsd>,
    ) -> Result<NanoUsd, StoreError> {
        let loaded = sqlx::query("SELECT cumulative_purchases_nanos FROM organizations WHERE id = $1")
            .bind(org_id)
            .fetch_optional(&mut *connection)
            .await
            .map_err(Self::store_error)?
            .map(|row| column::<i64>(&row, "cumulative_purchases_nanos"))
            .transpose()?
            .map(NanoUsd::from_nanos)
            .ok_or_else(|| invariant(format!("purchase of unknown organization {org_id}")))?;
        let total = change(loaded)
            .filter(|total| !total.is_negative())
            .ok_or_else(|| invariant(format!("the cumulative purchases of {org_id} leave their range")))?;
        let stored = sqlx::query(
            "UPDATE organizations SET cumulative_purchases_nanos = $1
             WHERE id = $2 AND cumulative_purchases_nanos = $3
             RETURNING cumulative_purchases_nanos",
        )
        .bind(total.nanos())
        .bind(org_id)
        .bind(loaded.nanos())
        .fetch_optional(&mut *connection)
        .await
        .map_err(Self::store_error)?
        .map(|row| column::<i64>(&row, "cumulative_purchases_nanos"))
        .transpose()?;
        let Some(stored) = stored.map(NanoUsd::from_nanos) else {
            return Err(invariant(format!(
                "the cumulative purchases of {org_id} changed after they were loaded in the same transaction"
            )));
        };
        if stored != total {
            return Err(invariant(format!(
                "the cumulative purchases of {org_id} read back as {stored} after writing {total}"
            )));
        }
        Ok(total)
    }

    /// Applies a reversal (a refund or a lost dispute) of a paid purchase holding its
    /// organization (which the caller does), as the core plans it from the purchase and its
    /// lot as they stand: what the lot still has is posted back, the rest recorded
    /// unrecovered, the reversal row written with `event_id`, the purchase's totals and the
    /// organization's cumulative purchases changed compare-and-set, and the change logged.
    /// Nothing new to reverse (an older refund total, a dispute reversed before) changes
    /// nothing.
    async fn reverse_in(
        connection: &mut <Self::Db as Database>::Connection,
        purchase_id: &str,
        event_id: &str,
        (reversal, held): (&Reversal, &HeldInMemory),
        actor: &str,
        now: Timestamp,
    ) -> Result<Purchase, StoreError> {
        let purchase = Self::load_purchase_for_update(&mut *connection, purchase_id)
            .await?
            .ok_or_else(|| invariant(format!("a reversal of an unknown purchase {purchase_id}")))?;
        let lot_id = reversed_lot_id(&purchase)?;
        let kind = reversal.claim.kind();
        if kind == ReversalKind::Dispute {
            let recorded = sqlx::query(
                "SELECT 1 FROM purchase_reversals
                 WHERE purchase_id = $1 AND kind = 'dispute' AND reference = $2",
            )
            .bind(purchase_id)
            .bind(reversal.reference.as_str())
            .fetch_optional(&mut *connection)
            .await
            .map_err(Self::store_error)?;
            if recorded.is_some() {
                return Ok(purchase);
            }
        }
        let lot = Self::load_lot_in(&mut *connection, lot_id).await?;
        let state = PurchaseReversals {
            amount: purchase.amount,
            refunded: purchase.refunded,
            disputed: purchase.disputed,
            // What the writer's book holds in memory on the lot stays, as a written hold does.
            lot_available: held.lot(&lot.lot).account.available(),
        };
        let Some(plan) = plan_reversal(state, reversal.claim) else {
            return Ok(purchase);
        };
        if plan.recovered.is_positive() {
            Self::reverse_lot_in(&mut *connection, &purchase.org_id, &lot.lot, plan.recovered, now).await?;
        }
        sqlx::query(
            "INSERT INTO purchase_reversals
                (purchase_id, org_id, event_id, kind, reference, amount_nanos, recovered_nanos,
                 unrecovered_nanos, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(purchase_id)
        .bind(purchase.org_id.as_str())
        .bind(event_id)
        .bind(kind.as_str())
        .bind(reversal.reference.as_str())
        .bind(plan.reversed.nanos())
        .bind(plan.recovered.nanos())
        .bind(plan.unrecovered.nanos())
        .bind(millis(now))
        .execute(&mut *connection)
        .await
        .map_err(Self::store_error)?;
        let unrecovered = purchase
            .unrecovered
            .checked_add(plan.unrecovered)
            .ok_or_else(|| {
                invariant(format!(
                    "the unrecovered amount of purchase {purchase_id} overflows"
                ))
            })?;
        let updated = sqlx::query(
            "UPDATE purchases SET refunded_nanos = $1, disputed_nanos = $2, unrecovered_nanos = $3
             WHERE id = $4 AND refunded_nanos = $5 AND disputed_nanos = $6 AND unrecovered_nanos = $7",
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
        .map_err(Self::store_error)?;
        if Self::rows_affected(&updated) != 1 {
            return Err(invariant(format!(
                "purchase {purchase_id} changed after it was loaded in the same transaction"
            )));
        }
        let cumulative = Self::change_cumulative_purchases(&mut *connection, &purchase.org_id, |loaded| {
            loaded.checked_sub(plan.reversed)
        })
        .await?;
        Self::insert_audit_event(
            &mut *connection,
            &reversal_entry(&purchase, &plan, &reversal.reference, cumulative, actor, now),
        )
        .await?;
        Self::load_purchase_by_id(&mut *connection, purchase_id)
            .await?
            .ok_or_else(|| invariant(format!("purchase {purchase_id} vanished while it was reversed")))
    }

    /// A purchase about to be ended or reversed, its row locked where the backend locks
    /// rows (`Dialect::for_update`).
    async fn load_purchase_for_update(
        connection: &mut <Self::Db as Database>::Connection,
        purchase_id: &str,
    ) -> Result<Option<Purchase>, StoreError> {
        Self::load_purchase(connection, purchase_id, Self::for_update()).await
    }

    /// A purchase by id, read with `lock` (`""`, or `Dialect::for_update`).
    async fn load_purchase(
        connection: &mut <Self::Db as Database>::Connection,
        purchase_id: &str,
        lock: &str,
    ) -> Result<Option<Purchase>, StoreError> {
        sqlx::query(&format!("{PURCHASE_SELECT} WHERE id = $1{lock}"))
            .bind(purchase_id)
            .fetch_optional(&mut *connection)
            .await
            .map_err(Self::store_error)?
            .map(|row| purchase_from_row(&row))
            .transpose()
    }

    async fn load_purchase_by_id(
        connection: &mut <Self::Db as Database>::Connection,
        purchase_id: &str,
    ) -> Result<Option<Purchase>, StoreError> {
        Self::load_purchase(connection, purchase_id, "").await
    }

    async fn load_purchase_by_key(
        connection: &mut <Self::Db as Database>::Connection,
        org_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<Purchase>, StoreError> {
        sqlx::query(&format!(
            "{PURCHASE_SELECT} WHERE org_id = $1 AND idempotency_key = $2"
        ))
        .bind(org_id)
        .bind(idempotency_key)
        .fetch_optional(&mut *connection)
        .await
        .map_err(Self::store_error)?
        .map(|row| purchase_from_row(&row))
        .transpose()
    }

    async fn load_auto_reload(
        connection: &mut <Self::Db as Database>::Connection,
        org_id: &str,
    ) -> Result<Option<AutoReload>, StoreError> {
        sqlx::query(&format!("{AUTO_RELOAD_SELECT} WHERE org_id = $1"))
            .bind(org_id)
            .fetch_optional(&mut *connection)
            .await
            .map_err(Self::store_error)?
            .map(|row| auto_reload_from_row(&row))
            .transpose()
    }
}
