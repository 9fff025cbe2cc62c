//! Reconciliation: a merchant's daily statement from its provider, matched line by line
//! against the books (`settlement_items`: every succeeded charge and refund, with the order
//! number the charge succeeded under), each disagreement typed (`domain::reconciliation`) and
//! recorded once as `DiscrepancyFound` with its deadline.
//!
//! The statement is read a line at a time (`domain::statement::Reader`); the books' items of
//! the day are held as a compact map (charge id, attempt, amount), so memory grows with the
//! day's succeeded charges, not with the file. Nothing is written until the whole statement has
//! been read and found whole and adding up: a refused statement changes nothing. Then, in one
//! transaction, `StatementReconciled` (the day's report) and each new discrepancy are appended
//! with their table rows. A duplicate debit's refund is asked for at once (`app::refund_duplicate`,
//! asked again after a crash: `settle_duplicates`) and its discrepancy resolved once the refund
//! has succeeded; a short payment whose line turns up on a later
//! day's statement is resolved by it; the others wait for an operator with the evidence, and
//! are escalated (`DiscrepancyEscalated`) when their deadline passes open.
use crate::{Providers, app, settlement};
use autodebit_domain::ChargeId;
use autodebit_domain::calendar::WorkingCalendar;
use autodebit_domain::charge::{self, ChargeStatus, RefundStatus};
pub use autodebit_domain::reconciliation::day_bounds;
use autodebit_domain::reconciliation::{self as rules, Booked, Kind};
use autodebit_domain::statement::{Reader, StatementError};
use autodebit_eventstore::{ExpectedVersion, Tx, Value};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use autodebit_provider::{ProviderError, StatementRequest};
use autodebit_runtime::Platform;
use autodebit_runtime::codec::{Cause, encode};
use chrono::NaiveDate;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The statement is not whole, does not add up, or is not this merchant's.
    #[error("the statement is refused: {0}")]
    Statement(#[from] StatementError),
    /// The provider gave no statement (none yet for the day, or it could not be reached).
    #[error("the provider gave no statement: {0}")]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<autodebit_eventstore::StoreError> for ReconcileError {
    fn from(e: autodebit_eventstore::StoreError) -> Self {
        ReconcileError::Other(e.into())
    }
}

/// What a reconciliation did.
#[derive(Debug, Clone)]
pub struct Reconciled {
    pub report: pb::StatementReconciled,
    /// Every discrepancy of this statement, including those found by an earlier run of it.
    pub discrepancies: Vec<pb::DiscrepancyFound>,
    /// Refunds of duplicate debits asked for as this run ended.
    pub refunds_asked: usize,
}

pub fn kind_to_pb(k: Kind) -> pb::DiscrepancyKind {
    match k {
        Kind::ShortPayment => pb::DiscrepancyKind::ShortPayment,
        Kind::StatusMismatch => pb::DiscrepancyKind::StatusMismatch,
        Kind::Duplicate => pb::DiscrepancyKind::Duplicate,
        Kind::UnknownOrder => pb::DiscrepancyKind::UnknownOrder,
        Kind::AmountMismatch => pb::DiscrepancyKind::AmountMismatch,
    }
}

pub fn kind_from_pb(raw: i32) -> Option<Kind> {
    Some(match pb::DiscrepancyKind::try_from(raw).ok()? {
        pb::DiscrepancyKind::ShortPayment => Kind::ShortPayment,
        pb::DiscrepancyKind::StatusMismatch => Kind::StatusMismatch,
        pb::DiscrepancyKind::Duplicate => Kind::Duplicate,
        pb::DiscrepancyKind::UnknownOrder => Kind::UnknownOrder,
        pb::DiscrepancyKind::AmountMismatch => Kind::AmountMismatch,
        pb::DiscrepancyKind::Unspecified => return None,
    })
}

/// A charge of the day as the books have it: 24 bytes (the currency an index into
/// `Matching::currencies`), so a day of a million charges is held in some 40 MB.
struct Expected {
    amount: i64,
    attempt: u32,
    currency: u16,
    seen: bool,
}

/// The statement's lines against the books, before anything is written.
struct Matching<'a> {
    platform: &'a Platform,
    merchant: &'a str,
    date: NaiveDate,
    charges: HashMap<ChargeId, Expected>,
    refunds: HashMap<String, Expected>,
    /// The currencies of the day's items, which `Expected::currency` indexes.
    currencies: Vec<String>,
    /// Order (or refund) numbers of lines not among the day's items, seen so far.
    others_seen: HashSet<String>,
    matched: u64,
    matched_elsewhere: Vec<String>,
    found: Vec<pb::DiscrepancyFound>,
}

