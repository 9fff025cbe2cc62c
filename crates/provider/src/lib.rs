//! Payment providers: the `Provider` trait the charger calls, the deterministic simulator,
//! and WeChat Pay. For WeChat Pay this release holds WeChat Pay's message layer: API v2's signatures and
//! flat XML (classic papay endpoints and callbacks), and API v3's request signing, response
//! and callback verification and resource decryption (the pre-deduction notice). It is built so
//! that the commonest integration failures are plain: a signature mismatch shows the exact
//! string that was signed, a missing parameter is named before any request is sent, and a
//! timestamp outside five minutes, an unknown key serial or a probe signature is named as such.
pub mod limit;
pub mod simulator;
pub mod wechatpay;

use autodebit_domain::{ChargeId, MerchantId, Money};
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One attempt of a charge, as a provider is asked to make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeAttempt {
    pub charge_id: ChargeId,
    /// Whose charge it is: limits apply per merchant.
    pub merchant_id: MerchantId,
    /// The first is 1.
    pub attempt: u32,
    /// The attempt's own merchant order number (`ChargeId::out_trade_no`).
    pub out_trade_no: String,
    pub amount: Money,
}

impl ChargeAttempt {
    pub fn new(charge_id: ChargeId, merchant_id: MerchantId, attempt: u32, amount: Money) -> Self {
        ChargeAttempt { charge_id, merchant_id, attempt, out_trade_no: charge_id.out_trade_no(attempt), amount }
    }
}

/// What the provider answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderOutcome {
    Succeeded { transaction_id: String },
    Declined { code: String, message: String, retryable: bool },
}

/// A payment provider the charger sends attempts to.
pub trait Provider: Send + Sync {
    /// As plans name it (`simulator`, `wechatpay`).
    fn name(&self) -> &'static str;
    fn charge<'a>(&'a self, attempt: &'a ChargeAttempt) -> BoxFuture<'a, ProviderOutcome>;
}
