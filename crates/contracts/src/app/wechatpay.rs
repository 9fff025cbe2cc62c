//! Signing at WeChat Pay, for merchants that charge through it (`--wechatpay-config`) on plans
//! whose provider is `wechatpay`.
//!
//! A signing session of such a plan carries WeChat Pay's signing entry for its channel
//! (`provider_signing_url`): `entrustweb` for the web and mini-program channels, `h5entrustweb`
//! for H5, the `preentrustweb` id for the APP SDK. Its `contract_code` is the session's id
//! without `ss_` (WeChat Pay allows 32 characters), its `notify_url` this service's
//! `POST /callbacks/wechatpay/v2/contract`. WeChat Pay's notice that the payer signed
//! (`change_type` ADD) confirms the session — WeChat Pay authenticated the payer, so the hosted
//! page's tick and SMS are not asked for, but a session held for review stays held — and signs
//! the contract; a notice that the contract was deleted there (DELETE) terminates it here
//! (mode PROVIDER). Either records `ProviderContractChanged` with WeChat Pay's contract id,
//! which the charger's deductions then name. A contract imported with its platform id as
//! `contract_code` is bound the same way. Notices are checked as the charger checks its
//! callbacks (XML 400, account 404, signature 401, contract 404), counted in
//! `autodebit_callbacks_total{kind="contract"}`, and a notice delivered again changes nothing.
use crate::app::signing::{Loaded, Signing, StepError, contract_of};
use autodebit_domain::ContractId;
use autodebit_domain::contract::{ContractCommand, TerminationMode};
use autodebit_domain::plan;
use autodebit_domain::signing::{Channel, SessionStatus, SigningCommand, SigningError};
use autodebit_eventstore::ExpectedVersion;
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use autodebit_provider::wechatpay::{Accounts, Refused};
use autodebit_provider::{Provider, SigningChannel, SigningRequest};
use autodebit_runtime::codec::{self, Cause};
use axum::http::StatusCode;
use tonic::Status;

/// The path WeChat Pay's signing notices come to.
pub const NOTIFY_PATH: &str = "/callbacks/wechatpay/v2/contract";

/// The `contract_code` of a session at WeChat Pay (its id without `ss_`).
pub fn contract_code(session_id: &str) -> &str {
    session_id.strip_prefix("ss_").unwrap_or(session_id)
}

/// WeChat Pay's signing entry for a session, or "" when its plan does not sign there.
pub async fn signing_url(signing: &Signing, l: &Loaded) -> Result<String, Status> {
    let o = &l.opened;
    let Some(account) = signing.wechatpay.of_merchant(&o.merchant_id) else { return Ok(String::new()) };
    let Some((_, plan)) = crate::app::plans::load(&signing.contracts.platform, &o.plan_id).await? else {
        return Ok(String::new());
    };
    if plan.provider != plan::WECHATPAY {
        return Ok(String::new());
    }
    let channel = match o.channel {
        Channel::H5 => SigningChannel::H5,
        Channel::App => SigningChannel::WithPayment,
        Channel::MiniProgram => SigningChannel::Web,
    };
    // A number WeChat Pay wants unique per merchant and request: from the session id.
    let digest = autodebit_runtime::auth::sha256_hex(&o.session_id);
    let request_serial = i64::from_str_radix(&digest[..15], 16).unwrap_or(1);
    let request = SigningRequest {
        merchant_id: autodebit_domain::MerchantId::parse(&o.merchant_id).map_err(autodebit_runtime::grpc::internal)?,
        channel,
        provider_plan_id: account.config().plan_id.clone(),
        contract_code: contract_code(&o.session_id).to_string(),
        display_account: o.payer_id.clone(),
        notify_url: format!("{}{NOTIFY_PATH}", signing.public_url.trim_end_matches('/')),
        return_url: o.return_url.clone(),
        client_ip: o.client_ip.clone(),
        request_serial,
    };
    account
        .signing_url(&request)
        .await
        .map_err(|e| Status::failed_precondition(format!("WeChat Pay's signing entry: {e}")))
}

