//! The webhook sender: works through `notifier_webhook_outbox`. Each due delivery is taken
//! (`sending`), signed with its endpoint's current secret as the Standard Webhooks
//! specification says, posted, and its result recorded. Failures are tried again on the
//! back-off schedule (`webhooks::retry`) for at least three days; an endpoint whose every
//! delivery has failed for three days is disabled. Each endpoint has at most a few deliveries in
//! flight and each send has its own timeout, so a slow or failing receiver holds up only its own
//! deliveries, never another merchant's. A sender that dies leaves rows in `sending`; the next
//! holder of the lease sends them again with the same `webhook-id`.
use crate::app::webhooks::{EndpointRow, Webhooks, endpoint};
use crate::webhooks::retry::{DISABLE_AFTER, next_delay};
use crate::webhooks::send::WebhookSender;
use autodebit_eventstore::{EventStore, StoreError, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Deliveries in flight at once, all endpoints together.
const CONCURRENCY: usize = 512;
/// Deliveries in flight at once to one endpoint.
const PER_ENDPOINT: usize = 16;
/// How often to look for due deliveries while sends are in flight and nothing woke the sender.
const CLAIM_EVERY: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub delivery_id: String,
    pub endpoint_id: String,
    pub event_type: String,
    pub payload: String,
    pub state: String,
    pub attempts: i64,
    pub next_at_ms: i64,
    pub last_status: i64,
    pub last_error: String,
    pub created_at_ms: i64,
}

pub const DELIVERY_COLUMNS: &str = "delivery_id, endpoint_id, event_type, payload, state, attempts, \
     next_at_ms, last_status, last_error, created_at_ms";

/// What a send came to.
struct Done {
    row: DeliveryRow,
    status: u16,
    error: Option<String>,
    succeeded: bool,
    at_ms: i64,
}

/// The `webhook-timestamp` of a send: the wall clock's seconds, whatever the platform clock
/// says. Receivers check it against their own clocks to refuse replays (the specification's
/// five minutes), so it must be the real moment of sending even when a test clock moves the
/// platform's time.
fn wall_clock_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn spawn(hooks: Webhooks, sender: WebhookSender, queued: Arc<tokio::sync::Notify>) {
    tokio::spawn(async move {
        let platform = hooks.platform.clone();
        let lease = tokio::select! {
            l = platform.store.acquire_lease("notifier.webhooks") => l,
            _ = platform.shutdown.wait() => return,
        };
        let _lease = match lease {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot take the webhook sender's lease");
                return;
            }
        };
        loop {
            if let Err(e) = release(&platform.store).await {
                tracing::error!(error = %e, "releasing webhook deliveries failed");
            }
            match run(&hooks, &sender, &queued).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "webhook sender failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = platform.shutdown.wait() => return,
                    }
                }
            }
        }
    });
}

/// Puts back deliveries whose outcome is unknown: they are sent again, same `webhook-id`.
async fn release(store: &EventStore) -> Result<u64, StoreError> {
    let mut tx = store.begin().await?;
    let n = tx.execute("UPDATE notifier_webhook_outbox SET state = 'pending' WHERE state = 'sending'", &[]).await?;
    tx.commit().await?;
    Ok(n)
}

