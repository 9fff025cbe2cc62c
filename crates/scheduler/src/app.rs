//! The scheduler's use cases: reading a schedule and the scheduler's status, and the two
//! merchant calls that make charges happen outside the calendar — recording usage and
//! triggering a charge. Handlers (`api`) parse requests into these and map the answers.
use crate::store::holds;
use crate::store::{self, Db, schedules};
use crate::worker::issue::{Admission, base_issue, charge_append, limits_at};
use autodebit_domain::charge::{Issue, Reason};
use autodebit_domain::plan::ChargeMode;
use autodebit_domain::schedule::{Refusal, Schedule};
use autodebit_domain::window::DailyWindow;
use autodebit_domain::{ChargeId, ContractId, Currency, Money, Timestamp};
use autodebit_eventstore::{ExpectedVersion, StoreError, Tx};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as events;
use autodebit_runtime::Platform;
use autodebit_runtime::auth::Principal;
use autodebit_runtime::codec::{self, Cause};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

const USAGE_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5e1d_0c2a_9b47_4f83_a61e_28c9_d0b3_7a45);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    NotFound(String),
    /// The contract is not in a state for the call.
    #[error("{0}")]
    Precondition(String),
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    /// The idempotency key was used for a charge of another amount.
    #[error("idempotency_key: already used for a charge of a different amount ({0})")]
    KeyReused(ChargeId),
    /// A concurrent call with the same key failed.
    #[error("a concurrent call with this idempotency key failed; retry")]
    Concurrent,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<StoreError>() {
            Ok(e) => AppError::Store(e),
            Err(e) => AppError::Internal(e),
        }
    }
}

fn invalid(field: &'static str, problem: impl Into<String>) -> AppError {
    AppError::Invalid { field, problem: problem.into() }
}

/// Why a schedule takes no charge, as the error a caller sees.
fn refused(s: &Schedule, refusal: Refusal) -> AppError {
    AppError::Precondition(match refusal {
        Refusal::Inactive => {
            format!("contract_id: contract {} is not active (suspended, terminated or expired)", s.contract_id)
        }
        Refusal::Expired(_) => format!("contract_id: contract {} has expired", s.contract_id),
    })
}

pub struct App {
    platform: Platform,
    window: DailyWindow,
    /// See `worker::spawn`.
    checked_through: Arc<AtomicI64>,
}

/// A schedule as `GetSchedule` shows it.
pub struct ScheduleView {
    pub schedule: Schedule,
    /// The usage recorded so far in the open usage period.
    pub open_usage: u64,
    pub merchant_suspended: bool,
}

/// `GetSchedulerStatus`'s figures.
pub struct Status {
    pub active_schedules: u64,
    pub due_timers: u64,
    pub now: Timestamp,
    pub checked_through_ms: i64,
}

pub struct RecordUsage {
    pub contract_id: ContractId,
    pub quantity: u64,
    pub unit: String,
    pub occurred_at: Timestamp,
    pub idempotency_key: String,
}

pub struct UsageRecorded {
    pub usage_id: String,
    pub period: u32,
    pub duplicate: bool,
}

pub struct TriggerCharge {
    pub contract_id: ContractId,
    pub amount: Money,
    pub reason: String,
    pub idempotency_key: String,
}

/// What became of a triggered charge.
pub struct Triggered {
    pub charge_id: ChargeId,
    pub outcome: Outcome,
    /// An earlier call with the same key decided it.
    pub duplicate: bool,
}

pub enum Outcome {
    /// Scheduled, to be charged at `charge_at_ms` (the call's moment, or when the window opens).
    Scheduled {
        charge_at_ms: i64,
    },
    Rejected {
        rule: String,
        detail: String,
    },
    /// Held by a risk rule: charged once the payer or an operator releases it, rejected at
    /// `expires_at_ms` otherwise.
    Held {
        rule: String,
        detail: String,
        expires_at_ms: i64,
    },
}

impl App {
    pub fn new(platform: Platform, window: DailyWindow, checked_through: Arc<AtomicI64>) -> Self {
        App { platform, window, checked_through }
    }

