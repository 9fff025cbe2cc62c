//! Payment providers: the `Provider` trait the charger and the contracts service call, the
//! deterministic simulator, and WeChat Pay's papay protocol — API v2 (signatures, flat XML,
//! deductions, order and contract queries, contract deletion, signing entries, callbacks) and
//! API v3 (request signing, response and callback verification, resource decryption, the
//! pre-deduction notice, refunds); the mock WeChat Pay to run against is its own crate,
//! `autodebit-mock-wechatpay`. It is built so that the commonest integration failures are
//! plain: a signature mismatch shows the exact string that was signed, a missing parameter is
//! named before any request is sent, and a timestamp outside five minutes, an unknown key serial
//! or a probe signature is named as such.
pub mod limit;
pub mod simulator;
pub mod wechatpay;

use autodebit_domain::{ChargeId, ContractId, MerchantId, Money};
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One attempt of a charge, as a provider is asked to make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeAttempt {
    pub charge_id: ChargeId,
    pub contract_id: ContractId,
    /// The contract's id at the provider (WeChat Pay's `contract_id`, from its signing
    /// notice); empty where the provider knows the contract by the platform's id.
    pub provider_contract_id: String,
    /// Whose charge it is: limits apply per merchant.
    pub merchant_id: MerchantId,
    /// The first is 1.
    pub attempt: u32,
    /// The attempt's own merchant order number (`ChargeId::out_trade_no`).
    pub out_trade_no: String,
    pub amount: Money,
}

impl ChargeAttempt {
    pub fn new(
        charge_id: ChargeId,
        contract_id: ContractId,
        merchant_id: MerchantId,
        attempt: u32,
        amount: Money,
    ) -> Self {
        ChargeAttempt {
            charge_id,
            contract_id,
            provider_contract_id: String::new(),
            merchant_id,
            attempt,
            out_trade_no: charge_id.out_trade_no(attempt),
            amount,
        }
    }
}

/// What the provider answered to a deduction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderOutcome {
    Succeeded {
        transaction_id: String,
    },
    Declined {
        code: String,
        message: String,
        retryable: bool,
    },
    /// The answer does not tell (a timeout, a 5xx, `SYSTEMERROR`, the payer still paying):
    /// the attempt may or may not have been taken. Resolved by `query`, never by sending the
    /// attempt again.
    Unknown {
        reason: String,
    },
}

/// What a provider knows of an attempt sent earlier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// It ended: `Succeeded` or `Declined`.
    Ended(ProviderOutcome),
    /// The provider never received it, so it may be sent.
    NotFound,
    /// Still in progress, or the query itself failed: ask again later.
    Pending { reason: String },
}

/// A refund of (part of) a succeeded charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub merchant_id: MerchantId,
    pub charge_id: ChargeId,
    /// The attempt that took the money, and the provider's id for it.
    pub out_trade_no: String,
    pub transaction_id: String,
    /// The refund's own number (WeChat Pay's `out_refund_no`): the same number is refunded once.
    pub out_refund_no: String,
    /// What the charge took, and how much of it goes back.
    pub charge_amount: Money,
    pub refund_amount: Money,
    pub reason: String,
}

/// What the provider answered to a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    Succeeded {
        refund_id: String,
    },
    Failed {
        code: String,
        message: String,
    },
    /// Not known yet: ask again with the same `out_refund_no`.
    Unknown {
        reason: String,
    },
}

/// The pre-deduction notice a provider passes to the payer before a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreDebitNotice {
    pub merchant_id: MerchantId,
    pub contract_id: ContractId,
    pub provider_contract_id: String,
    pub amount: Money,
}

/// A contract ended by the merchant: the provider is told to delete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    pub merchant_id: MerchantId,
    pub contract_id: ContractId,
    pub provider_contract_id: String,
    pub remark: String,
}

/// Where a payer signs a contract at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningChannel {
    /// A desktop or in-app web page (WeChat Pay `entrustweb`).
    Web,
    /// A mobile browser outside WeChat (`h5entrustweb`).
    H5,
    /// Signing together with a first payment (`preentrustweb`).
    WithPayment,
}

/// What a signing entry needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningRequest {
    pub merchant_id: MerchantId,
    pub channel: SigningChannel,
    /// The provider's template for the contract (WeChat Pay's `plan_id`).
    pub provider_plan_id: String,
    /// The merchant's code for the contract, unique per merchant (`contract_code`).
    pub contract_code: String,
    /// What the payer sees as the account being charged (`contract_display_account`).
    pub display_account: String,
    /// Where the provider sends its signing notice.
    pub notify_url: String,
    /// Where the payer's browser goes afterwards (may be empty).
    pub return_url: String,
    /// The payer's IP, which H5 signing requires.
    pub client_ip: String,
    pub request_serial: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// A parameter the provider requires is missing; named before anything is sent.
    #[error("{0}")]
    Invalid(String),
    /// The provider answered, and said no.
    #[error("the provider refused: {code}: {message}")]
    Refused { code: String, message: String },
    /// The provider could not be reached, or its answer could not be trusted or read.
    #[error("the provider could not be reached or read: {0}")]
    Transport(String),
    /// The provider has no such call.
    #[error("{0}")]
    Unsupported(String),
}

