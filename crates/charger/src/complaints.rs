//! Complaints about charges (`domain::complaint`): filing, the merchant's answer (a refund
//! is asked for here, in the answer's transaction), the sweep that applies a missed
//! deadline's penalty, and merchants' credit scores (`domain::credit`), which complaints,
//! missed deadlines and refund-rate reviews move. Every change is an event; the tables here
//! follow them in the same transaction.
use autodebit_domain::charge::{self, ChargeCommand, ChargeStatus};
use autodebit_domain::complaint::{
    self, Answer, Complaint, ComplaintCommand, ComplaintError, ComplaintEvent, Evidence, Filing, Kind, Penalty, Source,
};
use autodebit_domain::credit::{self, Cause};
use autodebit_domain::{ChargeId, MerchantId, Money, Timestamp};
use autodebit_eventstore::{ExpectedVersion, StoreError, Tx, Value};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::Platform;
use autodebit_runtime::auth::Principal;
use autodebit_runtime::codec::{self, Cause as EventCause};
use autodebit_runtime::repository::{self, Hook, VersionMismatch};
use sha2::Digest;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl From<ComplaintError> for Error {
    fn from(e: ComplaintError) -> Self {
        match e {
            ComplaintError::AlreadyFiled(_) => Error::Exists(e.to_string()),
            ComplaintError::NotFiled => Error::NotFound(e.to_string()),
            _ => Error::Precondition(format!("complaint_id: {e}")),
        }
    }
}

impl From<charge::ChargeError> for Error {
    fn from(e: charge::ChargeError) -> Self {
        Error::Invalid { field: "refund", problem: e.to_string() }
    }
}

impl From<VersionMismatch> for Error {
    fn from(e: VersionMismatch) -> Self {
        Error::Internal(e.into())
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<StoreError>() {
            Ok(e) => Error::Store(e),
            Err(e) => Error::Internal(e),
        }
    }
}

/// A piece of evidence as uploaded.
pub struct Upload {
    pub name: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// Checks uploads (`field` names them in errors) and describes them as the log records them.
pub fn check_uploads(field: &'static str, uploads: &[Upload]) -> Result<Vec<Evidence>, Error> {
    if uploads.len() > complaint::MAX_EVIDENCE {
        return Err(Error::Invalid { field, problem: complaint::EvidenceError::TooMany.to_string() });
    }
    uploads
        .iter()
        .map(|u| {
            complaint::check_evidence(&u.name, &u.content_type, &u.data)
                .map_err(|e| Error::Invalid { field, problem: e.to_string() })?;
            Ok(Evidence {
                name: u.name.clone(),
                content_type: u.content_type.clone(),
                size_bytes: u.data.len() as u64,
                sha256: hex::encode(sha2::Sha256::digest(&u.data)),
            })
        })
        .collect()
}

async fn store_uploads(tx: &mut Tx, uploads: &[Upload], evidence: &[Evidence]) -> anyhow::Result<()> {
    for (u, e) in uploads.iter().zip(evidence) {
        tx.execute(
            "INSERT INTO complaint_evidence (sha256, content_type, data) VALUES ($1, $2, $3)
             ON CONFLICT (sha256) DO NOTHING",
            &[Value::from(e.sha256.as_str()), Value::from(e.content_type.as_str()), Value::Bytes(u.data.clone())],
        )
        .await?;
    }
    Ok(())
}

/// A complaint's row, as `complaints` keeps it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub complaint_id: String,
    pub charge_id: String,
    pub contract_id: String,
    pub merchant_id: String,
    pub payer_id: String,
    pub kind: String,
    pub source: String,
    pub description: String,
    pub provider_complaint_id: String,
    pub filed_at_ms: i64,
    pub deadline_at_ms: i64,
    pub state: String,
    pub answer: String,
    pub late: i64,
    pub answered_at_ms: i64,
    pub missed: String,
}

const COLUMNS: &str = "complaint_id, charge_id, contract_id, merchant_id, payer_id, kind, source, description, \
                       provider_complaint_id, filed_at_ms, deadline_at_ms, state, answer, late, answered_at_ms, missed";

/// Keeps `complaints` in step with a complaint's events.
struct Table;

impl Hook<Complaint> for Table {
    type Error = anyhow::Error;

