//! Signing sessions: the merchant opens one for a payer, the payer signs on the hosted
//! authorization page (see `page.rs`), and confirmation signs the contract in the same
//! transaction. Sign-time risk is decided when the session opens.
use crate::app::{AppError, Contracts};
use crate::regions::RegionLookup;
use autodebit_domain::contract::ContractCommand;
use autodebit_domain::plan::Plan;
use autodebit_domain::signing::{self, Session, SessionStatus, SigningCommand, SigningError, Step};
use autodebit_domain::{ContractId, MerchantId, PayerId, clock::from_millis};
use autodebit_eventstore::{ExpectedVersion, Tx, Value};
use autodebit_proto::EventKind;
use autodebit_proto::contracts::v1 as api;
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::auth::sha256_hex;
use autodebit_runtime::codec::{self, Cause};
use autodebit_runtime::grpc::{internal, invalid, store_error};
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// More distinct payer accounts than this on one device within a day send a session to review.
pub const MAX_ACCOUNTS_PER_DEVICE: i64 = 3;
const DEVICE_WINDOW_MS: i64 = 24 * 3600 * 1000;

const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x0e6c_4b8a_57f2_4d3c_b1a9_6f20_8e4d_93c7);

/// The contract a session signs: the same every time it is derived.
pub fn contract_of(l: &Loaded) -> Result<ContractId, Status> {
    Ok(ContractId::for_signing_session(
        &MerchantId::parse(&l.opened.merchant_id).map_err(internal)?,
        &l.opened.session_id,
        l.opened.opened_at_ms,
    ))
}

pub fn stream(session_id: &str) -> String {
    format!("signing-{session_id}")
}

/// Everything about a session: how it was opened, where it is now, its stream version.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub opened: pb::SigningSessionOpened,
    pub session: Session,
    pub contract_id: String,
    pub version: u64,
}

#[derive(Clone)]
pub struct Signing {
    pub(crate) contracts: Contracts,
    pub(crate) public_url: String,
    /// Merchants that sign and charge through WeChat Pay.
    pub(crate) wechatpay: Arc<autodebit_provider::wechatpay::Accounts>,
    ttl: Duration,
    regions: Arc<dyn RegionLookup>,
}

fn step_to_pb(s: Step) -> pb::SigningStep {
    match s {
        Step::PageViewed => pb::SigningStep::PageViewed,
        Step::AgreementTicked => pb::SigningStep::AgreementTicked,
        Step::HeldForReview => pb::SigningStep::HeldForReview,
        Step::ReviewApproved => pb::SigningStep::ReviewApproved,
        Step::ReviewRejected => pb::SigningStep::ReviewRejected,
        Step::SmsRequired => pb::SigningStep::SmsRequired,
        Step::SmsVerified => pb::SigningStep::SmsVerified,
        Step::Confirmed => pb::SigningStep::Confirmed,
        Step::Abandoned => pb::SigningStep::Abandoned,
        Step::Expired => pb::SigningStep::Expired,
    }
}

fn step_from_pb(raw: i32) -> Option<Step> {
    Some(match pb::SigningStep::try_from(raw).ok()? {
        pb::SigningStep::Unspecified => return None,
        pb::SigningStep::PageViewed => Step::PageViewed,
        pb::SigningStep::AgreementTicked => Step::AgreementTicked,
        pb::SigningStep::HeldForReview => Step::HeldForReview,
        pb::SigningStep::ReviewApproved => Step::ReviewApproved,
        pb::SigningStep::ReviewRejected => Step::ReviewRejected,
        pb::SigningStep::SmsRequired => Step::SmsRequired,
        pb::SigningStep::SmsVerified => Step::SmsVerified,
        pb::SigningStep::Confirmed => Step::Confirmed,
        pb::SigningStep::Abandoned => Step::Abandoned,
        pb::SigningStep::Expired => Step::Expired,
    })
}

/// The confirmation code the simulator provider accepts for a session: the payer's
/// "credential" in simulated signing. Shown on the page, since nobody holds a real one.
pub fn simulator_code(session_id: &str) -> String {
    let h = sha256_hex(&format!("simulator-confirmation\0{session_id}"));
    let n = u64::from_str_radix(&h[..12], 16).unwrap_or(0) % 1_000_000;
    format!("{n:06}")
}

