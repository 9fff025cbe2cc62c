//! Signing sessions: the merchant opens one for a payer, the payer signs on the hosted
//! authorization page (`api::page`), and confirmation signs the contract in the same
//! transaction. Sign-time risk is decided when the session opens (`domain::signing`); an SMS
//! code it requires is issued as `VerificationCodeIssued` on the session's stream, in the
//! opening's transaction, and the notifier sends it. The service keeps only the code's hash
//! to check what the payer types.
use crate::app::contracts::{AppError, Contracts};
use crate::app::regions::RegionLookup;
use crate::store;
use autodebit_domain::contract::ContractCommand;
use autodebit_domain::plan::{self, Plan};
use autodebit_domain::signing::{
    self, Channel, Opened, Session, SignTimeRisk, SigningCommand, SigningError, SigningEvent, SigningSession,
    SigningState,
};
use autodebit_domain::{ContractId, MerchantId, PayerId, clock::from_millis, validity};
use autodebit_eventstore::{StoreError, Tx};
use autodebit_runtime::auth::sha256_hex;
use autodebit_runtime::codec::Cause;
use autodebit_runtime::grpc::{internal, store_error};
use autodebit_runtime::repository::{self, Hook, NoTables, VersionMismatch};
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x0e6c_4b8a_57f2_4d3c_b1a9_6f20_8e4d_93c7);

/// The contract a session signs: the same every time it is derived.
pub fn contract_of(l: &Loaded) -> Result<ContractId, Status> {
    l.state().contract_to_sign().map_err(internal)
}

/// Everything about a session: how it was opened, where it is now, its stream version.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub opened: Opened,
    pub session: Session,
    /// The contract the session signed ("" until confirmed).
    pub contract_id: String,
    pub version: u64,
}

impl Loaded {
    fn of(state: SigningState, version: u64) -> Option<Loaded> {
        let s = state?;
        Some(Loaded { opened: s.opened, session: s.session, contract_id: s.contract_id, version })
    }

    fn state(&self) -> SigningSession {
        SigningSession {
            opened: self.opened.clone(),
            session: self.session.clone(),
            contract_id: self.contract_id.clone(),
        }
    }
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

/// The confirmation code the simulator provider accepts for a session: the payer's
/// "credential" in simulated signing. Shown on the page, since nobody holds a real one.
pub fn simulator_code(session_id: &str) -> String {
    let h = sha256_hex(&format!("simulator-confirmation\0{session_id}"));
    let n = u64::from_str_radix(&h[..12], 16).unwrap_or(0) % 1_000_000;
    format!("{n:06}")
}

/// A validated request to open a session.
pub struct OpenRequest {
    pub merchant: MerchantId,
    pub plan: Plan,
    pub payer: PayerId,
    pub channel: Channel,
    pub device_id: String,
    pub client_ip: std::net::IpAddr,
    pub return_url: String,
    pub language: String,
    pub merchant_contract_code: String,
    pub idempotency_key: String,
    /// The payer's mobile number, E.164 ("": none given).
    pub payer_phone: String,
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

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    pub async fn load(&self, session_id: &str) -> Result<Option<Loaded>, Status> {
        let l = repository::load::<SigningSession>(&self.contracts.platform.store, &signing::stream(session_id))
            .await
            .map_err(store_error)?;
        Ok(Loaded::of(l.state, l.version))
    }

