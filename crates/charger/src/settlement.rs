//! Settlement and the ledger.
//!
//! The follower `charger.settlement` keeps the settlement tables and the ledger from the log:
//! each succeeded charge and refund becomes an item due on its settlement day and an entry of
//! the ledger; each `SettlementBatchClosed` takes its items and posts its entry. The closer
//! closes batches on working days: for each merchant and currency with items due, one
//! `SettlementBatchClosed` on the stream `settlement-<merchant>-<currency>-<day>`, appended
//! only if that stream does not exist yet, so a batch closes once however many replicas try.
use autodebit_domain::calendar::WorkingCalendar;
use autodebit_domain::ledger::{self, Posting};
use autodebit_domain::settlement::{self as rules, Item, ItemKind, Line, SplitRule};
use autodebit_eventstore::{EventStore, ExpectedVersion, Tx, Value};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::codec::{Cause, encode};
use autodebit_runtime::{Decoded, Platform};
use chrono::NaiveDate;
use std::sync::Arc;
use std::time::Duration;

/// The zone business dates are counted in.
pub const ZONE: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

/// The local date of `ms`.
pub fn local_date(ms: i64) -> NaiveDate {
    autodebit_domain::clock::from_millis(ms).with_timezone(&ZONE).date_naive()
}

fn kind_name(k: ItemKind) -> &'static str {
    match k {
        ItemKind::Charge => "charge",
        ItemKind::Refund => "refund",
    }
}

fn kind_to_pb(k: ItemKind) -> i32 {
    match k {
        ItemKind::Charge => pb::SettlementItemKind::Charge as i32,
        ItemKind::Refund => pb::SettlementItemKind::Refund as i32,
    }
}

fn kind_from_pb(raw: i32) -> ItemKind {
    if raw == pb::SettlementItemKind::Refund as i32 { ItemKind::Refund } else { ItemKind::Charge }
}

/// A closed batch's lines as the domain has them.
pub fn lines_of(b: &pb::SettlementBatchClosed) -> Vec<Line> {
    b.lines
        .iter()
        .map(|l| Line {
            item_id: l.item_id.clone(),
            kind: kind_from_pb(l.kind),
            charge_id: l.charge_id.clone(),
            amount: l.amount,
            fee: l.fee,
            splits: l.splits.iter().map(|s| (s.receiver.clone(), s.amount)).collect(),
            net: l.net,
        })
        .collect()
}

/// The ledger entry an event makes, if any: (entry id, merchant, currency, time, postings).
pub fn entry_of(kind: &EventKind) -> Option<(String, String, String, i64, Vec<Posting>)> {
    match kind {
        EventKind::ChargeSucceeded(c) => {
            let m = c.amount.clone().unwrap_or_default();
            Some((
                format!("charge:{}", c.charge_id),
                c.merchant_id.clone(),
                m.currency,
                c.succeeded_at_ms,
                ledger::charge_succeeded(m.minor_units),
            ))
        }
        // A duplicate debit's refund pays back money the ledger never took in.
        EventKind::RefundSucceeded(r) if !r.duplicate => {
            let m = r.amount.clone().unwrap_or_default();
            Some((
                format!("refund:{}", r.refund_id),
                r.merchant_id.clone(),
                m.currency,
                r.succeeded_at_ms,
                ledger::refund_succeeded(m.minor_units),
            ))
        }
        EventKind::SettlementBatchClosed(b) => Some((
            format!("batch:{}", b.batch_id),
            b.merchant_id.clone(),
            b.currency.clone(),
            b.closed_at_ms,
            ledger::batch_closed(&lines_of(b)),
        )),
        _ => None,
    }
}

async fn post(tx: &mut Tx, kind: &EventKind) -> anyhow::Result<()> {
    let Some((entry, merchant, currency, at, postings)) = entry_of(kind) else { return Ok(()) };
    for (leg, p) in postings.iter().enumerate() {
        tx.execute(
            "INSERT INTO ledger_postings (entry_id, leg, merchant_id, currency, account, amount, at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (entry_id, leg) DO NOTHING",
            &[
                Value::from(&entry),
                Value::Int(leg as i64),
                Value::from(&merchant),
                Value::from(&currency),
                Value::from(&p.account),
                Value::Int(p.amount),
                Value::Int(at),
            ],
        )
        .await?;
    }
    Ok(())
}