    /// A contract's schedule, locked for the transaction on PostgreSQL, and checked to be the
    /// caller's.
    async fn locked(&self, tx: &mut Tx, contract_id: ContractId, who: &Principal) -> Result<Schedule, AppError> {
        match schedules::get(&mut Db::Tx(tx), &contract_id.to_string(), true).await? {
            Some(s) if who.may_see(&s.merchant_id) => Ok(s),
            _ => Err(AppError::NotFound(format!(
                "contract_id: no contract {contract_id} (one signed a moment ago reaches the scheduler within moments)"
            ))),
        }
    }

    pub async fn schedule(&self, who: &Principal, contract_id: ContractId) -> Result<ScheduleView, AppError> {
        let store = &self.platform.store;
        let schedule = schedules::get(&mut Db::Store(store), &contract_id.to_string(), false)
            .await?
            .filter(|s| who.may_see(&s.merchant_id))
            .ok_or_else(|| AppError::NotFound(format!("contract_id: no schedule for contract {contract_id}")))?;
        let open_usage = match &schedule.usage {
            Some(u) if schedule.mode.metered() => {
                store::usage_in(store, &schedule.contract_id.to_string(), u.period).await?
            }
            _ => 0,
        };
        let merchant_suspended =
            !store::suspended_merchants(&mut Db::Store(store), &[schedule.merchant_id.as_str()]).await?.is_empty();
        Ok(ScheduleView { schedule, open_usage, merchant_suspended })
    }

    pub async fn status(&self) -> Result<Status, AppError> {
        let now = self.platform.clock.now();
        let (active_schedules, due_timers) = schedules::status(&self.platform.store, now).await?;
        Ok(Status {
            active_schedules,
            due_timers,
            now,
            checked_through_ms: self.checked_through.load(Ordering::SeqCst),
        })
    }