/// How many of the day's items are read at a time.
const PAGE: i64 = 10_000;

impl<'a> Matching<'a> {
    async fn load(platform: &'a Platform, merchant: &'a str, date: NaiveDate) -> anyhow::Result<Self> {
        let (start, end) = day_bounds(date);
        let mut m = Matching {
            platform,
            merchant,
            date,
            charges: HashMap::new(),
            refunds: HashMap::new(),
            currencies: Vec::new(),
            others_seen: HashSet::new(),
            matched: 0,
            matched_elsewhere: Vec::new(),
            found: Vec::new(),
        };
        // Sized once: a map that grows doubles, holding both sizes at once as it does.
        let count = platform
            .store
            .query(
                "SELECT COUNT(*) FROM settlement_items WHERE merchant_id = $1 AND succeeded_at_ms >= $2
                   AND succeeded_at_ms < $3 AND kind = 'charge'",
                &[Value::from(merchant), Value::Int(start), Value::Int(end)],
            )
            .await?;
        m.charges.reserve(count.first().and_then(|r| r.i64(0)).unwrap_or(0).max(0) as usize);
        let (mut after_ms, mut after_id) = (start - 1, String::new());
        loop {
            let rows = platform
                .store
                .query(
                    "SELECT i.item_id, i.kind, i.amount, i.out_trade_no, i.currency, i.succeeded_at_ms
                     FROM settlement_items i
                     WHERE i.merchant_id = $1 AND i.succeeded_at_ms < $2
                       AND (i.succeeded_at_ms > $3 OR (i.succeeded_at_ms = $3 AND i.item_id > $4))
                       AND NOT EXISTS (SELECT 1 FROM reconciliation_matched_elsewhere e WHERE e.item_id = i.item_id)
                     ORDER BY i.succeeded_at_ms, i.item_id LIMIT $5",
                    &[
                        Value::from(merchant),
                        Value::Int(end),
                        Value::Int(after_ms),
                        Value::from(after_id.as_str()),
                        Value::Int(PAGE),
                    ],
                )
                .await?;
            for r in &rows {
                let id = r.text(0).unwrap_or_default();
                let currency = r.text(4).unwrap_or_default();
                let index = match m.currencies.iter().position(|c| c == currency) {
                    Some(i) => i,
                    None => {
                        m.currencies.push(currency.to_string());
                        m.currencies.len() - 1
                    }
                };
                let expected = Expected {
                    attempt: ChargeId::from_out_trade_no(r.text(3).unwrap_or_default()).map_or(0, |(_, a)| a),
                    amount: r.i64(2).unwrap_or(0),
                    currency: u16::try_from(index).unwrap_or(u16::MAX),
                    seen: false,
                };
                if r.text(1) == Some("refund") {
                    m.refunds.insert(id.to_string(), expected);
                } else if let Ok(charge) = ChargeId::parse(id) {
                    m.charges.insert(charge, expected);
                }
            }
            match rows.last() {
                Some(last) if rows.len() as i64 == PAGE => {
                    after_ms = last.i64(5).unwrap_or(end);
                    after_id = last.text(0).unwrap_or_default().to_string();
                }
                _ => break,
            }
        }
        Ok(m)
    }

    fn discrepancy(&mut self, kind: Kind, key: &str, line: &autodebit_domain::statement::Line, booked: i64) {
        let detail = match kind {
            Kind::Duplicate => format!("{} debited again as {}", charge_of(&line.out_trade_no), line.out_trade_no),
            Kind::AmountMismatch => format!("the statement says {} where the books say {booked}", amount_of(line)),
            Kind::StatusMismatch if line.state == "REFUND" => {
                format!("the statement pays back {} which the books hold as not paid back", line.out_refund_no)
            }
            Kind::StatusMismatch => {
                format!("the statement debits {} which the books hold as not succeeded", line.out_trade_no)
            }
            Kind::UnknownOrder => format!("{} is no order of this merchant", key),
            Kind::ShortPayment => String::new(),
        };
        let (charge_id, item_id) = if line.state == "REFUND" {
            let charge = charge::refunded_charge(&line.out_refund_no).map(|c| c.to_string()).unwrap_or_default();
            (charge, line.out_refund_no.clone())
        } else {
            let charge = charge_of(&line.out_trade_no);
            (charge.clone(), charge)
        };
        self.found.push(pb::DiscrepancyFound {
            discrepancy_id: String::new(),
            merchant_id: self.merchant.to_string(),
            statement_date: self.date.to_string(),
            kind: kind_to_pb(kind) as i32,
            out_trade_no: key.to_string(),
            charge_id,
            item_id,
            transaction_id: line.transaction_id.clone(),
            currency: line.currency.clone(),
            statement_amount: amount_of(line),
            platform_amount: booked,
            line: line.line as u64,
            detail,
            evidence: kind.evidence().to_string(),
            found_at_ms: 0,
            deadline_ms: 0,
        });
    }