/// A closed batch into the tables: the batch, its lines and splits, its items taken.
async fn record_batch(tx: &mut Tx, b: &pb::SettlementBatchClosed) -> anyhow::Result<()> {
    let inserted = tx
        .execute(
            "INSERT INTO settlement_batches (batch_id, merchant_id, currency, business_date, fee_basis_points, lines,
                 gross, refunds, fees, splits, net, closed_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (batch_id) DO NOTHING",
            &[
                Value::from(&b.batch_id),
                Value::from(&b.merchant_id),
                Value::from(&b.currency),
                Value::from(&b.business_date),
                Value::from(b.fee_basis_points),
                Value::Int(b.lines.len() as i64),
                Value::Int(b.gross),
                Value::Int(b.refunds),
                Value::Int(b.fees),
                Value::Int(b.splits),
                Value::Int(b.net),
                Value::Int(b.closed_at_ms),
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(());
    }
    for l in &b.lines {
        let split_sum: i64 = l.splits.iter().map(|s| s.amount).sum();
        tx.execute(
            "INSERT INTO settlement_lines (batch_id, item_id, kind, charge_id, amount, fee, splits, net)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                Value::from(&b.batch_id),
                Value::from(&l.item_id),
                Value::from(kind_name(kind_from_pb(l.kind))),
                Value::from(&l.charge_id),
                Value::Int(l.amount),
                Value::Int(l.fee),
                Value::Int(split_sum),
                Value::Int(l.net),
            ],
        )
        .await?;
        for s in &l.splits {
            tx.execute(
                "INSERT INTO settlement_splits (batch_id, item_id, charge_id, receiver, amount)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    Value::from(&b.batch_id),
                    Value::from(&l.item_id),
                    Value::from(&l.charge_id),
                    Value::from(&s.receiver),
                    Value::Int(s.amount),
                ],
            )
            .await?;
        }
        tx.execute(
            "UPDATE settlement_items SET batch_id = $1 WHERE item_id = $2",
            &[Value::from(&b.batch_id), Value::from(&l.item_id)],
        )
        .await?;
        // The charge's splits, to be shared through the merchant's provider.
        if !l.splits.is_empty() && kind_from_pb(l.kind) == ItemKind::Charge {
            let out_order_no = share_order_no(&l.charge_id);
            let receivers: Vec<(&str, i64)> = l.splits.iter().map(|s| (s.receiver.as_str(), s.amount)).collect();
            tx.execute(
                "INSERT INTO settlement_share_orders (out_order_no, merchant_id, charge_id, batch_id, amount, state,
                     order_id, code, message, ended_at_ms)
                 VALUES ($1, $2, $3, $4, $5, 'pending', '', '', '', 0) ON CONFLICT (out_order_no) DO NOTHING",
                &[
                    Value::from(&out_order_no),
                    Value::from(&b.merchant_id),
                    Value::from(&l.charge_id),
                    Value::from(&b.batch_id),
                    Value::Int(split_sum),
                ],
            )
            .await?;
            tx.execute(
                "INSERT INTO charger_shares (out_order_no, merchant_id, charge_id, batch_id, receivers, due_ms, checks)
                 VALUES ($1, $2, $3, $4, $5, 0, 0) ON CONFLICT (out_order_no) DO NOTHING",
                &[
                    Value::from(&out_order_no),
                    Value::from(&b.merchant_id),
                    Value::from(&l.charge_id),
                    Value::from(&b.batch_id),
                    Value::from(serde_json::to_string(&receivers)?),
                ],
            )
            .await?;
        }
    }
    Ok(())
}

/// The profit-sharing order of a settled charge: `ps` and the charge's hex, 34 characters
/// (WeChat Pay allows 64 of `[0-9A-Za-z_|*@]`). A charge settles once, so it is shared once.
pub fn share_order_no(charge_id: &str) -> String {
    format!("ps{}", charge_id.trim_start_matches("ch_"))
}