/// A settled charge's profit-sharing splits, as one order at the provider (WeChat Pay's
/// `/v3/profitsharing/orders`): the same `out_order_no` is shared once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRequest {
    pub merchant_id: MerchantId,
    pub charge_id: ChargeId,
    /// The provider's id of the debit being shared.
    pub transaction_id: String,
    pub out_order_no: String,
    /// Each receiver's account and share, in minor units.
    pub receivers: Vec<(String, i64)>,
}

/// What a provider answered to a profit-sharing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareOutcome {
    /// Every receiver was paid its share.
    Finished { order_id: String },
    /// Refused for good (a receiver not added, not enough left to share, …).
    Failed { code: String, message: String },
    /// Still processing, or the answer was lost: ask again with the same `out_order_no`.
    Pending { reason: String },
}

/// Which day's statement of which merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementRequest {
    pub merchant_id: MerchantId,
    /// The day it covers, in Beijing time.
    pub date: chrono::NaiveDate,
}

/// A payment provider the charger and the contracts service call.
pub trait Provider: Send + Sync {
    /// As configuration names it (`simulator`, `wechatpay`).
    fn name(&self) -> &'static str;
    /// Sends an attempt. An ambiguous answer is `Unknown`: resolve it with `query`.
    fn charge<'a>(&'a self, attempt: &'a ChargeAttempt) -> BoxFuture<'a, ProviderOutcome>;
    /// What became of an attempt sent earlier, by its `out_trade_no`.
    fn query<'a>(&'a self, attempt: &'a ChargeAttempt) -> BoxFuture<'a, Lookup>;
    fn refund<'a>(&'a self, refund: &'a RefundRequest) -> BoxFuture<'a, RefundOutcome>;
    /// Passes a pre-deduction notice to the payer (one that was passed before counts as done).
    fn notify<'a>(&'a self, notice: &'a PreDebitNotice) -> BoxFuture<'a, Result<(), ProviderError>>;
    fn terminate<'a>(&'a self, termination: &'a Termination) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// The address the payer opens to sign (some channels ask the provider for it).
    fn signing_url<'a>(&'a self, request: &'a SigningRequest) -> BoxFuture<'a, Result<String, ProviderError>>;
    /// Whether `merchant`'s payments are shared through this provider (else splits stay on the
    /// platform's books).
    fn shares_payments(&self, merchant: &str) -> bool {
        let _ = merchant;
        false
    }
    /// Shares a settled charge among its receivers (asked again with the same `out_order_no`,
    /// it answers for the order made the first time).
    fn share<'a>(&'a self, request: &'a ShareRequest) -> BoxFuture<'a, ShareOutcome> {
        let _ = request;
        Box::pin(async move {
            ShareOutcome::Failed {
                code: "UNSUPPORTED".into(),
                message: format!("{} shares no payments with receivers", self.name()),
            }
        })
    }
    /// The account a merchant's statement is of: what its lines name as the merchant
    /// (WeChat Pay's `mch_id`).
    fn statement_account(&self, merchant: &str) -> String {
        merchant.to_string()
    }
    /// Writes the merchant's statement of a day (WeChat Pay's `downloadbill` format, plain
    /// text) into `sink` as it arrives.
    fn statement<'a>(
        &'a self,
        request: &'a StatementRequest,
        sink: &'a mut (dyn std::io::Write + Send),
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let _ = (request, sink);
        Box::pin(async move { Err(ProviderError::Unsupported(format!("{} gives no daily statement", self.name()))) })
    }
}

/// A shared provider is a provider (so one can be chosen per merchant at run time).
impl<P: Provider + ?Sized> Provider for std::sync::Arc<P> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn charge<'a>(&'a self, attempt: &'a ChargeAttempt) -> BoxFuture<'a, ProviderOutcome> {
        (**self).charge(attempt)
    }
    fn query<'a>(&'a self, attempt: &'a ChargeAttempt) -> BoxFuture<'a, Lookup> {
        (**self).query(attempt)
    }
    fn refund<'a>(&'a self, refund: &'a RefundRequest) -> BoxFuture<'a, RefundOutcome> {
        (**self).refund(refund)
    }
    fn notify<'a>(&'a self, notice: &'a PreDebitNotice) -> BoxFuture<'a, Result<(), ProviderError>> {
        (**self).notify(notice)
    }
    fn terminate<'a>(&'a self, termination: &'a Termination) -> BoxFuture<'a, Result<(), ProviderError>> {
        (**self).terminate(termination)
    }
    fn signing_url<'a>(&'a self, request: &'a SigningRequest) -> BoxFuture<'a, Result<String, ProviderError>> {
        (**self).signing_url(request)
    }
    fn share<'a>(&'a self, request: &'a ShareRequest) -> BoxFuture<'a, ShareOutcome> {
        (**self).share(request)
    }
    fn shares_payments(&self, merchant: &str) -> bool {
        (**self).shares_payments(merchant)
    }
    fn statement_account(&self, merchant: &str) -> String {
        (**self).statement_account(merchant)
    }
    fn statement<'a>(
        &'a self,
        request: &'a StatementRequest,
        sink: &'a mut (dyn std::io::Write + Send),
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        (**self).statement(request, sink)
    }
}
