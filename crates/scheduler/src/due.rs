//! The due loop: claims schedules whose timer (`wake_ms`) has passed by the platform clock,
//! works out what each calls for (`timeline::advance`: pre-debit notices, cycle charges, usage
//! charges), issues it under the limits, and moves each schedule on — all in one transaction.
//! On PostgreSQL rows are claimed `FOR UPDATE SKIP LOCKED`, so several scheduler processes
//! share the work and never issue a charge twice; the derived charge id makes a second issue
//! impossible anyway (its stream must not exist). Nothing is issued while the daily window
//! (07:00–22:00 Beijing time by default) is closed: what falls due then waits for it to open.
use crate::issue::{admit, charge_append, load_plans};
use crate::store::{COLUMNS, Db, PlanRow, ScheduleRow, in_list, suspended_merchants};
use crate::timeline::{self, Pace, Side, Step};
use autodebit_domain::charge::{self, ChargeCommand, Issue};
use autodebit_domain::clock::from_millis;
use autodebit_domain::limits;
use autodebit_domain::window::DailyWindow;
use autodebit_domain::{ChargeId, ContractId, Currency, MerchantId, Money, PayerId, Timestamp};
use autodebit_eventstore::{BackendKind, EventStore, ExpectedVersion, StreamAppend, Tx, Value};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1::{self as pb, ChargeReason};
use autodebit_runtime::Platform;
use autodebit_runtime::codec::{self, Cause};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Schedules claimed per transaction.
const CLAIM: i64 = 4000;
/// How often the loop looks for due schedules when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);

/// Starts the loop; what it returns tells the platform time as of which the loop last found
/// nothing left to do (`GetSchedulerStatus.checked_through_ms`).
pub fn spawn(platform: Platform, window: DailyWindow) -> Arc<AtomicI64> {
    let checked_through = Arc::new(AtomicI64::new(0));
    let reported = checked_through.clone();
    tokio::spawn(async move {
        let mut moved = platform.clock.watch();
        loop {
            let started = platform.clock.now_ms();
            let issued = async {
                let due = issue_all_due(&platform, &window).await?;
                let retries = issue_retries(&platform, &window).await?;
                let held = release_held(&platform, &window).await?;
                anyhow::Ok(due + retries + held)
            }
            .await;
            match issued {
                Ok(n) if n > 0 => continue,
                Ok(_) => {
                    checked_through.fetch_max(started, Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "issuing due charges failed; retrying");
                    autodebit_runtime::metrics::add(autodebit_runtime::metrics::SCHEDULER_ERRORS, &[], 1);
                }
            }
            tokio::select! {
                _ = moved.changed() => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = platform.shutdown.wait() => return,
            }
        }
    });
    reported
}

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
    let now_ms = now.timestamp_millis();
    // Look on a reader first, so an idle scheduler never takes the write lock.
    let any = platform
        .store
        .query("SELECT 1 FROM scheduler_schedules WHERE active = 1 AND wake_ms <= $1 LIMIT 1", &[Value::Int(now_ms)])
        .await?;
    if any.is_empty() {
        return Ok(0);
    }
    let mut tx = platform.store.begin().await?;
    let rows = claim(&mut tx, now_ms).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let claimed = rows.len();
    let mut db = Db::Tx(&mut tx);
    let plans = load_plans(&mut db, &rows.iter().collect::<Vec<_>>()).await?;
    let usage = load_usage(&mut db, &rows).await?;
    let suspended = suspended_of(&mut db, &rows).await?;
    let decided = decide(rows, &plans, &usage, &suspended, now, pace);
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
    let now_ms = now.timestamp_millis();
    let mut after = (i64::MIN, 0i64);
    let mut writing: Option<tokio::task::JoinHandle<anyhow::Result<usize>>> = None;
    let mut taken = 0;
    loop {
        let (rows, last) = read_due(&platform.store, now_ms, after).await?;
        let Some(last) = last else { break };
        after = last;
        let mut db = Db::Store(&platform.store);
        let plans = load_plans(&mut db, &rows.iter().collect::<Vec<_>>()).await?;
        let usage = load_usage(&mut db, &rows).await?;
        let suspended = suspended_of(&mut db, &rows).await?;
        let decided = decide(rows, &plans, &usage, &suspended, now, pace);
        if let Some(w) = writing.take() {
            taken += w.await??;
        }
        let store = platform.store.clone();
        writing = Some(tokio::spawn(async move {
            let mut tx = store.begin().await?;
            let n = decided.rows.len();
            if !write(&mut tx, &decided, true).await? {
                // Dropped uncommitted: nothing of the batch is kept. Counted as taken, so the
                // loop looks again at once.
                tracing::debug!(schedules = n, "a schedule changed while its batch was decided; batch voided");
                autodebit_runtime::metrics::add(autodebit_runtime::metrics::SCHEDULER_BATCHES_VOIDED, &[], 1);
                return Ok(n);
            }
            tx.commit().await?;
            decided.count();
            Ok(n)
        }));
    }
    if let Some(w) = writing {
        taken += w.await??;
    }
    Ok(taken)
}