    /// Matches one line of the statement.
    async fn line(&mut self, line: &autodebit_domain::statement::Line) -> anyhow::Result<()> {
        let refund = line.state == "REFUND";
        let refund_not_paid = refund && !line.refund_state.is_empty() && line.refund_state != "SUCCESS";
        if (!refund && line.state != "SUCCESS") || refund_not_paid {
            // Not money that moved (an order closed or revoked): nothing to match.
            return Ok(());
        }
        let key = if refund { line.out_refund_no.clone() } else { line.out_trade_no.clone() };
        // The day's own items first.
        if refund {
            if let Some(e) = self.refunds.get_mut(&key) {
                let kind = rules::refund(line.refund_amount, &Booked::Refunded { amount: e.amount }, e.seen);
                e.seen = true;
                let booked = e.amount;
                return Ok(self.outcome(kind, &key, line, booked));
            }
        } else if let Some((charge, attempt)) = ChargeId::from_out_trade_no(&key)
            && let Some(e) = self.charges.get_mut(&charge)
        {
            let booked = Booked::Succeeded {
                out_trade_no: if e.attempt == 0 { String::new() } else { charge.out_trade_no(e.attempt) },
                amount: e.amount,
            };
            let same = e.attempt == 0 || e.attempt == attempt;
            let kind = rules::trade(&key, line.amount, &booked, same && e.seen);
            if same {
                e.seen = true;
            }
            let amount = e.amount;
            return Ok(self.outcome(kind, &key, line, amount));
        }
        // Another day's item, an order that did not succeed, or none of this merchant's.
        let seen_before = !self.others_seen.insert(key.clone());
        let (booked, elsewhere) =
            if refund { self.booked_refund(&key).await? } else { self.booked_trade(&key).await? };
        let kind = if refund {
            rules::refund(line.refund_amount, &booked, seen_before)
        } else {
            rules::trade(&key, line.amount, &booked, seen_before)
        };
        if kind.is_none()
            && let Some(item) = elsewhere
        {
            self.matched_elsewhere.push(item);
        }
        let amount = match booked {
            Booked::Succeeded { amount, .. }
            | Booked::NotSucceeded { amount }
            | Booked::Refunded { amount }
            | Booked::RefundNotPaid { amount } => amount,
            Booked::Nothing => 0,
        };
        self.outcome(kind, &key, line, amount);
        Ok(())
    }

    fn outcome(&mut self, kind: Option<Kind>, key: &str, line: &autodebit_domain::statement::Line, booked: i64) {
        match kind {
            None => self.matched += 1,
            Some(kind) => self.discrepancy(kind, key, line, booked),
        }
    }

    /// What the books hold of a charge's order outside the day: (what, the item if it is one).
    async fn booked_trade(&self, out_trade_no: &str) -> anyhow::Result<(Booked, Option<String>)> {
        let Some((charge, _)) = ChargeId::from_out_trade_no(out_trade_no) else { return Ok((Booked::Nothing, None)) };
        let id = charge.to_string();
        let rows = self
            .platform
            .store
            .query(
                "SELECT amount, out_trade_no FROM settlement_items WHERE item_id = $1 AND merchant_id = $2",
                &[Value::from(&id), Value::from(self.merchant)],
            )
            .await?;
        if let Some(r) = rows.first() {
            let took = r.text(1).unwrap_or_default().to_string();
            return Ok((Booked::Succeeded { out_trade_no: took, amount: r.i64(0).unwrap_or(0) }, Some(id)));
        }
        let Some(c) =
            app::load_charge(self.platform, charge).await?.filter(|c| c.merchant_id.as_str() == self.merchant)
        else {
            return Ok((Booked::Nothing, None));
        };
        Ok((
            match c.status {
                // Succeeded, and not in the tables yet.
                ChargeStatus::Succeeded => Booked::Succeeded {
                    out_trade_no: c.out_trade_no.clone().unwrap_or_default(),
                    amount: c.amount.minor_units(),
                },
                _ => Booked::NotSucceeded { amount: c.amount.minor_units() },
            },
            None,
        ))
    }

