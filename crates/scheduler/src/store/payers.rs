//! The payer's page's tables (`scheduler_payer_contracts`, `scheduler_payer_items`,
//! `scheduler_payer_names`), written by the `scheduler.payers` follower and read by the page.
use super::Db;
use autodebit_eventstore::{Tx, Value};

pub const ACTIVE: &str = "active";
pub const SUSPENDED: &str = "suspended";
pub const TERMINATED: &str = "terminated";
pub const EXPIRED: &str = "expired";

pub const SCHEDULED: &str = "scheduled";
pub const HELD: &str = "held";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";
pub const REJECTED: &str = "rejected";

pub const CHARGE: &str = "charge";
pub const REFUND: &str = "refund";

/// A contract as the page shows it: its state, terms, limits and next charge.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ContractView {
    pub contract_id: String,
    pub merchant_id: String,
    pub plan_id: String,
    pub state: String,
    pub signed_at_ms: i64,
    pub ended_at_ms: i64,
    pub merchant_name: String,
    /// From the schedule ('' mode: none yet).
    pub mode: String,
    pub amount: i64,
    pub currency: String,
    pub cycle: String,
    pub next_period: i64,
    pub next_due_ms: i64,
    pub usage_end_ms: i64,
    pub usage_grace_ms: i64,
    pub expires_at_ms: i64,
    pub change_amount: i64,
    pub change_cycle: String,
    pub change_through: i64,
    pub time_zone: String,
    /// From the plan (0: not set).
    pub per_charge_cap: i64,
    pub daily_count_limit: i64,
    pub daily_amount_limit: i64,
    pub usage_unit: String,
    /// The plan's terms, encoded as `PlanCreated` carries them (none for a plan not seen).
    pub terms: Option<Vec<u8>>,
}

/// A charge or a refund as the page lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Item {
    pub item_id: String,
    pub kind: String,
    pub charge_id: String,
    pub contract_id: String,
    pub amount: i64,
    pub currency: String,
    pub description: String,
    pub state: String,
    pub detail: String,
    pub hold_token: String,
    pub refunded: i64,
    pub complained: i64,
    pub at_ms: i64,
    /// When a failed charge is tried again (0: it is not).
    pub retry_at_ms: i64,
}

pub async fn contract_signed(
    tx: &mut Tx,
    contract_id: &str,
    merchant_id: &str,
    payer_id: &str,
    plan_id: &str,
    signed_at_ms: i64,
) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO scheduler_payer_contracts (contract_id, merchant_id, payer_id, plan_id, state, signed_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (contract_id) DO NOTHING",
        &[
            Value::from(contract_id),
            Value::from(merchant_id),
            Value::from(payer_id),
            Value::from(plan_id),
            Value::from(ACTIVE),
            Value::Int(signed_at_ms),
        ],
    )
    .await?;
    Ok(())
}

/// A contract's new state; a final one (terminated, expired) is never left.
pub async fn contract_state(tx: &mut Tx, contract_id: &str, state: &str, at_ms: i64) -> anyhow::Result<()> {
    let ended = if matches!(state, TERMINATED | EXPIRED) { at_ms } else { 0 };
    tx.execute(
        "UPDATE scheduler_payer_contracts SET state = $2, ended_at_ms = $3
         WHERE contract_id = $1 AND state NOT IN ('terminated', 'expired')",
        &[Value::from(contract_id), Value::from(state), Value::Int(ended)],
    )
    .await?;
    Ok(())
}

/// A plan's terms, encoded as `PlanCreated` carries them.
pub async fn plan(tx: &mut Tx, plan_id: &str, terms: Vec<u8>) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO scheduler_payer_plans (plan_id, terms) VALUES ($1, $2) ON CONFLICT (plan_id) DO NOTHING",
        &[Value::from(plan_id), Value::Bytes(terms)],
    )
    .await?;
    Ok(())
}

pub async fn name(tx: &mut Tx, id: &str, name: &str) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO scheduler_payer_names (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        &[Value::from(id), Value::from(name)],
    )
    .await?;
    Ok(())
}

/// What a charge event says of the charge.
pub struct ChargeNews<'a> {
    pub charge_id: &'a str,
    pub contract_id: &'a str,
    pub merchant_id: &'a str,
    pub payer_id: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub description: &'a str,
    pub state: &'a str,
    pub detail: &'a str,
    pub hold_token: &'a str,
    pub at_ms: i64,
}

/// Records a charge, or moves a recorded one to its new state (and amount and time).
pub async fn charge(tx: &mut Tx, c: &ChargeNews<'_>) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO scheduler_payer_items
           (item_id, kind, charge_id, contract_id, merchant_id, payer_id, amount, currency, description, state,
            detail, hold_token, at_ms)
         VALUES ($1, 'charge', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (item_id) DO UPDATE SET state = excluded.state, detail = excluded.detail,
             amount = CASE WHEN excluded.amount > 0 THEN excluded.amount ELSE scheduler_payer_items.amount END,
             hold_token = CASE WHEN excluded.hold_token <> '' THEN excluded.hold_token
                               ELSE scheduler_payer_items.hold_token END,
             at_ms = excluded.at_ms",
        &[
            Value::from(c.charge_id),
            Value::from(c.contract_id),
            Value::from(c.merchant_id),
            Value::from(c.payer_id),
            Value::Int(c.amount),
            Value::from(c.currency),
            Value::from(c.description),
            Value::from(c.state),
            Value::from(c.detail),
            Value::from(c.hold_token),
            Value::Int(c.at_ms),
        ],
    )
    .await?;
    Ok(())
}