/// Takes due deliveries, none of an endpoint in `busy`.
async fn claim(store: &EventStore, now: i64, limit: usize, busy: &[String]) -> Result<Vec<DeliveryRow>, StoreError> {
    let mut tx = store.begin().await?;
    let busy = serde_json::Value::Array(busy.iter().map(|b| serde_json::json!([b])).collect()).to_string();
    let rows: Vec<DeliveryRow> = tx
        .query_as(
            &format!(
                "UPDATE notifier_webhook_outbox SET state = 'sending'
                 WHERE delivery_id IN (
                     SELECT delivery_id FROM notifier_webhook_outbox
                     WHERE state = 'pending' AND next_at_ms <= $1
                       AND endpoint_id NOT IN (SELECT value->>0 FROM {})
                     ORDER BY next_at_ms LIMIT $3)
                 RETURNING {DELIVERY_COLUMNS}",
                tx.kind().json_rows(2)
            ),
            &[Value::Int(now), Value::from(busy), Value::Int(limit as i64)],
        )
        .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Records `first` and whatever else has finished, freeing their slots. Whether an endpoint
/// with nothing waiting got room: what is due for it can be taken now.
async fn record_finished(
    hooks: &Webhooks,
    in_flight: &Mutex<HashMap<String, usize>>,
    waiting: &HashMap<String, std::collections::VecDeque<DeliveryRow>>,
    first: Option<Done>,
    done_rx: &mut mpsc::Receiver<Done>,
) -> anyhow::Result<bool> {
    let mut finished: Vec<Done> = first.into_iter().collect();
    while let Ok(d) = done_rx.try_recv() {
        finished.push(d);
    }
    if finished.is_empty() {
        return Ok(false);
    }
    let mut room = false;
    for d in &finished {
        free_slot(in_flight, &d.row.endpoint_id);
        room |= waiting.get(&d.row.endpoint_id).is_none_or(|q| q.is_empty());
    }
    record(hooks, finished).await?;
    Ok(room)
}

/// One delivery to `endpoint_id` is no longer in flight.
fn free_slot(in_flight: &Mutex<HashMap<String, usize>>, endpoint_id: &str) {
    let mut f = in_flight.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = f.get_mut(endpoint_id) {
        *n = n.saturating_sub(1);
    }
}

async fn run(hooks: &Webhooks, sender: &WebhookSender, queued: &tokio::sync::Notify) -> anyhow::Result<()> {
    let platform = &hooks.platform;
    let in_flight: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(4096);
    let mut clock = platform.clock.watch();
    // Deliveries taken for an endpoint that had no room yet: they wait here (still `sending`,
    // so a crash sends them after all) rather than going back to the table.
    let mut waiting: HashMap<String, std::collections::VecDeque<DeliveryRow>> = HashMap::new();
    // Whether to look for due deliveries on the next turn: after a wake-up, after a claim that
    // found all it asked for, once an endpoint has room and nothing waiting, and at least every
    // CLAIM_EVERY while sends are in flight; not after every finished send, when what is due
    // belongs to endpoints with no room and a claim would find nothing.
    let mut look = true;
    let mut looked_at = std::time::Instant::now();
    loop {
        if platform.shutdown.is_triggered() {
            return Ok(());
        }
        // Record what finished.
        look |= record_finished(hooks, &in_flight, &waiting, None, &mut done_rx).await?;
        waiting.retain(|_, q| !q.is_empty());
        let (total, busy): (usize, Vec<String>) = {
            let f = in_flight.lock().unwrap_or_else(|p| p.into_inner());
            let full = f.iter().filter(|(_, n)| **n >= PER_ENDPOINT).map(|(e, _)| e.clone());
            (f.values().sum(), full.chain(waiting.keys().cloned()).collect())
        };
        let room = CONCURRENCY.saturating_sub(total);
        let now = platform.clock.now_ms();
        let mut rows = Vec::new();
        if room > 0 && (look || looked_at.elapsed() >= CLAIM_EVERY) {
            let asked = room.min(256);
            rows = claim(&platform.store, now, asked, &busy).await?;
            look = rows.len() == asked;
            looked_at = std::time::Instant::now();
        }
        // What waited for room goes first, as room frees up.
        for q in waiting.values_mut() {
            rows.extend(q.drain(..));
        }
        if rows.is_empty() {
            let pause = if total > 0 { CLAIM_EVERY } else { Duration::from_millis(500) };
            tokio::select! {
                d = done_rx.recv() => {
                    look |= record_finished(hooks, &in_flight, &waiting, d, &mut done_rx).await?;
                }
                _ = queued.notified() => look = true,
                _ = clock.changed() => look = true,
                _ = tokio::time::sleep(pause) => look = true,
                _ = platform.shutdown.wait() => return Ok(()),
            }
            continue;
        }
        // Each endpoint as it is now, read once per batch: a delivery taken after a rotation is
        // signed with the new secret, one taken after a change of URL goes to the new URL.
        let mut endpoints: HashMap<String, Option<EndpointRow>> = HashMap::new();
        for row in &rows {
            if !endpoints.contains_key(&row.endpoint_id) {
                let e = endpoint(&platform.store, &row.endpoint_id).await?;
                endpoints.insert(row.endpoint_id.clone(), e);
            }
        }
        // Per endpoint, what is over its share waits for room.
        let mut spawned = 0;
        for row in rows {
            let ep = endpoints.get(&row.endpoint_id).cloned().flatten();
            {
                let mut f = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                let n = f.entry(row.endpoint_id.clone()).or_insert(0);
                if *n >= PER_ENDPOINT {
                    waiting.entry(row.endpoint_id.clone()).or_default().push_back(row);
                    continue;
                }
                *n += 1;
            }
            spawned += 1;
            let done = done_tx.clone();
            let sender = sender.clone();
            let hooks = hooks.clone();
            tokio::spawn(async move {
                let at_ms = hooks.platform.clock.now_ms();
                let d = match ep {
                    Some(e) if e.enabled == 1 && e.deleted == 0 => {
                        let secret = hooks.secret(&e.endpoint_id, u32::try_from(e.generation).unwrap_or(0));
                        let a = sender.send(&e.url, &row.delivery_id, wall_clock_secs(), &row.payload, &secret).await;
                        Done { row, status: a.status, error: a.error, succeeded: a.succeeded, at_ms }
                    }
                    _ => Done {
                        row,
                        status: 0,
                        error: Some("endpoint disabled or deleted".into()),
                        succeeded: false,
                        at_ms,
                    },
                };
                let _ = done.send(d).await;
            });
        }
        if spawned == 0 {
            // Only deliveries for endpoints without room: wait for one of theirs to finish.
            tokio::select! {
                d = done_rx.recv() => {
                    look |= record_finished(hooks, &in_flight, &waiting, d, &mut done_rx).await?;
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = platform.shutdown.wait() => return Ok(()),
            }
        }
    }
}

/// What a batch's sends mean for an endpoint's failure clock, in the order they finished.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Failing {
    /// The last send succeeded: the endpoint is not failing.
    Cleared,
    /// Failing since then unless it was already failing before the batch.
    SinceUnlessEarlier(i64),
    /// A success in the batch, then failures from then on.
    Since(i64),
}

impl Failing {
    /// The endpoint's clock after one more send (`since`: when a failure started it failing).
    fn after(before: Option<Failing>, succeeded: bool, since: i64) -> Failing {
        match (succeeded, before) {
            (true, _) => Failing::Cleared,
            (false, None) => Failing::SinceUnlessEarlier(since),
            (false, Some(Failing::Cleared)) => Failing::Since(since),
            (false, Some(kept)) => kept,
        }
    }
}

/// Records finished sends in one transaction; disables endpoints failing for three days.
async fn record(hooks: &Webhooks, done: Vec<Done>) -> anyhow::Result<()> {
    let store = &hooks.platform.store;
    let mut rows = Vec::with_capacity(done.len());
    let mut failing: Vec<(String, i64)> = Vec::new();
    let mut clocks: Vec<(String, Failing)> = Vec::new();
    for d in done {
        let attempts = d.row.attempts + 1;
        let gone = d.error.as_deref() == Some("endpoint disabled or deleted");
        let (state, next) = if d.succeeded {
            ("succeeded", d.at_ms)
        } else if gone {
            ("failed", d.at_ms)
        } else {
            let random = u64::from_le_bytes(
                uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{}/{attempts}", d.row.delivery_id).as_bytes())
                    .as_bytes()[..8]
                    .try_into()
                    .unwrap_or([0; 8]),
            );
            match next_delay(u32::try_from(attempts).unwrap_or(u32::MAX), random) {
                Some(wait) => ("pending", d.at_ms + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2)),
                None => ("failed", d.at_ms),
            }
        };
        rows.push(serde_json::json!([
            d.row.delivery_id,
            state,
            attempts,
            next,
            i64::from(d.status),
            d.error.clone().unwrap_or_default()
        ]));
        autodebit_runtime::metrics::add(
            autodebit_runtime::metrics::WEBHOOK_DELIVERIES,
            &[("outcome", if d.succeeded { "succeeded" } else { "failed" })],
            1,
        );
        if gone {
            continue;
        }
        let since = d.row.created_at_ms.min(d.at_ms);
        let before = clocks.iter().position(|(e, _)| *e == d.row.endpoint_id);
        let now = Failing::after(before.map(|i| clocks[i].1), d.succeeded, since);
        match before {
            Some(i) => clocks[i].1 = now,
            None => clocks.push((d.row.endpoint_id.clone(), now)),
        }
        if !d.succeeded {
            failing.push((d.row.endpoint_id.clone(), d.at_ms));
        }
    }
    let mut tx = store.begin().await?;
    tx.execute(
        &format!(
            "UPDATE notifier_webhook_outbox SET state = u.value->>1, attempts = CAST(u.value->>2 AS BIGINT),
                    next_at_ms = CAST(u.value->>3 AS BIGINT), last_status = CAST(u.value->>4 AS BIGINT),
                    last_error = u.value->>5
             FROM {} u WHERE notifier_webhook_outbox.delivery_id = u.value->>0",
            tx.kind().json_rows(1)
        ),
        &[Value::from(serde_json::Value::Array(rows).to_string())],
    )
    .await?;
    for (endpoint_id, clock) in clocks {
        let id = Value::from(endpoint_id.as_str());
        match clock {
            Failing::Cleared => {
                tx.execute(
                    "UPDATE notifier_webhook_endpoints SET failing_since_ms = 0
                     WHERE endpoint_id = $1 AND failing_since_ms <> 0",
                    &[id],
                )
                .await?
            }
            Failing::SinceUnlessEarlier(since) => {
                tx.execute(
                    "UPDATE notifier_webhook_endpoints SET failing_since_ms = $2
                     WHERE endpoint_id = $1 AND failing_since_ms = 0",
                    &[id, Value::Int(since)],
                )
                .await?
            }
            Failing::Since(since) => {
                tx.execute(
                    "UPDATE notifier_webhook_endpoints SET failing_since_ms = $2 WHERE endpoint_id = $1",
                    &[id, Value::Int(since)],
                )
                .await?
            }
        };
    }
    tx.commit().await?;
    failing.sort();
    failing.dedup_by(|a, b| a.0 == b.0);
    let limit = i64::try_from(DISABLE_AFTER.as_millis()).unwrap_or(i64::MAX);
    for (endpoint_id, at) in failing {
        let Some(e) = endpoint(store, &endpoint_id).await? else { continue };
        if e.enabled == 1 && e.failing_since_ms > 0 && at - e.failing_since_ms >= limit {
            hooks.disable(&endpoint_id, e.failing_since_ms).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Failing;

    /// A batch's sends to one endpoint, folded in order, end as the sends one by one would.
    fn fold(sends: &[(bool, i64)]) -> Option<Failing> {
        sends.iter().fold(None, |before, &(ok, since)| Some(Failing::after(before, ok, since)))
    }

    #[test]
    fn the_failure_clock_follows_the_last_success() {
        assert_eq!(fold(&[(false, 5), (false, 9)]), Some(Failing::SinceUnlessEarlier(5)), "only failures: the first");
        assert_eq!(fold(&[(false, 5), (true, 0)]), Some(Failing::Cleared), "a success last clears it");
        assert_eq!(fold(&[(false, 5), (true, 0), (false, 7), (false, 8)]), Some(Failing::Since(7)), "failing again");
        assert_eq!(fold(&[(true, 0), (true, 0)]), Some(Failing::Cleared));
    }
}
