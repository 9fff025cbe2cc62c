//! The due loop: claims schedules whose timer (`wake_ms`) has passed by the platform clock,
//! works out what each calls for (`Schedule::advance`: pre-debit notices, cycle charges, usage
//! charges), issues it under the limits, and moves each schedule on — all in one transaction.
//! On PostgreSQL rows are claimed `FOR UPDATE SKIP LOCKED`, so several scheduler processes
//! share the work and never issue a charge twice; the derived charge id makes a second issue
//! impossible anyway (its stream must not exist). Nothing is issued while the daily window
//! (07:00–22:00 Beijing time by default) is closed: what falls due then waits for it to open.
use super::issue::{Admission, base_issue, charge_append, limits_at, notice_append, side_name};
use crate::store::{self, Db, PlanCharges, holds, schedules};
use autodebit_domain::charge::{Charge, ChargeCommand, Issue, Reason};
use autodebit_domain::clock::from_millis;
use autodebit_domain::schedule::{self, Pace, PeriodUsage, Schedule, ScheduleEvent, Side};
use autodebit_domain::window::DailyWindow;
use autodebit_domain::{ChargeId, ContractId, Currency, MerchantId, Money, PayerId, Timestamp};
use autodebit_eventstore::{BackendKind, StreamAppend, Tx};
use autodebit_runtime::Platform;
use autodebit_runtime::codec::Cause;
use autodebit_runtime::repository;
use std::collections::{HashMap, HashSet};

/// Schedules claimed per transaction.
const CLAIM: i64 = 4000;

/// Issues everything due now, batch after batch, until nothing is left; returns how many
/// schedules it took. On SQLite the batches are pipelined (`pipelined`); on PostgreSQL each
/// is claimed under row locks (`issue_due`), so that several schedulers share the work.
pub async fn issue_all_due(platform: &Platform, window: &DailyWindow) -> anyhow::Result<usize> {
    if platform.store.kind() == BackendKind::Sqlite {
        return pipelined(platform, window).await;
    }
    let mut taken = 0;
    loop {
        match issue_due(platform, window).await? {
            0 => return Ok(taken),
            n => taken += n,
        }
    }
}

/// The pace of a pass at `now`, or `None` when nothing may be issued now. A test clock
/// simulates the time it skips; the system clock's loop waits for the window.
fn pace_at(platform: &Platform, window: &DailyWindow, now: Timestamp) -> Option<Pace> {
    let pace = if platform.clock.is_test() { Pace::Simulated(*window) } else { Pace::Real };
    (!matches!(pace, Pace::Real) || window.is_open(now)).then_some(pace)
}

/// Claims one batch of due schedules under the write lock and issues what they call for;
/// returns how many schedules it took (0: nothing was due).
pub async fn issue_due(platform: &Platform, window: &DailyWindow) -> anyhow::Result<usize> {
    let now = platform.clock.now();
    let Some(pace) = pace_at(platform, window, now) else { return Ok(0) };
    if !schedules::any_due(&platform.store, now).await? {
        return Ok(0);
    }
    let mut tx = platform.store.begin().await?;
    let loaded = schedules::claim(&mut tx, now, CLAIM).await?;
    let claimed = loaded.schedules.len() + loaded.unreadable.len();
    if claimed == 0 {
        return Ok(0);
    }
    let context = Context::load(&mut Db::Tx(&mut tx), &loaded.schedules).await?;
    let decided = decide(loaded, &context, now, pace);
    write(&mut tx, &decided, false).await?;
    tx.commit().await?;
    decided.count();
    Ok(claimed)
}

