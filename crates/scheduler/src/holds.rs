//! Charges held by a charge-time risk rule (`domain::risk`), after their `ChargeHeld`: the
//! payer's release on the step-up page, an operator's review, and the sweep that rejects what
//! nobody released within 48 hours and schedules released charges once the charge window
//! opens. Every step is decided by the charge aggregate and appended at the version read, with
//! the hold's row (`store::holds`) in the same transaction.
use crate::store::decisions;
use crate::store::holds::{self, HoldRow};
use crate::store::{Db, schedules};
use autodebit_domain::charge::{Charge, ChargeCommand, ChargeError, ChargeStatus};
use autodebit_domain::risk::{self, Releaser};
use autodebit_domain::window::DailyWindow;
use autodebit_domain::{ChargeId, Timestamp};
use autodebit_eventstore::StoreError;
use autodebit_runtime::Platform;
use autodebit_runtime::auth::Principal;
use autodebit_runtime::codec::Cause;
use autodebit_runtime::repository::{self, NoTables, VersionMismatch};

#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("{0}")]
    NotFound(String),
    /// The hold is not in a state for the call (released, rejected, expired).
    #[error("{0}")]
    NotHeld(String),
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl From<ChargeError> for HoldError {
    fn from(e: ChargeError) -> Self {
        HoldError::NotHeld(format!("charge_id: {e}"))
    }
}

impl From<VersionMismatch> for HoldError {
    fn from(e: VersionMismatch) -> Self {
        HoldError::Internal(e.into())
    }
}

impl From<anyhow::Error> for HoldError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<StoreError>() {
            Ok(e) => HoldError::Store(e),
            Err(e) => HoldError::Internal(e),
        }
    }
}

/// The payer's one-time credential for a hold's step-up page. As at signing, the platform's
/// simulated credential: derived from the hold's token and shown on the page.
pub fn payer_code(token: &str) -> String {
    use sha2::Digest;
    let h = hex::encode(sha2::Sha256::digest(format!("hold-confirmation\0{token}").as_bytes()));
    let n = u64::from_str_radix(&h[..12], 16).unwrap_or(0) % 1_000_000;
    format!("{n:06}")
}

/// At most this many holds a page of `ListHeldCharges`.
pub const MAX_PAGE: u32 = 500;

#[derive(Clone)]
pub struct Holds {
    platform: Platform,
    window: DailyWindow,
}