    async fn on_events(&self, tx: &mut Tx, state: &Option<Complaint>, events: &[ComplaintEvent]) -> anyhow::Result<()> {
        let Some(c) = state else { return Ok(()) };
        let f = &c.filing;
        for e in events {
            match e {
                ComplaintEvent::Filed { .. } => {
                    tx.execute(
                        &format!(
                            "INSERT INTO complaints ({COLUMNS})
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'open', '', 0, 0, '')"
                        ),
                        &[
                            Value::from(f.complaint_id.as_str()),
                            Value::from(f.charge_id.to_string()),
                            Value::from(f.contract_id.as_str()),
                            Value::from(f.merchant_id.as_str()),
                            Value::from(f.payer_id.as_str()),
                            Value::from(f.kind.name()),
                            Value::from(f.source.name()),
                            Value::from(f.description.as_str()),
                            Value::from(f.provider_complaint_id.as_str()),
                            Value::Int(c.filed_at.timestamp_millis()),
                            Value::Int(c.deadline.timestamp_millis()),
                        ],
                    )
                    .await?;
                }
                ComplaintEvent::Answered { answer, late, at } => {
                    tx.execute(
                        "UPDATE complaints SET state = 'answered', answer = $2, late = $3, answered_at_ms = $4
                         WHERE complaint_id = $1",
                        &[
                            Value::from(f.complaint_id.as_str()),
                            Value::from(answer.name()),
                            Value::Int(i64::from(*late)),
                            Value::Int(at.timestamp_millis()),
                        ],
                    )
                    .await?;
                }
                ComplaintEvent::DeadlineMissed { penalty, .. } => {
                    tx.execute(
                        "UPDATE complaints SET missed = $2 WHERE complaint_id = $1",
                        &[Value::from(f.complaint_id.as_str()), Value::from(penalty.name())],
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }
}

fn from_row(r: &autodebit_eventstore::Row) -> Row {
    let text = |i| r.text(i).unwrap_or_default().to_string();
    let int = |i| r.i64(i).unwrap_or(0);
    Row {
        complaint_id: text(0),
        charge_id: text(1),
        contract_id: text(2),
        merchant_id: text(3),
        payer_id: text(4),
        kind: text(5),
        source: text(6),
        description: text(7),
        provider_complaint_id: text(8),
        filed_at_ms: int(9),
        deadline_at_ms: int(10),
        state: text(11),
        answer: text(12),
        late: int(13),
        answered_at_ms: int(14),
        missed: text(15),
    }
}

/// A merchant's credit as shown.
#[derive(Debug, Clone)]
pub struct CreditView {
    pub merchant_id: String,
    pub score: i64,
    pub standing: credit::Standing,
    pub frozen_by_complaint: bool,
}

pub fn standing_name(s: credit::Standing) -> &'static str {
    match s {
        credit::Standing::Good => "good",
        credit::Standing::SigningRefused => "signing_refused",
        credit::Standing::ChargingFrozen => "charging_frozen",
    }
}

/// A merchant's score and freeze as the charger last wrote them (the initial score if none).
const CREDIT_ROW: &str = "SELECT score, charging_frozen FROM merchant_credit WHERE merchant_id = $1";

fn credit_of(rows: &[autodebit_eventstore::Row]) -> (i64, bool) {
    rows.first().map_or((credit::DEFAULT_INITIAL, false), |r| (r.i64(0).unwrap_or(0), r.i64(1).unwrap_or(0) != 0))
}

async fn credit_row(tx: &mut Tx, merchant: &str) -> anyhow::Result<(i64, bool)> {
    Ok(credit_of(&tx.query(CREDIT_ROW, &[Value::from(merchant)]).await?))
}

/// A merchant's starting score, once (its application).
pub async fn open_credit(tx: &mut Tx, merchant: &str, initial: i64) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO merchant_credit (merchant_id, score, charging_frozen) VALUES ($1, $2, 0)
         ON CONFLICT (merchant_id) DO NOTHING",
        &[Value::from(merchant), Value::Int(initial)],
    )
    .await?;
    Ok(())
}