/// Applies one event to the settlement tables and the ledger; idempotent.
pub async fn apply(tx: &mut Tx, calendar: &WorkingCalendar, kind: &EventKind) -> anyhow::Result<()> {
    let mut success = Successes::default();
    if success.take(calendar, kind) {
        return success.write(tx).await;
    }
    match kind {
        EventKind::MerchantApplied(m) => {
            tx.execute(
                "INSERT INTO settlement_merchants (merchant_id, industry, legal_name, credit_code) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (merchant_id) DO UPDATE SET industry = excluded.industry,
                     legal_name = excluded.legal_name, credit_code = excluded.credit_code",
                &[
                    Value::from(&m.merchant_id),
                    Value::from(&m.industry),
                    Value::from(&m.legal_name),
                    Value::from(&m.credit_code),
                ],
            )
            .await?;
        }
        EventKind::FeeRateSet(f) => {
            tx.execute(
                "INSERT INTO settlement_fee_rates (industry, basis_points) VALUES ($1, $2)
                 ON CONFLICT (industry) DO UPDATE SET basis_points = excluded.basis_points",
                &[Value::from(&f.industry), Value::from(f.basis_points)],
            )
            .await?;
        }
        EventKind::SplitRulesSet(s) => {
            tx.execute("DELETE FROM settlement_split_rules WHERE merchant_id = $1", &[Value::from(&s.merchant_id)])
                .await?;
            for (i, r) in s.rules.iter().enumerate() {
                tx.execute(
                    "INSERT INTO settlement_split_rules (merchant_id, position, receiver, basis_points, fixed, cap)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        Value::from(&s.merchant_id),
                        Value::Int(i as i64),
                        Value::from(&r.receiver),
                        Value::from(r.basis_points),
                        Value::Int(r.fixed),
                        Value::Int(r.cap),
                    ],
                )
                .await?;
            }
        }
        EventKind::MerchantReviewOpened(o) => record_review_opened(tx, o).await?,
        EventKind::MerchantReviewResolved(r) => {
            tx.execute(
                "UPDATE settlement_reviews SET state = 'resolved', resolved_at_ms = $2, note = $3
                 WHERE merchant_id = $1 AND state = 'open' AND opened_at_ms <= $2",
                &[Value::from(&r.merchant_id), Value::Int(r.resolved_at_ms), Value::from(&r.note)],
            )
            .await?;
        }
        EventKind::SettlementBatchClosed(b) => {
            record_batch(tx, b).await?;
            post(tx, kind).await?;
        }
        EventKind::StatementReconciled(_)
        | EventKind::DiscrepancyFound(_)
        | EventKind::DiscrepancyEscalated(_)
        | EventKind::DiscrepancyResolved(_) => crate::reconcile::apply(tx, kind).await?,
        EventKind::ProfitSharingEnded(_) => crate::worker::shares::apply(tx, kind).await?,
        _ => {}
    }
    Ok(())
}

/// The follower that keeps the settlement tables and the ledger.
pub struct SettlementFollower {
    pub calendar: Arc<WorkingCalendar>,
    /// The credit score a merchant starts with (`--initial-credit-score`).
    pub initial_credit: i64,
}

pub const FOLLOWER: &str = "charger.settlement";

impl autodebit_runtime::Processor for SettlementFollower {
    type Prepared = ();

    fn name(&self) -> &'static str {
        FOLLOWER
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[
            "MerchantApplied",
            "FeeRateSet",
            "SplitRulesSet",
            "ChargeSucceeded",
            "RefundSucceeded",
            "SettlementBatchClosed",
            "MerchantReviewOpened",
            "MerchantReviewResolved",
            "StatementReconciled",
            "DiscrepancyFound",
            "DiscrepancyEscalated",
            "DiscrepancyResolved",
            "ProfitSharingEnded",
        ]
    }

    async fn prepare(&self, _: &[Decoded]) -> anyhow::Result<()> {
        Ok(())
    }

    /// Settlement can run behind: the platform's charges go first.
    fn background(&self) -> bool {
        true
    }

    /// Charge and refund successes, most of the log's share, are written a few statements per
    /// run of them; the rarer events one at a time, in log order with the runs.
    async fn apply(&self, tx: &mut Tx, events: &[Decoded], _: ()) -> anyhow::Result<()> {
        let mut run = Successes::default();
        for d in events {
            if !run.take(&self.calendar, &d.kind) {
                run.write(tx).await?;
                apply(tx, &self.calendar, &d.kind).await?;
                if let EventKind::MerchantApplied(m) = &d.kind {
                    crate::complaints::open_credit(tx, &m.merchant_id, self.initial_credit).await?;
                }
            }
        }
        run.write(tx).await
    }
}

/// A run of charge and refund successes, written together: their items, ledger entries,
/// receipts, and the merchants whose refund rate to look at.
#[derive(Default)]
struct Successes {
    items: Vec<serde_json::Value>,
    postings: Vec<serde_json::Value>,
    receipts: Vec<serde_json::Value>,
    refunded: Vec<serde_json::Value>,
}

