//! Complaints payers make at WeChat Pay (its merchant complaints API, `complaints-v2`), for
//! merchants that charge through WeChat Pay with v3 settings:
//!
//! - **in**: WeChat Pay's notice (`COMPLAINT.*` on `/callbacks/wechatpay/v3/{mch_id}`) names a
//!   complaint; its detail is read (`GET …/complaints-v2/{id}`), its order mapped to our charge
//!   by `out_trade_no`, and it is filed with source `wechatpay` and WeChat Pay's id — once,
//!   however often it is named. At start and every ten minutes the last seven days are also
//!   listed (`GET …/complaints-v2`), so a complaint whose notice never arrived is filed all the
//!   same. At start each account's notification URL is set to its callback.
//! - **out**: the merchant's answer (`ComplaintAnswered`) goes back to WeChat Pay as its
//!   response (`POST …/response`, at most 200 characters) and the complaint is completed
//!   (`POST …/complete`), by the `charger.provider_complaints` follower. A call that fails in
//!   transport is tried again with the batch; one WeChat Pay refuses (completed already, say)
//!   is logged and passed.
//!
//! WeChat Pay's problem types map to our kinds: `REFUND` (the payer wants the money back) to
//! `amount_dispute`, `SERVICE_NOT_WORK` to `service_not_delivered`, anything else to `other`.
use crate::complaints::{Complaints, Error};
use autodebit_domain::complaint::Kind;
use autodebit_domain::{ChargeId, MerchantId};
use autodebit_eventstore::Tx;
use autodebit_proto::EventKind;
use autodebit_provider::ProviderError;
use autodebit_provider::wechatpay::client::complaints::{Complaint as WxComplaint, MAX_PAGE, MAX_RESPONSE_CHARS};
use autodebit_provider::wechatpay::{Accounts, WeChatPay};
use autodebit_runtime::auth::Principal;
use autodebit_runtime::{Decoded, Platform, Processor};
use std::sync::Arc;

/// How far back each listing looks.
const LIST_DAYS: i64 = 7;
/// How often the listing runs.
const LIST_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Our kind for WeChat Pay's problem type.
pub fn kind_of(problem_type: &str) -> Kind {
    match problem_type {
        "REFUND" => Kind::AmountDispute,
        "SERVICE_NOT_WORK" => Kind::ServiceNotDelivered,
        _ => Kind::Other,
    }
}

/// What receiving a complaint came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Filed,
    /// Filed before (its notice again, or a later action on it).
    Known,
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("WeChat Pay's complaint detail could not be read: {0}")]
    Provider(ProviderError),
    #[error("complaint {complaint_id} is about no order of ours ({out_trade_no:?})")]
    UnknownOrder { complaint_id: String, out_trade_no: String },
    #[error(transparent)]
    Filing(#[from] Error),
    #[error(transparent)]
    Store(#[from] autodebit_eventstore::StoreError),
}

/// Files WeChat Pay's complaint `complaint_id` for `merchant` once: read, mapped to our charge.
pub async fn receive(
    complaints: &Complaints,
    platform: &Platform,
    merchant: &str,
    account: &WeChatPay,
    complaint_id: &str,
) -> Result<Received, ReceiveError> {
    if complaints.by_provider_id(complaint_id).await?.is_some() {
        return Ok(Received::Known);
    }
    let detail = account.complaint(complaint_id).await.map_err(ReceiveError::Provider)?;
    file(complaints, platform, merchant, &detail).await
}

async fn file(
    complaints: &Complaints,
    platform: &Platform,
    merchant: &str,
    detail: &WxComplaint,
) -> Result<Received, ReceiveError> {
    let unknown = |out_trade_no: &str| ReceiveError::UnknownOrder {
        complaint_id: detail.complaint_id.clone(),
        out_trade_no: out_trade_no.to_string(),
    };
    let order = detail.complaint_order_info.first().map(|o| o.out_trade_no.as_str()).unwrap_or_default();
    // Our order numbers carry the charge's id; the charge must be this merchant's.
    let (charge_id, _) = ChargeId::from_out_trade_no(order).ok_or_else(|| unknown(order))?;
    let who = Principal::Merchant(MerchantId::parse(merchant).map_err(|_| unknown(order))?);
    crate::app::charge_for(platform, &who, charge_id).await.map_err(|_| unknown(order))?;
    let words = [detail.complaint_detail.trim(), detail.problem_description.trim()]
        .into_iter()
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" — ");
    let kind = kind_of(&detail.problem_type);
    let description: String = if words.is_empty() { kind.name().to_string() } else { words };
    let description: String = description.chars().take(autodebit_domain::complaint::MAX_TEXT_CHARS).collect();
    match complaints.file_from_provider(charge_id, kind, &description, &detail.complaint_id).await {
        Ok(_) => Ok(Received::Filed),
        // The charge has a complaint already (from the payer's page, say): one per charge.
        Err(Error::Exists(_)) => Ok(Received::Known),
        Err(e) => Err(e.into()),
    }
}