    /// Opens a session and applies the sign-time risk rules, in one transaction.
    pub async fn open(&self, r: OpenRequest, cause: &Cause) -> Result<Loaded, Status> {
        let platform = &self.contracts.platform;
        let now_ms = platform.clock.now_ms();
        let now = from_millis(now_ms);
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
                && o.channel == r.channel
                && o.device_id == r.device_id
                && o.client_ip == r.client_ip.to_string()
                && o.return_url == r.return_url
                && o.language == r.language
                && o.merchant_contract_code == r.merchant_contract_code
                && o.payer_phone == r.payer_phone;
            if !same {
                return Err(Status::already_exists(format!(
                    "idempotency_key: already used for a different signing session request ({session_id})"
                )));
            }
            return Ok(existing);
        }
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let opened = Opened {
            session_id: session_id.clone(),
            merchant_id: r.merchant.to_string(),
            plan_id: r.plan.plan_id.clone(),
            payer_id: r.payer.to_string(),
            channel: r.channel,
            device_id: r.device_id.clone(),
            client_ip: r.client_ip.to_string(),
            return_url: r.return_url.clone(),
            language: r.language.clone(),
            expires_at: from_millis(now_ms.saturating_add(ttl_ms)),
            opened_at: now,
            merchant_contract_code: r.merchant_contract_code.clone(),
            client_region: self.regions.region(r.client_ip).unwrap_or_default(),
            payer_phone: r.payer_phone.clone(),
        };

        let mut tx = platform.store.begin().await.map_err(store_error)?;
        // Sign-time risk: how many other payer accounts this device signed for within the
        // window, and where this payer usually signs from.
        let (merchant_id, plan_id) = (opened.merchant_id.as_str(), opened.plan_id.as_str());
        let (sql, params) = autodebit_runtime::risk_rules::select("contracts_risk_rules", &[merchant_id], &[plan_id]);
        let rules: Vec<autodebit_runtime::risk_rules::Row> = tx.query_as(&sql, &params).await.map_err(store_error)?;
        let rules = autodebit_runtime::risk_rules::Values::from_rows(rules);
        let setting = |name| rules.effective(autodebit_runtime::risk_rules::setting(name), merchant_id, plan_id);
        let window_hours = setting(autodebit_domain::risk::DEVICE_WINDOW_HOURS);
        let max_accounts = u32::try_from(setting(autodebit_domain::risk::DEVICE_MAX_ACCOUNTS)).unwrap_or(1);
        let since = signing::device_window_start(now, window_hours).timestamp_millis();
        let others = store::sessions::other_accounts_on_device(&mut tx, &r.device_id, &opened.payer_id, since)
            .await
            .map_err(store_error)?;
        let usual =
            store::sessions::usual_region(&mut tx, &opened.payer_id, &opened.merchant_id).await.map_err(store_error)?;
        let risk = SignTimeRisk {
            other_accounts_on_device: u32::try_from(others).unwrap_or(u32::MAX),
            usual_region: usual,
            max_accounts,
            window_hours,
        };
        // Issued (logged for the notifier to send) only if the risk checks require it.
        let sms_code = signing::sms_code(uuid::Uuid::new_v4().as_u128());
        // With the simulator provider the page shows the code as well: a convenience for local
        // runs and demos, where no SMS channel may be configured. Other providers' pages never
        // show it.
        let table = SessionsTable { show_code: r.plan.provider == plan::SIMULATOR };
        let stream = signing::stream(&session_id);
        let done = repository::execute_in::<SigningSession, _, StepError>(
            &mut tx,
            &stream,
            None,
            SigningCommand::Open { opened, risk, sms_code },
            now,
            cause,
            &table,
        )
        .await
        .map_err(|e| match e {
            StepError::Rule(SigningError::AlreadyOpened) => {
                Status::aborted(format!("signing session {session_id} was opened meanwhile; retry"))
            }
            other => other.into(),
        })?;
        tx.commit().await.map_err(store_error)?;
        Loaded::of(done.state, done.version).ok_or_else(|| internal("signing session vanished"))
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
            crate::app::merchants::require_signing_allowed(platform, &merchant).await?;
        }
        // Read before the transaction takes its connection (PostgreSQL's pool is shared).
        let plan = match command {
            SigningCommand::Confirm { .. } | SigningCommand::ConfirmAtProvider { .. } => {
                Some(crate::app::plans::load(platform, &loaded.opened.plan_id).await?.ok_or(StepError::NotFound)?.1)
            }
            _ => None,
        };
        let mut tx = platform.store.begin().await.map_err(store_error)?;
        let mut command = command;
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
            loaded.session.steps_for(probe(String::new()), now)?;
            let id = contract_of(&loaded)?;
            let plan = plan.as_ref().ok_or(StepError::NotFound)?;
            self.sign_contract(&mut tx, &loaded, plan, id, cause).await?;
            command = probe(id.to_string());
        }
        // Appended at the version the steps were decided on: a step taken meanwhile (another
        // load of the page) makes this one fail as ABORTED.
        let done = repository::execute_in::<SigningSession, _, StepError>(
            &mut tx,
            &signing::stream(session_id),
            Some(loaded.version),
            command,
            now,
            cause,
            &NoTables,
        )
        .await?;
        tx.commit().await.map_err(store_error)?;
        Loaded::of(done.state, done.version).ok_or(StepError::NotFound)
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
            expires_at: validity::expires_at(now, plan.validity_days),
            payer_phone: o.payer_phone.clone(),
            language: signing::contract_language(&o.language).to_string(),
        };
        self.contracts.execute_in(tx, id, None, command, cause).await.map_err(StepError::Contract)?;
        Ok(())
    }

    /// Checks an SMS code against the one issued for the session.
    pub async fn sms_code_matches(&self, session_id: &str, code: &str) -> Result<bool, Status> {
        let hash =
            store::sessions::sms_code_sha256(&self.contracts.platform.store, session_id).await.map_err(store_error)?;
        Ok(!hash.is_empty() && hash == sha256_hex(code.trim()))
    }

    /// The SMS code to show on the page with the simulator provider ("" otherwise).
    pub async fn sms_hint(&self, session_id: &str) -> Result<String, Status> {
        store::sessions::sms_code_hint(&self.contracts.platform.store, session_id).await.map_err(store_error)
    }
}