impl Successes {
    /// Takes `kind` into the run if it is a success; false for any other event.
    fn take(&mut self, calendar: &WorkingCalendar, kind: &EventKind) -> bool {
        use serde_json::json;
        let (kind_name, id, charge, merchant, payer, money, at, order) = match kind {
            EventKind::ChargeSucceeded(c) => (
                "charge",
                &c.charge_id,
                &c.charge_id,
                &c.merchant_id,
                &c.payer_id,
                &c.amount,
                c.succeeded_at_ms,
                c.out_trade_no.as_str(),
            ),
            // Nothing of the merchant's is paid back: it neither settles nor has a receipt.
            EventKind::RefundSucceeded(r) if r.duplicate => return true,
            EventKind::RefundSucceeded(r) => {
                ("refund", &r.refund_id, &r.charge_id, &r.merchant_id, &r.payer_id, &r.amount, r.succeeded_at_ms, "")
            }
            _ => return false,
        };
        let m = money.clone().unwrap_or_default();
        let due = rules::due_on(calendar, local_date(at), &m.currency);
        self.items.push(json!([
            id,
            kind_name,
            charge,
            merchant,
            m.currency,
            m.minor_units,
            at,
            due.to_string(),
            order
        ]));
        if let Some((entry, merchant, currency, at, postings)) = entry_of(kind) {
            for (leg, p) in postings.iter().enumerate() {
                self.postings.push(json!([entry, leg, merchant, currency, p.account, p.amount, at]));
            }
        }
        self.receipts.push(json!([id, kind_name, charge, merchant, payer, m.minor_units, m.currency, at]));
        if kind_name == "refund" {
            self.refunded.push(json!([merchant]));
        }
        true
    }

    async fn write(&mut self, tx: &mut Tx) -> anyhow::Result<()> {
        if self.items.is_empty() {
            return Ok(());
        }
        let rows = tx.kind().json_rows(1);
        let arg = |v: &mut Vec<serde_json::Value>| Value::from(serde_json::Value::Array(std::mem::take(v)).to_string());
        tx.execute(
            &format!(
                "INSERT INTO settlement_items
                     (item_id, kind, charge_id, merchant_id, currency, amount, succeeded_at_ms, due_date, batch_id,
                      out_trade_no)
                 SELECT value->>0, value->>1, value->>2, value->>3, value->>4, CAST(value->>5 AS BIGINT),
                        CAST(value->>6 AS BIGINT), value->>7, NULL, value->>8
                 FROM {rows} WHERE true ON CONFLICT (item_id) DO NOTHING"
            ),
            &[arg(&mut self.items)],
        )
        .await?;
        tx.execute(
            &format!(
                "INSERT INTO ledger_postings (entry_id, leg, merchant_id, currency, account, amount, at_ms)
                 SELECT value->>0, CAST(value->>1 AS BIGINT), value->>2, value->>3, value->>4,
                        CAST(value->>5 AS BIGINT), CAST(value->>6 AS BIGINT)
                 FROM {rows} WHERE true ON CONFLICT (entry_id, leg) DO NOTHING"
            ),
            &[arg(&mut self.postings)],
        )
        .await?;
        crate::receipts::record_run(tx, std::mem::take(&mut self.receipts)).await?;
        if !self.refunded.is_empty() {
            tx.execute(
                &format!(
                    "INSERT INTO settlement_review_due (merchant_id) SELECT DISTINCT value->>0 FROM {rows} WHERE true
                     ON CONFLICT (merchant_id) DO NOTHING"
                ),
                &[arg(&mut self.refunded)],
            )
            .await?;
        }
        Ok(())
    }
}

// === closing batches ===

/// How often the closer looks for items due.
const TICK: Duration = Duration::from_secs(1);

async fn record_review_opened(tx: &mut Tx, o: &pb::MerchantReviewOpened) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO settlement_reviews (merchant_id, reason, state, refunds, charges, rate_basis_points, opened_at_ms,
             resolved_at_ms, note)
         VALUES ($1, $2, 'open', $3, $4, $5, $6, 0, '')
         ON CONFLICT (merchant_id) DO UPDATE SET reason = excluded.reason, state = 'open', refunds = excluded.refunds,
             charges = excluded.charges, rate_basis_points = excluded.rate_basis_points,
             opened_at_ms = excluded.opened_at_ms, resolved_at_ms = 0, note = ''
         WHERE settlement_reviews.opened_at_ms < excluded.opened_at_ms",
        &[
            Value::from(&o.merchant_id),
            Value::from(&o.reason),
            Value::Int(o.refunds as i64),
            Value::Int(o.charges as i64),
            Value::from(o.rate_basis_points),
            Value::Int(o.opened_at_ms),
        ],
    )
    .await?;
    Ok(())
}

