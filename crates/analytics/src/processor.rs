//! Projects every event into the analytics tables.
use autodebit_eventstore::{Tx, Value};
use autodebit_proto::EventKind;
use autodebit_runtime::codec;
use autodebit_runtime::{Decoded, Processor};

pub struct Projector;

async fn bump(tx: &mut Tx, name: &str, by: i64) -> anyhow::Result<()> {
    if by == 0 {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO analytics_counters (name, value) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET value = analytics_counters.value + excluded.value",
        &[Value::from(name), Value::Int(by)],
    )
    .await?;
    Ok(())
}

/// The statements the projector writes rows with, one per run of events that need the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Statement {
    ContractSigned,
    /// `[contract_id, state, ended_at_ms]`
    ContractState,
    ChargeScheduled,
    /// `[charge_id, state, code, at_ms]`
    ChargeOutcome,
}

impl Statement {
    fn sql(self, rows: &str) -> String {
        match self {
            Statement::ContractSigned => format!(
                "INSERT INTO analytics_contracts (contract_id, merchant_id, state, signed_at_ms, ended_at_ms)
                 SELECT value->>0, value->>1, 'active', CAST(value->>2 AS BIGINT), 0 FROM {rows} WHERE true
                 ON CONFLICT (contract_id) DO NOTHING"
            ),
            Statement::ContractState => format!(
                "UPDATE analytics_contracts SET state = v.state, ended_at_ms = v.at
                 FROM (SELECT value->>0 AS id, value->>1 AS state, CAST(value->>2 AS BIGINT) AS at FROM {rows}) v
                 WHERE analytics_contracts.contract_id = v.id"
            ),
            Statement::ChargeScheduled => format!(
                "INSERT INTO analytics_charges
                   (charge_id, contract_id, merchant_id, amount, currency, state, code, due_at_ms, updated_at_ms)
                 SELECT value->>0, value->>1, value->>2, CAST(value->>3 AS BIGINT), value->>4, 'scheduled', '',
                        CAST(value->>5 AS BIGINT), CAST(value->>5 AS BIGINT)
                 FROM {rows} WHERE true
                 ON CONFLICT (charge_id) DO NOTHING"
            ),
            // A charge's row exists by now: its `ChargeScheduled` comes first in its stream,
            // the log keeps stream order, and the run before this one was written first.
            Statement::ChargeOutcome => format!(
                "UPDATE analytics_charges SET state = v.state, code = v.code, updated_at_ms = v.at
                 FROM (SELECT value->>0 AS id, value->>1 AS state, value->>2 AS code, CAST(value->>3 AS BIGINT) AS at
                       FROM {rows}) v
                 WHERE analytics_charges.charge_id = v.id"
            ),
        }
    }

    /// Whether it updates rows by their key (the row's first item), so that of two rows with
    /// one key only the later may be written.
    fn updates(self) -> bool {
        matches!(self, Statement::ContractState | Statement::ChargeOutcome)
    }
}

/// Rows waiting to be written by one statement.
#[derive(Default)]
struct Run {
    statement: Option<Statement>,
    rows: Vec<serde_json::Value>,
}

impl Run {
    /// Adds a row, first writing the rows of another statement that came before it.
    async fn push(&mut self, tx: &mut Tx, statement: Statement, row: serde_json::Value) -> anyhow::Result<()> {
        if self.statement != Some(statement) {
            self.flush(tx).await?;
            self.statement = Some(statement);
        }
        self.rows.push(row);
        Ok(())
    }

    async fn flush(&mut self, tx: &mut Tx) -> anyhow::Result<()> {
        let (Some(statement), false) = (self.statement.take(), self.rows.is_empty()) else { return Ok(()) };
        let mut rows = std::mem::take(&mut self.rows);
        if statement.updates() {
            let mut seen = std::collections::HashSet::new();
            rows.reverse();
            rows.retain(|r| seen.insert(r[0].as_str().unwrap_or_default().to_string()));
        }
        tx.execute(&statement.sql(&tx.kind().json_rows(1)), &[Value::from(serde_json::Value::Array(rows).to_string())])
            .await?;
        Ok(())
    }
}

impl Processor for Projector {
    type Prepared = ();

