//! gRPC handlers of `ReconciliationService`: reconcile a day's statement, read a day's report,
//! list and resolve discrepancies.
use crate::Providers;
use crate::reconcile::{self, ReconcileError, discrepancy_stream};
use autodebit_domain::calendar::WorkingCalendar;
use autodebit_domain::reconciliation::Kind;
use autodebit_eventstore::Value;
use autodebit_proto::charger::v1::{self as pb, reconciliation_service_server::ReconciliationService};
use autodebit_provider::ProviderError;
use autodebit_runtime::Platform;
use autodebit_runtime::auth::caller;
use autodebit_runtime::grpc::{internal, invalid, store_error};
use chrono::NaiveDate;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ReconciliationApi {
    platform: Platform,
    providers: Arc<Providers>,
    calendar: Arc<WorkingCalendar>,
}

impl ReconciliationApi {
    pub fn new(platform: Platform, providers: Arc<Providers>, calendar: Arc<WorkingCalendar>) -> Self {
        ReconciliationApi { platform, providers, calendar }
    }
}

/// The largest statement taken in one request (gzip makes a million lines about 40 MB).
pub const MAX_STATEMENT_BYTES: usize = 64 * 1024 * 1024;

const COLUMNS: &str = "discrepancy_id, merchant_id, statement_date, kind, out_trade_no, charge_id, transaction_id, \
                       currency, statement_amount, platform_amount, line, detail, evidence, found_at_ms, deadline_ms, \
                       state, resolution, note, refund_id, resolved_at_ms";

fn discrepancy_from(r: &autodebit_eventstore::Row) -> pb::Discrepancy {
    let text = |i| r.text(i).unwrap_or_default().to_string();
    let int = |i| r.i64(i).unwrap_or(0);
    pb::Discrepancy {
        discrepancy_id: text(0),
        merchant_id: text(1),
        statement_date: text(2),
        kind: text(3),
        out_trade_no: text(4),
        charge_id: text(5),
        transaction_id: text(6),
        currency: text(7),
        statement_amount: int(8),
        platform_amount: int(9),
        line: u64::try_from(int(10)).unwrap_or(0),
        detail: text(11),
        evidence: text(12),
        found_at_ms: int(13),
        deadline_ms: int(14),
        state: text(15),
        resolution: text(16),
        note: text(17),
        refund_id: text(18),
        resolved_at_ms: int(19),
    }
}

fn day(s: &str) -> Result<NaiveDate, Status> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| invalid("date", "a date as YYYY-MM-DD"))
}

/// The report of `merchant`'s `date` from the tables; `None` when it was never reconciled.
pub async fn report(
    platform: &Platform,
    merchant: &str,
    date: &str,
) -> Result<Option<pb::ReconciliationReport>, Status> {
    let store = &platform.store;
    let rows = store
        .query(
            "SELECT source, lines, matched, short_payments, status_mismatches, duplicates, unknown_orders,
                    amount_mismatches, amount, refunds, fees, reconciled_at_ms
             FROM reconciliation_reports WHERE merchant_id = $1 AND statement_date = $2",
            &[Value::from(merchant), Value::from(date)],
        )
        .await
        .map_err(store_error)?;
    let Some(r) = rows.first() else { return Ok(None) };
    let found = store
        .query(
            &format!(
                "SELECT {COLUMNS} FROM reconciliation_discrepancies WHERE merchant_id = $1 AND statement_date = $2
                 ORDER BY line, discrepancy_id"
            ),
            &[Value::from(merchant), Value::from(date)],
        )
        .await
        .map_err(store_error)?;
    let discrepancies: Vec<pb::Discrepancy> = found.iter().map(discrepancy_from).collect();
    let count = |i| u64::try_from(r.i64(i).unwrap_or(0)).unwrap_or(0);
    Ok(Some(pb::ReconciliationReport {
        merchant_id: merchant.to_string(),
        date: date.to_string(),
        source: r.text(0).unwrap_or_default().to_string(),
        lines: count(1),
        matched: count(2),
        short_payments: count(3),
        status_mismatches: count(4),
        duplicates: count(5),
        unknown_orders: count(6),
        amount_mismatches: count(7),
        duplicates_refunded: discrepancies
            .iter()
            .filter(|d| d.kind == Kind::Duplicate.name() && d.resolution == "refunded")
            .count() as u64,
        amount: r.i64(8).unwrap_or(0),
        refunds: r.i64(9).unwrap_or(0),
        fees: r.i64(10).unwrap_or(0),
        reconciled_at_ms: r.i64(11).unwrap_or(0),
        discrepancies,
    }))
}