/// The SQLite due pass. Its one writer is the bottleneck, so the writer does only the writing:
/// the next batch is read (on a reader connection, without locks) and decided while the last
/// one is written. Batches follow each other by (`wake_ms`, rowid), so none reads a row an
/// earlier one of the pass is still writing. A batch is written back only if every row in it
/// is still at the revision it was read at; one that changed meanwhile (a suspension, usage,
/// a triggered charge) voids its batch, which the next pass takes again from fresh rows.
async fn pipelined(platform: &Platform, window: &DailyWindow) -> anyhow::Result<usize> {
    let now = platform.clock.now();
    let Some(pace) = pace_at(platform, window, now) else { return Ok(0) };
    let mut after = (i64::MIN, 0i64);
    let mut writing: Option<tokio::task::JoinHandle<anyhow::Result<usize>>> = None;
    let mut taken = 0;
    loop {
        let (loaded, last) = schedules::read_due(&platform.store, now, after, CLAIM).await?;
        let Some(last) = last else { break };
        after = last;
        let context = Context::load(&mut Db::Store(&platform.store), &loaded.schedules).await?;
        // Each batch of due charges is a trace of its own: the charges' events carry it on to
        // the charger and the notifier.
        let span = tracing::info_span!("due_batch", schedules = loaded.schedules.len());
        let decided = span.in_scope(|| decide(loaded, &context, now, pace));
        if let Some(w) = writing.take() {
            taken += w.await??;
        }
        let store = platform.store.clone();
        writing = Some(tokio::spawn(async move {
            let mut tx = store.begin().await?;
            let n = decided.schedules.len();
            if !write(&mut tx, &decided, true).await? {
                // Dropped uncommitted: nothing of the batch is kept. Counted as taken, so the
                // loop looks again at once.
                tracing::debug!(schedules = n, "a schedule changed while its batch was decided; batch voided");
                autodebit_runtime::metrics::add(autodebit_runtime::metrics::SCHEDULER_BATCHES_VOIDED, &[], 1);
                return Ok(n);
            }
            tx.commit().await?;
            decided.count();
            Ok(n + decided.unreadable.len())
        }));
    }
    if let Some(w) = writing {
        taken += w.await??;
    }
    Ok(taken)
}

/// What deciding a batch needs besides its schedules: their plans, the usage recorded for the
/// metered ones, and which of their merchants are suspended.
struct Context {
    plans: HashMap<String, PlanCharges>,
    usage: HashMap<ContractId, Vec<PeriodUsage>>,
    suspended: HashSet<String>,
    /// Merchants whose charging is frozen.
    frozen: HashSet<String>,
    /// The risk rule settings at the batch's scopes.
    rules: autodebit_runtime::risk_rules::Values,
}

impl Context {
    async fn load(db: &mut Db<'_>, batch: &[Schedule]) -> anyhow::Result<Context> {
        let plans = store::plan_charges(db, &batch.iter().map(|s| s.plan_id.as_str()).collect::<Vec<_>>()).await?;
        let metered: Vec<String> =
            batch.iter().filter(|s| s.mode.metered()).map(|s| s.contract_id.to_string()).collect();
        let mut usage: HashMap<ContractId, Vec<PeriodUsage>> = HashMap::new();
        if !metered.is_empty() {
            let plan_of: HashMap<ContractId, &str> =
                batch.iter().map(|s| (s.contract_id, s.plan_id.as_str())).collect();
            let ids: Vec<&str> = metered.iter().map(String::as_str).collect();
            for (contract, period, quantity) in store::usage_of(db, &ids).await? {
                let (Ok(id), Ok(period)) = (ContractId::parse(&contract), u32::try_from(period)) else { continue };
                let pricing = plan_of.get(&id).and_then(|p| plans.get(*p)).and_then(|p| p.pricing.as_ref());
                let price = pricing.and_then(|p| p.price(quantity));
                usage.entry(id).or_default().push(PeriodUsage { period, quantity, price });
            }
        }
        let mut merchants: Vec<&str> = batch.iter().map(|s| s.merchant_id.as_str()).collect();
        let suspended = store::suspended_merchants(db, &merchants).await?;
        let frozen = store::frozen_merchants(db, &merchants).await?;
        merchants.sort_unstable();
        merchants.dedup();
        let mut plan_ids: Vec<&str> = batch.iter().map(|s| s.plan_id.as_str()).collect();
        plan_ids.sort_unstable();
        plan_ids.dedup();
        let rules = store::risk_rules(db, &merchants, &plan_ids).await?;
        Ok(Context { plans, usage, suspended, frozen, rules })
    }
}

/// What a batch of schedules calls for, decided: the events to append, and the schedules
/// moved on.
struct Decided {
    schedules: Vec<Schedule>,
    /// The key each schedule is stored under.
    keys: Vec<String>,
    /// Rows that could not be read: they stop billing.
    unreadable: Vec<String>,
    appends: Vec<StreamAppend>,
    scheduled: i64,
    /// Refused, by the rule that refused them.
    rejected: std::collections::BTreeMap<&'static str, i64>,
    notices: i64,
    /// Held by a risk rule.
    held: i64,
}

impl Decided {
    /// Counts what a committed batch issued.
    fn count(&self) {
        autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGES_SCHEDULED, &[], self.scheduled);
        for (rule, n) in &self.rejected {
            autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGES_REJECTED, &[("rule", rule)], *n);
        }
        let rejected = self.rejected.values().sum();
        autodebit_runtime::metrics::add(
            autodebit_runtime::metrics::CHARGE_OUTCOMES,
            &[("outcome", "rejected")],
            rejected,
        );
        autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGE_OUTCOMES, &[("outcome", "held")], self.held);
        if self.notices > 0 {
            autodebit_runtime::metrics::add(autodebit_runtime::metrics::PRE_DEBIT_NOTICES, &[], self.notices);
        }
        if self.held > 0 {
            autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGES_HELD, &[], self.held);
        }
    }
}