    fn name(&self) -> &'static str {
        "analytics.projections"
    }

    fn background(&self) -> bool {
        true
    }

    /// Every event: the projections count them all (`events_projected`).
    fn event_types(&self) -> &'static [&'static str] {
        &[]
    }

    async fn prepare(&self, _: &[Decoded]) -> anyhow::Result<()> {
        Ok(())
    }

    async fn apply(&self, tx: &mut Tx, events: &[Decoded], _: ()) -> anyhow::Result<()> {
        use serde_json::json;
        let mut notices = Vec::new();
        let mut run = Run::default();
        for d in events {
            match &d.kind {
                EventKind::ContractSigned(s) => {
                    run.push(tx, Statement::ContractSigned, json!([s.contract_id, s.merchant_id, s.signed_at_ms]))
                        .await?
                }
                EventKind::ContractTerminated(t) => {
                    run.push(tx, Statement::ContractState, json!([t.contract_id, "terminated", t.terminated_at_ms]))
                        .await?
                }
                EventKind::ContractExpired(e) => {
                    run.push(tx, Statement::ContractState, json!([e.contract_id, "expired", e.expired_at_ms])).await?
                }
                EventKind::ContractSuspended(s) => {
                    run.push(tx, Statement::ContractState, json!([s.contract_id, "suspended", 0])).await?
                }
                EventKind::ContractResumed(r) => {
                    run.push(tx, Statement::ContractState, json!([r.contract_id, "active", 0])).await?
                }
                EventKind::ChargeScheduled(s) => {
                    let amount = codec::money_from_pb(s.amount.as_ref()).ok();
                    let row = json!([
                        s.charge_id,
                        s.contract_id,
                        s.merchant_id,
                        amount.map(|m| m.minor_units()).unwrap_or(0),
                        amount.map(|m| m.currency().to_string()).unwrap_or_default(),
                        s.due_at_ms,
                    ]);
                    run.push(tx, Statement::ChargeScheduled, row).await?
                }
                EventKind::ChargeSucceeded(s) => {
                    run.push(tx, Statement::ChargeOutcome, json!([s.charge_id, "succeeded", "", s.succeeded_at_ms]))
                        .await?
                }
                EventKind::ChargeFailed(f) => {
                    let row = json!([f.charge_id, "failed", f.provider_code, f.failed_at_ms]);
                    run.push(tx, Statement::ChargeOutcome, row).await?
                }
                EventKind::ChargeRetryScheduled(r) => {
                    run.push(tx, Statement::ChargeOutcome, json!([r.charge_id, "scheduled", "", r.scheduled_at_ms]))
                        .await?
                }
                EventKind::ChargeRejected(r) => {
                    run.flush(tx).await?;
                    // Refused at issue, a charge has no row yet.
                    let amount = codec::money_from_pb(r.amount.as_ref()).ok();
                    tx.execute(
                        "INSERT INTO analytics_charges
                           (charge_id, contract_id, merchant_id, amount, currency, state, code, due_at_ms, updated_at_ms)
                         VALUES ($1, $2, $3, $4, $5, 'rejected', $6, $7, $8)
                         ON CONFLICT (charge_id) DO UPDATE SET state = 'rejected', code = excluded.code,
                           updated_at_ms = excluded.updated_at_ms",
                        &[
                            Value::from(&r.charge_id),
                            Value::from(&r.contract_id),
                            Value::from(&r.merchant_id),
                            Value::Int(amount.map(|m| m.minor_units()).unwrap_or(0)),
                            Value::from(amount.map(|m| m.currency().to_string()).unwrap_or_default()),
                            Value::from(&r.rule),
                            Value::Int(r.due_at_ms),
                            Value::Int(r.rejected_at_ms),
                        ],
                    )
                    .await?;
                }
                EventKind::NoticeRecorded(n) => notices.push(json!([n.contract_id])),
                _ => {}
            }
        }
        run.flush(tx).await?;
        bump(tx, "notices_recorded", notices.len() as i64).await?;
        if !notices.is_empty() {
            // Each merchant's own count, through the contract the notice is about.
            tx.execute(
                &format!(
                    "INSERT INTO analytics_merchant_counters (merchant_id, name, value)
                     SELECT c.merchant_id, 'notices_recorded', COUNT(*)
                     FROM {} v JOIN analytics_contracts c ON c.contract_id = v.value->>0
                     WHERE true GROUP BY c.merchant_id
                     ON CONFLICT (merchant_id, name)
                       DO UPDATE SET value = analytics_merchant_counters.value + excluded.value",
                    tx.kind().json_rows(1)
                ),
                &[Value::from(serde_json::Value::Array(notices).to_string())],
            )
            .await?;
        }
        bump(tx, "events_projected", events.len() as i64).await?;
        Ok(())
    }
}