pub fn to_api(l: &Loaded, public_url: &str) -> api::SigningSession {
    let o = &l.opened;
    api::SigningSession {
        session_id: o.session_id.clone(),
        merchant_id: o.merchant_id.clone(),
        plan_id: o.plan_id.clone(),
        payer_id: o.payer_id.clone(),
        channel: o.channel,
        state: match l.session.status {
            SessionStatus::Open => api::SigningState::Open,
            SessionStatus::Held => api::SigningState::HeldForReview,
            SessionStatus::Confirmed => api::SigningState::Confirmed,
            SessionStatus::Abandoned => api::SigningState::Abandoned,
            SessionStatus::Expired => api::SigningState::Expired,
            SessionStatus::Rejected => api::SigningState::Rejected,
        } as i32,
        authorization_url: format!("{}/sign/{}", public_url.trim_end_matches('/'), o.session_id),
        expires_at_ms: o.expires_at_ms,
        agreement_ticked: l.session.ticked,
        sms_verification_required: l.session.sms_required && !l.session.sms_verified,
        contract_id: l.contract_id.clone(),
        steps: l
            .session
            .steps
            .iter()
            .map(|(s, d, t)| api::SigningStepEntry {
                step: step_to_pb(*s) as i32,
                detail: d.clone(),
                at_ms: t.timestamp_millis(),
            })
            .collect(),
        return_url: o.return_url.clone(),
        provider_signing_url: String::new(),
    }
}

/// A validated request to open a session.
pub struct OpenRequest {
    pub merchant: MerchantId,
    pub plan: Plan,
    pub payer: PayerId,
    pub channel: pb::SigningChannel,
    pub device_id: String,
    pub client_ip: std::net::IpAddr,
    pub return_url: String,
    pub language: String,
    pub merchant_contract_code: String,
    pub idempotency_key: String,
}

impl Signing {
    pub fn new(
        contracts: Contracts,
        public_url: String,
        ttl: Duration,
        regions: Arc<dyn RegionLookup>,
        wechatpay: Arc<autodebit_provider::wechatpay::Accounts>,
    ) -> Self {
        Signing { contracts, public_url, wechatpay, ttl, regions }
    }

    pub async fn load(&self, session_id: &str) -> Result<Option<Loaded>, Status> {
        let records = self.contracts.platform.store.read_stream(&stream(session_id), 0).await.map_err(store_error)?;
        let version = records.last().map(|r| r.version).unwrap_or(0);
        let mut loaded: Option<Loaded> = None;
        for d in records.into_iter().filter_map(codec::decode) {
            match d.kind {
                EventKind::SigningSessionOpened(o) => {
                    let session = Session::new(from_millis(o.expires_at_ms));
                    loaded = Some(Loaded { opened: o, session, contract_id: String::new(), version });
                }
                EventKind::SigningStepRecorded(s) => {
                    let (Some(l), Some(step)) = (loaded.as_mut(), step_from_pb(s.step)) else { continue };
                    if step == Step::Confirmed {
                        l.contract_id = s.detail.clone();
                    }
                    l.session = signing::apply(l.session.clone(), step, &s.detail, from_millis(s.at_ms));
                }
                _ => {}
            }
        }
        Ok(loaded)
    }