/// A merchant whose refunds over this many days exceed [`REVIEW_RATE_BASIS_POINTS`] of its
/// charges (by count) is put up for review.
pub const REVIEW_WINDOW_DAYS: u32 = 30;
pub const REVIEW_RATE_BASIS_POINTS: u32 = 500;

/// The review stream of a merchant: opened and resolved in turn.
pub fn review_stream(merchant: &str) -> String {
    format!("merchant-review-{merchant}")
}

/// Looks at the refund rate of each merchant with a refund since it was last looked at; opens
/// a review for those above the threshold with none open. How many it opened.
pub async fn review_refund_rates(platform: &Platform) -> anyhow::Result<usize> {
    let store = &platform.store;
    let due = store.query("SELECT merchant_id FROM settlement_review_due", &[]).await?;
    let mut opened = 0;
    for row in due {
        let merchant = row.text(0).unwrap_or_default().to_string();
        let now = platform.clock.now_ms();
        let since = now - i64::from(REVIEW_WINDOW_DAYS) * 86_400_000;
        let mut tx = store.begin().await?;
        let counts = tx
            .query(
                "SELECT COALESCE(SUM(CASE WHEN kind = 'charge' THEN 1 ELSE 0 END), 0),
                        COALESCE(SUM(CASE WHEN kind = 'refund' THEN 1 ELSE 0 END), 0)
                 FROM settlement_items WHERE merchant_id = $1 AND succeeded_at_ms >= $2",
                &[Value::from(&merchant), Value::Int(since)],
            )
            .await?;
        let (charges, refunds) = counts.first().map_or((0, 0), |r| (r.i64(0).unwrap_or(0), r.i64(1).unwrap_or(0)));
        let rate = if charges == 0 { 10_000 } else { (refunds * 10_000 / charges).min(10_000) as u32 };
        let open = tx
            .query(
                "SELECT 1 FROM settlement_reviews WHERE merchant_id = $1 AND state = 'open'",
                &[Value::from(&merchant)],
            )
            .await?;
        if refunds > 0 && rate > REVIEW_RATE_BASIS_POINTS && open.is_empty() {
            let version = tx.read_stream(&review_stream(&merchant), 0).await?.last().map_or(0, |e| e.version);
            let review = pb::MerchantReviewOpened {
                merchant_id: merchant.clone(),
                reason: "refund_rate".into(),
                refunds: refunds as u64,
                charges: charges as u64,
                rate_basis_points: rate,
                window_days: REVIEW_WINDOW_DAYS,
                opened_at_ms: now,
            };
            let event = encode(
                pb::Event { kind: Some(EventKind::MerchantReviewOpened(review.clone())) },
                &Cause::default(),
                now,
            );
            let expected = if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) };
            match tx.append(&review_stream(&merchant), expected, vec![event]).await {
                Ok(_) => {}
                Err(autodebit_eventstore::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            record_review_opened(&mut tx, &review).await?;
            let cause = autodebit_domain::credit::Cause::RefundRateReview { review: review_stream(&merchant) };
            crate::complaints::change_credit(&mut tx, &merchant, &cause, 0, now).await?;
            tracing::warn!(merchant, refunds, charges, rate_basis_points = rate, "merchant put up for risk review");
            opened += 1;
        }
        tx.execute("DELETE FROM settlement_review_due WHERE merchant_id = $1", &[Value::from(&merchant)]).await?;
        tx.commit().await?;
    }
    Ok(opened)
}

