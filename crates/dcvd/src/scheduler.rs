//! The `rescan` cron job (tokio-cron-scheduler): re-reads the configuration and order files so
//! new units are picked up and removed ones cleaned up, without waiting for a SIGHUP. With
//! `[discovery]`, the engine scans the CertCentral account on every such reload.

use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::{debug, warn};

use crate::engine::Control;

/// Starts the scheduler when `expr` is set; the returned scheduler must be kept alive.
pub async fn start_rescan(expr: Option<&str>, path: PathBuf, tx: mpsc::Sender<Control>) -> Option<JobScheduler> {
    let expr = expr?;
    let sched = match JobScheduler::new().await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot start the rescan scheduler");
            return None;
        }
    };
    let job = Job::new_async(expr, move |_id, _lock| {
        let path = path.clone();
        let tx = tx.clone();
        Box::pin(async move {
            debug!(config = %path.display(), "rescan");
            if let Some(cfg) = crate::cli::reload_config(&path, "rescan").await {
                let _ = tx.send(Control::Reload { config: Box::new(cfg), retry_failed: false }).await;
            }
        })
    });
    match job {
        Ok(job) => {
            if let Err(e) = sched.add(job).await {
                warn!(error = %e, "cannot schedule the rescan job");
                return None;
            }
        }
        Err(e) => {
            warn!(rescan = expr, error = %e, "invalid rescan expression");
            return None;
        }
    }
    if let Err(e) = sched.start().await {
        warn!(error = %e, "cannot start the rescan scheduler");
        return None;
    }
    Some(sched)
}
