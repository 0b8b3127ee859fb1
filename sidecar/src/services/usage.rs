//! Usage ingestion (`POST /v1/usage`): a validated batch added into the live aggregates
//! exactly once per `(sender, seq)` and tenant, then its request log entries queued.
//!
//! A batch whose records were all applied before (`applied == 0`, `duplicate > 0`) is a
//! resend whose entries were queued the first time: they are not queued again (the residual
//! double-logging cases are in [`crate::services::request_log`]). A batch the store could not
//! ingest queues nothing: the filter sends it again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tollgate_filter::Nanos;
use tollgate_filter::usage::{UsageBatch, UsageResponse};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::services::request_log::RequestLog;
use crate::storage::usage::{Ingested, MAX_AGE_DAYS, StoreError, UsageStore};

/// A boxed future of an ingestion.
pub type IngestFuture<'a> = Pin<Box<dyn Future<Output = Result<Ingested, StoreError>> + Send + 'a>>;

/// The one operation `POST /v1/usage` needs from a [`UsageStore`], object-safe so that the
/// application state does not carry the store's type.
pub trait Ingest: Send + Sync + 'static {
    /// [`UsageStore::ingest`].
    fn ingest<'a>(&'a self, batch: &'a UsageBatch, now: Nanos) -> IngestFuture<'a>;
}

impl<U: UsageStore> Ingest for U {
    fn ingest<'a>(&'a self, batch: &'a UsageBatch, now: Nanos) -> IngestFuture<'a> {
        Box::pin(UsageStore::ingest(self, batch, now))
    }
}

/// What ingestion shares: the aggregates and where request log entries go.
#[derive(Clone)]
pub struct UsageIngest {
    /// The live aggregates.
    pub store: Arc<dyn Ingest>,
    /// Where the batches' request log entries go.
    pub request_log: RequestLog,
}

impl UsageIngest {
    /// Checks `batch` whole (a bad record: 422 naming it, as does a date more than
    /// [`MAX_AGE_DAYS`] days old or in the future), ingests it at
    /// `now`, counts it in `metrics` and queues its request log entries unless it was a
    /// resend.
    pub async fn ingest(
        &self,
        mut batch: UsageBatch,
        metrics: &Metrics,
        now: Nanos,
    ) -> Result<UsageResponse, ApiError> {
        batch
            .validate()
            .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
        check_dates(&batch, now).map_err(|(n, reason)| {
            ApiError::InvalidRequest(format!("records[{n}].date: {reason}"))
        })?;
        let ingested = self.store.ingest(&batch, now).await?;
        let duplicate = ingested.applied == 0 && ingested.duplicate > 0;
        metrics.usage_batch(ingested.applied, duplicate);
        if !duplicate {
            self.request_log.submit(std::mem::take(&mut batch.requests));
        }
        Ok(UsageResponse {
            applied: ingested.applied,
            duplicate: ingested.duplicate,
        })
    }
}

/// Checks what the store cannot: every record's date is at most [`MAX_AGE_DAYS`] before and
/// one day after the UTC date of `now`. The error is `(record index, reason)`.
pub fn check_dates(batch: &UsageBatch, now: Nanos) -> Result<(), (usize, String)> {
    let today = (now / 86_400_000_000_000) as i64;
    for (n, record) in batch.records.iter().enumerate() {
        let Some(day) = tollgate_filter::usage::parse_date(&record.date) else {
            return Err((n, format!("{:?} is not a date (YYYY-MM-DD)", record.date)));
        };
        if day < today - MAX_AGE_DAYS || day > today + 1 {
            return Err((
                n,
                format!(
                    "{} is not within {MAX_AGE_DAYS} days before and 1 day after today ({})",
                    record.date,
                    tollgate_filter::usage::format_date(today)
                ),
            ));
        }
    }
    Ok(())
}