/// Closes due batches, looks at refund rates, reconciles the days whose statement is ready and
/// escalates discrepancies past their deadline, every tick until shutdown.
pub fn spawn_closer(platform: Platform, calendar: Arc<WorkingCalendar>, providers: Arc<crate::Providers>) {
    // The daily reconciliation on a loop of its own: fetching a statement may take a minute,
    // which is not to hold the batches back.
    let (daily, daily_calendar) = (platform.clone(), calendar.clone());
    tokio::spawn(async move {
        let mut tried = std::collections::HashMap::new();
        loop {
            if let Err(e) = crate::reconcile::reconcile_due(&daily, &providers, &daily_calendar, &mut tried).await {
                tracing::error!(error = format!("{e:#}"), "the daily reconciliation failed; retrying");
                autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGER_ERRORS, &[], 1);
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = daily.shutdown.wait() => return,
            }
        }
    });
    tokio::spawn(async move {
        loop {
            if let Err(e) = review_refund_rates(&platform).await {
                tracing::error!(error = format!("{e:#}"), "looking at refund rates failed; retrying");
                autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGER_ERRORS, &[], 1);
            }
            if let Err(e) = crate::complaints::miss_due(&platform, &calendar).await {
                tracing::error!(error = format!("{e:#}"), "applying missed complaint deadlines failed; retrying");
                autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGER_ERRORS, &[], 1);
            }
            if let Err(e) = crate::reconcile::escalate_due(&platform).await {
                tracing::error!(error = format!("{e:#}"), "escalating reconciliation discrepancies failed; retrying");
                autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGER_ERRORS, &[], 1);
            }
            let closed = match caught_up_time(&platform).await {
                Ok(now) => close_due(&platform, &calendar, now).await,
                Err(e) => Err(e),
            };
            if let Err(e) = closed {
                tracing::error!(error = format!("{e:#}"), "closing settlement batches failed; retrying");
                autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGER_ERRORS, &[], 1);
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = platform.shutdown.wait() => return,
            }
        }
    });
}

/// The batch of `merchant`'s items in `currency` settled on `day`.
pub fn batch_id(merchant: &str, currency: &str, day: NaiveDate) -> String {
    format!("sb_{}_{currency}_{merchant}", day.format("%Y%m%d"))
}

/// The merchant's fee rate: its industry's as the operator set it, else the default.
async fn fee_rate(tx: &mut Tx, merchant: &str) -> anyhow::Result<u32> {
    let rows = tx
        .query(
            "SELECT m.industry, r.basis_points FROM settlement_merchants m
             LEFT JOIN settlement_fee_rates r ON r.industry = m.industry WHERE m.merchant_id = $1",
            &[Value::from(merchant)],
        )
        .await?;
    let Some(row) = rows.first() else { return Ok(rules::default_fee_basis_points("")) };
    Ok(match row.i64(1) {
        Some(bp) => u32::try_from(bp).unwrap_or(0),
        None => rules::default_fee_basis_points(row.text(0).unwrap_or_default()),
    })
}

/// A merchant's split rules in order (`$1`: the merchant).
pub const SPLIT_RULES: &str =
    "SELECT receiver, basis_points, fixed, cap FROM settlement_split_rules WHERE merchant_id = $1 ORDER BY position";

pub fn rules_from(rows: &[autodebit_eventstore::Row]) -> Vec<SplitRule> {
    rows.iter()
        .map(|r| SplitRule {
            receiver: r.text(0).unwrap_or_default().to_string(),
            basis_points: u32::try_from(r.i64(1).unwrap_or(0)).unwrap_or(0),
            fixed: r.i64(2).unwrap_or(0),
            cap: r.i64(3).unwrap_or(0),
        })
        .collect()
}

/// Waits (up to 3 s) until the follower has taken in everything on the log now, and answers
/// the clock's time as it was before: every item due by that time's day is then in the tables
/// (an item due by a day succeeded before the day began, so it was on the log before the clock
/// read it). The follower saves its place past events it does not take only when idle, so
/// under a steady stream of other events this waits its full 3 s and goes on with what the
/// tables hold.
pub async fn caught_up_time(platform: &Platform) -> anyhow::Result<i64> {
    let now = platform.clock.now_ms();
    let head = platform.store.query("SELECT COALESCE(MAX(position), 0) FROM events", &[]).await?;
    let head = head.first().and_then(|r| r.i64(0)).unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while platform.store.load_checkpoint(FOLLOWER).await?.position < head && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(now)
}

/// Delays a merchant's settlement (a missed amount-dispute deadline): nothing of it closes
/// before `SETTLEMENT_DELAY_WORKING_DAYS` working days after the next working day from `at_ms`
/// — its T+1 batches become T+2.
pub async fn delay_merchant(tx: &mut Tx, calendar: &WorkingCalendar, merchant: &str, at_ms: i64) -> anyhow::Result<()> {
    let days = 1 + autodebit_domain::complaint::SETTLEMENT_DELAY_WORKING_DAYS;
    let not_before = calendar.add_working_days(local_date(at_ms), days).to_string();
    tx.execute(
        "INSERT INTO settlement_delays (merchant_id, not_before) VALUES ($1, $2)
         ON CONFLICT (merchant_id) DO UPDATE SET not_before = excluded.not_before
         WHERE settlement_delays.not_before < excluded.not_before",
        &[Value::from(merchant), Value::from(not_before)],
    )
    .await?;
    Ok(())
}

