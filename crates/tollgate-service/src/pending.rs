//! Settlements that could not be written (the database refused: disk full, locked, gone),
//! kept until the store takes them. Each is appended to a file in the data directory
//! (`pending-settlements.jsonl`, one JSON object a line, fsync'd) and held in memory; the
//! maintenance pass writes them before it reaps, and the heartbeat keeps their
//! reservations' deadlines moving meanwhile, so the reaper never voids a reservation whose
//! charge is known. At start the file is read back, so a restart loses none.
//!
//! Exactly once: a settlement is idempotent by reservation id in the store (a reservation
//! ends once, `UPDATE … WHERE state = 'pending'`), so writing one that had in fact
//! committed, or whose reservation another replica reaped, does nothing. It never computes
//! money: the settlement is kept as the service made it.
//!
//! The file is this process's: replicas on one machine need data directories of their own.
//! When the file itself cannot be written (the disk is full), the settlement is still kept
//! in memory and written by a later pass; only a crash before then loses it, and then the
//! reaper voids the reservation as it would for any crash.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use serde_json::{Value, json};
use tollgate_core::Timestamp;
use tollgate_core::attribution::{Attribution, ClientLabel};
use tollgate_core::catalog::UpstreamAttempt;
use tollgate_core::money::NanoUsd;
use tollgate_core::pricing::{CostLines, Multipliers};
use tollgate_core::usage::{Speed, TokenUsage};
use tollgate_store::{Settlement, UsageRecord, UsageStatus};

/// The file's name in the data directory.
pub const PENDING_SETTLEMENTS_FILE: &str = "pending-settlements.jsonl";

#[derive(Debug, Default)]
pub(crate) struct PendingSettlements {
    /// Where they are kept durably; unset (tests, tools), in memory only.
    path: OnceLock<PathBuf>,
    settlements: Mutex<Vec<Settlement>>,
}

impl PendingSettlements {
    /// Keeps pending settlements in `path` from now on, and takes those already there.
    pub(crate) fn open(&self, path: PathBuf) -> std::io::Result<usize> {
        let mut read = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter(|line| !line.trim().is_empty())
                .filter_map(|line| {
                    let decoded = decode(line);
                    if decoded.is_none() {
                        // A torn last line of a crash mid-append: its settlement never reached
                        // its caller as written either, and the reaper ends its reservation.
                        tracing::error!(line, "an unreadable pending settlement was skipped");
                    }
                    decoded
                })
                .collect(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        let count = read.len();
        let mut settlements = self.settlements();
        settlements.append(&mut read);
        if self.path.set(path).is_err() {
            tracing::warn!("the pending settlements file was already chosen; keeping the first");
        }
        Ok(count)
    }

    /// Keeps a settlement the store refused, durably if the file can be written.
    pub(crate) fn keep(&self, settlement: Settlement) {
        let mut settlements = self.settlements();
        if let Some(path) = self.path.get()
            && let Err(error) = append(path, &encode(&settlement))
        {
            tracing::error!(
                %error,
                reservation_id = settlement.reservation_id,
                "could not write a pending settlement to its file; it is kept in memory only"
            );
        }
        settlements.push(settlement);
    }

    /// The pending settlements, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<Settlement> {
        self.settlements().clone()
    }

    pub(crate) fn reservation_ids(&self) -> Vec<String> {
        self.settlements()
            .iter()
            .map(|settlement| settlement.reservation_id.clone())
            .collect()
    }

    /// Forgets the settlements of `written` (now in the store) and rewrites the file with
    /// the rest.
    pub(crate) fn forget(&self, written: &[String]) {
        if written.is_empty() {
            return;
        }
        let mut settlements = self.settlements();
        settlements.retain(|settlement| !written.contains(&settlement.reservation_id));
        if let Some(path) = self.path.get()
            && let Err(error) = rewrite(path, &settlements)
        {
            // Harmless: a settlement left in the file is written again at the next start,
            // and the store ignores it.
            tracing::warn!(%error, "could not rewrite the pending settlements file");
        }
    }

    fn settlements(&self) -> MutexGuard<'_, Vec<Settlement>> {
        // Every update leaves the list whole, so a panic elsewhere cannot corrupt it.
        self.settlements.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(format!("{line}\n").as_bytes())?;
    file.sync_data()
}

/// Replaces the file by one holding `settlements`: written aside, synced, renamed over it.
fn rewrite(path: &Path, settlements: &[Settlement]) -> std::io::Result<()> {
    if settlements.is_empty() {
        return match std::fs::remove_file(path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        };
    }
    let aside = path.with_extension("jsonl.new");
    let mut file = std::fs::File::create(&aside)?;
    for settlement in settlements {
        file.write_all(format!("{}\n", encode(settlement)).as_bytes())?;
    }
    file.sync_data()?;
    std::fs::rename(&aside, path)
}