/// Up to `CLAIM` due schedules after `after` (`wake_ms`, rowid) in that order, read without
/// locks, and where the last one stands. Two index seeks: the rest of `after`'s wake moment,
/// then the later ones (a row-value comparison would scan every row of an equal wake).
async fn read_due(
    store: &EventStore,
    now_ms: i64,
    after: (i64, i64),
) -> anyhow::Result<(Vec<ScheduleRow>, Option<(i64, i64)>)> {
    let found = store
        .query(
            &format!(
                "SELECT json_group_array(json_array({COLUMNS}, rid)) FROM (
                   SELECT * FROM (SELECT {COLUMNS}, rowid AS rid FROM scheduler_schedules
                     WHERE active = 1 AND wake_ms = $2 AND rowid > $3 ORDER BY rowid LIMIT $4)
                   UNION ALL
                   SELECT * FROM (SELECT {COLUMNS}, rowid AS rid FROM scheduler_schedules
                     WHERE active = 1 AND wake_ms > $2 AND wake_ms <= $1 ORDER BY wake_ms, rowid LIMIT $4)
                   LIMIT $4)"
            ),
            &[Value::Int(now_ms), Value::Int(after.0), Value::Int(after.1), Value::Int(CLAIM)],
        )
        .await?;
    let all: Vec<serde_json::Value> = serde_json::from_str(found.first().and_then(|r| r.text(0)).unwrap_or("[]"))?;
    let mut rows = Vec::with_capacity(all.len());
    let mut last = None;
    for v in &all {
        let rid = v.get(RID).and_then(serde_json::Value::as_i64).unwrap_or(0);
        match ScheduleRow::from_json(v) {
            Some(row) => {
                last = last.max(Some((row.wake_ms, rid)));
                rows.push(row);
            }
            None => tracing::error!(%v, "unreadable schedule row skipped"),
        }
    }
    Ok((rows, last))
}

/// Where the rowid comes in `read_due`'s arrays: after the `COLUMNS`.
const RID: usize = 35;

/// What a batch of schedules calls for, decided: the events to append, and the rows moved on.
struct Decided {
    rows: Vec<ScheduleRow>,
    appends: Vec<StreamAppend>,
    scheduled: i64,
    rejected: i64,
    notices: i64,
}

impl Decided {
    /// Counts what a committed batch issued.
    fn count(&self) {
        autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGES_SCHEDULED, &[], self.scheduled);
        if self.rejected > 0 {
            autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGES_REJECTED, &[], self.rejected);
        }
        if self.notices > 0 {
            autodebit_runtime::metrics::add(autodebit_runtime::metrics::PRE_DEBIT_NOTICES, &[], self.notices);
        }
    }
}

/// The suspended merchants among those of `rows`.
async fn suspended_of(db: &mut Db<'_>, rows: &[ScheduleRow]) -> anyhow::Result<HashSet<String>> {
    Ok(suspended_merchants(db, &rows.iter().map(|r| r.merchant_id.as_str()).collect::<Vec<_>>()).await?)
}