    /// Records usage in the usage period it counts in (`Schedule::usage_period_of`), once per
    /// idempotency key.
    pub async fn record_usage(&self, who: &Principal, r: RecordUsage) -> Result<UsageRecorded, AppError> {
        let now = self.platform.clock.now();
        if r.occurred_at > now + autodebit_domain::usage::MAX_RECORD_SKEW {
            return Err(invalid(
                "occurred_at_ms",
                format!("{} is in the future (now {})", r.occurred_at.timestamp_millis(), now.timestamp_millis()),
            ));
        }
        let contract = r.contract_id;
        let usage_id = format!(
            "us_{}",
            uuid::Uuid::new_v5(&USAGE_NAMESPACE, format!("{contract}\0{}", r.idempotency_key).as_bytes()).simple()
        );
        let mut tx = self.platform.store.begin().await?;
        let schedule = self.locked(&mut tx, contract, who).await?;
        // A repeated key answers with the first record.
        if let Some(period) = store::usage_recorded(&mut tx, &usage_id).await? {
            return Ok(UsageRecorded { usage_id, period, duplicate: true });
        }
        if !schedule.mode.metered() {
            return Err(AppError::Precondition(format!(
                "contract_id: its plan is {}; usage is recorded only for usage and hybrid plans",
                schedules::mode_as_str(schedule.mode)
            )));
        }
        if let Some(refusal) = schedule.refusal(now) {
            return Err(refused(&schedule, refusal));
        }
        if r.occurred_at < schedule.signed_at {
            return Err(invalid("occurred_at_ms", "is before the contract was signed"));
        }
        let unit = store::plan_usage_unit(&mut Db::Tx(&mut tx), &schedule.plan_id).await?;
        if r.unit != unit {
            return Err(invalid("unit", format!("{:?} is not the plan's unit {unit:?}", r.unit)));
        }
        let period = schedule
            .usage_period_of(r.occurred_at, now)
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("the contract's usage periods cannot be computed")))?;
        let contract_id = schedule.contract_id.to_string();
        store::insert_usage(&mut tx, &usage_id, &contract_id, period, r.quantity, r.occurred_at).await?;
        // The usage changes what the schedule's open period bills.
        schedules::touch(&mut tx, &contract_id).await?;
        let now_ms = now.timestamp_millis();
        let event = events::Event {
            kind: Some(EventKind::UsageRecorded(events::UsageRecorded {
                usage_id: usage_id.clone(),
                contract_id: contract_id.clone(),
                merchant_id: schedule.merchant_id.to_string(),
                payer_id: schedule.payer_id.to_string(),
                quantity: r.quantity,
                unit: r.unit,
                occurred_at_ms: r.occurred_at.timestamp_millis(),
                period,
                idempotency_key: r.idempotency_key,
                recorded_at_ms: now_ms,
            })),
        };
        tx.append(
            &format!("usage-{contract_id}"),
            ExpectedVersion::Any,
            vec![codec::encode(event, &Cause::request(&usage_id), now_ms)],
        )
        .await?;
        tx.commit().await?;
        autodebit_runtime::metrics::add(autodebit_runtime::metrics::USAGE_RECORDS, &[], 1);
        Ok(UsageRecorded { usage_id, period, duplicate: false })
    }

    /// Issues a charge of an event-triggered contract under its limits, once per idempotency
    /// key; outside the charge window an admitted charge is held until it opens.
    pub async fn trigger_charge(&self, who: &Principal, r: TriggerCharge) -> Result<Triggered, AppError> {
        let (contract, amount) = (r.contract_id, r.amount);
        let charge_id = ChargeId::for_trigger(contract, &r.idempotency_key);
        let now = self.platform.clock.now();
        let mut tx = self.platform.store.begin().await?;
        let mut schedule = self.locked(&mut tx, contract, who).await?;
        // Read in the transaction: a call never waits for a second connection while it holds
        // one (and the lock on its schedule row).
        if let Some(answer) = earlier_answer(Db::Tx(&mut tx), charge_id, amount).await? {
            return Ok(answer);
        }
        if schedule.mode != ChargeMode::EventTriggered {
            return Err(AppError::Precondition(format!(
                "contract_id: its plan is {}; TriggerCharge is for event-triggered plans",
                schedules::mode_as_str(schedule.mode)
            )));
        }
        if amount.currency() != schedule.amount.currency() {
            return Err(invalid(
                "amount.currency",
                format!("must be the contract's currency {}", schedule.amount.currency()),
            ));
        }
        let issue = Issue { charge_id, amount, period: 0, due_at: now, ..base_issue(&schedule) };
        let plans = store::plan_charges(&mut Db::Tx(&mut tx), &[schedule.plan_id.as_str()]).await?;
        let suspended = store::suspended_merchants(&mut Db::Tx(&mut tx), &[schedule.merchant_id.as_str()]).await?;
        let frozen = !store::frozen_merchants(&mut Db::Tx(&mut tx), &[schedule.merchant_id.as_str()]).await?.is_empty();
        // A contract that no longer bills is answered with a rejected charge, like a limit.
        let admission = match schedule.refusal(now) {
            Some(refusal) => Admission::Rejected(refusal.breach()),
            None => {
                let limits = limits_at(&schedule, plans.get(&schedule.plan_id), now);
                let merchant_suspended = suspended.contains(schedule.merchant_id.as_str());
                let admitted = autodebit_domain::limits::check_frozen(frozen).and_then(|()| {
                    schedule.admit(amount, now, &limits, merchant_suspended).map(|counted| schedule.apply(&counted))
                });
                let scope = (schedule.merchant_id.as_str(), schedule.plan_id.as_str());
                let rules = store::risk_rules(&mut Db::Tx(&mut tx), &[scope.0], &[scope.1]).await?;
                Admission::of(&schedule, amount, admitted, &rules)
            }
        };
        // Outside the charge window an admitted charge waits until it opens (a held one waits
        // for its release instead).
        let charge_at = self.window.next_open(now);
        let waits = admission == Admission::Scheduled && charge_at > now;
        let answer = Triggered {
            charge_id,
            outcome: match &admission {
                Admission::Scheduled => Outcome::Scheduled { charge_at_ms: charge_at.timestamp_millis() },
                Admission::Held(h) => Outcome::Held {
                    rule: h.rule.clone(),
                    detail: h.detail.clone(),
                    expires_at_ms: autodebit_domain::risk::hold_expires_at(now).timestamp_millis(),
                },
                Admission::Rejected(b) => Outcome::Rejected { rule: b.rule.to_string(), detail: b.detail.clone() },
            },
            duplicate: false,
        };
        let reason = r.reason.as_str();
        if waits {
            let hold = store::Held {
                charge_id: charge_id.to_string(),
                contract_id: schedule.contract_id.to_string(),
                merchant_id: schedule.merchant_id.to_string(),
                payer_id: schedule.payer_id.to_string(),
                amount: amount.minor_units(),
                currency: amount.currency().as_str().to_string(),
                reason: reason.to_string(),
                due_ms: charge_at.timestamp_millis(),
            };
            if !store::hold(&mut tx, &hold).await? {
                drop(tx);
                return self.concurrent_answer(charge_id, amount).await;
            }
            schedules::save_today(&mut tx, &schedule).await?;
            tx.commit().await?;
            autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGES_WAITING_FOR_WINDOW, &[], 1);
            return Ok(answer);
        }
        let cause = Cause::request(format!("{contract}/trigger/{}", r.idempotency_key));
        // The counter, the rule that refused it, and the outcome by `CHARGE_OUTCOMES`.
        let metric = match &admission {
            Admission::Scheduled => (autodebit_runtime::metrics::CHARGES_SCHEDULED, None, None),
            Admission::Held(_) => (autodebit_runtime::metrics::CHARGES_HELD, None, Some("held")),
            Admission::Rejected(b) => (autodebit_runtime::metrics::CHARGES_REJECTED, Some(b.rule), Some("rejected")),
        };
        let admitted = admission.admitted();
        let append = charge_append(issue, admission, Reason::Trigger, reason, &cause, now);
        match tx.append(&append.stream, append.expected, append.events.clone()).await {
            Ok(_) => {}
            // Another call with the same key got there first: its answer is the answer.
            Err(e) if e.is_conflict() => {
                drop(tx);
                return self.concurrent_answer(charge_id, amount).await;
            }
            Err(e) => return Err(e.into()),
        }
        holds::record(&mut tx, &[&append]).await?;
        if admitted {
            schedules::save_today(&mut tx, &schedule).await?;
        }
        tx.commit().await?;
        let (name, rule, outcome) = metric;
        match rule {
            Some(rule) => autodebit_runtime::metrics::add(name, &[("rule", rule)], 1),
            None => autodebit_runtime::metrics::add(name, &[], 1),
        }
        if let Some(outcome) = outcome {
            autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGE_OUTCOMES, &[("outcome", outcome)], 1);
        }
        Ok(answer)
    }

    /// The answer of a concurrent call with the same key that got there first.
    async fn concurrent_answer(&self, charge_id: ChargeId, amount: Money) -> Result<Triggered, AppError> {
        earlier_answer(Db::Store(&self.platform.store), charge_id, amount).await?.ok_or(AppError::Concurrent)
    }
}