/// Handles a signing notice: confirms the session (ADD) or terminates the contract (DELETE),
/// then records the contract's standing at WeChat Pay. Returns the state recorded.
pub async fn on_notice(signing: &Signing, body: &str) -> Result<&'static str, Refused> {
    let accounts: &Accounts = &signing.wechatpay;
    let (p, merchant) = accounts.verify_v2(body)?;
    let field = |name: &str| p.get(name).cloned().unwrap_or_default();
    let code = field("contract_code");
    let provider_contract_id = field("contract_id");
    if provider_contract_id.is_empty() {
        return Err(Refused(StatusCode::BAD_REQUEST, "malformed", "contract_id is missing".into()));
    }
    let unknown = || Refused(StatusCode::NOT_FOUND, "unknown_contract", format!("contract_code {code:?} is not ours"));
    // A session's contract, or one imported under its platform id.
    let session =
        if code.is_empty() { None } else { signing.load(&format!("ss_{code}")).await.map_err(Refused::internal)? };
    let session = session.filter(|l| l.opened.merchant_id == merchant);
    let contract = match &session {
        Some(l) => contract_of(l).map_err(Refused::internal)?,
        None => {
            let id = ContractId::parse(&code).map_err(|_| unknown())?;
            let (state, _) = signing.contracts.load(id).await.map_err(Refused::internal)?;
            state.filter(|c| c.merchant_id.as_str() == merchant).ok_or_else(unknown)?;
            id
        }
    };
    let cause = Cause::request(format!("wechatpay/{}/{}", field("change_type"), provider_contract_id));
    let state = match field("change_type").as_str() {
        "ADD" => {
            if let Some(l) = &session {
                confirm(signing, l, &provider_contract_id, &cause).await?;
            }
            "signed"
        }
        "DELETE" => {
            let remark = field("contract_termination_remark");
            let command = ContractCommand::Terminate {
                mode: TerminationMode::Provider,
                remark: if remark.is_empty() { "deleted at WeChat Pay".into() } else { remark },
            };
            match signing.contracts.execute(contract, None, command, &cause).await {
                Ok(_) => {}
                // Ended already (terminated here first, or this notice delivered again).
                Err(crate::app::contracts::AppError::Rule(autodebit_domain::contract::ContractError::Ended(_))) => {}
                Err(e) => return Err(Refused::internal(e)),
            }
            "deleted"
        }
        other => {
            return Err(Refused(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("change_type {other:?} is neither ADD nor DELETE"),
            ));
        }
    };
    bind(signing, contract, &merchant, &provider_contract_id, state, &cause).await.map_err(Refused::internal)?;
    Ok(state)
}

/// Confirms a session signed at WeChat Pay; one confirmed already is left as it is.
async fn confirm(signing: &Signing, l: &Loaded, provider_contract_id: &str, cause: &Cause) -> Result<(), Refused> {
    if l.session.status == SessionStatus::Confirmed {
        return Ok(());
    }
    let command = SigningCommand::ConfirmAtProvider { contract_id: String::new() };
    match signing.step(&l.opened.session_id, command, cause).await {
        Ok(_) => Ok(()),
        Err(StepError::Rule(SigningError::Ended(SessionStatus::Confirmed))) => Ok(()),
        Err(StepError::Rule(e)) => Err(Refused(
            StatusCode::CONFLICT,
            "session_not_open",
            format!(
                "signing session {} cannot be confirmed ({e}); WeChat Pay contract {provider_contract_id}",
                l.opened.session_id
            ),
        )),
        Err(StepError::NotFound) => Err(Refused(StatusCode::NOT_FOUND, "unknown_contract", "no such session".into())),
        Err(StepError::Contract(e)) => Err(Refused::internal(e)),
        Err(StepError::Status(s)) => Err(Refused::internal(s.message())),
    }
}

/// Records the contract's standing at WeChat Pay, for the charger.
async fn bind(
    signing: &Signing,
    contract: ContractId,
    merchant: &str,
    provider_contract_id: &str,
    state: &str,
    cause: &Cause,
) -> anyhow::Result<()> {
    let platform = &signing.contracts.platform;
    let now = platform.clock.now_ms();
    let event = pb::Event {
        kind: Some(EventKind::ProviderContractChanged(pb::ProviderContractChanged {
            contract_id: contract.to_string(),
            merchant_id: merchant.to_string(),
            provider: plan::WECHATPAY.into(),
            provider_contract_id: provider_contract_id.to_string(),
            state: state.to_string(),
            changed_at_ms: now,
        })),
    };
    let mut tx = platform.store.begin().await?;
    tx.append(&format!("provider-contract-{contract}"), ExpectedVersion::Any, vec![codec::encode(event, cause, now)])
        .await?;
    tx.commit().await?;
    Ok(())
}
