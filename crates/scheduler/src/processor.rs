//! Follows contracts: a signed contract gets a schedule; a terminated one stops billing.
use crate::store::Mode;
use autodebit_domain::Cycle;
use autodebit_domain::clock::from_millis;
use autodebit_domain::cycle::DEFAULT_ZONE;
use autodebit_domain::modification::{Position, last_on_old_terms};
use autodebit_domain::plan::ModificationRule;
use autodebit_eventstore::{Tx, Value};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::codec;
use autodebit_runtime::{Decoded, Processor};

pub struct ContractFollower;

impl Processor for ContractFollower {
    type Prepared = ();

    fn name(&self) -> &'static str {
        "scheduler.contracts"
    }

    fn background(&self) -> bool {
        true
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[
            "ContractSigned",
            "ContractTerminated",
            "ContractExpired",
            "ContractSuspended",
            "ContractResumed",
            "ContractModified",
            "PlanCreated",
            "ChargeSucceeded",
            "ChargeFailed",
            "MerchantApplied",
            "MerchantReviewed",
            "ApiKeyIssued",
            "ApiKeyRevoked",
        ]
    }

    async fn prepare(&self, _: &[Decoded]) -> anyhow::Result<()> {
        Ok(())
    }

    async fn apply(&self, tx: &mut Tx, events: &[Decoded], _: ()) -> anyhow::Result<()> {
        // Successes are written together, before any other event that follows them.
        let mut successes: Vec<(&str, i64, i64)> = Vec::new();
        for d in events {
            if let EventKind::ChargeSucceeded(c) = &d.kind {
                let amount = c.amount.as_ref().map(|m| m.minor_units).unwrap_or(0);
                successes.push((&c.contract_id, amount, c.succeeded_at_ms));
                continue;
            }
            record_successes(tx, std::mem::take(&mut successes)).await?;
            match &d.kind {
                EventKind::ContractSigned(s) => signed(tx, s).await?,
                EventKind::PlanCreated(p) => {
                    let Some(terms) = &p.terms else { continue };
                    let cap = terms.per_charge_cap.as_ref().map(|m| m.minor_units).unwrap_or(0);
                    let daily = terms.daily_amount_limit.as_ref().map(|m| m.minor_units).unwrap_or(0);
                    let mode = match pb::ChargeMode::try_from(terms.charge_mode) {
                        Ok(pb::ChargeMode::Usage) => Mode::Usage,
                        Ok(pb::ChargeMode::EventTriggered) => Mode::Event,
                        Ok(pb::ChargeMode::Hybrid) => Mode::Hybrid,
                        _ => Mode::Fixed,
                    };
                    // The usage side's defaults (cycle, grace) as the plans service fills them in.
                    let charge_mode = pb::ChargeMode::try_from(terms.charge_mode).unwrap_or_default();
                    let unpriced = pb::UsagePricing::default();
                    let Ok(usage) = codec::usage_from_pb(
                        terms.usage.as_ref().unwrap_or(&unpriced),
                        charge_mode,
                        codec::cycle_from_pb(terms.cycle),
                    ) else {
                        tracing::error!(plan = p.plan_id, "plan with an unknown usage cycle; not kept");
                        continue;
                    };
                    tx.execute(
                        "INSERT INTO scheduler_plans
                           (plan_id, per_charge_cap, daily_count_limit, daily_amount_limit, first_charge_at_signing,
                            retry_gaps, mode, notice_lead_hours, usage_unit, usage_tiers, usage_grace_minutes, usage_cycle,
                           modification_rule)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                         ON CONFLICT (plan_id) DO NOTHING",
                        &[
                            Value::from(&p.plan_id),
                            Value::Int(cap),
                            Value::Int(i64::from(terms.daily_count_limit)),
                            Value::Int(daily),
                            Value::from(terms.first_charge_at_signing),
                            Value::from(
                                terms.retry_schedule_hours.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(","),
                            ),
                            Value::from(mode.as_str()),
                            Value::Int(i64::from(autodebit_domain::plan::notice_lead_hours(terms.notice_lead_hours))),
                            Value::from(&usage.unit),
                            Value::from(crate::store::tiers_to_str(&usage.tiers)),
                            Value::Int(i64::from(usage.grace_minutes)),
                            Value::from(usage.cycle.as_str()),
                            Value::from(crate::store::rule_as_str(
                                match pb::ModificationRule::try_from(terms.modification_rule) {
                                    Ok(pb::ModificationRule::Immediately) => ModificationRule::Immediately,
                                    _ => ModificationRule::NextCycle,
                                },
                            )),
                        ],
                    )
                    .await?;
                }
                EventKind::MerchantApplied(m) => {
                    tx.execute(
                        "INSERT INTO scheduler_merchants (merchant_id, time_zone) VALUES ($1, $2)
                         ON CONFLICT (merchant_id) DO NOTHING",
                        &[
                            Value::from(&m.merchant_id),
                            Value::from(if m.time_zone.is_empty() { DEFAULT_ZONE } else { m.time_zone.as_str() }),
                        ],
                    )
                    .await?;
                }
                EventKind::MerchantReviewed(r) => {
                    let suspended = match pb::MerchantReviewOutcome::try_from(r.outcome) {
                        Ok(pb::MerchantReviewOutcome::Suspended) => 1,
                        Ok(pb::MerchantReviewOutcome::Reinstated) => 0,
                        _ => continue,
                    };
                    tx.execute(
                        "UPDATE scheduler_merchants SET suspended = $1 WHERE merchant_id = $2",
                        &[Value::Int(suspended), Value::from(&r.merchant_id)],
                    )
                    .await?;
                }
                EventKind::ApiKeyIssued(_) | EventKind::ApiKeyRevoked(_) => {
                    autodebit_runtime::auth::follow_key_event(tx, "scheduler_api_keys", &d.kind).await?;
                }
                EventKind::ChargeFailed(f) if f.retryable => {
                    // The next attempt, on the plan's schedule and never sooner than six hours.
                    let gaps: Vec<u32> = tx
                        .query(
                            "SELECT p.retry_gaps FROM scheduler_schedules s JOIN scheduler_plans p ON p.plan_id = s.plan_id
                             WHERE s.contract_id = $1",
                            &[Value::from(&f.contract_id)],
                        )
                        .await?
                        .first()
                        .and_then(|r| r.text(0).map(str::to_string))
                        .unwrap_or_default()
                        .split(',')
                        .filter_map(|g| g.trim().parse().ok())
                        .collect();
                    let failures = f.attempt.max(1);
                    let Some(next) =
                        autodebit_domain::retry::next_attempt_at(from_millis(f.failed_at_ms), &gaps, failures)
                    else {
                        continue;
                    };
                    tx.execute(
                        "INSERT INTO scheduler_retries (charge_id, contract_id, stream_version, due_ms, state)
                         VALUES ($1, $2, $3, $4, 'waiting')
                         ON CONFLICT (charge_id) DO UPDATE SET stream_version = excluded.stream_version,
                           due_ms = excluded.due_ms, state = 'waiting'",
                        &[
                            Value::from(&f.charge_id),
                            Value::from(&f.contract_id),
                            Value::Int(d.version as i64),
                            Value::Int(next.timestamp_millis()),
                        ],
                    )
                    .await?;
                }
                EventKind::ContractTerminated(t) => stop(tx, &t.contract_id).await?,
                EventKind::ContractExpired(e) => stop(tx, &e.contract_id).await?,
                EventKind::ContractSuspended(s) => stop(tx, &s.contract_id).await?,
                EventKind::ContractResumed(r) => resume(tx, &r.contract_id, r.resumed_at_ms).await?,
                EventKind::ContractModified(m) => modified(tx, m).await?,
                _ => {}
            }
        }
        record_successes(tx, successes).await
    }
}