    async fn booked_refund(&self, out_refund_no: &str) -> anyhow::Result<(Booked, Option<String>)> {
        let rows = self
            .platform
            .store
            .query(
                "SELECT amount FROM settlement_items WHERE item_id = $1 AND merchant_id = $2 AND kind = 'refund'",
                &[Value::from(out_refund_no), Value::from(self.merchant)],
            )
            .await?;
        if let Some(r) = rows.first() {
            return Ok((Booked::Refunded { amount: r.i64(0).unwrap_or(0) }, Some(out_refund_no.to_string())));
        }
        let Some(charge) = charge::refunded_charge(out_refund_no) else { return Ok((Booked::Nothing, None)) };
        let Some(c) =
            app::load_charge(self.platform, charge).await?.filter(|c| c.merchant_id.as_str() == self.merchant)
        else {
            return Ok((Booked::Nothing, None));
        };
        Ok((
            match c.refund(out_refund_no) {
                // A duplicate debit's refund is not in the books' items, by design.
                Some(r) if r.status == RefundStatus::Succeeded => Booked::Refunded { amount: r.amount.minor_units() },
                Some(r) => Booked::RefundNotPaid { amount: r.amount.minor_units() },
                None => Booked::Nothing,
            },
            None,
        ))
    }

    /// The day's items the statement did not carry.
    fn missing(&mut self) {
        let mut missing: Vec<pb::DiscrepancyFound> = Vec::new();
        for (charge, e) in self.charges.iter().filter(|(_, e)| !e.seen) {
            let id = charge.to_string();
            let no = if e.attempt == 0 { id.clone() } else { charge.out_trade_no(e.attempt) };
            missing.push(self.absent(
                Kind::ShortPayment,
                &no,
                &id,
                &id,
                e,
                "the books took it; the statement does not carry it",
            ));
        }
        for (refund, e) in self.refunds.iter().filter(|(_, e)| !e.seen) {
            let charge = charge::refunded_charge(refund).map(|c| c.to_string()).unwrap_or_default();
            missing.push(self.absent(
                Kind::StatusMismatch,
                refund,
                &charge,
                refund,
                e,
                "the books paid it back; the statement does not carry it",
            ));
        }
        missing.sort_by(|a, b| a.out_trade_no.cmp(&b.out_trade_no));
        self.found.extend(missing);
    }

    fn absent(
        &self,
        kind: Kind,
        key: &str,
        charge: &str,
        item: &str,
        e: &Expected,
        detail: &str,
    ) -> pb::DiscrepancyFound {
        pb::DiscrepancyFound {
            discrepancy_id: String::new(),
            merchant_id: self.merchant.to_string(),
            statement_date: self.date.to_string(),
            kind: kind_to_pb(kind) as i32,
            out_trade_no: key.to_string(),
            charge_id: charge.to_string(),
            item_id: item.to_string(),
            transaction_id: String::new(),
            currency: self.currencies.get(usize::from(e.currency)).cloned().unwrap_or_default(),
            statement_amount: 0,
            platform_amount: e.amount,
            line: 0,
            detail: detail.to_string(),
            evidence: kind.evidence().to_string(),
            found_at_ms: 0,
            deadline_ms: 0,
        }
    }
}

fn charge_of(out_trade_no: &str) -> String {
    ChargeId::from_out_trade_no(out_trade_no).map(|(c, _)| c.to_string()).unwrap_or_default()
}

fn amount_of(line: &autodebit_domain::statement::Line) -> i64 {
    if line.state == "REFUND" { line.refund_amount } else { line.amount }
}

/// A discrepancy's id: the same disagreement of the same statement has the same id, so
/// reconciling a day again finds nothing twice.
fn discrepancy_id(f: &pb::DiscrepancyFound, occurrence: usize) -> String {
    let kind = kind_from_pb(f.kind).map_or("unknown", Kind::name);
    let day = f.statement_date.replace('-', "");
    let again = if occurrence > 0 { format!("_{occurrence}") } else { String::new() };
    // An order number as WeChat Pay allows them stands for itself; anything else a statement
    // may hold (it is outside input) by a digest of it.
    let no = &f.out_trade_no;
    let plain = no.len() <= 64 && no.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-|*@".contains(&b));
    let key = if plain {
        no.clone()
    } else {
        use sha2::Digest;
        format!("x{}", &hex::encode(sha2::Sha256::digest(no.as_bytes()))[..32])
    };
    format!("dc_{day}_{kind}_{}_{key}{again}", f.merchant_id)
}

pub fn discrepancy_stream(id: &str) -> String {
    format!("discrepancy-{id}")
}

