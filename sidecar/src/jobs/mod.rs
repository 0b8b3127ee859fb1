//! Background jobs, started, stopped and watched one way: the usage flush ([`flush`]) and the
//! request log writer ([`request_log`]) and the registry's
//! quota state ([`quota`]) and the quota alerts ([`alerts`]) now; billing next.
//!
//! [`Jobs::start`] runs a job as a task of its own, handing it a [`JobContext`]: the shutdown
//! signal ([`JobContext::stopping`]) and its [`JobHealth`], to which it reports each run
//! ([`JobHealth::ran`]). [`Jobs::every`] is the periodic kind: one run every interval and one
//! more on shutdown. [`Jobs::stop`] (on SIGINT/SIGTERM, once no request is left) signals every
//! job and waits until each has finished its last work.
//!
//! Health is reported in two places:
//!
//! - `/metrics`: `tollgate_job_runs_total{job, outcome}` (`ok`/`failed`),
//!   `tollgate_job_last_success_seconds{job}` and `tollgate_job_up{job}`.
//! - `/readyz`: 503 `job_stopped`, naming the job, when a job's task ended while the sidecar
//!   serves (it returned or panicked) — work that nothing does any more. A failed run is not
//!   a stopped job: it is retried, and counted.

pub mod alerts;
pub mod billing;
pub mod flush;
pub mod quota;
pub mod request_log;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Clock;
use crate::metrics::Metrics;

/// One job's health, shared by the job and `/readyz`.
pub struct JobHealth {
    name: &'static str,
    metrics: Arc<Metrics>,
    clock: Clock,
    stopped: AtomicBool,
}

impl JobHealth {
    /// The job's name (the `job` label).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Reports one run: counted, and its time kept when `ok`.
    pub fn ran(&self, ok: bool) {
        let now_seconds = (self.clock)() as f64 / 1e9;
        self.metrics.job_run(self.name, ok, now_seconds);
    }

    /// Whether the job's task ended while the sidecar was serving.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

/// Every started job's health, for `/readyz` (empty: no job, always fine).
#[derive(Clone, Default)]
pub struct JobBoard {
    jobs: Arc<Mutex<Vec<Arc<JobHealth>>>>,
}

impl JobBoard {
    /// The first job that stopped while the sidecar serves, if any.
    pub fn stopped(&self) -> Option<&'static str> {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.iter().find(|job| job.stopped()).map(|job| job.name)
    }

    fn add(&self, job: Arc<JobHealth>) {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.push(job);
    }
}

/// What a running job gets: the shutdown signal and its health.
pub struct JobContext {
    /// Where the job reports its runs.
    pub health: Arc<JobHealth>,
    shutdown: watch::Receiver<bool>,
}

impl JobContext {
    /// Resolves once the sidecar shuts down (at once if it already does).
    pub async fn stopping(&mut self) {
        // An error means the sender is gone: shutting down as well.
        let _ = self.shutdown.wait_for(|stop| *stop).await;
    }
}

/// The started jobs.
pub struct Jobs {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    board: JobBoard,
    metrics: Arc<Metrics>,
    clock: Clock,
}

/// Marks its job stopped when dropped before shutdown (the job returned or panicked).
struct Watch {
    health: Arc<JobHealth>,
    shutdown: watch::Receiver<bool>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.health.metrics.job_up(self.health.name, false);
        if !*self.shutdown.borrow() {
            self.health.stopped.store(true, Ordering::Relaxed);
            tracing::error!(job = self.health.name, "a background job stopped by itself");
        }
    }
}

impl Jobs {
    /// No jobs yet; they will count into `metrics` and read `clock`.
    pub fn new(metrics: Arc<Metrics>, clock: Clock) -> Self {
        Jobs {
            stop: watch::channel(false).0,
            tasks: Vec::new(),
            board: JobBoard::default(),
            metrics,
            clock,
        }
    }

    /// The jobs' health, for `/readyz` ([`crate::AppState::with_jobs`]).
    pub fn board(&self) -> JobBoard {
        self.board.clone()
    }

    /// Starts `job` as a task named `name`; it should return soon after
    /// [`JobContext::stopping`] resolves, its last work done.
    pub fn start<F, Fut>(&mut self, name: &'static str, job: F)
    where
        F: FnOnce(JobContext) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let health = Arc::new(JobHealth {
            name,
            metrics: Arc::clone(&self.metrics),
            clock: self.clock,
            stopped: AtomicBool::new(false),
        });
        self.board.add(Arc::clone(&health));
        self.metrics.job_up(name, true);
        let watch = Watch {
            health: Arc::clone(&health),
            shutdown: self.stop.subscribe(),
        };
        let work = job(JobContext {
            health,
            shutdown: self.stop.subscribe(),
        });
        let task = tokio::spawn(async move {
            let _watch = watch;
            work.await;
        });
        self.tasks.push((name, task));
    }

    /// Starts a periodic job: `run` every `interval` (the first after one interval) and once
    /// more on shutdown; each run is reported as it went (`Err`: logged, retried next time).
    pub fn every<R, Fut>(&mut self, name: &'static str, interval: Duration, run: R)
    where
        R: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        self.start(name, move |mut context| async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate
            loop {
                tokio::select! {
                    _ = ticks.tick() => report(&context.health, run().await),
                    () = context.stopping() => break,
                }
            }
            report(&context.health, run().await);
        });
    }

    /// The started jobs' names, in start order.
    pub fn names(&self) -> Vec<&'static str> {
        self.tasks.iter().map(|(name, _)| *name).collect()
    }

    /// Signals shutdown to every job and waits until each has finished.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for (name, task) in self.tasks {
            if let Err(error) = task.await {
                tracing::error!(job = name, %error, "a background job failed");
            }
        }
    }
}

fn report(health: &JobHealth, outcome: Result<(), String>) {
    if let Err(error) = &outcome {
        tracing::warn!(job = health.name, %error, "background job run failed; retried");
    }
    health.ran(outcome.is_ok());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