/// Works out what each schedule calls for at `now` (`Schedule::advance`), checks each charge
/// against the limits (a suspended merchant's are refused), and moves the schedules on.
fn decide(loaded: schedules::Loaded, context: &Context, now: Timestamp, pace: Pace) -> Decided {
    let mut batch = loaded.schedules;
    let mut appends = Vec::with_capacity(batch.len());
    let (mut scheduled, mut notices, mut held) = (0i64, 0i64, 0i64);
    let mut rejected = std::collections::BTreeMap::new();
    for s in batch.iter_mut() {
        let plan = context.plans.get(&s.plan_id);
        let usage = context.usage.get(&s.contract_id).map_or(&[][..], Vec::as_slice);
        let mut events = s.advance(now, pace, usage);
        for e in &events {
            s.apply(e);
        }
        // The steps go out in time order (limits count per calendar day).
        events.sort_by_key(|e| e.at().unwrap_or(Timestamp::MAX_UTC));
        let suspended = context.suspended.contains(s.merchant_id.as_str());
        let frozen = context.frozen.contains(s.merchant_id.as_str());
        for e in &events {
            match *e {
                ScheduleEvent::Noticed { side, period, estimated, charge_due, at } => {
                    notices += 1;
                    appends.push(notice_append(s, side, period, estimated, charge_due, at));
                }
                ScheduleEvent::Charged { side, period, amount, due, quantity, at } => {
                    let description = match side {
                        Side::Cycle => String::new(),
                        Side::Usage => format!(
                            "{quantity} {}",
                            plan.and_then(|p| p.pricing.as_ref()).map_or("", |p| p.unit.as_str())
                        ),
                    };
                    let issue = Issue {
                        charge_id: side.charge_id(s.contract_id, period),
                        amount: Money::new(amount, s.amount.currency()),
                        period,
                        due_at: due,
                        ..base_issue(s)
                    };
                    // Counted on the calendar day the charge is taken on (a held charge too, once).
                    let admitted = autodebit_domain::limits::check_frozen(frozen).and_then(|()| {
                        s.admit(issue.amount, at, &limits_at(s, plan, at), suspended).map(|counted| {
                            s.apply(&counted);
                        })
                    });
                    let admission = Admission::of(s, issue.amount, admitted, &context.rules);
                    match &admission {
                        Admission::Scheduled => scheduled += 1,
                        Admission::Held(_) => held += 1,
                        Admission::Rejected(b) => *rejected.entry(b.rule).or_insert(0) += 1,
                    }
                    let cause = Cause::request(format!("{}/{}/{period}", issue.contract_id, side_name(side)));
                    appends.push(charge_append(issue, admission, reason_of(side), &description, &cause, now));
                }
                _ => {}
            }
        }
    }
    Decided {
        schedules: batch,
        keys: loaded.keys,
        unreadable: loaded.unreadable,
        appends,
        scheduled,
        rejected,
        notices,
        held,
    }
}

fn reason_of(side: Side) -> Reason {
    match side {
        Side::Cycle => Reason::Cycle,
        Side::Usage => Reason::Usage,
    }
}

/// Writes a decided batch: the schedules moved on, then the events. With `checked`, the rows
/// are written back only where still at the revision read; if any is not, nothing is appended
/// and the answer is `false` (the caller drops the transaction).
async fn write(tx: &mut Tx, decided: &Decided, checked: bool) -> anyhow::Result<bool> {
    let saved = schedules::save_advanced(tx, &decided.schedules, &decided.keys, checked).await?;
    if checked && saved != decided.schedules.len() as u64 {
        return Ok(false);
    }
    if !decided.unreadable.is_empty() {
        let ids: Vec<&str> = decided.unreadable.iter().map(String::as_str).collect();
        tracing::error!(contracts = ?ids, "schedules cannot be billed; deactivated");
        schedules::stop(tx, &ids).await?;
    }
    // A stream that already exists means that step was taken before (say, the schedule table
    // was restored from an older copy): it is not taken again, and the schedule moves on.
    let outcomes = tx.append_each(&decided.appends).await?;
    for (outcome, append) in outcomes.iter().zip(&decided.appends) {
        if let Err(e) = outcome {
            tracing::warn!(stream = append.stream, error = %e, "already issued; moving on");
        }
    }
    if decided.held > 0 {
        let accepted: Vec<&StreamAppend> =
            outcomes.iter().zip(&decided.appends).filter(|(o, _)| o.is_ok()).map(|(_, a)| a).collect();
        holds::record(tx, &accepted).await?;
    }
    Ok(true)
}