/// Reconciles `merchant`'s statement of `date`, read from `input` (plain text) as the
/// statement of provider account `account`; `source` says where it came from. The books are
/// taken as they stand: callers wait for the settlement follower first (`settlement::caught_up_time`).
pub async fn reconcile<R: Read>(
    platform: &Platform,
    calendar: &WorkingCalendar,
    merchant: &str,
    account: &str,
    date: NaiveDate,
    source: &str,
    input: R,
) -> Result<Reconciled, ReconcileError> {
    let mut matching = Matching::load(platform, merchant, date).await?;
    let mut reader = Reader::new(input, account)?;
    let mut lines = 0u64;
    while let Some(line) = reader.next_line()? {
        lines += 1;
        matching.line(&line).await?;
    }
    matching.missing();
    let totals = reader.totals();
    let now = platform.clock.now_ms();
    let count = |k: Kind| matching.found.iter().filter(|f| f.kind == kind_to_pb(k) as i32).count() as u64;
    let report = pb::StatementReconciled {
        merchant_id: merchant.to_string(),
        statement_date: date.to_string(),
        source: source.to_string(),
        lines,
        matched: matching.matched,
        short_payments: count(Kind::ShortPayment),
        status_mismatches: count(Kind::StatusMismatch),
        duplicates: count(Kind::Duplicate),
        unknown_orders: count(Kind::UnknownOrder),
        amount_mismatches: count(Kind::AmountMismatch),
        amount: totals.amount,
        refunds: totals.refunds,
        fees: totals.fees,
        reconciled_at_ms: now,
        matched_elsewhere: matching.matched_elsewhere.clone(),
    };
    let mut occurrences: HashMap<String, usize> = HashMap::new();
    let mut found = std::mem::take(&mut matching.found);
    for f in &mut found {
        let kind = kind_from_pb(f.kind).unwrap_or(Kind::UnknownOrder);
        let base = discrepancy_id(f, 0);
        let n = occurrences.entry(base).or_insert(0);
        f.discrepancy_id = discrepancy_id(f, *n);
        *n += 1;
        f.found_at_ms = now;
        f.deadline_ms = rules::deadline_ms(calendar, kind, now);
    }

    let mut tx = platform.store.begin().await?;
    let event = |kind: EventKind| encode(pb::Event { kind: Some(kind) }, &Cause::default(), now);
    let reconciled = EventKind::StatementReconciled(report.clone());
    tx.append(&format!("reconciliation-{merchant}-{date}"), ExpectedVersion::Any, vec![event(reconciled.clone())])
        .await?;
    apply(&mut tx, &reconciled).await?;
    let mut discrepancies = Vec::with_capacity(found.len());
    for f in found {
        let known = tx
            .query(
                "SELECT found_at_ms, deadline_ms FROM reconciliation_discrepancies
                 WHERE discrepancy_id = $1 AND merchant_id = $2",
                &[Value::from(&f.discrepancy_id), Value::from(merchant)],
            )
            .await?;
        if let Some(k) = known.first() {
            discrepancies.push(pb::DiscrepancyFound {
                found_at_ms: k.i64(0).unwrap_or(0),
                deadline_ms: k.i64(1).unwrap_or(0),
                ..f
            });
            continue;
        }
        let kind = EventKind::DiscrepancyFound(f.clone());
        tx.append(&discrepancy_stream(&f.discrepancy_id), ExpectedVersion::NoStream, vec![event(kind.clone())]).await?;
        apply(&mut tx, &kind).await?;
        tracing::warn!(
            merchant,
            date = %date,
            kind = kind_from_pb(f.kind).map_or("", Kind::name),
            order = f.out_trade_no,
            line = f.line,
            "reconciliation discrepancy"
        );
        discrepancies.push(f);
    }
    // A short payment of an earlier day whose line this statement carries is settled.
    for item in &matching.matched_elsewhere {
        let open = tx
            .query(
                "SELECT discrepancy_id FROM reconciliation_discrepancies
                 WHERE item_id = $1 AND line = 0 AND state <> 'resolved'",
                &[Value::from(item)],
            )
            .await?;
        for r in open {
            let id = r.text(0).unwrap_or_default().to_string();
            let note = format!("carried by the statement of {date}");
            resolve_in(&mut tx, &id, merchant, "later_statement", &note, "", now).await?;
        }
    }
    tx.commit().await?;

    let refunds_asked = settle_duplicates(platform, merchant).await?;
    Ok(Reconciled { report, discrepancies, refunds_asked })
}