async fn save_credit(tx: &mut Tx, merchant: &str, score: i64, frozen: bool) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO merchant_credit (merchant_id, score, charging_frozen) VALUES ($1, $2, $3)
         ON CONFLICT (merchant_id) DO UPDATE SET score = excluded.score, charging_frozen = excluded.charging_frozen",
        &[Value::from(merchant), Value::Int(score), Value::Int(i64::from(frozen))],
    )
    .await?;
    Ok(())
}

/// Moves a merchant's credit score for `cause` (by `delta` when it is an adjustment), with
/// its event, in the caller's transaction.
pub async fn change_credit(tx: &mut Tx, merchant: &str, cause: &Cause, delta: i64, at_ms: i64) -> anyhow::Result<i64> {
    let (score, frozen) = credit_row(tx, merchant).await?;
    let delta = cause.weight().unwrap_or(delta);
    let after = credit::moved(score, delta);
    let (reference, reason) = match cause {
        Cause::ComplaintFiled { complaint_id, .. } | Cause::DeadlineMissed { complaint_id } => {
            (complaint_id.clone(), String::new())
        }
        Cause::RefundRateReview { review } => (review.clone(), String::new()),
        Cause::Adjusted { reason } => (String::new(), reason.clone()),
    };
    let event = pb::Event {
        kind: Some(EventKind::CreditScoreChanged(pb::CreditScoreChanged {
            merchant_id: merchant.to_string(),
            delta: after - score,
            score: after,
            cause: cause.name().to_string(),
            reference,
            reason,
            changed_at_ms: at_ms,
        })),
    };
    let why = EventCause::request(format!("credit/{merchant}/{}", cause.name()));
    tx.append(&format!("credit-{merchant}"), ExpectedVersion::Any, vec![codec::encode(event, &why, at_ms)]).await?;
    save_credit(tx, merchant, after, frozen).await?;
    Ok(after)
}

/// Freezes a merchant's charging, or lifts the freeze, with its event.
async fn set_freeze(tx: &mut Tx, merchant: &str, frozen: bool, reference: &str, at_ms: i64) -> anyhow::Result<()> {
    let (score, _) = credit_row(tx, merchant).await?;
    let event = pb::Event {
        kind: Some(EventKind::ChargingFreezeChanged(pb::ChargingFreezeChanged {
            merchant_id: merchant.to_string(),
            frozen,
            reference: reference.to_string(),
            changed_at_ms: at_ms,
        })),
    };
    let why = EventCause::request(format!("freeze/{merchant}/{reference}"));
    tx.append(&format!("charging-freeze-{merchant}"), ExpectedVersion::Any, vec![codec::encode(event, &why, at_ms)])
        .await?;
    save_credit(tx, merchant, score, frozen).await
}

/// What `ListComplaints` asks for.
#[derive(Debug, Default)]
pub struct Filter {
    pub merchant_id: Option<String>,
    pub state: Option<String>,
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub filed: u64,
    pub open: u64,
    pub in_time: u64,
    pub late: u64,
    pub missed: u64,
    pub median_answer_ms: i64,
}

#[derive(Clone)]
pub struct Complaints {
    platform: Platform,
}

impl Complaints {
    pub fn new(platform: Platform) -> Self {
        Complaints { platform }
    }

    fn now(&self) -> Timestamp {
        self.platform.clock.now()
    }

    /// Files a complaint about a charge the caller may see; the charge must have taken money.
    pub async fn file(
        &self,
        who: &Principal,
        charge_id: ChargeId,
        kind: Kind,
        source: Source,
        description: &str,
        uploads: &[Upload],
    ) -> Result<Row, Error> {
        self.file_as(who, None, charge_id, kind, source, description, uploads, "").await
    }

    /// Files a payer's complaint made at WeChat Pay (its `complaint_id` kept with ours).
    pub async fn file_from_provider(
        &self,
        charge_id: ChargeId,
        kind: Kind,
        description: &str,
        provider_complaint_id: &str,
    ) -> Result<Row, Error> {
        let who = &Principal::Operator;
        self.file_as(who, None, charge_id, kind, Source::WechatPay, description, &[], provider_complaint_id).await
    }