/// The answer a charge id already has, if it was issued or is held for the window: the same
/// again for the same amount, an error for a different one.
async fn earlier_answer(mut db: Db<'_>, charge_id: ChargeId, amount: Money) -> Result<Option<Triggered>, AppError> {
    if let Some(h) = store::held(&mut db, charge_id).await? {
        let earlier = Currency::parse(&h.currency).ok().map(|c| Money::new(h.amount, c));
        if earlier != Some(amount) {
            return Err(AppError::KeyReused(charge_id));
        }
        return Ok(Some(Triggered {
            charge_id,
            outcome: Outcome::Scheduled { charge_at_ms: h.due_ms },
            duplicate: true,
        }));
    }
    let first = db.read_stream(&charge_id.stream(), 0).await?;
    let Some(kind) = first.first().and_then(|e| codec::decode(e.clone())).map(|d| d.kind) else { return Ok(None) };
    // A scheduled charge goes when it was due: the moment of the call, or the opening of
    // the charge window it was held for, as the first answer said.
    let (outcome, earlier) = match kind {
        EventKind::ChargeScheduled(s) => (Outcome::Scheduled { charge_at_ms: s.due_at_ms }, s.amount),
        EventKind::ChargeRejected(r) => (Outcome::Rejected { rule: r.rule, detail: r.detail }, r.amount),
        EventKind::ChargeHeld(h) => {
            (Outcome::Held { rule: h.rule, detail: h.detail, expires_at_ms: h.expires_at_ms }, h.amount)
        }
        _ => return Ok(None),
    };
    if codec::money_from_pb(earlier.as_ref()).ok() != Some(amount) {
        return Err(AppError::KeyReused(charge_id));
    }
    Ok(Some(Triggered { charge_id, outcome, duplicate: true }))
}