/// A refund paid back: listed on its own, and summed on its charge.
#[allow(clippy::too_many_arguments)]
pub async fn refund(
    tx: &mut Tx,
    refund_id: &str,
    charge_id: &str,
    merchant_id: &str,
    payer_id: &str,
    amount: i64,
    currency: &str,
    at_ms: i64,
) -> anyhow::Result<()> {
    let inserted = tx
        .execute(
            "INSERT INTO scheduler_payer_items
               (item_id, kind, charge_id, contract_id, merchant_id, payer_id, amount, currency, state, at_ms)
             SELECT $1, 'refund', $2, COALESCE((SELECT contract_id FROM scheduler_payer_items WHERE item_id = $2), ''),
                    $3, $4, $5, $6, 'succeeded', $7
             WHERE true ON CONFLICT (item_id) DO NOTHING",
            &[
                Value::from(refund_id),
                Value::from(charge_id),
                Value::from(merchant_id),
                Value::from(payer_id),
                Value::Int(amount),
                Value::from(currency),
                Value::Int(at_ms),
            ],
        )
        .await?;
    if inserted > 0 {
        tx.execute(
            "UPDATE scheduler_payer_items SET refunded = refunded + $2 WHERE item_id = $1",
            &[Value::from(charge_id), Value::Int(amount)],
        )
        .await?;
    }
    Ok(())
}

pub async fn complained(tx: &mut Tx, charge_id: &str) -> anyhow::Result<()> {
    tx.execute("UPDATE scheduler_payer_items SET complained = 1 WHERE item_id = $1", &[Value::from(charge_id)]).await?;
    Ok(())
}

/// The payer's contracts at the merchant, newest first.
pub async fn contracts_of(db: &mut Db<'_>, merchant_id: &str, payer_id: &str) -> anyhow::Result<Vec<ContractView>> {
    Ok(db
        .query_as(
            "SELECT c.contract_id, c.merchant_id, c.plan_id, c.state, c.signed_at_ms, c.ended_at_ms,
                    COALESCE(m.name, '') AS merchant_name,
                    COALESCE(s.mode, '') AS mode, COALESCE(s.amount, 0) AS amount,
                    COALESCE(s.currency, '') AS currency, COALESCE(s.cycle, '') AS cycle,
                    COALESCE(s.next_period, 0) AS next_period, COALESCE(s.next_due_ms, 0) AS next_due_ms, COALESCE(s.usage_end_ms, 0) AS usage_end_ms,
                    COALESCE(s.usage_grace_ms, 0) AS usage_grace_ms, COALESCE(s.expires_at_ms, 0) AS expires_at_ms,
                    COALESCE(s.change_amount, 0) AS change_amount, COALESCE(s.change_cycle, '') AS change_cycle,
                    COALESCE(s.change_through, -1) AS change_through,
                    COALESCE(s.time_zone, 'Asia/Shanghai') AS time_zone,
                    COALESCE(p.per_charge_cap, 0) AS per_charge_cap,
                    COALESCE(p.daily_count_limit, 0) AS daily_count_limit,
                    COALESCE(p.daily_amount_limit, 0) AS daily_amount_limit,
                    COALESCE(p.usage_unit, '') AS usage_unit, t.terms
             FROM scheduler_payer_contracts c
             LEFT JOIN scheduler_schedules s ON s.contract_id = c.contract_id
             LEFT JOIN scheduler_plans p ON p.plan_id = c.plan_id
             LEFT JOIN scheduler_payer_names m ON m.id = c.merchant_id
             LEFT JOIN scheduler_payer_plans t ON t.plan_id = c.plan_id
             WHERE c.merchant_id = $1 AND c.payer_id = $2
             ORDER BY c.signed_at_ms DESC, c.contract_id",
            &[Value::from(merchant_id), Value::from(payer_id)],
        )
        .await?)
}

/// The payer's charges and refunds at the merchant, newest first (at most `limit`).
pub async fn items_of(db: &mut Db<'_>, merchant_id: &str, payer_id: &str, limit: i64) -> anyhow::Result<Vec<Item>> {
    Ok(db
        .query_as(
            "SELECT i.item_id, i.kind, i.charge_id, i.contract_id, i.amount, i.currency, i.description, i.state,
                    i.detail, i.hold_token, i.refunded, i.complained, i.at_ms,
                    COALESCE(r.due_ms, 0) AS retry_at_ms
             FROM scheduler_payer_items i
             LEFT JOIN scheduler_retries r ON r.charge_id = i.item_id AND r.state = 'waiting' AND i.state = 'failed'
             WHERE i.merchant_id = $1 AND i.payer_id = $2
             ORDER BY i.at_ms DESC, i.item_id LIMIT $3",
            &[Value::from(merchant_id), Value::from(payer_id), Value::Int(limit)],
        )
        .await?)
}
