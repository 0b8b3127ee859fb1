//! Jobs start, stop on the shutdown signal after their last run, and report their health.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::*;

fn clock() -> u64 {
    1_795_694_400_000_000_000
}

#[tokio::test]
async fn a_periodic_job_runs_once_more_on_shutdown_and_reports_each_run() {
    let metrics = Arc::new(Metrics::new());
    let mut jobs = Jobs::new(Arc::clone(&metrics), clock);
    let runs = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&runs);
    // An hour: no tick comes before the shutdown, so the only run is the last one.
    jobs.every("test_job", Duration::from_secs(3600), move || {
        let counted = Arc::clone(&counted);
        async move {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                Ok(())
            } else {
                Err("only once".into())
            }
        }
    });
    let board = jobs.board();
    assert_eq!(board.stopped(), None);
    assert!(
        metrics
            .render()
            .contains(r#"tollgate_job_up{job="test_job"} 1"#)
    );
    jobs.stop().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        board.stopped(),
        None,
        "a job stopped by shutdown is not a failure"
    );
    let text = metrics.render();
    for line in [
        r#"tollgate_job_runs_total{job="test_job",outcome="ok"} 1"#,
        r#"tollgate_job_last_success_seconds{job="test_job"} 1795694400"#,
        r#"tollgate_job_up{job="test_job"} 0"#,
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}

#[tokio::test]
async fn a_job_that_ends_by_itself_is_reported_stopped() {
    let metrics = Arc::new(Metrics::new());
    let mut jobs = Jobs::new(Arc::clone(&metrics), clock);
    jobs.start("quits", |_context| async {});
    #[allow(clippy::panic)]
    jobs.start("panics", |_context| async {
        panic!("job failure on purpose")
    });
    let board = jobs.board();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while board.stopped().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no job reported stopped"
        );
        tokio::task::yield_now().await;
    }
    // Both end without a shutdown; each is reported.
    let both = async {
        loop {
            let text = metrics.render();
            if text.contains(r#"tollgate_job_up{job="quits"} 0"#)
                && text.contains(r#"tollgate_job_up{job="panics"} 0"#)
            {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), both)
        .await
        .unwrap();
    jobs.stop().await;
}