/// Works out what each of `rows` calls for at `now` (`timeline::advance`), checks each charge
/// against the limits (a suspended merchant's are refused), and moves the rows on.
fn decide(
    mut rows: Vec<ScheduleRow>,
    plans: &HashMap<String, PlanRow>,
    usage: &HashMap<(String, i64), u64>,
    suspended: &HashSet<String>,
    now: Timestamp,
    pace: Pace,
) -> Decided {
    let now_ms = now.timestamp_millis();
    let mut appends = Vec::with_capacity(rows.len());
    let (mut scheduled, mut rejected, mut notices) = (0i64, 0i64, 0i64);
    for row in rows.iter_mut() {
        let plan = plans.get(&row.plan_id);
        let contract = row.contract_id.clone();
        let steps = timeline::advance(
            row,
            now_ms,
            pace,
            |period| usage.get(&(contract.clone(), period)).copied().unwrap_or(0),
            |q| plan.and_then(|p| p.price(q)),
        );
        let Some(base) = base_issue(row) else {
            tracing::error!(contract = row.contract_id, "schedule cannot be billed; deactivated");
            row.active = false;
            continue;
        };
        for step in steps {
            match step {
                Step::Notice { side, period, estimated, charge_due_ms, at_ms } => {
                    notices += 1;
                    let due = (charge_due_ms, &row.time_zone[..]);
                    appends.push(notice_append(&base, side, period, estimated, due, at_ms));
                }
                Step::Charge { side, period, amount, due_ms, quantity, at_ms } => {
                    let (charge_id, reason, description) = match side {
                        Side::Cycle => {
                            (ChargeId::for_period(base.contract_id, period), ChargeReason::Cycle, String::new())
                        }
                        Side::Usage => (
                            ChargeId::for_usage(base.contract_id, period),
                            ChargeReason::Usage,
                            format!("{quantity} {}", plan.map(|p| p.usage_unit.as_str()).unwrap_or("")),
                        ),
                    };
                    let issue = Issue {
                        charge_id,
                        amount: Money::new(amount, base.amount.currency()),
                        period,
                        due_at: from_millis(due_ms),
                        ..base.clone()
                    };
                    // Counted on the calendar day the charge is taken on.
                    let admitted = limits::check_merchant(suspended.contains(&row.merchant_id))
                        .and_then(|()| admit(row, plan, issue.amount, from_millis(at_ms)));
                    let cause = Cause::request(format!("{}/{}/{period}", issue.contract_id, side_name(side)));
                    let (append, ok) = charge_append(issue, admitted, reason, &description, &cause, now);
                    if ok {
                        scheduled += 1
                    } else {
                        rejected += 1
                    }
                    appends.push(append);
                }
            }
        }
    }
    Decided { rows, appends, scheduled, rejected, notices }
}

/// Writes a decided batch: the rows moved on, then the events. With `checked`, the rows are
/// written back only where still at the revision read; if any is not, nothing is appended and
/// the answer is `false` (the caller drops the transaction).
async fn write(tx: &mut Tx, decided: &Decided, checked: bool) -> anyhow::Result<bool> {
    let saved = save_rows(tx, &decided.rows, checked).await?;
    if checked && saved != decided.rows.len() as u64 {
        return Ok(false);
    }
    // A stream that already exists means that step was taken before (say, the schedule table
    // was restored from an older copy): it is not taken again, and the schedule moves on.
    for (outcome, append) in tx.append_each(&decided.appends).await?.iter().zip(&decided.appends) {
        if let Err(e) = outcome {
            tracing::warn!(stream = append.stream, error = %e, "already issued; moving on");
        }
    }
    Ok(true)
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Cycle => "period",
        Side::Usage => "usage",
    }
}

/// Schedule rows from a JSON array of `COLUMNS` arrays; unreadable ones are logged and left.
fn parse_claimed(text: &str) -> anyhow::Result<Vec<ScheduleRow>> {
    let all: Vec<serde_json::Value> = serde_json::from_str(text)?;
    Ok(all
        .iter()
        .filter_map(|v| {
            let parsed = ScheduleRow::from_json(v);
            if parsed.is_none() {
                tracing::error!(%v, "unreadable schedule row skipped");
            }
            parsed
        })
        .collect())
}