    #[allow(clippy::too_many_arguments)]
    /// Files a complaint; with `payer`, only about a charge of that payer.
    async fn file_as(
        &self,
        who: &Principal,
        payer: Option<&str>,
        charge_id: ChargeId,
        kind: Kind,
        source: Source,
        description: &str,
        uploads: &[Upload],
        provider_complaint_id: &str,
    ) -> Result<Row, Error> {
        let evidence = check_uploads("evidence", uploads)?;
        let not_found = || Error::NotFound(format!("charge_id: no charge {charge_id}"));
        let (c, _) = crate::app::charge_for(&self.platform, who, charge_id).await.map_err(|_| not_found())?;
        if payer.is_some_and(|p| p != c.payer_id.as_str()) {
            return Err(not_found());
        }
        if c.status != ChargeStatus::Succeeded {
            return Err(Error::Precondition(format!(
                "charge_id: only a charge that took money can be complained about; it is {:?}",
                c.status
            )));
        }
        let complaint_id = complaint::complaint_id(charge_id);
        let filing = Filing {
            complaint_id: complaint_id.clone(),
            charge_id,
            contract_id: c.contract_id.to_string(),
            merchant_id: c.merchant_id.to_string(),
            payer_id: c.payer_id.to_string(),
            charged: c.amount,
            kind,
            source,
            description: description.to_string(),
            evidence: evidence.clone(),
            provider_complaint_id: provider_complaint_id.to_string(),
        };
        let now = self.now();
        let mut tx = self.platform.store.begin().await?;
        let stream = complaint::stream(&complaint_id);
        let cause = EventCause::request(format!("complaint/{complaint_id}"));
        let command = ComplaintCommand::File(Box::new(filing));
        match repository::execute_in::<Complaint, _, Error>(&mut tx, &stream, None, command, now, &cause, &Table).await
        {
            Ok(_) => {}
            Err(Error::Store(e)) if e.is_conflict() => {
                return Err(Error::Exists(format!("charge_id: the charge has a complaint already ({complaint_id})")));
            }
            Err(e) => return Err(e),
        }
        store_uploads(&mut tx, uploads, &evidence).await?;
        let merchant = c.merchant_id.to_string();
        change_credit(
            &mut tx,
            &merchant,
            &Cause::ComplaintFiled { complaint_id: complaint_id.clone(), kind },
            0,
            now.timestamp_millis(),
        )
        .await?;
        tx.commit().await?;
        self.get(&Principal::Operator, &complaint_id).await
    }

    /// Files a payer's complaint from their page: like `file`, for a charge of this payer only.
    pub async fn file_by_payer(
        &self,
        who: &Principal,
        payer: &str,
        charge_id: ChargeId,
        kind: Kind,
        source: Source,
        description: &str,
    ) -> Result<Row, Error> {
        self.file_as(who, Some(payer), charge_id, kind, source, description, &[], "").await
    }

