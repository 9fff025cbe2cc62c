//! gRPC handlers of `SettlementService`: batches and their lines, fee rates, split rules.
use autodebit_domain::settlement::{self as rules, MAX_FEE_BASIS_POINTS, SplitRule};
use autodebit_eventstore::{ExpectedVersion, Value};
use autodebit_proto::EventKind;
use autodebit_proto::charger::v1::{self as pb, settlement_service_server::SettlementService};
use autodebit_proto::events::v1 as events;
use autodebit_runtime::Platform;
use autodebit_runtime::auth::caller;
use autodebit_runtime::codec::{Cause, encode};
use autodebit_runtime::grpc::{invalid, store_error};
use tonic::{Request, Response, Status};

pub struct SettlementApi {
    platform: Platform,
    /// Signs the payers' receipt links.
    link_key: String,
    public_url: String,
}

impl SettlementApi {
    pub fn new(platform: Platform, link_key: String, public_url: String) -> Self {
        SettlementApi { platform, link_key, public_url }
    }
}

const BATCH_COLUMNS: &str = "batch_id, merchant_id, currency, business_date, fee_basis_points, lines, gross, refunds, \
                             fees, splits, net, closed_at_ms";

fn batch_from(r: &autodebit_eventstore::Row) -> pb::SettlementBatch {
    let text = |i| r.text(i).unwrap_or_default().to_string();
    let int = |i| r.i64(i).unwrap_or(0);
    pb::SettlementBatch {
        batch_id: text(0),
        merchant_id: text(1),
        currency: text(2),
        business_date: text(3),
        fee_basis_points: u32::try_from(int(4)).unwrap_or(0),
        lines: u64::try_from(int(5)).unwrap_or(0),
        gross: int(6),
        refunds: int(7),
        fees: int(8),
        splits: int(9),
        net: int(10),
        closed_at_ms: int(11),
    }
}

fn date(field: &str, s: &str) -> Result<(), Status> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map(|_| ()).map_err(|_| invalid(field, "a date as YYYY-MM-DD"))
}

fn rule_to_pb(r: &SplitRule) -> events::SplitRule {
    events::SplitRule { receiver: r.receiver.clone(), basis_points: r.basis_points, fixed: r.fixed, cap: r.cap }
}

const REVIEW_COLUMNS: &str =
    "merchant_id, reason, state, refunds, charges, rate_basis_points, opened_at_ms, resolved_at_ms, note";

fn review_from(r: &autodebit_eventstore::Row) -> pb::MerchantReview {
    let text = |i| r.text(i).unwrap_or_default().to_string();
    let int = |i| r.i64(i).unwrap_or(0);
    pb::MerchantReview {
        merchant_id: text(0),
        reason: text(1),
        state: text(2),
        refunds: u64::try_from(int(3)).unwrap_or(0),
        charges: u64::try_from(int(4)).unwrap_or(0),
        rate_basis_points: u32::try_from(int(5)).unwrap_or(0),
        opened_at_ms: int(6),
        resolved_at_ms: int(7),
        note: text(8),
    }
}

#[tonic::async_trait]
impl SettlementService for SettlementApi {
    async fn list_profit_sharing_orders(
        &self,
        req: Request<pb::ListProfitSharingOrdersRequest>,
    ) -> Result<Response<pb::ListProfitSharingOrdersResponse>, Status> {
        let who = caller(&req)?;
        let r = req.get_ref();
        let (column, value) = match (r.batch_id.is_empty(), r.charge_id.is_empty()) {
            (false, true) => ("batch_id", &r.batch_id),
            (true, false) => ("charge_id", &r.charge_id),
            _ => return Err(invalid("batch_id", "name a batch_id or a charge_id, one of them")),
        };
        let rows = self
            .platform
            .store
            .query(
                &format!(
                    "SELECT out_order_no, merchant_id, charge_id, batch_id, amount, state, order_id, code, message,
                            ended_at_ms
                     FROM settlement_share_orders WHERE {column} = $1 ORDER BY out_order_no"
                ),
                &[Value::from(value)],
            )
            .await
            .map_err(store_error)?;
        let orders = rows
            .iter()
            .filter(|row| {
                autodebit_domain::MerchantId::parse(row.text(1).unwrap_or_default()).is_ok_and(|m| who.may_see(&m))
            })
            .map(|row| {
                let text = |i| row.text(i).unwrap_or_default().to_string();
                pb::ProfitSharingOrder {
                    out_order_no: text(0),
                    merchant_id: text(1),
                    charge_id: text(2),
                    batch_id: text(3),
                    amount: row.i64(4).unwrap_or(0),
                    state: text(5),
                    order_id: text(6),
                    code: text(7),
                    message: text(8),
                    ended_at_ms: row.i64(9).unwrap_or(0),
                }
            })
            .collect();
        Ok(Response::new(pb::ListProfitSharingOrdersResponse { orders }))
    }