/// Adds successes to their schedules' totals in one statement: per contract, the sum of its
/// amounts, and the time of its first success (in log order) if it had none.
async fn record_successes(tx: &mut Tx, successes: Vec<(&str, i64, i64)>) -> anyhow::Result<()> {
    if successes.is_empty() {
        return Ok(());
    }
    let mut per_contract: Vec<(&str, i64, i64)> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (id, amount, at) in successes {
        match index.get(id) {
            Some(&i) => per_contract[i].1 += amount,
            None => {
                index.insert(id, per_contract.len());
                per_contract.push((id, amount, at));
            }
        }
    }
    let rows: Vec<serde_json::Value> =
        per_contract.into_iter().map(|(id, amount, at)| serde_json::json!([id, amount, at])).collect();
    tx.execute(
        &format!(
            "UPDATE scheduler_schedules SET total_succeeded = total_succeeded + v.amount, rev = rev + 1,
               first_success_ms = CASE WHEN first_success_ms = 0 THEN v.at ELSE first_success_ms END
             FROM (SELECT value->>0 AS id, CAST(value->>1 AS BIGINT) AS amount, CAST(value->>2 AS BIGINT) AS at
                   FROM {}) v
             WHERE scheduler_schedules.contract_id = v.id",
            tx.kind().json_rows(1)
        ),
        &[Value::from(serde_json::Value::Array(rows).to_string())],
    )
    .await?;
    Ok(())
}

pub(crate) async fn stop(tx: &mut Tx, contract_id: &str) -> anyhow::Result<()> {
    tx.execute(
        "UPDATE scheduler_schedules SET active = 0, rev = rev + 1 WHERE contract_id = $1",
        &[Value::from(contract_id)],
    )
    .await?;
    Ok(())
}