/// What an operator decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Holds {
    pub fn new(platform: Platform, window: DailyWindow) -> Self {
        Holds { platform, window }
    }

    pub fn now(&self) -> Timestamp {
        self.platform.clock.now()
    }

    /// Holds the caller may see, newest first, and the token of the next page.
    pub async fn list(
        &self,
        who: &Principal,
        mut filter: holds::Filter<'_>,
    ) -> Result<(Vec<HoldRow>, Option<String>), HoldError> {
        if let Principal::Merchant(m) = who {
            // A merchant sees its own; naming another finds nothing.
            if filter.merchant_id.is_some_and(|asked| asked != m.as_str()) {
                return Ok((Vec::new(), None));
            }
            filter.merchant_id = Some(m.as_str());
        }
        let limit = filter.limit;
        let rows = holds::list(&mut Db::Store(&self.platform.store), filter).await?;
        let next = (rows.len() as i64 == limit)
            .then(|| rows.last().map(|r| format!("{}:{}", r.held_at_ms, r.charge_id)))
            .flatten();
        Ok((rows, next))
    }

    /// A hold the caller may see.
    pub async fn get(&self, who: &Principal, charge_id: ChargeId) -> Result<HoldRow, HoldError> {
        let row = holds::by_charge(&mut Db::Store(&self.platform.store), &charge_id.to_string()).await?;
        row.filter(|r| autodebit_domain::MerchantId::parse(&r.merchant_id).is_ok_and(|m| who.may_see(&m)))
            .ok_or_else(|| HoldError::NotFound(format!("charge_id: no held charge {charge_id}")))
    }

    /// The hold a step-up page's token opens.
    pub async fn by_token(&self, token: &str) -> Result<Option<HoldRow>, HoldError> {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        Ok(holds::by_token(&mut Db::Store(&self.platform.store), token).await?)
    }

    /// An operator's review: the charge released (at once, or when the window opens) or
    /// rejected.
    pub async fn review(&self, charge_id: ChargeId, decision: Decision, note: &str) -> Result<HoldRow, HoldError> {
        let row = self.get(&Principal::Operator, charge_id).await?;
        match decision {
            Decision::Approve => self.release(&row, Releaser::Operator, note).await?,
            Decision::Reject => {
                let detail = if note.is_empty() { "an operator rejected it".to_string() } else { note.to_string() };
                self.reject(&row, risk::REVIEW_REJECTED, &detail, Some(("operator", note))).await?
            }
        }
        self.get(&Principal::Operator, charge_id).await
    }

    /// The payer's confirmation with their credential on the step-up page.
    pub async fn confirm_by_payer(&self, row: &HoldRow, code: &str) -> Result<(), HoldError> {
        use subtle::ConstantTimeEq;
        if !bool::from(payer_code(&row.token).as_bytes().ct_eq(code.trim().as_bytes())) {
            return Err(HoldError::Invalid { field: "code", problem: "the code is wrong".into() });
        }
        self.release(row, Releaser::Payer, "").await
    }

    /// The payer's refusal on the step-up page: rejected at once.
    pub async fn decline_by_payer(&self, row: &HoldRow) -> Result<(), HoldError> {
        self.reject(row, risk::PAYER_DECLINED, "the payer declined it on the step-up page", Some(("payer", ""))).await
    }

    /// Releases a hold: scheduled now inside the charge window, else when it opens. A contract
    /// that stopped billing meanwhile has its charge rejected instead.
    async fn release(&self, row: &HoldRow, by: Releaser, note: &str) -> Result<(), HoldError> {
        let now = self.now();
        if row.state != holds::HELD {
            return Err(HoldError::NotHeld(format!("charge_id: the charge is not held (it is {})", row.state)));
        }
        if row.expires_at_ms <= now.timestamp_millis() {
            return Err(HoldError::NotHeld("charge_id: the hold expired; the charge is rejected".into()));
        }
        let mut tx = self.platform.store.begin().await?;
        if let Some(refusal) = self.contract_refusal(&mut tx, row, now).await? {
            drop(tx);
            self.reject(row, refusal.rule, &refusal.detail, None).await?;
            return Err(HoldError::NotHeld(format!("contract_id: {}; the charge is rejected", refusal.detail)));
        }
        let open = self.window.is_open(now);
        let charge_at = if open { now } else { self.window.next_open(now) };
        let command = ChargeCommand::ReleaseHold { by, note: note.to_string(), charge_now: open };
        let stream = ChargeId::parse(&row.charge_id).map_err(|e| HoldError::Internal(e.into()))?.stream();
        let cause = Cause::request(format!("{}/release", row.charge_id));
        repository::execute_in::<Charge, _, HoldError>(&mut tx, &stream, None, command, now, &cause, &NoTables).await?;
        let state = if open { holds::SCHEDULED } else { holds::RELEASED };
        let now_ms = now.timestamp_millis();
        holds::set_state(
            &mut tx,
            &row.charge_id,
            state,
            Some((by.as_str(), note)),
            charge_at.timestamp_millis(),
            now_ms,
        )
        .await?;
        let outcome = format!("released_by_{}", by.as_str());
        decisions::insert(&mut tx, &holds::decision(row, "released", &outcome, note, now_ms)).await?;
        tx.commit().await?;
        autodebit_runtime::metrics::add(autodebit_runtime::metrics::HOLDS_RELEASED, &[], 1);
        Ok(())
    }

    /// Rejects a held (or released, not yet scheduled) charge under `rule`.
    async fn reject(
        &self,
        row: &HoldRow,
        rule: &str,
        detail: &str,
        decided_by: Option<(&str, &str)>,
    ) -> Result<(), HoldError> {
        if row.state != holds::HELD && row.state != holds::RELEASED {
            return Err(HoldError::NotHeld(format!("charge_id: the charge is not held (it is {})", row.state)));
        }
        let now = self.now();
        let mut tx = self.platform.store.begin().await?;
        let command = ChargeCommand::Reject { issue: None, rule: rule.to_string(), detail: detail.to_string() };
        let stream = ChargeId::parse(&row.charge_id).map_err(|e| HoldError::Internal(e.into()))?.stream();
        let cause = Cause::request(format!("{}/reject", row.charge_id));
        repository::execute_in::<Charge, _, HoldError>(&mut tx, &stream, None, command, now, &cause, &NoTables).await?;
        holds::set_state(&mut tx, &row.charge_id, holds::REJECTED, decided_by, 0, now.timestamp_millis()).await?;
        let outcome = match rule {
            risk::HOLD_EXPIRED => "expired",
            risk::REVIEW_REJECTED => "rejected_by_operator",
            risk::PAYER_DECLINED => "declined_by_payer",
            _ => "rejected",
        };
        decisions::insert(&mut tx, &holds::decision(row, "rejected", outcome, detail, now.timestamp_millis())).await?;
        tx.commit().await?;
        autodebit_runtime::metrics::add(autodebit_runtime::metrics::HOLDS_REJECTED, &[], 1);
        Ok(())
    }

    /// Schedules a released charge whose window has opened.
    async fn issue_released(&self, row: &HoldRow) -> Result<(), HoldError> {
        let now = self.now();
        let mut tx = self.platform.store.begin().await?;
        if let Some(refusal) = self.contract_refusal(&mut tx, row, now).await? {
            drop(tx);
            return self.reject(row, refusal.rule, &refusal.detail, None).await;
        }
        let stream = ChargeId::parse(&row.charge_id).map_err(|e| HoldError::Internal(e.into()))?.stream();
        let cause = Cause::request(format!("{}/release", row.charge_id));
        let command = ChargeCommand::IssueReleased;
        repository::execute_in::<Charge, _, HoldError>(&mut tx, &stream, None, command, now, &cause, &NoTables).await?;
        holds::set_state(&mut tx, &row.charge_id, holds::SCHEDULED, None, 0, now.timestamp_millis()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Why the hold's contract takes no charge now, if it does not.
    async fn contract_refusal(
        &self,
        tx: &mut autodebit_eventstore::Tx,
        row: &HoldRow,
        now: Timestamp,
    ) -> anyhow::Result<Option<autodebit_domain::limits::Breach>> {
        let schedule = schedules::get(&mut Db::Tx(tx), &row.contract_id, false).await?;
        Ok(match schedule {
            Some(s) => s.refusal(now).map(|r| r.breach()),
            None => Some(autodebit_domain::schedule::Refusal::Inactive.breach()),
        })
    }

    /// Deals with the holds whose moment has come: rejects those nobody released within
    /// [`risk::HOLD_EXPIRY`], schedules released ones once the window is open. How many.
    pub async fn settle_due(&self) -> anyhow::Result<usize> {
        let now = self.now();
        let open = self.window.is_open(now);
        let due = holds::due(&mut Db::Store(&self.platform.store), now.timestamp_millis(), open, 100).await?;
        for row in &due {
            let done = if row.state == holds::HELD {
                let detail = format!(
                    "neither the payer nor an operator released it within {} hours",
                    risk::HOLD_EXPIRY.num_hours()
                );
                self.reject(row, risk::HOLD_EXPIRED, &detail, None).await
            } else {
                self.issue_released(row).await
            };
            match done {
                Ok(()) => {}
                // The charge moved on without its row (it should not): the row follows it.
                Err(HoldError::NotHeld(e)) => {
                    tracing::error!(
                        charge = row.charge_id,
                        error = e,
                        "hold row behind its charge; brought up to date"
                    );
                    let id = ChargeId::parse(&row.charge_id)?;
                    let loaded = repository::load::<Charge>(&self.platform.store, &id.stream()).await?;
                    let state = match loaded.state.map(|c| c.status) {
                        Some(ChargeStatus::Held) => continue,
                        Some(ChargeStatus::Rejected) | None => holds::REJECTED,
                        Some(_) => holds::SCHEDULED,
                    };
                    let mut tx = self.platform.store.begin().await?;
                    holds::set_state(&mut tx, &row.charge_id, state, None, 0, now.timestamp_millis()).await?;
                    tx.commit().await?;
                }
                Err(e) => return Err(anyhow::anyhow!("hold of {}: {e}", row.charge_id)),
            }
        }
        Ok(due.len())
    }
}