    async fn list_receipts(
        &self,
        req: Request<pb::ListReceiptsRequest>,
    ) -> Result<Response<pb::ListReceiptsResponse>, Status> {
        let who = caller(&req)?;
        let charge = &req.get_ref().charge_id;
        autodebit_domain::ChargeId::parse(charge).map_err(|e| invalid("charge_id", e))?;
        let found = crate::receipts::of_charge(&self.platform.store, charge)
            .await
            .map_err(autodebit_runtime::grpc::internal)?;
        let base = self.public_url.trim_end_matches('/');
        let receipts = found
            .into_iter()
            .filter(|r| autodebit_domain::MerchantId::parse(&r.merchant_id).is_ok_and(|m| who.may_see(&m)))
            .map(|r| {
                let url = format!("{base}/receipts/{}/{}", r.merchant_id, r.number);
                let sig = crate::receipts::signature(&self.link_key, &r.merchant_id, r.number);
                let money = |minor| Some(events::Money { minor_units: minor, currency: r.currency.clone() });
                pb::Receipt {
                    payer_url: format!("{url}?sig={sig}"),
                    url,
                    merchant_id: r.merchant_id.clone(),
                    number: u64::try_from(r.number).unwrap_or(0),
                    kind: r.kind.clone(),
                    item_id: r.item_id.clone(),
                    charge_id: r.charge_id.clone(),
                    payer_id: r.payer_id.clone(),
                    amount: money(r.amount),
                    tax_basis_points: u32::try_from(r.tax_basis_points).unwrap_or(0),
                    tax: money(r.tax),
                    at_ms: r.at_ms,
                }
            })
            .collect();
        Ok(Response::new(pb::ListReceiptsResponse { receipts }))
    }