/// Billing goes on from the first period due after the resumption: periods that fell due
/// while the contract was suspended are not charged.
async fn resume(tx: &mut Tx, contract_id: &str, at_ms: i64) -> anyhow::Result<()> {
    let rows = tx
        .query(
            &format!("SELECT {} FROM scheduler_schedules WHERE contract_id = $1", crate::store::COLUMNS),
            &[Value::from(contract_id)],
        )
        .await?;
    let Some(row) = rows.first().and_then(crate::store::ScheduleRow::from_row) else { return Ok(()) };
    let mut period = u32::try_from(row.next_period).unwrap_or(u32::MAX);
    let mut due = row.next_due_ms;
    if row.mode.fixed() {
        let Some(calendar) = row.calendar() else { return Ok(()) };
        let tz = row.zone();
        while due <= at_ms {
            period = period.saturating_add(1);
            match calendar.due(period, &tz) {
                Some(t) => due = t.timestamp_millis(),
                None => return stop(tx, contract_id).await,
            }
        }
    }
    // Wake at once: the due loop works out the schedule's next moment (usage recorded before
    // the suspension is still billed when its period closes).
    tx.execute(
        "UPDATE scheduler_schedules SET active = 1, next_period = $1, next_due_ms = $2, wake_ms = 0, rev = rev + 1
         WHERE contract_id = $3",
        &[Value::Int(i64::from(period)), Value::Int(due), Value::from(contract_id)],
    )
    .await?;
    Ok(())
}

/// New terms, from the period `domain::modification` says: at once when that is the period
/// due next (re-anchoring a changed cycle), else kept on the row until the schedule passes
/// the last period on the old terms (`timeline`). A later change replaces one still waiting.
async fn modified(tx: &mut Tx, m: &pb::ContractModified) -> anyhow::Result<()> {
    let (Ok(amount), Some(cycle)) = (codec::money_from_pb(m.amount_per_cycle.as_ref()), codec::cycle_from_pb(m.cycle))
    else {
        return Ok(());
    };
    // Locked on PostgreSQL, so that the due loop cannot move the schedule on between this read
    // and the write below (on SQLite the single writer serialises, and a due batch decided on
    // the old row is voided by the revision).
    let lock = if tx.kind() == autodebit_eventstore::BackendKind::Postgres { " FOR UPDATE" } else { "" };
    let rows = tx
        .query(
            &format!("SELECT {} FROM scheduler_schedules WHERE contract_id = $1{lock}", crate::store::COLUMNS),
            &[Value::from(&m.contract_id)],
        )
        .await?;
    let Some(mut row) = rows.first().and_then(crate::store::ScheduleRow::from_row) else { return Ok(()) };
    let rule = tx
        .query("SELECT modification_rule FROM scheduler_plans WHERE plan_id = $1", &[Value::from(&row.plan_id)])
        .await?
        .first()
        .and_then(|r| r.text(0).map(crate::store::rule_from_str))
        .unwrap_or(ModificationRule::NextCycle);
    let effective_ms = m.effective_at_ms.max(m.modified_at_ms);
    row.currency = amount.currency().as_str().to_string();
    row.change_amount = amount.minor_units();
    row.change_cycle = cycle.as_str().to_string();
    if !row.mode.fixed() {
        // No cycle charges: the terms are kept for what reads them.
        row.amount = row.change_amount;
        row.cycle = row.change_cycle.clone();
    } else {
        let (Some(calendar), Ok(next_period)) = (row.calendar(), u32::try_from(row.next_period)) else {
            tracing::error!(contract = m.contract_id, "schedule without a calendar; modification not applied");
            return Ok(());
        };
        let position = Position {
            next_period,
            announced: row.notice_lead_ms > 0 && row.next_period > 0 && row.noticed_period >= row.next_period,
        };
        let last_old = last_on_old_terms(rule, &calendar, position, from_millis(effective_ms), &row.zone());
        row.change_through = i64::from(last_old);
        if last_old < next_period && crate::timeline::apply_change(&mut row, effective_ms).is_none() {
            tracing::error!(contract = m.contract_id, "modified calendar has no next period; billing stops");
            return stop(tx, &m.contract_id).await;
        }
    }
    // Wake at once: the due loop works out the schedule's next moment.
    tx.execute(
        "UPDATE scheduler_schedules SET amount = $1, currency = $2, cycle = $3, cycle_anchor_ms = $4,
           cycle_anchor_period = $5, next_period = $6, next_due_ms = $7, change_through = $8, change_amount = $9,
           change_cycle = $10, wake_ms = 0, rev = rev + 1
         WHERE contract_id = $11",
        &[
            Value::Int(row.amount),
            Value::from(row.currency.as_str()),
            Value::from(row.cycle.as_str()),
            Value::Int(row.cycle_anchor_ms),
            Value::Int(row.cycle_anchor_period),
            Value::Int(row.next_period),
            Value::Int(row.next_due_ms),
            Value::Int(row.change_through),
            Value::Int(row.change_amount),
            Value::from(row.change_cycle.as_str()),
            Value::from(&m.contract_id),
        ],
    )
    .await?;
    Ok(())
}