/// Closes the batches due by `now`'s day: for each merchant and currency, one per working day
/// from its earliest waiting item's due day to that day, each taking the items due by its day.
/// When the clock has run on while the closer was away (or a test clock jumped), each working
/// day still gets the batch it would have had. How many it closed.
pub async fn close_due(platform: &Platform, calendar: &WorkingCalendar, now: i64) -> anyhow::Result<usize> {
    let today = local_date(now);
    let due = platform
        .store
        .query(
            "SELECT merchant_id, currency, MIN(due_date) FROM settlement_items
             WHERE batch_id IS NULL AND due_date <= $1 GROUP BY merchant_id, currency",
            &[Value::from(today.to_string())],
        )
        .await?;
    let delays: std::collections::HashMap<String, String> = platform
        .store
        .query(
            "SELECT merchant_id, not_before FROM settlement_delays WHERE not_before > $1",
            &[Value::from(today.to_string())],
        )
        .await?
        .iter()
        .map(|r| (r.text(0).unwrap_or_default().to_string(), r.text(1).unwrap_or_default().to_string()))
        .collect();
    let mut closed = 0;
    for row in due {
        let (merchant, currency) = (row.text(0).unwrap_or_default(), row.text(1).unwrap_or_default());
        // A delayed merchant's batches wait (the items stay due and close together later).
        if delays.contains_key(merchant) {
            continue;
        }
        let Ok(mut day) = NaiveDate::parse_from_str(row.text(2).unwrap_or_default(), "%Y-%m-%d") else { continue };
        while day <= today {
            if calendar.is_working_day(day) && close_one(&platform.store, merchant, currency, day, now).await? {
                closed += 1;
            }
            day = day.succ_opt().expect("a date within range");
        }
    }
    Ok(closed)
}