/// Issues the retries that are due: each failed charge's next attempt, once its timer (at least
/// six hours after the failure) has passed and its contract still bills. Returns how many.
pub async fn issue_retries(platform: &Platform, window: &DailyWindow) -> anyhow::Result<usize> {
    let now = platform.clock.now();
    if !window.is_open(now) {
        return Ok(0);
    }
    if !store::any_retry_due(&platform.store, now).await? {
        return Ok(0);
    }
    let mut tx = platform.store.begin().await?;
    let due = store::claim_retries(&mut tx, now, CLAIM).await?;
    // A batch of retries is a trace of its own, as a batch of due charges is.
    let span = tracing::info_span!("retry_batch", retries = due.len());
    let mut appends = Vec::with_capacity(due.len());
    for retry in &due {
        let Ok(id) = ChargeId::parse(&retry.charge_id) else { continue };
        let loaded = repository::load::<Charge>(&platform.store, &id.stream()).await?;
        store::retry_issued(&mut tx, &retry.charge_id).await?;
        // Anything else that happened to the charge since (an outcome arrived late) wins: the
        // retry is decided on the charge as it stands, and appended at the version it was
        // read at.
        let cause = Cause::request(format!("{id}/retry"));
        let decided =
            span.in_scope(|| repository::decide::<Charge>(id.stream(), loaded, ChargeCommand::Retry, now, &cause));
        let Ok(decided) = decided else { continue };
        appends.push(decided.into_append());
    }
    let mut issued = 0;
    for (outcome, append) in tx.append_each(&appends).await?.iter().zip(&appends) {
        match outcome {
            Ok(_) => issued += 1,
            Err(e) => {
                tracing::warn!(stream = append.stream, error = %e, "charge moved on before its retry; not retried")
            }
        }
    }
    tx.commit().await?;
    autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGE_RETRIES, &[], issued as i64);
    Ok(due.len())
}