/// A signed contract gets its schedule: the sides its plan's mode calls for, in its merchant's
/// calendar, with its first timer set.
async fn signed(tx: &mut Tx, s: &pb::ContractSigned) -> anyhow::Result<()> {
    let Some(cycle) = codec::cycle_from_pb(s.cycle) else {
        tracing::error!(contract = s.contract_id, "signed contract without a cycle; not scheduled");
        return Ok(());
    };
    let Ok(amount) = codec::money_from_pb(s.amount_per_cycle.as_ref()) else {
        tracing::error!(contract = s.contract_id, "signed contract without an amount; not scheduled");
        return Ok(());
    };
    let plan = tx
        .query(
            "SELECT first_charge_at_signing, mode, notice_lead_hours, usage_grace_minutes, usage_cycle
             FROM scheduler_plans WHERE plan_id = $1",
            &[Value::from(&s.plan_id)],
        )
        .await?;
    let plan = plan.first();
    let first_at_signing = plan.and_then(|r| r.i64(0)).unwrap_or(0) != 0;
    let mode = Mode::parse(plan.and_then(|r| r.text(1)).unwrap_or("fixed"));
    let lead_ms =
        plan.and_then(|r| r.i64(2)).unwrap_or(i64::from(autodebit_domain::plan::DEFAULT_NOTICE_LEAD_HOURS)) * 3_600_000;
    let grace_ms = plan.and_then(|r| r.i64(3)).unwrap_or(60) * 60_000;
    let usage_cycle = plan.and_then(|r| r.text(4)).and_then(crate::store::cycle_from_str).unwrap_or(Cycle::Monthly);
    let zone_name = tx
        .query("SELECT time_zone FROM scheduler_merchants WHERE merchant_id = $1", &[Value::from(&s.merchant_id)])
        .await?
        .first()
        .and_then(|r| r.text(0).map(str::to_string))
        .unwrap_or_else(|| DEFAULT_ZONE.to_string());
    let tz = autodebit_domain::cycle::zone(&zone_name).unwrap_or(chrono_tz::Asia::Shanghai);
    let anchor = from_millis(s.signed_at_ms);
    // The fixed side: a plan may ask for the first charge at signing (period 0, no notice).
    let (period, due) = if first_at_signing {
        (0, s.signed_at_ms)
    } else {
        let Some(due) = cycle.due_at(anchor, 1, &tz) else { return Ok(()) };
        (1, due.timestamp_millis())
    };
    let (usage_period, usage_end) = if mode.metered() {
        let Some(end) = usage_cycle.due_at(anchor, 1, &tz) else { return Ok(()) };
        (1, end.timestamp_millis())
    } else {
        (0, 0)
    };
    let fixed_wake = if period == 0 { due } else { due - lead_ms };
    let usage_wake = usage_end + grace_ms - lead_ms;
    let wake = match mode {
        Mode::Fixed => fixed_wake,
        Mode::Usage => usage_wake,
        Mode::Hybrid => fixed_wake.min(usage_wake),
        Mode::Event => i64::MAX,
    };
    tx.execute(
        "INSERT INTO scheduler_schedules
           (contract_id, merchant_id, payer_id, amount, currency, cycle, anchor_ms, next_period, next_due_ms,
            active, plan_id, expires_at_ms, mode, time_zone, notice_lead_ms, usage_cycle, usage_grace_ms,
            usage_period, usage_end_ms, wake_ms, cycle_anchor_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $7)
         ON CONFLICT (contract_id) DO NOTHING",
        &[
            Value::from(&s.contract_id),
            Value::from(&s.merchant_id),
            Value::from(&s.payer_id),
            Value::Int(amount.minor_units()),
            Value::from(amount.currency().as_str()),
            Value::from(cycle.as_str()),
            Value::Int(s.signed_at_ms),
            Value::Int(period),
            Value::Int(due),
            Value::from(&s.plan_id),
            Value::Int(s.expires_at_ms),
            Value::from(mode.as_str()),
            Value::from(zone_name.as_str()),
            Value::Int(lead_ms),
            Value::from(if mode.metered() { usage_cycle.as_str() } else { "" }),
            Value::Int(grace_ms),
            Value::Int(usage_period),
            Value::Int(usage_end),
            Value::Int(wake),
        ],
    )
    .await?;
    Ok(())
}
