//! Group commit: single-stream appends from many callers share one transaction, each checked
//! against its own expected version and answered on its own.
use crate::{AppendOutcome, Backend, Result, StreamAppend};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot, watch};

pub(crate) struct Job {
    pub(crate) append: StreamAppend,
    pub(crate) reply: oneshot::Sender<Result<AppendOutcome>>,
}

pub(crate) fn spawn(
    backend: Backend,
    commits: watch::Sender<u64>,
    jobs: mpsc::Receiver<Job>,
    writers: usize,
    max_batch: usize,
) {
    let jobs = Arc::new(Mutex::new(jobs));
    for _ in 0..writers {
        let (backend, commits, jobs) = (backend.clone(), commits.clone(), jobs.clone());
        tokio::spawn(async move {
            loop {
                // One writer at a time gathers a batch: whatever is queued, up to `max_batch`.
                // While it commits, the next writer gathers the next batch.
                let batch = {
                    let mut rx = jobs.lock().await;
                    let Some(first) = rx.recv().await else { return };
                    let mut batch = Vec::with_capacity(64);
                    batch.push(first);
                    while batch.len() < max_batch {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    batch
                };
                commit_batch(&backend, &commits, batch).await;
            }
        });
    }
}

async fn commit_batch(backend: &Backend, commits: &watch::Sender<u64>, batch: Vec<Job>) {
    let (appends, replies): (Vec<StreamAppend>, Vec<_>) = batch.into_iter().map(|j| (j.append, j.reply)).unzip();
    match write(backend, &appends).await {
        Ok(outcomes) => {
            commits.send_modify(|n| *n = n.wrapping_add(1));
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(e) if appends.len() > 1 && crate::is_contention(&e) => {
            // A writer in another process (or another batch) raced us on some stream: one
            // transaction per append, so each caller gets its own answer and no innocent
            // append is refused.
            tracing::debug!(error = %e, size = appends.len(), "group commit fell back to single appends");
            for (append, reply) in appends.into_iter().zip(replies) {
                let outcome = match write(backend, std::slice::from_ref(&append)).await {
                    Ok(mut o) => {
                        commits.send_modify(|n| *n = n.wrapping_add(1));
                        o.pop().unwrap_or_else(|| Err(crate::StoreError::Invalid("empty batch result".into())))
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(outcome);
            }
        }
        Err(e) if appends.len() == 1 => {
            let _ = replies.into_iter().next().map(|r| r.send(Err(e)));
        }
        Err(e) => {
            // The database failed, or the commit's outcome is unknown: retrying could write
            // twice, so every caller hears of the failure and decides.
            tracing::warn!(error = %e, size = appends.len(), "group commit failed");
            let msg = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(crate::StoreError::Batch(msg.clone())));
            }
        }
    }
}

/// One transaction: check versions, insert what holds, commit.
async fn write(backend: &Backend, appends: &[StreamAppend]) -> Result<Vec<Result<AppendOutcome>>> {
    match backend {
        Backend::Sqlite(b) => {
            let mut tx = b.begin().await?;
            let out = crate::sqlite::write_batch(&mut tx, appends, false).await?;
            tx.commit().await?;
            Ok(out)
        }
        Backend::Postgres(b) => {
            let mut tx = b.begin().await?;
            let out = crate::postgres::write_batch(&mut tx, appends, false).await?;
            tx.commit().await?;
            Ok(out)
        }
    }
}