/// Claims up to `CLAIM` schedules whose timer has passed, earliest first. PostgreSQL locks
/// them (`SKIP LOCKED`: other schedulers take the rest); SQLite's single writer already holds
/// the database. Both hand the rows over as one JSON value: decoding a thousand rows of
/// thirty columns value by value costs more than the rest of the claim.
async fn claim(tx: &mut Tx, now_ms: i64) -> anyhow::Result<Vec<ScheduleRow>> {
    let due = format!(
        "SELECT {COLUMNS} FROM scheduler_schedules WHERE active = 1 AND wake_ms <= $1 ORDER BY wake_ms LIMIT $2"
    );
    let params = [Value::Int(now_ms), Value::Int(CLAIM)];
    let rows: Vec<ScheduleRow> = if tx.kind() == BackendKind::Sqlite {
        let found = tx.query(&format!("SELECT json_group_array(json_array({COLUMNS})) FROM ({due})"), &params).await?;
        parse_claimed(found.first().and_then(|r| r.text(0)).unwrap_or("[]"))?
    } else {
        // Locked in the subquery, handed over as one JSON value like SQLite's.
        let found = tx
            .query(
                &format!(
                    "SELECT CAST(json_agg(json_build_array({COLUMNS})) AS TEXT) FROM ({due} FOR UPDATE SKIP LOCKED) d"
                ),
                &params,
            )
            .await?;
        parse_claimed(found.first().and_then(|r| r.text(0)).unwrap_or("[]"))?
    };
    Ok(rows)
}

/// Usage recorded in the open and later usage periods of the metered `rows`.
async fn load_usage(db: &mut Db<'_>, rows: &[ScheduleRow]) -> anyhow::Result<HashMap<(String, i64), u64>> {
    let metered: Vec<&ScheduleRow> = rows.iter().filter(|r| r.mode.metered()).collect();
    let mut usage = HashMap::new();
    if metered.is_empty() {
        return Ok(usage);
    }
    let ids: Vec<&str> = metered.iter().map(|r| r.contract_id.as_str()).collect();
    let (list, params) = in_list(db.kind(), 1, &ids);
    let found = db
        .query(
            &format!(
                "SELECT contract_id, period, CAST(SUM(quantity) AS BIGINT) FROM scheduler_usage
                 WHERE contract_id IN {list} GROUP BY contract_id, period"
            ),
            &params,
        )
        .await?;
    for r in &found {
        if let (Some(id), Some(period), Some(q)) = (r.text(0), r.i64(1), r.i64(2)) {
            usage.insert((id.to_string(), period), u64::try_from(q).unwrap_or(0));
        }
    }
    Ok(usage)
}

/// The parts of every charge of a schedule that do not change from one to the next.
pub fn base_issue(row: &ScheduleRow) -> Option<Issue> {
    let contract_id = ContractId::parse(&row.contract_id).ok()?;
    Some(Issue {
        charge_id: ChargeId::for_period(contract_id, 0),
        contract_id,
        merchant_id: MerchantId::parse(&row.merchant_id).ok()?,
        payer_id: PayerId::parse(&row.payer_id).ok()?,
        amount: Money::new(row.amount, Currency::parse(&row.currency).ok()?),
        period: 0,
        due_at: from_millis(row.next_due_ms),
    })
}

/// The pre-debit notice of a coming charge, on its own stream (named after the charge), so
/// that it is given once.
/// `due` is when the charge falls due, and the merchant's zone its notice names that time in.
fn notice_append(base: &Issue, side: Side, period: u32, estimated: i64, due: (i64, &str), now_ms: i64) -> StreamAppend {
    let (due_ms, time_zone) = due;
    let (charge_id, reason) = match side {
        Side::Cycle => (ChargeId::for_period(base.contract_id, period), ChargeReason::Cycle),
        Side::Usage => (ChargeId::for_usage(base.contract_id, period), ChargeReason::Usage),
    };
    let event = pb::Event {
        kind: Some(EventKind::PreDebitNoticeIssued(pb::PreDebitNoticeIssued {
            charge_id: charge_id.to_string(),
            contract_id: base.contract_id.to_string(),
            merchant_id: base.merchant_id.to_string(),
            payer_id: base.payer_id.to_string(),
            reason: reason as i32,
            period,
            estimated_amount: Some(codec::money_to_pb(Money::new(estimated, base.amount.currency()))),
            charge_due_at_ms: due_ms,
            issued_at_ms: now_ms,
            time_zone: time_zone.to_string(),
        })),
    };
    let cause = Cause::request(format!("{}/notice/{}/{period}", base.contract_id, side_name(side)));
    StreamAppend {
        stream: format!("prenotice-{charge_id}"),
        expected: ExpectedVersion::NoStream,
        events: vec![codec::encode(event, &cause, now_ms)],
    }
}

