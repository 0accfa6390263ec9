//! Background duties: void reservations whose request never ended (the process died) and
//! move expired credit out of its lots.

use std::time::Duration;

use crate::Tollgate;
use crate::error::ServiceError;

/// What one maintenance pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub reservations_voided: usize,
    pub lots_expired: usize,
}

impl Tollgate {
    pub async fn maintain(&self) -> Result<MaintenanceReport, ServiceError> {
        let now = self.now();
        Ok(MaintenanceReport {
            reservations_voided: self.store().reap_reservations(now).await?,
            lots_expired: self.store().expire_lots(now).await?,
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