    /// Our complaint of WeChat Pay's `complaint_id`, if one was filed.
    pub async fn by_provider_id(&self, provider_complaint_id: &str) -> Result<Option<Row>, Error> {
        let rows: Vec<Row> = self
            .platform
            .store
            .query_as(
                &format!("SELECT {COLUMNS} FROM complaints WHERE provider_complaint_id = $1"),
                &[Value::from(provider_complaint_id)],
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    /// A complaint the caller may see.
    pub async fn get(&self, who: &Principal, complaint_id: &str) -> Result<Row, Error> {
        let rows = self
            .platform
            .store
            .query(&format!("SELECT {COLUMNS} FROM complaints WHERE complaint_id = $1"), &[Value::from(complaint_id)])
            .await?;
        rows.first()
            .map(from_row)
            .filter(|r| MerchantId::parse(&r.merchant_id).is_ok_and(|m| who.may_see(&m)))
            .ok_or_else(|| Error::NotFound(format!("complaint_id: no complaint {complaint_id}")))
    }

    /// The evidence a complaint's events name, as recorded.
    pub async fn evidence_of(&self, complaint_id: &str) -> Result<Vec<pb::ComplaintEvidence>, Error> {
        let loaded = repository::load::<Complaint>(&self.platform.store, &complaint::stream(complaint_id)).await?;
        let Some(c) = loaded.state else { return Ok(Vec::new()) };
        let mut all = c.filing.evidence.clone();
        if let Some(Answer::Reject { evidence, .. }) = &c.answer {
            all.extend(evidence.iter().cloned());
        }
        Ok(all
            .into_iter()
            .map(|e| pb::ComplaintEvidence {
                name: e.name,
                content_type: e.content_type,
                size_bytes: e.size_bytes,
                sha256: e.sha256,
            })
            .collect())
    }

    /// The merchant's answer; a refund is asked for in the same transaction.
    pub async fn answer(
        &self,
        who: &Principal,
        complaint_id: &str,
        answer: Answer,
        uploads: &[Upload],
    ) -> Result<Row, Error> {
        let row = self.get(who, complaint_id).await?;
        let evidence = check_uploads("evidence", uploads)?;
        let answer = match answer {
            Answer::Reject { reason, .. } => {
                if evidence.is_empty() {
                    return Err(Error::Invalid { field: "evidence", problem: "a rejection needs evidence".into() });
                }
                Answer::Reject { reason, evidence: evidence.clone() }
            }
            _ if !evidence.is_empty() => {
                return Err(Error::Invalid { field: "evidence", problem: "only a rejection carries evidence".into() });
            }
            other => other,
        };
        let now = self.now();
        let charge_id = ChargeId::parse(&row.charge_id).map_err(|e| Error::Internal(e.into()))?;
        let mut tx = self.platform.store.begin().await?;
        let stream = complaint::stream(complaint_id);
        let cause = EventCause::request(format!("complaint/{complaint_id}/answer"));
        let refund = match &answer {
            Answer::Refund { amount } => Some(*amount),
            _ => None,
        };
        let done = repository::execute_in::<Complaint, _, Error>(
            &mut tx,
            &stream,
            None,
            ComplaintCommand::Answer(answer),
            now,
            &cause,
            &Table,
        )
        .await?;
        if let (Some(amount), Some(c)) = (refund, done.state.as_ref()) {
            // The refund, decided on the charge in this transaction: refused (too much, say)
            // and nothing of the answer is kept.
            let refund_id = complaint::complaint_refund_id(&c.filing);
            let (charge, _) = crate::app::charge_for(&self.platform, who, charge_id)
                .await
                .map_err(|_| Error::NotFound(format!("charge_id: no charge {charge_id}")))?;
            let money = Money::new(amount, charge.amount.currency());
            let command =
                ChargeCommand::Refund { refund_id, amount: money, reason: format!("complaint {complaint_id}") };
            let refund_cause = EventCause::request(format!("complaint/{complaint_id}/refund"));
            repository::execute_in::<charge::Charge, _, Error>(
                &mut tx,
                &charge_id.stream(),
                None,
                command,
                now,
                &refund_cause,
                &crate::store::RequestedRefunds,
            )
            .await?;
        }
        store_uploads(&mut tx, uploads, &evidence).await?;
        tx.commit().await?;
        self.get(who, complaint_id).await
    }

    /// Complaints, newest first.
    pub async fn list(&self, who: &Principal, mut f: Filter) -> Result<(Vec<Row>, Option<String>), Error> {
        if let Principal::Merchant(m) = who {
            if f.merchant_id.as_deref().is_some_and(|asked| asked != m.as_str()) {
                return Ok((Vec::new(), None));
            }
            f.merchant_id = Some(m.to_string());
        }
        let mut q = autodebit_runtime::sql::Query::new(format!("SELECT {COLUMNS} FROM complaints WHERE 1 = 1"));
        if let Some(m) = &f.merchant_id {
            q.push(" AND merchant_id = ?", Value::from(m.as_str()));
        }
        if let Some(s) = &f.state {
            q.push(" AND state = ?", Value::from(s.as_str()));
        }
        q.page("filed_at_ms", "complaint_id", f.before, f.limit);
        let rows: Vec<Row> = self.platform.store.query(&q.sql, &q.params).await?.iter().map(from_row).collect();
        let next = (rows.len() as i64 == f.limit)
            .then(|| rows.last().map(|r| format!("{}:{}", r.filed_at_ms, r.complaint_id)))
            .flatten();
        Ok((rows, next))
    }

    /// How a merchant keeps its deadlines.
    pub async fn stats(&self, merchant: &str) -> Result<Stats, Error> {
        let rows = self
            .platform
            .store
            .query(
                "SELECT state, late, missed, answered_at_ms - filed_at_ms FROM complaints WHERE merchant_id = $1",
                &[Value::from(merchant)],
            )
            .await?;
        let mut s = Stats::default();
        let mut times = Vec::new();
        for r in &rows {
            s.filed += 1;
            let answered = r.text(0) == Some("answered");
            if !answered {
                s.open += 1;
            } else if r.i64(1).unwrap_or(0) != 0 {
                s.late += 1;
            } else {
                s.in_time += 1;
            }
            if answered {
                times.push(r.i64(3).unwrap_or(0));
            }
            if r.text(2).is_some_and(|m| !m.is_empty()) {
                s.missed += 1;
            }
        }
        times.sort_unstable();
        s.median_answer_ms = times.get(times.len() / 2).copied().unwrap_or(0);
        Ok(s)
    }

    pub async fn credit(&self, merchant: &str) -> Result<CreditView, Error> {
        // A read: on a reader connection, not the writer.
        let (score, frozen) = credit_of(&self.platform.store.query(CREDIT_ROW, &[Value::from(merchant)]).await?);
        Ok(CreditView {
            merchant_id: merchant.to_string(),
            score,
            standing: credit::standing(score),
            frozen_by_complaint: frozen,
        })
    }

    pub async fn adjust_credit(&self, merchant: &str, delta: i64, reason: &str) -> Result<CreditView, Error> {
        let mut tx = self.platform.store.begin().await?;
        let cause = Cause::Adjusted { reason: reason.to_string() };
        change_credit(&mut tx, merchant, &cause, delta, self.platform.clock.now_ms()).await?;
        tx.commit().await?;
        self.credit(merchant).await
    }

    pub async fn lift_freeze(&self, merchant: &str, reason: &str) -> Result<CreditView, Error> {
        let mut tx = self.platform.store.begin().await?;
        let (_, frozen) = credit_row(&mut tx, merchant).await?;
        if !frozen {
            return Err(Error::Precondition("merchant_id: its charging is not frozen by a complaint".into()));
        }
        set_freeze(&mut tx, merchant, false, reason, self.platform.clock.now_ms()).await?;
        tx.commit().await?;
        self.credit(merchant).await
    }
}

/// Applies the penalties of the complaints whose deadline passed unanswered by now: each
/// `ComplaintDeadlineMissed`, the credit it costs, and its kind's penalty, in one transaction
/// per complaint. How many.
pub async fn miss_due(
    platform: &Platform,
    calendar: &autodebit_domain::calendar::WorkingCalendar,
) -> anyhow::Result<usize> {
    let now = platform.clock.now();
    let due = platform
        .store
        .query(
            "SELECT complaint_id, merchant_id FROM complaints
             WHERE state = 'open' AND missed = '' AND deadline_at_ms <= $1 ORDER BY deadline_at_ms LIMIT 100",
            &[Value::Int(now.timestamp_millis())],
        )
        .await?;
    for r in &due {
        let (complaint_id, merchant) =
            (r.text(0).unwrap_or_default().to_string(), r.text(1).unwrap_or_default().to_string());
        let mut tx = platform.store.begin().await?;
        let cause = EventCause::request(format!("complaint/{complaint_id}/deadline"));
        let done = repository::execute_in::<Complaint, _, Error>(
            &mut tx,
            &complaint::stream(&complaint_id),
            None,
            ComplaintCommand::MissDeadline,
            now,
            &cause,
            &Table,
        )
        .await;
        let penalty = match done {
            Ok(d) => d.state.and_then(|c| c.missed),
            // Answered meanwhile, or missed already: nothing to apply.
            Err(Error::Precondition(_)) => continue,
            Err(e) => return Err(anyhow::anyhow!("complaint {complaint_id}: {e}")),
        };
        let at_ms = now.timestamp_millis();
        change_credit(&mut tx, &merchant, &Cause::DeadlineMissed { complaint_id: complaint_id.clone() }, 0, at_ms)
            .await?;
        match penalty {
            Some(Penalty::FreezeCharging) => set_freeze(&mut tx, &merchant, true, &complaint_id, at_ms).await?,
            Some(Penalty::DelaySettlement) => {
                crate::settlement::delay_merchant(&mut tx, calendar, &merchant, at_ms).await?
            }
            _ => {}
        }
        tx.commit().await?;
        autodebit_runtime::metrics::add(autodebit_runtime::metrics::COMPLAINT_DEADLINES_MISSED, &[], 1);
    }
    Ok(due.len())
}