/// Writes the claimed schedules' new state back in one statement, the rows passed as one JSON
/// parameter (SQLite binds many parameters in quadratic time; PostgreSQL spends less on one
/// long value than on thousands of binds). Only the columns the batch can have changed: the
/// usage state only if it has metered rows.
async fn save_rows(tx: &mut Tx, rows: &[ScheduleRow], checked: bool) -> anyhow::Result<u64> {
    // The columns written after the id and the wake, in the order the values come.
    const WRITTEN: [(&str, bool); 16] = [
        ("next_period", false),
        ("next_due_ms", false),
        ("noticed_period", false),
        ("ready_ms", false),
        ("usage_period", false),
        ("usage_end_ms", false),
        ("usage_noticed", false),
        ("usage_ready_ms", false),
        ("day_key", true),
        ("day_count", false),
        ("day_amount", false),
        // A change of terms taking effect.
        ("amount", false),
        ("cycle", true),
        ("cycle_anchor_ms", false),
        ("cycle_anchor_period", false),
        ("change_through", false),
    ];
    if rows.is_empty() {
        return Ok(0);
    }
    let metered = rows.iter().any(|r| r.mode.metered());
    let written: Vec<(&str, bool)> =
        WRITTEN.iter().copied().filter(|(c, _)| metered || !c.starts_with("usage_")).collect();
    let json: Vec<String> = rows
        .iter()
        .map(|r| {
            let usage = if metered {
                format!(",{},{},{},{}", r.usage_period, r.usage_end_ms, r.usage_noticed, r.usage_ready_ms)
            } else {
                String::new()
            };
            // A wake of -1: nothing left to do.
            format!(
                "[\"{}\",{},{},{},{},{}{usage},\"{}\",{},{},{},\"{}\",{},{},{},{}]",
                r.contract_id,
                if r.active { r.wake_ms } else { -1 },
                r.next_period,
                r.next_due_ms,
                r.noticed_period,
                r.ready_ms,
                r.day_key,
                r.day_count,
                r.day_amount,
                r.amount,
                r.cycle,
                r.cycle_anchor_ms,
                r.cycle_anchor_period,
                r.change_through,
                r.rev
            )
        })
        .collect();
    let json = Value::from(format!("[{}]", json.join(",")));
    let names: Vec<&str> = written.iter().map(|(c, _)| *c).collect();
    let mut cols = vec!["value->>0 AS id".to_string(), "CAST(value->>1 AS BIGINT) AS wk".to_string()];
    for (i, (c, text)) in written.iter().enumerate() {
        cols.push(if *text {
            format!("value->>{} AS {c}", i + 2)
        } else {
            format!("CAST(value->>{} AS BIGINT) AS {c}", i + 2)
        });
    }
    cols.push(format!("CAST(value->>{} AS BIGINT) AS rev", written.len() + 2));
    let set = names.iter().map(|c| format!("{c} = v.{c}")).collect::<Vec<_>>().join(", ");
    let check = if checked { " AND scheduler_schedules.rev = v.rev" } else { "" };
    let saved = tx
        .execute(
            &format!(
                "UPDATE scheduler_schedules SET {set},
               wake_ms = CASE WHEN v.wk < 0 THEN scheduler_schedules.wake_ms ELSE v.wk END,
               active = CASE WHEN v.wk < 0 THEN 0 ELSE scheduler_schedules.active END,
               rev = scheduler_schedules.rev + 1
             FROM (SELECT {} FROM {}) v
             WHERE scheduler_schedules.contract_id = v.id{check}",
                cols.join(", "),
                tx.kind().json_rows(1)
            ),
            &[json],
        )
        .await?;
    Ok(saved)
}