/// Takes the unresolved duplicate debits of `merchant` ("" for every merchant) a step on: the
/// refund of each is asked for if it was not (so one lost to a crash is asked for again), and
/// once it has succeeded the discrepancy is resolved `refunded`. Only a debit under another of
/// the charge's order numbers is paid back on its own, never the charge's own order, a refund
/// line, or more than the charge took; those wait for an operator. How many refunds it asked for.
pub async fn settle_duplicates(platform: &Platform, merchant: &str) -> anyhow::Result<usize> {
    let rows = platform
        .store
        .query(
            "SELECT discrepancy_id, merchant_id, charge_id, out_trade_no, transaction_id, statement_amount
             FROM reconciliation_discrepancies
             WHERE kind = 'duplicate' AND state <> 'resolved' AND item_id = charge_id AND ($1 = '' OR merchant_id = $1)
             ORDER BY found_at_ms LIMIT 500",
            &[Value::from(merchant)],
        )
        .await?;
    let mut asked = 0;
    for r in rows {
        let text = |i| r.text(i).unwrap_or_default().to_string();
        let (id, owner, charge, out_trade_no, transaction_id) = (text(0), text(1), text(2), text(3), text(4));
        let amount = r.i64(5).unwrap_or(0);
        let Ok(charge) = ChargeId::parse(&charge) else { continue };
        let Some(c) = app::load_charge(platform, charge).await? else { continue };
        let own = c.out_trade_no.as_deref() == Some(out_trade_no.as_str());
        if c.merchant_id.as_str() != owner || own || amount <= 0 || amount > c.amount.minor_units() {
            continue;
        }
        let duplicate = charge::Duplicate { out_trade_no, transaction_id };
        let refund_id = app::duplicate_refund_id(charge, &duplicate);
        match c.refund(&refund_id).map(|r| r.status) {
            None => match app::refund_duplicate(platform, charge, duplicate, amount).await {
                Ok(_) => asked += 1,
                Err(e) => tracing::error!(
                    discrepancy = id,
                    error = %e,
                    "the duplicate debit could not be refunded; it waits for an operator"
                ),
            },
            Some(RefundStatus::Succeeded) => {
                let now = platform.clock.now_ms();
                let mut tx = platform.store.begin().await?;
                resolve_in(&mut tx, &id, &owner, "refunded", "paid back", &refund_id, now).await?;
                tx.commit().await?;
            }
            // Still being paid back; or refused, which the escalation brings to an operator.
            Some(_) => {}
        }
    }
    Ok(asked)
}

/// Appends `DiscrepancyResolved` (unless it is resolved already) and updates its row.
pub async fn resolve_in(
    tx: &mut Tx,
    id: &str,
    merchant: &str,
    resolution: &str,
    note: &str,
    refund_id: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let stream = discrepancy_stream(id);
    let events = tx.read_stream(&stream, 0).await?;
    let Some(last) = events.last() else { return Ok(false) };
    if events.iter().any(|e| e.event_type == "DiscrepancyResolved") {
        return Ok(false);
    }
    let resolved = EventKind::DiscrepancyResolved(pb::DiscrepancyResolved {
        discrepancy_id: id.to_string(),
        merchant_id: merchant.to_string(),
        resolution: resolution.to_string(),
        note: note.to_string(),
        refund_id: refund_id.to_string(),
        resolved_at_ms: now,
    });
    let event = encode(pb::Event { kind: Some(resolved.clone()) }, &Cause::default(), now);
    tx.append(&stream, ExpectedVersion::Exact(last.version), vec![event]).await?;
    apply(tx, &resolved).await?;
    Ok(true)
}