/// Releases the triggered charges held for the window once it is open: each becomes its
/// `ChargeScheduled` (limits were checked, and the charge counted, when it was triggered).
pub async fn release_held(platform: &Platform, window: &DailyWindow) -> anyhow::Result<usize> {
    let now = platform.clock.now();
    if !window.is_open(now) {
        return Ok(0);
    }
    if !store::any_held_due(&platform.store, now).await? {
        return Ok(0);
    }
    let mut tx = platform.store.begin().await?;
    let due = store::claim_held(&mut tx, now, CLAIM).await?;
    let mut appends = Vec::with_capacity(due.len());
    for r in &due {
        let h = &r.held;
        let issue = (|| {
            Some(Issue {
                charge_id: ChargeId::parse(&h.charge_id).ok()?,
                contract_id: ContractId::parse(&h.contract_id).ok()?,
                merchant_id: MerchantId::parse(&h.merchant_id).ok()?,
                payer_id: PayerId::parse(&h.payer_id).ok()?,
                amount: Money::new(h.amount, Currency::parse(&h.currency).ok()?),
                period: 0,
                due_at: from_millis(h.due_ms),
            })
        })();
        store::release(&mut tx, &h.charge_id).await?;
        let Some(issue) = issue else {
            tracing::error!(charge_id = h.charge_id, "unreadable held charge dropped from the hold");
            continue;
        };
        let cause = Cause::request(format!("{}/held/{}", issue.contract_id, h.charge_id));
        // A contract suspended or ended while its charge was held is not charged, nor is a
        // suspended merchant's.
        let admission = match r.active {
            0 => Admission::Rejected(schedule::stopped_while_held()),
            _ => match autodebit_domain::limits::check_merchant(r.suspended != 0)
                .and_then(|()| autodebit_domain::limits::check_frozen(r.frozen != 0))
            {
                Ok(()) => Admission::Scheduled,
                Err(breach) => Admission::Rejected(breach),
            },
        };
        appends.push(charge_append(issue, admission, Reason::Trigger, &h.reason, &cause, now));
    }
    for (outcome, append) in tx.append_each(&appends).await?.iter().zip(&appends) {
        if let Err(e) = outcome {
            tracing::warn!(stream = append.stream, error = %e, "held charge already issued; moving on");
        }
    }
    tx.commit().await?;
    autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGES_SCHEDULED, &[], appends.len() as i64);
    Ok(due.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebit_eventstore::{EventStore, StoreOptions, Value};

    /// `n` monthly schedules due at `now`, each with its notice given.
    async fn due_schedules(store: &EventStore, n: usize, now: i64) -> Vec<String> {
        let mut tx = store.begin().await.unwrap();
        let mut ids = Vec::new();
        for i in 0..n {
            let id = format!("ct_{}", uuid::Uuid::from_u128(((now as u128) << 80) | i as u128));
            tx.execute(
                "INSERT INTO scheduler_schedules (contract_id, merchant_id, payer_id, amount, currency, cycle,
                   anchor_ms, cycle_anchor_ms, next_period, next_due_ms, noticed_period, notice_lead_ms, wake_ms,
                   active)
                 VALUES ($1, 'm1', 'p1', 1990, 'CNY', 'monthly', $2, $2, 1, $3, 1, $4, $3, 1)",
                &[
                    Value::from(&id),
                    Value::Int(now - 31 * 86_400_000),
                    Value::Int(now - 1),
                    Value::Int(autodebit_domain::plan::notice_lead(None).num_milliseconds()),
                ],
            )
            .await
            .unwrap();
            ids.push(id);
        }
        tx.commit().await.unwrap();
        ids
    }

    async fn scheduled(store: &EventStore) -> i64 {
        #[derive(sqlx::FromRow)]
        struct N {
            n: i64,
        }
        let n: Vec<N> =
            store.query_as("SELECT COUNT(*) AS n FROM events WHERE event_type = 'ChargeScheduled'", &[]).await.unwrap();
        n[0].n
    }

    #[tokio::test]
    async fn a_batch_whose_schedule_changed_after_it_was_read_is_voided_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            EventStore::open(StoreOptions::new(autodebit_eventstore::testing::sqlite_url(dir.path()))).await.unwrap();
        store.migrate(&crate::store::MIGRATIONS).await.unwrap();
        let now = chrono::Utc::now();
        let ids = due_schedules(&store, 3, now.timestamp_millis()).await;
        let pace = Pace::Simulated(DailyWindow::always());
        let empty = Context {
            plans: HashMap::new(),
            usage: HashMap::new(),
            suspended: HashSet::new(),
            frozen: HashSet::new(),
            rules: Default::default(),
        };
        let decide_due = async |after| {
            let (loaded, last) = schedules::read_due(&store, now, after, CLAIM).await.unwrap();
            (decide(loaded, &empty, now, pace), last)
        };

        let (decided, last) = decide_due((i64::MIN, 0)).await;
        assert_eq!((decided.schedules.len(), decided.scheduled), (3, 3));
        // Reads go on after where the last batch ended.
        assert!(decide_due(last.unwrap()).await.0.schedules.is_empty());

        // The contract is suspended between the read and the write.
        let mut tx = store.begin().await.unwrap();
        schedules::stop(&mut tx, &[&ids[1]]).await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        assert!(!write(&mut tx, &decided, true).await.unwrap());
        drop(tx);
        assert_eq!(scheduled(&store).await, 0, "nothing of the voided batch is kept");

        // Read again: the other two are charged once, the suspended one not at all.
        let (decided, _) = decide_due((i64::MIN, 0)).await;
        assert_eq!(decided.schedules.len(), 2);
        let mut tx = store.begin().await.unwrap();
        assert!(write(&mut tx, &decided, true).await.unwrap());
        tx.commit().await.unwrap();
        assert_eq!(scheduled(&store).await, 2);
        assert!(decide_due((i64::MIN, 0)).await.0.schedules.is_empty(), "the schedules moved on");
    }

    #[tokio::test]
    async fn a_schedule_row_reads_the_same_by_name_and_from_the_batch_json() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            EventStore::open(StoreOptions::new(autodebit_eventstore::testing::sqlite_url(dir.path()))).await.unwrap();
        store.migrate(&crate::store::MIGRATIONS).await.unwrap();
        let now = chrono::Utc::now();
        let ids = due_schedules(&store, 1, now.timestamp_millis()).await;
        let by_name = schedules::get(&mut Db::Store(&store), &ids[0], false).await.unwrap().unwrap();
        let (loaded, _) = schedules::read_due(&store, now, (i64::MIN, 0), CLAIM).await.unwrap();
        assert_eq!(loaded.schedules, vec![by_name.clone()]);
        let mut tx = store.begin().await.unwrap();
        let claimed = schedules::claim(&mut tx, now, CLAIM).await.unwrap();
        assert_eq!(claimed.schedules, vec![by_name]);
    }
}