/// Issues the retries that are due: each failed charge's next attempt, once its timer (at least
/// six hours after the failure) has passed and its contract still bills. Returns how many.
pub async fn issue_retries(platform: &Platform, window: &DailyWindow) -> anyhow::Result<usize> {
    let now = platform.clock.now();
    if !window.is_open(now) {
        return Ok(0);
    }
    let now_ms = now.timestamp_millis();
    let any = platform
        .store
        .query(
            "SELECT 1 FROM scheduler_retries WHERE state = 'waiting' AND due_ms <= $1 LIMIT 1",
            &[Value::Int(now_ms)],
        )
        .await?;
    if any.is_empty() {
        return Ok(0);
    }
    let mut tx = platform.store.begin().await?;
    let lock = if tx.kind() == BackendKind::Postgres { " FOR UPDATE OF r SKIP LOCKED" } else { "" };
    let rows = tx
        .query(
            &format!(
                "SELECT r.charge_id, r.stream_version FROM scheduler_retries r
                 JOIN scheduler_schedules s ON s.contract_id = r.contract_id
                 WHERE r.state = 'waiting' AND r.due_ms <= $1 AND s.active = 1
                   AND NOT EXISTS (SELECT 1 FROM scheduler_merchants m
                                   WHERE m.merchant_id = s.merchant_id AND m.suspended = 1)
                 ORDER BY r.due_ms LIMIT $2{lock}"
            ),
            &[Value::Int(now_ms), Value::Int(CLAIM)],
        )
        .await?;
    let mut appends = Vec::with_capacity(rows.len());
    for row in &rows {
        let (Some(charge_id), Some(version)) = (row.text(0), row.i64(1)) else { continue };
        let Ok(id) = ChargeId::parse(charge_id) else { continue };
        let state = platform
            .store
            .read_stream(&id.stream(), 0)
            .await?
            .into_iter()
            .filter_map(codec::decode)
            .filter_map(|d| codec::charge_event_from_pb(&d.kind))
            .fold(None, |s, e| charge::apply(s, &e));
        tx.execute("UPDATE scheduler_retries SET state = 'issued' WHERE charge_id = $1", &[Value::from(charge_id)])
            .await?;
        // Anything else that happened to the charge since (an outcome arrived late) wins.
        let Ok(events) = charge::decide(&state, ChargeCommand::Retry, now) else { continue };
        let cause = Cause::request(format!("{id}/retry"));
        let encoded = events
            .iter()
            .filter_map(|e| codec::charge_event_to_pb(state.as_ref(), e))
            .map(|e| codec::encode(e, &cause, now_ms))
            .collect();
        appends.push(StreamAppend {
            stream: id.stream(),
            expected: ExpectedVersion::Exact(version as u64),
            events: encoded,
        });
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
    Ok(rows.len())
}

/// Releases the triggered charges held for the window once it is open: each becomes its
/// `ChargeScheduled` (limits were checked, and the charge counted, when it was triggered).
pub async fn release_held(platform: &Platform, window: &DailyWindow) -> anyhow::Result<usize> {
    let now = platform.clock.now();
    if !window.is_open(now) {
        return Ok(0);
    }
    let now_ms = now.timestamp_millis();
    let any =
        platform.store.query("SELECT 1 FROM scheduler_held WHERE due_ms <= $1 LIMIT 1", &[Value::Int(now_ms)]).await?;
    if any.is_empty() {
        return Ok(0);
    }
    let mut tx = platform.store.begin().await?;
    let lock = if tx.kind() == BackendKind::Postgres { " FOR UPDATE OF h SKIP LOCKED" } else { "" };
    let rows = tx
        .query(
            &format!(
                "SELECT h.charge_id, h.contract_id, h.merchant_id, h.payer_id, h.amount, h.currency, h.reason, h.due_ms,
                   COALESCE(s.active, 0), COALESCE(m.suspended, 0)
                 FROM scheduler_held h LEFT JOIN scheduler_schedules s ON s.contract_id = h.contract_id
                   LEFT JOIN scheduler_merchants m ON m.merchant_id = h.merchant_id
                 WHERE h.due_ms <= $1 ORDER BY h.due_ms LIMIT $2{lock}"
            ),
            &[Value::Int(now_ms), Value::Int(CLAIM)],
        )
        .await?;
    let mut appends = Vec::with_capacity(rows.len());
    for r in &rows {
        let issue = (|| {
            Some(Issue {
                charge_id: ChargeId::parse(r.text(0)?).ok()?,
                contract_id: ContractId::parse(r.text(1)?).ok()?,
                merchant_id: MerchantId::parse(r.text(2)?).ok()?,
                payer_id: PayerId::parse(r.text(3)?).ok()?,
                amount: Money::new(r.i64(4)?, Currency::parse(r.text(5)?).ok()?),
                period: 0,
                due_at: from_millis(r.i64(7)?),
            })
        })();
        let charge_id = r.text(0).unwrap_or_default().to_string();
        tx.execute("DELETE FROM scheduler_held WHERE charge_id = $1", &[Value::from(&charge_id)]).await?;
        let Some(issue) = issue else {
            tracing::error!(charge_id, "unreadable held charge dropped from the hold");
            continue;
        };
        let cause = Cause::request(format!("{}/held/{charge_id}", issue.contract_id));
        let reason = r.text(6).unwrap_or_default().to_string();
        // A contract suspended or ended while its charge was held is not charged, nor is a
        // suspended merchant's.
        let admitted = if r.i64(8).unwrap_or(0) != 0 {
            limits::check_merchant(r.i64(9).unwrap_or(0) != 0)
        } else {
            Err(limits::Breach {
                rule: "contract_state",
                detail: "the contract stopped billing while the charge waited for the charge window".into(),
            })
        };
        appends.push(charge_append(issue, admitted, ChargeReason::Trigger, &reason, &cause, now).0);
    }
    for (outcome, append) in tx.append_each(&appends).await?.iter().zip(&appends) {
        if let Err(e) = outcome {
            tracing::warn!(stream = append.stream, error = %e, "held charge already issued; moving on");
        }
    }
    tx.commit().await?;
    autodebit_runtime::metrics::add(autodebit_runtime::metrics::CHARGES_SCHEDULED, &[], appends.len() as i64);
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebit_eventstore::StoreOptions;

    /// `n` monthly schedules due at `now`, each with its notice given.
    async fn due_schedules(store: &EventStore, n: usize, now: i64) -> Vec<String> {
        let mut tx = store.begin().await.unwrap();
        let mut ids = Vec::new();
        for i in 0..n {
            let id = format!("ct_{}", uuid::Uuid::from_u128(((now as u128) << 80) | i as u128));
            tx.execute(
                "INSERT INTO scheduler_schedules (contract_id, merchant_id, payer_id, amount, currency, cycle,
                   anchor_ms, cycle_anchor_ms, next_period, next_due_ms, noticed_period, wake_ms, active)
                 VALUES ($1, 'm1', 'p1', 1990, 'CNY', 'monthly', $2, $2, 1, $3, 1, $3, 1)",
                &[Value::from(&id), Value::Int(now - 31 * 86_400_000), Value::Int(now - 1)],
            )
            .await
            .unwrap();
            ids.push(id);
        }
        tx.commit().await.unwrap();
        ids
    }

    async fn scheduled(store: &EventStore) -> i64 {
        let n = store.query("SELECT COUNT(*) FROM events WHERE event_type = 'ChargeScheduled'", &[]).await.unwrap();
        n[0].i64(0).unwrap()
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
        let decide_due = async |after| {
            let (rows, last) = read_due(&store, now.timestamp_millis(), after).await.unwrap();
            (decide(rows, &HashMap::new(), &HashMap::new(), &HashSet::new(), now, pace), last)
        };

        let (decided, last) = decide_due((i64::MIN, 0)).await;
        assert_eq!((decided.rows.len(), decided.scheduled), (3, 3));
        // Reads go on after where the last batch ended.
        assert!(decide_due(last.unwrap()).await.0.rows.is_empty());

        // The contract is suspended between the read and the write.
        let mut tx = store.begin().await.unwrap();
        crate::processor::stop(&mut tx, &ids[1]).await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        assert!(!write(&mut tx, &decided, true).await.unwrap());
        drop(tx);
        assert_eq!(scheduled(&store).await, 0, "nothing of the voided batch is kept");

        // Read again: the other two are charged once, the suspended one not at all.
        let (decided, _) = decide_due((i64::MIN, 0)).await;
        assert_eq!(decided.rows.len(), 2);
        let mut tx = store.begin().await.unwrap();
        assert!(write(&mut tx, &decided, true).await.unwrap());
        tx.commit().await.unwrap();
        assert_eq!(scheduled(&store).await, 2);
        assert!(decide_due((i64::MIN, 0)).await.0.rows.is_empty(), "the schedules moved on");
    }
}