#[tonic::async_trait]
impl ReconciliationService for ReconciliationApi {
    async fn reconcile_statement(
        &self,
        req: Request<pb::ReconcileStatementRequest>,
    ) -> Result<Response<pb::ReconcileStatementResponse>, Status> {
        let r = req.into_inner();
        autodebit_domain::MerchantId::parse(&r.merchant_id).map_err(|e| invalid("merchant_id", e))?;
        let date = day(&r.date)?;
        let known = self
            .platform
            .store
            .query("SELECT 1 FROM settlement_merchants WHERE merchant_id = $1", &[Value::from(&r.merchant_id)])
            .await
            .map_err(store_error)?;
        if known.is_empty() {
            return Err(Status::not_found(format!("merchant_id: no merchant {}", r.merchant_id)));
        }
        let done = if r.statement.is_empty() {
            reconcile::fetch_and_reconcile(&self.platform, &self.providers, &self.calendar, &r.merchant_id, date).await
        } else {
            reconcile::reconcile_upload(
                &self.platform,
                &self.providers,
                &self.calendar,
                &r.merchant_id,
                date,
                &r.statement,
            )
            .await
        };
        match done {
            Ok(_) => {}
            Err(ReconcileError::Statement(e)) if !r.statement.is_empty() => return Err(invalid("statement", e)),
            // The provider's own statement did not read: nothing the caller sent was wrong.
            Err(ReconcileError::Statement(e)) => {
                return Err(Status::failed_precondition(format!("the provider's statement of {date} is refused: {e}")));
            }
            Err(ReconcileError::Provider(ProviderError::Transport(e))) => {
                return Err(Status::unavailable(format!(
                    "the provider could not be reached for {date}'s statement: {e}"
                )));
            }
            Err(ReconcileError::Provider(e)) => {
                return Err(Status::failed_precondition(format!("the provider gave no statement for {date}: {e}")));
            }
            Err(ReconcileError::Other(e)) => return Err(internal(format!("{e:#}"))),
        }
        let report = report(&self.platform, &r.merchant_id, &date.to_string()).await?;
        let report = report.ok_or_else(|| internal("the report just written is missing"))?;
        Ok(Response::new(pb::ReconcileStatementResponse { report: Some(report) }))
    }

    async fn get_reconciliation_report(
        &self,
        req: Request<pb::GetReconciliationReportRequest>,
    ) -> Result<Response<pb::GetReconciliationReportResponse>, Status> {
        let who = caller(&req)?;
        let r = req.get_ref();
        let merchant = who
            .scope(&r.merchant_id)
            .map_err(|e| invalid("merchant_id", e))?
            .ok_or_else(|| invalid("merchant_id", "name the merchant"))?;
        let date = day(&r.date)?.to_string();
        match report(&self.platform, &merchant, &date).await? {
            Some(report) => Ok(Response::new(pb::GetReconciliationReportResponse { report: Some(report) })),
            None => Err(Status::not_found(format!("date: no reconciliation of {} for this merchant", r.date))),
        }
    }

    async fn list_discrepancies(
        &self,
        req: Request<pb::ListDiscrepanciesRequest>,
    ) -> Result<Response<pb::ListDiscrepanciesResponse>, Status> {
        let who = caller(&req)?;
        let r = req.get_ref();
        let merchant = who.scope(&r.merchant_id).map_err(|e| invalid("merchant_id", e))?.unwrap_or_default();
        if !matches!(r.state.as_str(), "" | "open" | "escalated" | "resolved") {
            return Err(invalid("state", "open, escalated, resolved, or empty for all"));
        }
        if !r.kind.is_empty() && Kind::from_name(&r.kind).is_none() {
            return Err(invalid(
                "kind",
                "short_payment, status_mismatch, duplicate, unknown_order, amount_mismatch, or empty for all",
            ));
        }
        let limit = match r.limit {
            0 => 100,
            n @ 1..=1000 => i64::from(n),
            _ => return Err(invalid("limit", "1 to 1000, or 0 for 100")),
        };
        let rows = self
            .platform
            .store
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM reconciliation_discrepancies
                     WHERE ($1 = '' OR merchant_id = $1) AND ($2 = '' OR state = $2) AND ($3 = '' OR kind = $3)
                     ORDER BY CASE state WHEN 'escalated' THEN 0 WHEN 'open' THEN 1 ELSE 2 END, deadline_ms,
                              discrepancy_id
                     LIMIT $4"
                ),
                &[Value::from(&merchant), Value::from(&r.state), Value::from(&r.kind), Value::Int(limit)],
            )
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::ListDiscrepanciesResponse { discrepancies: rows.iter().map(discrepancy_from).collect() }))
    }

    async fn resolve_discrepancy(
        &self,
        req: Request<pb::ResolveDiscrepancyRequest>,
    ) -> Result<Response<pb::ResolveDiscrepancyResponse>, Status> {
        let r = req.into_inner();
        if r.note.trim().is_empty() || r.note.chars().count() > 500 || r.note.chars().any(char::is_control) {
            return Err(invalid("note", "1 to 500 characters, none of them control characters"));
        }
        let load = |id: String| {
            let store = self.platform.store.clone();
            async move {
                let rows = store
                    .query(
                        &format!("SELECT {COLUMNS} FROM reconciliation_discrepancies WHERE discrepancy_id = $1"),
                        &[Value::from(&id)],
                    )
                    .await
                    .map_err(store_error)?;
                rows.first()
                    .map(discrepancy_from)
                    .ok_or_else(|| Status::not_found(format!("discrepancy_id: no discrepancy {id}")))
            }
        };
        let d = load(r.discrepancy_id.clone()).await?;
        if d.state == "resolved" {
            return Err(Status::failed_precondition(format!(
                "discrepancy_id: {} is resolved already",
                d.discrepancy_id
            )));
        }
        let now = self.platform.clock.now_ms();
        let mut tx = self.platform.store.begin().await.map_err(store_error)?;
        let resolved = reconcile::resolve_in(&mut tx, &d.discrepancy_id, &d.merchant_id, "evidence", &r.note, "", now)
            .await
            .map_err(|e| internal(format!("{e:#}")))?;
        if !resolved {
            return Err(Status::failed_precondition(format!(
                "discrepancy_id: {} has no stream {}",
                d.discrepancy_id,
                discrepancy_stream(&d.discrepancy_id)
            )));
        }
        tx.commit().await.map_err(store_error)?;
        Ok(Response::new(pb::ResolveDiscrepancyResponse { discrepancy: Some(load(r.discrepancy_id).await?) }))
    }
}