    async fn list_merchant_reviews(
        &self,
        req: Request<pb::ListMerchantReviewsRequest>,
    ) -> Result<Response<pb::ListMerchantReviewsResponse>, Status> {
        let state = &req.get_ref().state;
        if !matches!(state.as_str(), "" | "open" | "resolved") {
            return Err(invalid("state", "open, resolved, or empty for both"));
        }
        let rows = self
            .platform
            .store
            .query(
                &format!(
                    "SELECT {REVIEW_COLUMNS} FROM settlement_reviews WHERE ($1 = '' OR state = $1)
                     ORDER BY opened_at_ms DESC, merchant_id"
                ),
                &[Value::from(state)],
            )
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::ListMerchantReviewsResponse { reviews: rows.iter().map(review_from).collect() }))
    }

    async fn resolve_merchant_review(
        &self,
        req: Request<pb::ResolveMerchantReviewRequest>,
    ) -> Result<Response<pb::ResolveMerchantReviewResponse>, Status> {
        let r = req.into_inner();
        if r.note.chars().count() > 500 || r.note.chars().any(char::is_control) {
            return Err(invalid("note", "at most 500 characters, none of them control characters"));
        }
        let stream = crate::settlement::review_stream(&r.merchant_id);
        let mut tx = self.platform.store.begin().await.map_err(store_error)?;
        let rows = tx
            .query(
                &format!("SELECT {REVIEW_COLUMNS} FROM settlement_reviews WHERE merchant_id = $1 AND state = 'open'"),
                &[Value::from(&r.merchant_id)],
            )
            .await
            .map_err(store_error)?;
        let Some(mut review) = rows.first().map(review_from) else {
            return Err(Status::failed_precondition(format!("merchant_id: {} has no open review", r.merchant_id)));
        };
        let version = tx.read_stream(&stream, 0).await.map_err(store_error)?.last().map_or(0, |e| e.version);
        let now = self.platform.clock.now_ms();
        let resolved = events::MerchantReviewResolved {
            merchant_id: r.merchant_id.clone(),
            note: r.note.clone(),
            resolved_at_ms: now,
        };
        let event =
            encode(events::Event { kind: Some(EventKind::MerchantReviewResolved(resolved)) }, &Cause::default(), now);
        tx.append(&stream, ExpectedVersion::Exact(version), vec![event]).await.map_err(store_error)?;
        tx.execute(
            "UPDATE settlement_reviews SET state = 'resolved', resolved_at_ms = $2, note = $3 WHERE merchant_id = $1",
            &[Value::from(&r.merchant_id), Value::Int(now), Value::from(&r.note)],
        )
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        review.state = "resolved".into();
        review.resolved_at_ms = now;
        review.note = r.note;
        Ok(Response::new(pb::ResolveMerchantReviewResponse { review: Some(review) }))
    }

    async fn list_settlement_batches(
        &self,
        req: Request<pb::ListSettlementBatchesRequest>,
    ) -> Result<Response<pb::ListSettlementBatchesResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let merchant = who.scope(&r.merchant_id).map_err(|p| invalid("merchant_id", p))?;
        for (field, d) in [("from_date", &r.from_date), ("until_date", &r.until_date)] {
            if !d.is_empty() {
                date(field, d)?;
            }
        }
        let limit = match r.limit {
            0 => 100,
            n if n <= 1_000 => n,
            _ => return Err(invalid("limit", "at most 1000")),
        };
        let rows = self
            .platform
            .store
            .query(
                &format!(
                    "SELECT {BATCH_COLUMNS} FROM settlement_batches
                     WHERE ($1 = '' OR merchant_id = $1) AND ($2 = '' OR business_date >= $2)
                       AND ($3 = '' OR business_date <= $3)
                     ORDER BY business_date DESC, batch_id LIMIT $4"
                ),
                &[
                    Value::from(merchant.unwrap_or_default()),
                    Value::from(&r.from_date),
                    Value::from(&r.until_date),
                    Value::from(limit),
                ],
            )
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::ListSettlementBatchesResponse { batches: rows.iter().map(batch_from).collect() }))
    }

    async fn get_settlement_batch(
        &self,
        req: Request<pb::GetSettlementBatchRequest>,
    ) -> Result<Response<pb::GetSettlementBatchResponse>, Status> {
        let who = caller(&req)?;
        let id = &req.get_ref().batch_id;
        let missing = || Status::not_found(format!("batch_id: {id} not found"));
        if id.is_empty() {
            return Err(invalid("batch_id", "is required"));
        }
        let rows = self
            .platform
            .store
            .query(&format!("SELECT {BATCH_COLUMNS} FROM settlement_batches WHERE batch_id = $1"), &[Value::from(id)])
            .await
            .map_err(store_error)?;
        let batch = rows.first().map(batch_from).ok_or_else(missing)?;
        let merchant =
            autodebit_domain::MerchantId::parse(&batch.merchant_id).map_err(autodebit_runtime::grpc::internal)?;
        if !who.may_see(&merchant) {
            return Err(missing());
        }
        let stream = format!("settlement-{}-{}-{}", batch.merchant_id, batch.currency, batch.business_date);
        let recorded = self.platform.store.read_stream(&stream, 0).await.map_err(store_error)?;
        let lines = recorded
            .into_iter()
            .filter_map(autodebit_runtime::codec::decode)
            .find_map(|d| match d.kind {
                EventKind::SettlementBatchClosed(b) => Some(b.lines),
                _ => None,
            })
            .unwrap_or_default();
        Ok(Response::new(pb::GetSettlementBatchResponse { batch: Some(batch), lines }))
    }

    async fn list_fee_rates(
        &self,
        _req: Request<pb::ListFeeRatesRequest>,
    ) -> Result<Response<pb::ListFeeRatesResponse>, Status> {
        let set = self
            .platform
            .store
            .query("SELECT industry, basis_points FROM settlement_fee_rates", &[])
            .await
            .map_err(store_error)?;
        let known = self
            .platform
            .store
            .query("SELECT DISTINCT industry FROM settlement_merchants", &[])
            .await
            .map_err(store_error)?;
        let mut rates: std::collections::BTreeMap<String, pb::FeeRate> = std::collections::BTreeMap::new();
        let industries = known
            .iter()
            .filter_map(|r| r.text(0).map(str::to_string))
            .chain(["charity", "paid_content", "membership"].into_iter().map(String::from));
        for industry in industries {
            let bp = rules::default_fee_basis_points(&industry);
            rates.insert(industry.clone(), pb::FeeRate { industry, basis_points: bp, set: false });
        }
        for r in &set {
            let industry = r.text(0).unwrap_or_default().to_string();
            let bp = u32::try_from(r.i64(1).unwrap_or(0)).unwrap_or(0);
            rates.insert(industry.clone(), pb::FeeRate { industry, basis_points: bp, set: true });
        }
        Ok(Response::new(pb::ListFeeRatesResponse { rates: rates.into_values().collect() }))
    }

    async fn set_fee_rate(
        &self,
        req: Request<pb::SetFeeRateRequest>,
    ) -> Result<Response<pb::SetFeeRateResponse>, Status> {
        let r = req.into_inner();
        if r.industry.is_empty()
            || r.industry.len() > 64
            || !r.industry.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            return Err(invalid("industry", "1 to 64 lowercase letters and underscores"));
        }
        if r.basis_points > MAX_FEE_BASIS_POINTS {
            return Err(invalid("basis_points", format!("at most {MAX_FEE_BASIS_POINTS} (10%)")));
        }
        let now = self.platform.clock.now_ms();
        let event = events::FeeRateSet { industry: r.industry.clone(), basis_points: r.basis_points, set_at_ms: now };
        let encoded = encode(events::Event { kind: Some(EventKind::FeeRateSet(event)) }, &Cause::default(), now);
        self.platform
            .store
            .append(&format!("fee-rate-{}", r.industry), ExpectedVersion::Any, vec![encoded])
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::SetFeeRateResponse {
            rate: Some(pb::FeeRate { industry: r.industry, basis_points: r.basis_points, set: true }),
        }))
    }

    async fn set_split_rules(
        &self,
        req: Request<pb::SetSplitRulesRequest>,
    ) -> Result<Response<pb::SetSplitRulesResponse>, Status> {
        let who = caller(&req)?;
        let merchant = who.merchant()?.to_string();
        let given: Vec<SplitRule> = req
            .into_inner()
            .rules
            .into_iter()
            .map(|r| SplitRule { receiver: r.receiver, basis_points: r.basis_points, fixed: r.fixed, cap: r.cap })
            .collect();
        rules::validate_split_rules(&given).map_err(|e| invalid(&e.field, e.problem))?;
        let now = self.platform.clock.now_ms();
        let event = events::SplitRulesSet {
            merchant_id: merchant.clone(),
            rules: given.iter().map(rule_to_pb).collect(),
            set_at_ms: now,
        };
        let encoded = encode(events::Event { kind: Some(EventKind::SplitRulesSet(event)) }, &Cause::default(), now);
        self.platform
            .store
            .append(&format!("split-rules-{merchant}"), ExpectedVersion::Any, vec![encoded])
            .await
            .map_err(store_error)?;
        Ok(Response::new(pb::SetSplitRulesResponse {}))
    }

    async fn get_split_rules(
        &self,
        req: Request<pb::GetSplitRulesRequest>,
    ) -> Result<Response<pb::GetSplitRulesResponse>, Status> {
        let who = caller(&req)?;
        let Some(merchant) = who.scope(&req.get_ref().merchant_id).map_err(|p| invalid("merchant_id", p))? else {
            return Err(invalid("merchant_id", "name the merchant whose rules to read"));
        };
        let rows = self
            .platform
            .store
            .query(crate::settlement::SPLIT_RULES, &[Value::from(&merchant)])
            .await
            .map_err(store_error)?;
        let rules = crate::settlement::rules_from(&rows);
        Ok(Response::new(pb::GetSplitRulesResponse { rules: rules.iter().map(rule_to_pb).collect() }))
    }
}