async fn close_one(
    store: &EventStore,
    merchant: &str,
    currency: &str,
    today: NaiveDate,
    now: i64,
) -> anyhow::Result<bool> {
    let id = batch_id(merchant, currency, today);
    let stream = format!("settlement-{merchant}-{currency}-{today}");
    let mut tx = store.begin().await?;
    let rows = tx
        .query(
            "SELECT item_id, kind, charge_id, amount FROM settlement_items
             WHERE merchant_id = $1 AND currency = $2 AND batch_id IS NULL AND due_date <= $3
             ORDER BY succeeded_at_ms, item_id",
            &[Value::from(merchant), Value::from(currency), Value::from(today.to_string())],
        )
        .await?;
    let items: Vec<Item> = rows
        .iter()
        .map(|r| Item {
            id: r.text(0).unwrap_or_default().to_string(),
            kind: if r.text(1) == Some("refund") { ItemKind::Refund } else { ItemKind::Charge },
            charge_id: r.text(2).unwrap_or_default().to_string(),
            amount: r.i64(3).unwrap_or(0),
        })
        .collect();
    if items.is_empty() {
        return Ok(false);
    }
    let bp = fee_rate(&mut tx, merchant).await?;
    let split = rules_from(&tx.query(SPLIT_RULES, &[Value::from(merchant)]).await?);
    let (lines, t) = rules::settle(&items, bp, &split);
    let batch = pb::SettlementBatchClosed {
        batch_id: id,
        merchant_id: merchant.to_string(),
        currency: currency.to_string(),
        business_date: today.to_string(),
        fee_basis_points: bp,
        lines: lines
            .iter()
            .map(|l| pb::SettlementLine {
                item_id: l.item_id.clone(),
                kind: kind_to_pb(l.kind),
                charge_id: l.charge_id.clone(),
                amount: l.amount,
                fee: l.fee,
                splits: l.splits.iter().map(|(r, a)| pb::SplitShare { receiver: r.clone(), amount: *a }).collect(),
                net: l.net,
            })
            .collect(),
        gross: t.gross,
        refunds: t.refunds,
        fees: t.fees,
        splits: t.splits,
        net: t.net,
        closed_at_ms: now,
    };
    let kind = EventKind::SettlementBatchClosed(batch);
    let event = encode(pb::Event { kind: Some(kind.clone()) }, &Cause::default(), now);
    match tx.append(&stream, ExpectedVersion::NoStream, vec![event]).await {
        Ok(_) => {}
        // Another closer took this day's batch: nothing to do.
        Err(autodebit_eventstore::StoreError::Conflict { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    // The tables move with the event; the follower finds them there when it comes to it.
    if let EventKind::SettlementBatchClosed(b) = &kind {
        record_batch(&mut tx, b).await?;
    }
    post(&mut tx, &kind).await?;
    tx.commit().await?;
    tracing::info!(merchant, currency, day = %today, lines = lines.len(), net = t.net, "settlement batch closed");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebit_eventstore::StoreOptions;

    fn money(minor_units: i64) -> Option<pb::Money> {
        Some(pb::Money { minor_units, currency: "CNY".into() })
    }

    async fn dump(store: &EventStore) -> Vec<String> {
        let mut out = Vec::new();
        for sql in [
            "SELECT entry_id || ':' || leg || ':' || account || ':' || amount FROM ledger_postings ORDER BY 1",
            "SELECT item_id || ':' || COALESCE(batch_id, '-') || ':' || due_date FROM settlement_items ORDER BY 1",
            "SELECT batch_id || ':' || net FROM settlement_batches ORDER BY 1",
            "SELECT batch_id || ':' || item_id || ':' || net FROM settlement_lines ORDER BY 1",
            "SELECT merchant_id || ':' || number || ':' || item_id || ':' || tax FROM receipts ORDER BY 1",
        ] {
            for r in store.query(sql, &[]).await.unwrap() {
                out.push(r.text(0).unwrap_or_default().to_string());
            }
        }
        out
    }

    /// The closer writes a batch's rows with its event and the follower takes the same event
    /// in later; a replay takes every event in again. Neither changes a thing.
    #[tokio::test]
    async fn events_taken_in_twice_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            EventStore::open(StoreOptions::new(&autodebit_eventstore::testing::sqlite_url(dir.path()))).await.unwrap();
        store.migrate(&crate::store::MIGRATIONS).await.unwrap();
        let calendar = WorkingCalendar::china();
        // Friday 4 December 2026, 10:00 in Beijing.
        let at = 1_796_349_600_000;
        let events = vec![
            EventKind::MerchantApplied(pb::MerchantApplied {
                merchant_id: "mch_1".into(),
                industry: "membership".into(),
                legal_name: "测试有限公司".into(),
                credit_code: "91330100MA2TEST001".into(),
                ..Default::default()
            }),
            EventKind::ChargeSucceeded(pb::ChargeSucceeded {
                charge_id: "ch_1".into(),
                merchant_id: "mch_1".into(),
                amount: money(1_990),
                succeeded_at_ms: at,
                payer_id: "p1".into(),
                ..Default::default()
            }),
            EventKind::RefundSucceeded(pb::RefundSucceeded {
                refund_id: "rf_1".into(),
                charge_id: "ch_1".into(),
                merchant_id: "mch_1".into(),
                amount: money(500),
                succeeded_at_ms: at + 1,
                payer_id: "p1".into(),
                ..Default::default()
            }),
        ];
        let mut tx = store.begin().await.unwrap();
        for e in &events {
            apply(&mut tx, &calendar, e).await.unwrap();
        }
        tx.commit().await.unwrap();
        // Due on Monday the 7th, T+1 over the weekend.
        assert!(dump(&store).await.iter().any(|r| r == "ch_1:-:2026-12-07"), "{:?}", dump(&store).await);

        let day = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        assert!(close_one(&store, "mch_1", "CNY", day, at + 3 * 86_400_000).await.unwrap());
        assert!(!close_one(&store, "mch_1", "CNY", day, at + 3 * 86_400_000).await.unwrap(), "closed once");
        let once = dump(&store).await;
        assert!(once.iter().any(|r| r == &format!("{}:1478", batch_id("mch_1", "CNY", day))), "{once:?}");

        let closed = store.read_stream(&format!("settlement-mch_1-CNY-{day}"), 0).await.unwrap();
        let closed = autodebit_runtime::codec::decode(closed.into_iter().next().unwrap()).unwrap().kind;
        let mut tx = store.begin().await.unwrap();
        for e in events.iter().chain([&closed]) {
            apply(&mut tx, &calendar, e).await.unwrap();
        }
        tx.commit().await.unwrap();
        assert_eq!(dump(&store).await, once);
    }
}