    /// Opens a session and applies the sign-time risk rules, in one transaction.
    pub async fn open(&self, r: OpenRequest, cause: &Cause) -> Result<Loaded, Status> {
        let platform = &self.contracts.platform;
        let now = platform.clock.now_ms();
        let session_id = match r.idempotency_key.as_str() {
            "" => format!("ss_{}", uuid::Uuid::now_v7().simple()),
            key => {
                format!("ss_{}", uuid::Uuid::new_v5(&NAMESPACE, format!("{}\0{key}", r.merchant).as_bytes()).simple())
            }
        };
        if !r.idempotency_key.is_empty()
            && let Some(existing) = self.load(&session_id).await?
        {
            // The same request again is answered with its session; a different one is refused.
            let o = &existing.opened;
            let same = o.plan_id == r.plan.plan_id
                && o.payer_id == r.payer.to_string()
                && o.channel == r.channel as i32
                && o.device_id == r.device_id
                && o.client_ip == r.client_ip.to_string()
                && o.return_url == r.return_url
                && o.language == r.language
                && o.merchant_contract_code == r.merchant_contract_code;
            if !same {
                return Err(Status::already_exists(format!(
                    "idempotency_key: already used for a different signing session request ({session_id})"
                )));
            }
            return Ok(existing);
        }
        let region = self.regions.region(r.client_ip).unwrap_or_default();
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let opened = pb::SigningSessionOpened {
            session_id: session_id.clone(),
            merchant_id: r.merchant.to_string(),
            plan_id: r.plan.plan_id.clone(),
            payer_id: r.payer.to_string(),
            channel: r.channel as i32,
            device_id: r.device_id.clone(),
            client_ip: r.client_ip.to_string(),
            return_url: r.return_url.clone(),
            language: r.language.clone(),
            expires_at_ms: now.saturating_add(ttl_ms),
            opened_at_ms: now,
            merchant_contract_code: r.merchant_contract_code.clone(),
            client_region: region.clone(),
        };

        let mut tx = platform.store.begin().await.map_err(store_error)?;
        // Sign-time risk: how many other payer accounts this device signed for in a day, and
        // where this payer usually signs from.
        let others = tx
            .query(
                "SELECT COUNT(DISTINCT payer_id) FROM contracts_signing_sessions
                 WHERE device_id = $1 AND payer_id <> $2 AND opened_at_ms > $3",
                &[Value::from(&r.device_id), Value::from(r.payer.to_string()), Value::Int(now - DEVICE_WINDOW_MS)],
            )
            .await
            .map_err(store_error)?
            .first()
            .and_then(|row| row.i64(0))
            .unwrap_or(0);
        let usual = tx
            .query(
                "SELECT client_region FROM contracts_signing_sessions
                 WHERE payer_id = $1 AND merchant_id = $2 AND client_region <> '' ORDER BY opened_at_ms LIMIT 1",
                &[Value::from(r.payer.to_string()), Value::from(r.merchant.to_string())],
            )
            .await
            .map_err(store_error)?
            .first()
            .and_then(|row| row.text(0).map(str::to_string));
        let mut commands = Vec::new();
        if others + 1 > MAX_ACCOUNTS_PER_DEVICE {
            commands.push(SigningCommand::Hold {
                reason: format!(
                    "device {} signed for {} payer accounts within 24 h (more than {MAX_ACCOUNTS_PER_DEVICE})",
                    r.device_id,
                    others + 1
                ),
            });
        }
        let mut sms_code = String::new();
        if let Some(usual) = usual.filter(|u| !region.is_empty() && *u != region) {
            sms_code = format!("{:06}", uuid::Uuid::new_v4().as_u128() % 1_000_000);
            commands.push(SigningCommand::RequireSms {
                reason: format!("client IP {} is in {region}, the payer usually signs from {usual}", r.client_ip),
            });
        }

        let mut events =
            vec![codec::encode(pb::Event { kind: Some(EventKind::SigningSessionOpened(opened.clone())) }, cause, now)];
        let mut session = Session::new(from_millis(opened.expires_at_ms));
        for c in commands {
            let steps = signing::decide(&session, c, from_millis(now)).map_err(internal)?;
            for (step, detail) in steps {
                events.push(step_event(&opened, step, &detail, now, cause));
                session = signing::apply(session, step, &detail, from_millis(now));
            }
        }
        let out = tx.append(&stream(&session_id), ExpectedVersion::NoStream, events).await.map_err(store_error)?;
        tx.execute(
            "INSERT INTO contracts_signing_sessions
               (session_id, merchant_id, payer_id, device_id, client_region, opened_at_ms, sms_code_sha256, sms_code_hint)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                Value::from(&session_id),
                Value::from(r.merchant.to_string()),
                Value::from(r.payer.to_string()),
                Value::from(&r.device_id),
                Value::from(&region),
                Value::Int(now),
                Value::from(if sms_code.is_empty() { String::new() } else { sha256_hex(&sms_code) }),
                // With the simulator nobody receives a real SMS: the page shows the code.
                Value::from(if r.plan.provider == "simulator" { sms_code.clone() } else { String::new() }),
            ],
        )
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        if !sms_code.is_empty() {
            tracing::info!(target: "autodebit::notice", channel = "sms", recipient = %r.payer, session = session_id, "您的签约验证码已发送");
        }
        Ok(Loaded { opened, session, contract_id: String::new(), version: out.last_version })
    }

    /// Takes one step of a session. Confirming signs the contract in the same transaction.
    pub async fn step(&self, session_id: &str, command: SigningCommand, cause: &Cause) -> Result<Loaded, StepError> {
        let platform = &self.contracts.platform;
        let loaded = self.load(session_id).await?.ok_or(StepError::NotFound)?;
        let now = platform.clock.now();
        // A merchant suspended since the session opened gets no new contract from its page
        // (one already signed at the provider is recorded all the same).
        if let SigningCommand::Confirm { .. } = command {
            let merchant = MerchantId::parse(&loaded.opened.merchant_id).map_err(internal)?;
            crate::api::require_approved(platform, &merchant).await?;
        }
        // Read before the transaction takes its connection (PostgreSQL's pool is shared).
        let plan = match command {
            SigningCommand::Confirm { .. } | SigningCommand::ConfirmAtProvider { .. } => {
                Some(crate::plans::load(platform, &loaded.opened.plan_id).await?.ok_or(StepError::NotFound)?.1)
            }
            _ => None,
        };
        let mut tx = platform.store.begin().await.map_err(store_error)?;
        let mut command = command;
        let mut contract_id = String::new();
        let confirming = match &command {
            SigningCommand::Confirm { .. } => Some(false),
            SigningCommand::ConfirmAtProvider { .. } => Some(true),
            _ => None,
        };
        if let Some(at_provider) = confirming {
            // Decide first (ticked, not held, SMS done, not expired — or, signed at the
            // provider, only not held and not expired), then sign.
            let probe = |contract_id: String| {
                if at_provider {
                    SigningCommand::ConfirmAtProvider { contract_id }
                } else {
                    SigningCommand::Confirm { contract_id }
                }
            };
            signing::decide(&loaded.session, probe(String::new()), now)?;
            let id = contract_of(&loaded)?;
            let plan = plan.as_ref().ok_or(StepError::NotFound)?;
            self.sign_contract(&mut tx, &loaded, plan, id, cause).await?;
            contract_id = id.to_string();
            command = probe(contract_id.clone());
        }
        let steps = signing::decide(&loaded.session, command, now)?;
        let mut session = loaded.session.clone();
        let mut events = Vec::new();
        for (step, detail) in &steps {
            events.push(step_event(&loaded.opened, *step, detail, now.timestamp_millis(), cause));
            session = signing::apply(session, *step, detail, now);
        }
        let mut version = loaded.version;
        if !events.is_empty() {
            version = tx
                .append(&stream(session_id), ExpectedVersion::Exact(loaded.version), events)
                .await
                .map_err(store_error)?
                .last_version;
        }
        tx.commit().await.map_err(store_error)?;
        Ok(Loaded {
            opened: loaded.opened,
            session,
            contract_id: if contract_id.is_empty() { loaded.contract_id } else { contract_id },
            version,
        })
    }

    async fn sign_contract(
        &self,
        tx: &mut Tx,
        l: &Loaded,
        plan: &Plan,
        id: ContractId,
        cause: &Cause,
    ) -> Result<(), StepError> {
        let o = &l.opened;
        let cycle = plan.cycle.unwrap_or(autodebit_domain::Cycle::Monthly);
        let now = self.contracts.platform.clock.now();
        let command = ContractCommand::Sign {
            contract_id: id,
            merchant_id: MerchantId::parse(&o.merchant_id).map_err(internal)?,
            payer_id: PayerId::parse(&o.payer_id).map_err(internal)?,
            amount_per_cycle: plan.amount,
            cycle,
            merchant_contract_code: o.merchant_contract_code.clone(),
            plan_id: o.plan_id.clone(),
            expires_at: now.checked_add_signed(chrono::Duration::days(i64::from(plan.validity_days))),
        };
        self.contracts.execute_in(tx, id, None, command, cause).await.map_err(StepError::Contract)?;
        Ok(())
    }

    /// Checks an SMS code against the one issued for the session.
    pub async fn sms_code_matches(&self, session_id: &str, code: &str) -> Result<bool, Status> {
        let rows = self
            .contracts
            .platform
            .store
            .query(
                "SELECT sms_code_sha256 FROM contracts_signing_sessions WHERE session_id = $1",
                &[Value::from(session_id)],
            )
            .await
            .map_err(store_error)?;
        Ok(rows.first().and_then(|r| r.text(0)).is_some_and(|h| !h.is_empty() && h == sha256_hex(code.trim())))
    }

    /// The SMS code to show on the page with the simulator provider ("" otherwise).
    pub async fn sms_hint(&self, session_id: &str) -> Result<String, Status> {
        let rows = self
            .contracts
            .platform
            .store
            .query(
                "SELECT sms_code_hint FROM contracts_signing_sessions WHERE session_id = $1",
                &[Value::from(session_id)],
            )
            .await
            .map_err(store_error)?;
        Ok(rows.first().and_then(|r| r.text(0)).unwrap_or_default().to_string())
    }

    /// Expires open sessions past their time; run by the clean-up job.
    pub async fn expire_due(&self) -> anyhow::Result<usize> {
        let now = self.contracts.platform.clock.now_ms();
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let rows = self
            .contracts
            .platform
            .store
            .query(
                "SELECT session_id FROM contracts_signing_sessions WHERE ended = 0 AND opened_at_ms <= $1 LIMIT 500",
                &[Value::Int(now.saturating_sub(ttl_ms))],
            )
            .await?;
        let mut n = 0;
        for row in &rows {
            let Some(id) = row.text(0) else { continue };
            let cause = Cause::request(format!("expire/{id}"));
            match self.step(id, SigningCommand::Expire, &cause).await {
                Ok(l) if l.session.status.is_final() => n += 1,
                Ok(_) | Err(StepError::Rule(_)) | Err(StepError::NotFound) => {}
                Err(e) => {
                    return Err(anyhow::anyhow!("expiring session {id}: {}", Status::from(e).message().to_string()));
                }
            }
            let mut tx = self.contracts.platform.store.begin().await?;
            tx.execute("UPDATE contracts_signing_sessions SET ended = 1 WHERE session_id = $1", &[Value::from(id)])
                .await?;
            tx.commit().await?;
        }
        Ok(n)
    }
}