/// Escalates the open discrepancies whose deadline has passed; how many.
pub async fn escalate_due(platform: &Platform) -> anyhow::Result<usize> {
    settle_duplicates(platform, "").await?;
    let now = platform.clock.now_ms();
    let due = platform
        .store
        .query(
            // A duplicate is due at once, and its refund is asked for as it is found: it is
            // escalated only if a minute later it still is not (the refund could not be asked for).
            "SELECT discrepancy_id, merchant_id FROM reconciliation_discrepancies
             WHERE state = 'open' AND deadline_ms <= $1 - (CASE WHEN kind = 'duplicate' THEN 60000 ELSE 0 END)
             ORDER BY deadline_ms LIMIT 500",
            &[Value::Int(now)],
        )
        .await?;
    let mut escalated = 0;
    for r in due {
        let (id, merchant) = (r.text(0).unwrap_or_default(), r.text(1).unwrap_or_default());
        let stream = discrepancy_stream(id);
        let mut tx = platform.store.begin().await?;
        let events = tx.read_stream(&stream, 0).await?;
        let Some(last) = events.last() else { continue };
        if events.iter().any(|e| e.event_type != "DiscrepancyFound") {
            continue;
        }
        let kind = EventKind::DiscrepancyEscalated(pb::DiscrepancyEscalated {
            discrepancy_id: id.to_string(),
            merchant_id: merchant.to_string(),
            escalated_at_ms: now,
        });
        let event = encode(pb::Event { kind: Some(kind.clone()) }, &Cause::default(), now);
        match tx.append(&stream, ExpectedVersion::Exact(last.version), vec![event]).await {
            Ok(_) => {}
            Err(autodebit_eventstore::StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
        apply(&mut tx, &kind).await?;
        tx.commit().await?;
        tracing::warn!(discrepancy = id, merchant, "reconciliation discrepancy past its deadline: escalated");
        escalated += 1;
    }
    Ok(escalated)
}

/// Fetches `merchant`'s statement of `date` from its provider (into a temporary file, so a
/// statement of any size is read in bounded memory) and reconciles it.
pub async fn fetch_and_reconcile(
    platform: &Platform,
    providers: &Providers,
    calendar: &WorkingCalendar,
    merchant: &str,
    date: NaiveDate,
) -> Result<Reconciled, ReconcileError> {
    settlement::caught_up_time(platform).await?;
    let provider = providers.for_merchant(merchant);
    let merchant_id = autodebit_domain::MerchantId::parse(merchant)
        .map_err(|e| ReconcileError::Other(anyhow::anyhow!("merchant_id: {e}")))?;
    let request = StatementRequest { merchant_id, date };
    let mut file = tempfile::tempfile().map_err(|e| ReconcileError::Other(e.into()))?;
    provider.statement(&request, &mut file).await?;
    file.rewind().map_err(|e| ReconcileError::Other(e.into()))?;
    let account = provider.statement_account(merchant);
    reconcile(platform, calendar, merchant, &account, date, provider.name(), std::io::BufReader::new(file)).await
}

/// Reconciles a statement given whole (plain text, or gzip as WeChat Pay sends it).
pub async fn reconcile_upload(
    platform: &Platform,
    providers: &Providers,
    calendar: &WorkingCalendar,
    merchant: &str,
    date: NaiveDate,
    bytes: &[u8],
) -> Result<Reconciled, ReconcileError> {
    settlement::caught_up_time(platform).await?;
    let account = providers.for_merchant(merchant).statement_account(merchant);
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let input = flate2::read::GzDecoder::new(bytes);
        reconcile(platform, calendar, merchant, &account, date, "upload", input).await
    } else {
        reconcile(platform, calendar, merchant, &account, date, "upload", bytes).await
    }
}

/// Applies a reconciliation event to the tables; idempotent.
pub async fn apply(tx: &mut Tx, kind: &EventKind) -> anyhow::Result<()> {
    match kind {
        EventKind::StatementReconciled(r) => {
            tx.execute(
                "INSERT INTO reconciliation_reports (merchant_id, statement_date, source, lines, matched, short_payments,
                     status_mismatches, duplicates, unknown_orders, amount_mismatches, amount, refunds, fees,
                     reconciled_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (merchant_id, statement_date) DO UPDATE SET source = excluded.source,
                     lines = excluded.lines, matched = excluded.matched, short_payments = excluded.short_payments,
                     status_mismatches = excluded.status_mismatches, duplicates = excluded.duplicates,
                     unknown_orders = excluded.unknown_orders, amount_mismatches = excluded.amount_mismatches,
                     amount = excluded.amount, refunds = excluded.refunds, fees = excluded.fees,
                     reconciled_at_ms = excluded.reconciled_at_ms
                 WHERE reconciliation_reports.reconciled_at_ms <= excluded.reconciled_at_ms",
                &[
                    Value::from(&r.merchant_id),
                    Value::from(&r.statement_date),
                    Value::from(&r.source),
                    Value::Int(r.lines as i64),
                    Value::Int(r.matched as i64),
                    Value::Int(r.short_payments as i64),
                    Value::Int(r.status_mismatches as i64),
                    Value::Int(r.duplicates as i64),
                    Value::Int(r.unknown_orders as i64),
                    Value::Int(r.amount_mismatches as i64),
                    Value::Int(r.amount),
                    Value::Int(r.refunds),
                    Value::Int(r.fees),
                    Value::Int(r.reconciled_at_ms),
                ],
            )
            .await?;
            for item in &r.matched_elsewhere {
                tx.execute(
                    "INSERT INTO reconciliation_matched_elsewhere (item_id, statement_date) VALUES ($1, $2)
                     ON CONFLICT (item_id) DO NOTHING",
                    &[Value::from(item), Value::from(&r.statement_date)],
                )
                .await?;
            }
        }
        EventKind::DiscrepancyFound(f) => {
            let kind = kind_from_pb(f.kind).map_or("unknown", Kind::name);
            tx.execute(
                "INSERT INTO reconciliation_discrepancies (discrepancy_id, merchant_id, statement_date, kind,
                     out_trade_no, charge_id, item_id, transaction_id, currency, statement_amount, platform_amount,
                     line, detail, evidence, found_at_ms, deadline_ms, state, resolution, note, refund_id,
                     escalated_at_ms, resolved_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 'open', '', '', '', 0, 0)
                 ON CONFLICT (discrepancy_id) DO NOTHING",
                &[
                    Value::from(&f.discrepancy_id),
                    Value::from(&f.merchant_id),
                    Value::from(&f.statement_date),
                    Value::from(kind),
                    Value::from(&f.out_trade_no),
                    Value::from(&f.charge_id),
                    Value::from(&f.item_id),
                    Value::from(&f.transaction_id),
                    Value::from(&f.currency),
                    Value::Int(f.statement_amount),
                    Value::Int(f.platform_amount),
                    Value::Int(f.line as i64),
                    Value::from(&f.detail),
                    Value::from(&f.evidence),
                    Value::Int(f.found_at_ms),
                    Value::Int(f.deadline_ms),
                ],
            )
            .await?;
        }
        EventKind::DiscrepancyEscalated(e) => {
            tx.execute(
                "UPDATE reconciliation_discrepancies SET state = 'escalated', escalated_at_ms = $2
                 WHERE discrepancy_id = $1 AND state = 'open'",
                &[Value::from(&e.discrepancy_id), Value::Int(e.escalated_at_ms)],
            )
            .await?;
        }
        EventKind::DiscrepancyResolved(r) => {
            tx.execute(
                "UPDATE reconciliation_discrepancies SET state = 'resolved', resolution = $2, note = $3,
                     refund_id = $4, resolved_at_ms = $5
                 WHERE discrepancy_id = $1 AND state <> 'resolved'",
                &[
                    Value::from(&r.discrepancy_id),
                    Value::from(&r.resolution),
                    Value::from(&r.note),
                    Value::from(&r.refund_id),
                    Value::Int(r.resolved_at_ms),
                ],
            )
            .await?;
        }
        _ => {}
    }
    Ok(())
}

