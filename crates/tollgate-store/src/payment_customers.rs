//! What the store keeps of an external payment provider: the provider's customer of each
//! organization with the payment method saved for off-session charges (ids, and the card's
//! brand and last four digits for display, never a card number), a purchase looked up by
//! id or by the provider's payment reference for the provider's events, and a purchase's
//! reversals (refunds, lost disputes) for its receipt. The events themselves are
//! deduplicated inside `complete_purchase_on_event`, in the transaction of their effect.
//!
//! Written once for both backends over `Dialect`.

use sqlx::{Database, Encode, Executor, IntoArguments, Type};
use tollgate_core::Timestamp;

use crate::codec::millis;
use crate::codec::{invariant, timestamp_from_sql};
use crate::dialect::Dialect;
use crate::error::StoreError;
use crate::model::{PaymentCustomer, Purchase, PurchaseReversal};
use crate::rows::{DbRow, PURCHASE_SELECT, column, purchase_from_row};
use tollgate_core::money::NanoUsd;
use tollgate_core::refunds::ReversalKind;

/// The payment-customer queries, the same on every backend.
pub(crate) trait PaymentCustomers: Dialect
where
    <Self::Db as Database>::Row: DbRow,
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    for<'c> &'c sqlx::Pool<Self::Db>: Executor<'c, Database = Self::Db>,
    for<'q> <Self::Db as Database>::Arguments<'q>: IntoArguments<'q, Self::Db>,
    for<'q> &'q str: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> Option<&'q str>: Encode<'q, Self::Db> + Type<Self::Db>,
    for<'q> i64: Encode<'q, Self::Db> + Type<Self::Db>,
{
    async fn payment_customer(&self, org_id: &str) -> Result<Option<PaymentCustomer>, StoreError> {
        sqlx::query(
            "SELECT org_id, customer_id, payment_method_id, card_brand, card_last4
             FROM payment_customers WHERE org_id = $1",
        )
        .bind(org_id)
        .fetch_optional(self.read_pool())
        .await
        .map_err(Self::store_error)?
        .map(|row| {
            Ok(PaymentCustomer {
                org_id: column(&row, "org_id")?,
                customer_id: column(&row, "customer_id")?,
                payment_method_id: column(&row, "payment_method_id")?,
                card_brand: column(&row, "card_brand")?,
                card_last4: column(&row, "card_last4")?,
            })
        })
        .transpose()
    }

    /// Records the organization's customer, keeping a payment method saved before when
    /// `customer.payment_method_id` is `None`.
    async fn save_payment_customer(
        &self,
        customer: &PaymentCustomer,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO payment_customers
                (org_id, customer_id, payment_method_id, card_brand, card_last4, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (org_id) DO UPDATE SET
                customer_id = excluded.customer_id,
                payment_method_id = COALESCE(excluded.payment_method_id, payment_customers.payment_method_id),
                card_brand = CASE WHEN excluded.payment_method_id IS NULL
                    THEN payment_customers.card_brand ELSE excluded.card_brand END,
                card_last4 = CASE WHEN excluded.payment_method_id IS NULL
                    THEN payment_customers.card_last4 ELSE excluded.card_last4 END,
                updated_at = excluded.updated_at",
        )
        .bind(customer.org_id.as_str())
        .bind(customer.customer_id.as_str())
        .bind(customer.payment_method_id.as_deref())
        .bind(customer.card_brand.as_deref())
        .bind(customer.card_last4.as_deref())
        .bind(millis(now))
        .execute(self.write_pool())
        .await
        .map_err(Self::store_error)?;
        Ok(())
    }

    async fn purchase(&self, purchase_id: &str) -> Result<Option<Purchase>, StoreError> {
        sqlx::query(&format!("{PURCHASE_SELECT} WHERE id = $1"))
            .bind(purchase_id)
            .fetch_optional(self.read_pool())
            .await
            .map_err(Self::store_error)?
            .map(|row| purchase_from_row(&row))
            .transpose()
    }

    /// The purchase the provider's payment `reference` (Stripe's PaymentIntent) paid.
    async fn purchase_by_payment_reference(&self, reference: &str) -> Result<Option<Purchase>, StoreError> {
        sqlx::query(&format!("{PURCHASE_SELECT} WHERE payment_reference = $1"))
            .bind(reference)
            .fetch_optional(self.read_pool())
            .await
            .map_err(Self::store_error)?
            .map(|row| purchase_from_row(&row))
            .transpose()
    }

    /// A purchase's reversals, oldest first.
    async fn purchase_reversals(&self, purchase_id: &str) -> Result<Vec<PurchaseReversal>, StoreError> {
        sqlx::query(
            "SELECT kind, reference, amount_nanos, recovered_nanos, unrecovered_nanos, created_at
             FROM purchase_reversals WHERE purchase_id = $1 ORDER BY created_at, id",
        )
        .bind(purchase_id)
        .fetch_all(self.read_pool())
        .await
        .map_err(Self::store_error)?
        .iter()
        .map(|row| {
            let kind: String = column(row, "kind")?;
            Ok(PurchaseReversal {
                kind: ReversalKind::parse(&kind)
                    .ok_or_else(|| invariant(format!("unknown reversal kind '{kind}'")))?,
                reference: column(row, "reference")?,
                amount: NanoUsd::from_nanos(column(row, "amount_nanos")?),
                recovered: NanoUsd::from_nanos(column(row, "recovered_nanos")?),
                unrecovered: NanoUsd::from_nanos(column(row, "unrecovered_nanos")?),
                created_at: timestamp_from_sql(column(row, "created_at")?)?,
            })
        })
        .collect()
    }
}