fn step_event(
    o: &pb::SigningSessionOpened,
    step: Step,
    detail: &str,
    at_ms: i64,
    cause: &Cause,
) -> autodebit_eventstore::NewEvent {
    let e = pb::SigningStepRecorded {
        session_id: o.session_id.clone(),
        step: step_to_pb(step) as i32,
        detail: detail.to_string(),
        at_ms,
        merchant_id: o.merchant_id.clone(),
        payer_id: o.payer_id.clone(),
    };
    codec::encode(pb::Event { kind: Some(EventKind::SigningStepRecorded(e)) }, cause, at_ms)
}

/// Why a step failed.
#[derive(Debug)]
pub enum StepError {
    NotFound,
    Rule(SigningError),
    Contract(AppError),
    Status(Status),
}

impl From<SigningError> for StepError {
    fn from(e: SigningError) -> Self {
        StepError::Rule(e)
    }
}

impl From<Status> for StepError {
    fn from(s: Status) -> Self {
        StepError::Status(s)
    }
}

impl From<StepError> for Status {
    fn from(e: StepError) -> Status {
        match e {
            StepError::NotFound => Status::not_found("no such signing session"),
            StepError::Rule(r) => Status::failed_precondition(r.to_string()),
            StepError::Contract(a) => crate::api::to_status(a),
            StepError::Status(s) => s,
        }
    }
}

/// Parses a client IP, naming the field.
pub fn parse_ip(raw: &str) -> Result<std::net::IpAddr, Status> {
    raw.parse().map_err(|_| invalid("client_ip", "must be an IPv4 or IPv6 address"))
}