/// When a day's statement is to be had: 10:00 (Beijing) the next day, as WeChat Pay makes it
/// from 9:00.
pub fn statement_ready_ms(date: NaiveDate) -> i64 {
    day_bounds(date).1 + 10 * 3_600_000
}

/// How many days back the daily run looks for a day not yet reconciled.
const LOOK_BACK_DAYS: i64 = 3;

/// The daily run: each merchant with money moved on one of the last few days that has no report
/// for it is reconciled against its provider's statement once that statement is to be had.
/// `tried` holds when a (merchant, day) was last tried, so a statement not there yet (or a
/// provider down) is asked for again half an hour later, not every tick. How many it reconciled.
pub async fn reconcile_due(
    platform: &Platform,
    providers: &Providers,
    calendar: &WorkingCalendar,
    tried: &mut HashMap<(String, NaiveDate), i64>,
) -> anyhow::Result<usize> {
    let now = platform.clock.now_ms();
    let today = settlement::local_date(now);
    tried.retain(|(_, day), _| (today - *day).num_days() <= LOOK_BACK_DAYS);
    let mut done = 0;
    for back in 1..=LOOK_BACK_DAYS {
        let Some(day) = today.checked_sub_signed(chrono::Duration::days(back)) else { continue };
        if now < statement_ready_ms(day) {
            continue;
        }
        let (start, end) = day_bounds(day);
        let due = platform
            .store
            .query(
                // Per merchant, one probe of its (merchant, time) index: not a scan of the day.
                "SELECT m.merchant_id FROM settlement_merchants m
                 WHERE EXISTS (SELECT 1 FROM settlement_items i WHERE i.merchant_id = m.merchant_id
                                 AND i.succeeded_at_ms >= $1 AND i.succeeded_at_ms < $2)
                   AND NOT EXISTS (SELECT 1 FROM reconciliation_reports r
                                   WHERE r.merchant_id = m.merchant_id AND r.statement_date = $3)",
                &[Value::Int(start), Value::Int(end), Value::from(day.to_string())],
            )
            .await?;
        for row in due {
            let merchant = row.text(0).unwrap_or_default().to_string();
            let key = (merchant.clone(), day);
            if tried.get(&key).is_some_and(|at| now - at < 30 * 60_000) {
                continue;
            }
            tried.insert(key, now);
            match fetch_and_reconcile(platform, providers, calendar, &merchant, day).await {
                Ok(r) => {
                    done += 1;
                    tracing::info!(merchant, day = %day, matched = r.report.matched, found = r.discrepancies.len(), "day reconciled");
                }
                Err(e) => {
                    tracing::warn!(merchant, day = %day, error = %e, "the day could not be reconciled yet; asking again later")
                }
            }
        }
    }
    Ok(done)
}