/// Lists each v3 account's complaints of the last seven days (Beijing dates) and files those
/// not filed yet.
pub async fn sync(platform: &Platform, accounts: &[(String, Arc<WeChatPay>)]) {
    let complaints = Complaints::new(platform.clone());
    // WeChat Pay dates complaints by its own clock, which a test clock does not move: the
    // window is the machine's last seven days, not the platform's.
    let today = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai).date_naive();
    let begin = today - chrono::Days::new(LIST_DAYS as u64 - 1);
    for (merchant, account) in accounts.iter().filter(|(_, a)| a.config().v3.is_some()) {
        let mut offset = 0;
        loop {
            let page = match account.complaints(begin, today, offset, MAX_PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(merchant, error = %e, "listing WeChat Pay complaints failed");
                    break;
                }
            };
            for c in &page.data {
                let known = complaints.by_provider_id(&c.complaint_id).await.ok().flatten().is_some();
                if known {
                    continue;
                }
                match file(&complaints, platform, merchant, c).await {
                    Ok(_) => tracing::info!(merchant, complaint = c.complaint_id, "WeChat Pay complaint filed"),
                    Err(e) => tracing::warn!(merchant, complaint = c.complaint_id, error = %e, "complaint not filed"),
                }
            }
            offset += page.data.len() as u32;
            if page.data.is_empty() || offset >= page.total_count {
                break;
            }
        }
    }
}

/// Sets each v3 account's complaint notification URL to its callback, then lists complaints
/// now and every ten minutes.
pub fn spawn(platform: Platform, accounts: Vec<(String, Arc<WeChatPay>)>, public_url: String) {
    let accounts: Vec<_> = accounts.into_iter().filter(|(_, a)| a.config().v3.is_some()).collect();
    if accounts.is_empty() {
        return;
    }
    tokio::spawn(async move {
        if !public_url.is_empty() {
            for (merchant, account) in &accounts {
                let url = format!("{public_url}/callbacks/wechatpay/v3/{}", account.config().mch_id);
                if let Err(e) = account.set_complaint_notification_url(&url).await {
                    tracing::warn!(merchant, url, error = %e, "setting WeChat Pay's complaint notification URL failed");
                }
            }
        }
        let mut every = tokio::time::interval(LIST_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => sync(&platform, &accounts).await,
                _ = platform.shutdown.wait() => return,
            }
        }
    });
}

/// What goes back to WeChat Pay for an answer: our words to the payer, at most 200 characters.
pub fn response_text(answer: &str, refund_minor_units: i64, note: &str) -> String {
    let note = note.trim();
    let text = match answer {
        "refund" => {
            let yuan = format!("{}.{:02}", refund_minor_units / 100, refund_minor_units % 100);
            if note.is_empty() { format!("已退款 {yuan} 元。") } else { format!("已退款 {yuan} 元。{note}") }
        }
        _ if !note.is_empty() => note.to_string(),
        "reject" => "商户已核实，这笔扣款符合您签约时同意的规则。".to_string(),
        _ => "商户已处理您的投诉。".to_string(),
    };
    text.chars().take(MAX_RESPONSE_CHARS).collect()
}

/// Sends merchants' answers to complaints made at WeChat Pay back there.
pub struct AnswerBack {
    pub complaints: Complaints,
    pub accounts: Arc<Accounts>,
}

impl AnswerBack {
    async fn tell(&self, d: &Decoded) -> anyhow::Result<()> {
        let EventKind::ComplaintAnswered(a) = &d.kind else { return Ok(()) };
        let row = match self.complaints.get(&Principal::Operator, &a.complaint_id).await {
            Ok(row) => row,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if row.provider_complaint_id.is_empty() {
            return Ok(());
        }
        let Some(account) = self.accounts.of_merchant(&row.merchant_id) else {
            tracing::warn!(complaint = row.complaint_id, "its merchant no longer charges through WeChat Pay");
            return Ok(());
        };
        let id = &row.provider_complaint_id;
        let text = response_text(&a.answer, a.refund_minor_units, &a.note);
        for (what, result) in [
            ("response", account.respond_to_complaint(id, &text).await),
            ("complete", account.complete_complaint(id).await),
        ] {
            match result {
                Ok(()) => {}
                Err(e @ ProviderError::Transport(_)) => anyhow::bail!("WeChat Pay complaint {id} {what}: {e}"),
                Err(e) => tracing::warn!(complaint = id, what, error = %e, "WeChat Pay refused; passed"),
            }
        }
        Ok(())
    }
}

impl Processor for AnswerBack {
    type Prepared = ();

    fn name(&self) -> &'static str {
        "charger.provider_complaints"
    }

    fn background(&self) -> bool {
        true
    }

    fn event_types(&self) -> &'static [&'static str] {
        &["ComplaintAnswered"]
    }

    async fn prepare(&self, events: &[Decoded]) -> anyhow::Result<()> {
        for d in events {
            self.tell(d).await?;
        }
        Ok(())
    }

    async fn apply(&self, _: &mut Tx, _: &[Decoded], _: ()) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_types_map_to_kinds_and_answers_fit_wechat_pays_limit() {
        assert_eq!(kind_of("REFUND"), Kind::AmountDispute);
        assert_eq!(kind_of("SERVICE_NOT_WORK"), Kind::ServiceNotDelivered);
        assert_eq!(kind_of("OTHERS"), Kind::Other);
        assert_eq!(kind_of("SOMETHING_NEW"), Kind::Other);
        assert_eq!(response_text("refund", 1990, ""), "已退款 19.90 元。");
        assert_eq!(response_text("refund", 5, "抱歉"), "已退款 0.05 元。抱歉");
        assert_eq!(response_text("resolve", 0, "  已恢复服务 "), "已恢复服务");
        assert!(response_text("reject", 0, "").contains("符合"));
        assert_eq!(response_text("resolve", 0, &"字".repeat(500)).chars().count(), MAX_RESPONSE_CHARS);
    }
}