fn encode(settlement: &Settlement) -> String {
    let record = &settlement.record;
    let label = |label: &Option<ClientLabel>| label.as_ref().map(ClientLabel::as_str).map(str::to_owned);
    json!({
        "reservation_id": settlement.reservation_id,
        "cost_nanos": settlement.cost.nanos(),
        "now_millis": settlement.now.timestamp_millis(),
        "request_id": record.request_id,
        "org_id": record.org_id,
        "workspace_id": record.workspace_id,
        "api_key_id": record.api_key_id,
        "model": record.model,
        "input_tokens": record.usage.input_tokens,
        "output_tokens": record.usage.output_tokens,
        "cache_creation_5m_input_tokens": record.usage.cache_creation_5m_input_tokens,
        "cache_creation_1h_input_tokens": record.usage.cache_creation_1h_input_tokens,
        "cache_read_input_tokens": record.usage.cache_read_input_tokens,
        "record_cost_nanos": record.cost.nanos(),
        "status": record.status.as_str(),
        "error_type": record.error_type,
        "latency_ms": record.latency_ms,
        "started_at_millis": record.started_at.timestamp_millis(),
        "ended_at_millis": record.ended_at.timestamp_millis(),
        "session_id": label(&record.attribution.session_id),
        "agent_id": label(&record.attribution.agent_id),
        "parent_agent_id": label(&record.attribution.parent_agent_id),
        "web_search_requests": record.usage.web_search_requests,
        "speed": record.usage.speed.map(Speed::as_str),
        "served_model": record.served_model,
        "multipliers": record.multipliers.label(),
        "cost_lines_nanos": record.lines.to_array().map(NanoUsd::nanos),
        "upstream_attempts": record.upstream_attempts.iter().map(|attempt| json!({
            "deployment": attempt.deployment,
            "error": attempt.error,
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

fn decode(line: &str) -> Option<Settlement> {
    let value: Value = serde_json::from_str(line).ok()?;
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    let count = |name: &str| value.get(name).and_then(Value::as_u64);
    let nanos = |name: &str| value.get(name).and_then(Value::as_i64).map(NanoUsd::from_nanos);
    let instant = |name: &str| Timestamp::from_timestamp_millis(value.get(name).and_then(Value::as_i64)?);
    let label = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .and_then(|raw| ClientLabel::parse(raw.as_bytes()))
    };
    Some(Settlement {
        reservation_id: text("reservation_id")?,
        cost: nanos("cost_nanos")?,
        now: instant("now_millis")?,
        record: UsageRecord {
            request_id: text("request_id")?,
            org_id: text("org_id")?,
            workspace_id: text("workspace_id")?,
            api_key_id: text("api_key_id"),
            model: text("model")?,
            usage: TokenUsage {
                input_tokens: count("input_tokens")?,
                output_tokens: count("output_tokens")?,
                cache_creation_5m_input_tokens: count("cache_creation_5m_input_tokens")?,
                cache_creation_1h_input_tokens: count("cache_creation_1h_input_tokens")?,
                cache_read_input_tokens: count("cache_read_input_tokens")?,
                // Absent from lines written before #18: none, and unknown.
                web_search_requests: count("web_search_requests").unwrap_or(0),
                speed: text("speed").as_deref().and_then(Speed::parse),
                // The applied multipliers are the record's own.
                resident: None,
            },
            cost: nanos("record_cost_nanos")?,
            status: UsageStatus::parse(&text("status")?)?,
            error_type: text("error_type"),
            latency_ms: count("latency_ms")?,
            started_at: instant("started_at_millis")?,
            ended_at: instant("ended_at_millis")?,
            attribution: Attribution {
                session_id: label("session_id"),
                agent_id: label("agent_id"),
                parent_agent_id: label("parent_agent_id"),
            },
            served_model: text("served_model"),
            multipliers: Multipliers::parse_label(&text("multipliers").unwrap_or_default())?,
            // Absent from lines written before the cost lines were kept: none.
            lines: match value.get("cost_lines_nanos") {
                Some(lines) => {
                    let lines: [i64; 6] = serde_json::from_value(lines.clone()).ok()?;
                    CostLines::from_array(lines.map(NanoUsd::from_nanos))
                }
                None => CostLines::default(),
            },
            // Absent from lines written before #17 kept them: none.
            upstream_attempts: value
                .get("upstream_attempts")
                .and_then(Value::as_array)
                .map(|attempts| {
                    attempts
                        .iter()
                        .filter_map(|attempt| {
                            Some(UpstreamAttempt {
                                deployment: attempt.get("deployment")?.as_str()?.to_owned(),
                                error: attempt.get("error").and_then(Value::as_str).map(str::to_owned),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
        },
    })
}

#[cfg(test)]
mod tests;

impl crate::Tollgate {
    /// Keeps settlements the store refuses in `path` (in the data directory), and takes
    /// those a previous run left there, to be written by the next maintenance pass. Returns
    /// how many it found.
    pub fn keep_pending_settlements_in(&self, path: PathBuf) -> std::io::Result<usize> {
        let found = self.inner.pending.open(path)?;
        if found > 0 {
            tracing::warn!(found, "settlements a previous run could not write are pending");
        }
        Ok(found)
    }

    /// Writes the pending settlements the store now takes; returns how many. One it still
    /// refuses stays pending.
    pub async fn settle_pending(&self) -> usize {
        let mut written = Vec::new();
        for settlement in self.inner.pending.snapshot() {
            let reservation_id = settlement.reservation_id.clone();
            match self.store().settle(settlement).await {
                Ok(outcome) => {
                    if outcome.already_ended {
                        tracing::warn!(
                            reservation_id,
                            "a pending settlement's reservation had already ended"
                        );
                    } else {
                        tracing::info!(reservation_id, charged = %outcome.charged, "a pending settlement was written");
                    }
                    written.push(reservation_id);
                }
                Err(error) => {
                    tracing::warn!(%error, reservation_id, "a pending settlement is still refused");
                }
            }
        }
        self.inner.pending.forget(&written);
        written.len()
    }

    /// How many settlements are waiting for the store.
    pub fn pending_settlement_count(&self) -> usize {
        self.inner.pending.reservation_ids().len()
    }

    /// How many of this process's requests hold a reservation now, written or held in
    /// memory (those a table of reservations does not show): none once every request has
    /// ended and its settlement was written or kept pending.
    pub fn running_request_count(&self) -> usize {
        self.inner.live.ids_now().len()
    }
}
