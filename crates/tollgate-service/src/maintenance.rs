//! Background duties: keep the reservations of this process's running requests alive
//! (`heartbeat.rs`), void reservations whose request never ended (the process died) and
//! move expired credit out of its lots, and keep Message Batches (`batches.rs`: expiry,
//! ended batches, results kept long enough), delete stored responses past their
//! retention (`responses.rs`), captured bodies past theirs (`capture.rs`), idempotency
//! keys past theirs (`idempotency.rs`) and expired files (`files.rs`), and ask the
//! identity provider again for the groups of people signed in with single sign-on
//! (`sso.rs`, every `recheck_minutes`).

use std::time::Duration;

use crate::Tollgate;
use crate::error::ServiceError;

/// What one maintenance pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub reservations_voided: usize,
    pub lots_expired: usize,
    pub batches: crate::batches::BatchMaintenance,
    pub responses_expired: u64,
    /// Captured bodies deleted at the end of their retention.
    pub captures_purged: u64,
    /// Idempotency keys deleted 24 hours after their first use.
    pub idempotency_keys_expired: u64,
    /// Files of the Files API deleted once expired, rows and bytes.
    pub files_purged: u64,
    /// Single sign-on's groups asked of the identity provider again.
    pub sso: crate::sso::SsoRecheckReport,
}

impl Tollgate {
    pub async fn maintain(&self) -> Result<MaintenanceReport, ServiceError> {
        let now = self.now();
        // Settlements the store refused earlier first, then the heartbeat (running requests
        // and settlements still pending), and no reaping if it failed: the reaper must never
        // void the reservation of a request still running here, or whose charge is known.
        self.settle_pending().await;
        let mut live = self.inner.live.ids_now();
        live.extend(self.inner.pending.reservation_ids());
        self.store()
            .extend_reservations(&live, now + self.settings().reservation_ttl)
            .await?;
        // Batches before the reaper: an expired batch voids its own requests' reservations.
        let batches = self.maintain_batches().await?;
        let reservations_voided = self.store().reap_reservations(now).await?;
        self.alert_expiring_keys(now).await;
        crate::telemetry::reaped(reservations_voided);
        Ok(MaintenanceReport {
            reservations_voided,
            lots_expired: self.store().expire_lots(now).await?,
            batches,
            responses_expired: self.store().delete_expired_responses(now).await?,
            captures_purged: self.store().purge_captures(now).await?,
            idempotency_keys_expired: self.store().delete_expired_idempotency_keys(now).await?,
            files_purged: self.purge_expired_files(now).await?,
            // A failure here (the store) must not hold up the rest of maintenance.
            sso: self.recheck_sso_groups().await.unwrap_or_else(|error| {
                tracing::warn!(%error, "single sign-on's groups were not re-checked");
                crate::sso::SsoRecheckReport::default()
            }),
        })
    }

    /// Runs [`Tollgate::maintain`] every `interval` until the task is dropped.
    pub async fn run_maintenance(self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.maintain().await {
                Ok(report) if report != MaintenanceReport::default() => {
                    tracing::info!(?report, "maintenance pass");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "maintenance pass failed"),
            }
        }
    }
}