/// Adds the session's row as it opens, with the hash of the SMS code issued, if one was (and
/// the code itself when the page is to show it).
struct SessionsTable {
    /// Whether the page shows the code (the simulator provider only).
    show_code: bool,
}

impl Hook<SigningSession> for SessionsTable {
    type Error = StoreError;

    async fn on_events(&self, tx: &mut Tx, state: &SigningState, events: &[SigningEvent]) -> Result<(), StoreError> {
        let Some(s) = state else { return Ok(()) };
        if !events.iter().any(|e| matches!(e, SigningEvent::Opened(_))) {
            return Ok(());
        }
        let o = &s.opened;
        let code = events.iter().find_map(|e| match e {
            SigningEvent::CodeIssued(c) => Some(c.code.as_str()),
            _ => None,
        });
        let hash = code.map(sha256_hex).unwrap_or_default();
        let hint = code.filter(|_| self.show_code).unwrap_or_default();
        store::sessions::insert(
            tx,
            &store::sessions::NewSession {
                session_id: &o.session_id,
                merchant_id: &o.merchant_id,
                payer_id: &o.payer_id,
                device_id: &o.device_id,
                client_region: &o.client_region,
                opened_at_ms: o.opened_at.timestamp_millis(),
                sms_code_sha256: &hash,
                sms_code_hint: hint,
            },
        )
        .await
    }
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
        match e {
            SigningError::NoSession => StepError::NotFound,
            e => StepError::Rule(e),
        }
    }
}

impl From<Status> for StepError {
    fn from(s: Status) -> Self {
        StepError::Status(s)
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        StepError::Status(store_error(e))
    }
}

impl From<VersionMismatch> for StepError {
    fn from(e: VersionMismatch) -> Self {
        StepError::Status(Status::aborted(e.to_string()))
    }
}

impl From<StepError> for Status {
    fn from(e: StepError) -> Status {
        match e {
            StepError::NotFound => Status::not_found("no such signing session"),
            StepError::Rule(r) => Status::failed_precondition(r.to_string()),
            StepError::Contract(a) => a.into(),
            StepError::Status(s) => s,
        }
    }
}
