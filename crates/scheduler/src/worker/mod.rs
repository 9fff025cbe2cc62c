//! The scheduler's worker: the due loop (`due`), which issues what the schedules call for,
//! the retries that are due and the charges held for the window (`issue` builds what each
//! charge appends).
pub mod due;
pub mod issue;

use autodebit_domain::window::DailyWindow;
use autodebit_runtime::Platform;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// How often the loop looks for due schedules when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);

/// Starts the loop; what it returns tells the platform time as of which the loop last found
/// nothing left to do (`GetSchedulerStatus.checked_through_ms`).
pub fn spawn(platform: Platform, window: DailyWindow, holds: crate::holds::Holds) -> Arc<AtomicI64> {
    let checked_through = Arc::new(AtomicI64::new(0));
    let reported = checked_through.clone();
    tokio::spawn(async move {
        let mut moved = platform.clock.watch();
        loop {
            let started = platform.clock.now_ms();
            let issued = async {
                let due = due::issue_all_due(&platform, &window).await?;
                let retries = due::issue_retries(&platform, &window).await?;
                let held = due::release_held(&platform, &window).await?;
                let holds = holds.settle_due().await?;
                anyhow::Ok(due + retries + held + holds)
            }
            .await;
            match issued {
                Ok(n) if n > 0 => continue,
                Ok(_) => {
                    checked_through.fetch_max(started, Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "issuing due charges failed; retrying");
                    autodebit_runtime::metrics::add(autodebit_runtime::metrics::SCHEDULER_ERRORS, &[], 1);
                }
            }
            tokio::select! {
                _ = moved.changed() => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = platform.shutdown.wait() => return,
            }
        }
    });
    reported
}
