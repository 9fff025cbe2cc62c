//! What the mock holds — orders, contracts, refunds, notices and its counters — shared by the
//! v2 and v3 handlers, and the callbacks it posts to merchants.
use crate::{MockConfig, MockOptions};
use autodebit_provider::wechatpay::v2::{self, SignType};
use autodebit_provider::wechatpay::v3::MerchantSigner;
use rsa::pkcs1v15::VerifyingKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Order {
    pub(crate) contract_id: String,
    pub(crate) total_fee: i64,
    /// `ACCEPT` until `decided_at`, `USERPAYING` until the next query; then `outcome`.
    pub(crate) trade_state: &'static str,
    /// What the order comes to: `SUCCESS` (debited) or `PAY_FAIL`.
    pub(crate) outcome: &'static str,
    pub(crate) decided_at: std::time::Instant,
    /// Why it failed, for `PAY_FAIL`.
    pub(crate) err_code: &'static str,
    pub(crate) transaction_id: String,
    /// How many `pappayapply` calls named it.
    pub(crate) applications: u32,
    pub(crate) notify_url: String,
    pub(crate) sign_type: SignType,
    pub(crate) refunded_fen: i64,
    /// When it was applied for (Unix seconds): the day's statement it appears on.
    pub(crate) applied_secs: i64,
    /// Applied for with `profit_sharing=Y`: it may be shared.
    pub(crate) profit_sharing: bool,
    /// What profit-sharing orders have paid out of it.
    pub(crate) shared_fen: i64,
}

impl Order {
    /// Moves an accepted order to its outcome once its time has come; whether it moved.
    pub(crate) fn settle(&mut self, now: std::time::Instant) -> bool {
        let due = self.trade_state == "ACCEPT" && now >= self.decided_at;
        if due {
            self.trade_state = self.outcome;
        }
        due
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Contract {
    pub(crate) plan_id: String,
    pub(crate) contract_code: String,
    pub(crate) display_account: String,
    pub(crate) request_serial: String,
    /// "0" signed, "1" terminated.
    pub(crate) state: &'static str,
    pub(crate) terminated_time: String,
    pub(crate) termination_remark: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refund {
    pub(crate) refund_id: String,
    pub(crate) out_trade_no: String,
    pub(crate) amount: i64,
    /// When it was paid back (Unix seconds).
    pub(crate) at_secs: i64,
}

/// A profit-sharing order: the order it shares, WeChat Pay's id, the receivers' shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Share {
    pub(crate) transaction_id: String,
    pub(crate) order_id: String,
    /// (type, account, amount, description) of each receiver.
    pub(crate) receivers: Vec<(String, String, i64, String)>,
    pub(crate) at_secs: i64,
}

#[derive(Default)]
pub(crate) struct Book {
    /// Profit-sharing orders by `out_order_no`.
    pub(crate) shares: HashMap<String, Share>,
    pub(crate) orders: HashMap<String, Order>,
    pub(crate) contracts: HashMap<String, Contract>,
    /// The notice each contract was given in this cycle, as (amount, days).
    pub(crate) notices: HashMap<String, (i64, i64)>,
    pub(crate) refunds: HashMap<String, Refund>,
    /// Requests refused for a bad signature or a missing parameter.
    pub(crate) refused: u64,
    /// v3 requests that named no `Wechatpay-Serial`.
    pub(crate) v3_without_serial: u64,
    /// Every request to a WeChat Pay endpoint (not `/mock/…`).
    pub(crate) requests: u64,
    pub(crate) callbacks_delivered: u64,
    pub(crate) callbacks_failed: u64,
    /// Payers' complaints by `complaint_id`, and where their notices go.
    pub(crate) complaints: std::collections::BTreeMap<String, crate::complaints::Complaint>,
    pub(crate) complaint_url: Option<String>,
}

#[derive(Clone)]
pub(crate) struct Mock {
    pub(crate) config: Arc<MockConfig>,
    pub(crate) options: Arc<MockOptions>,
    pub(crate) book: Arc<Mutex<Book>>,
    /// Signs v3 answers; `None` when the configured key cannot be read (v3 calls then fail).
    pub(crate) platform: Option<Arc<MerchantSigner>>,
    pub(crate) merchant_key: Option<VerifyingKey<sha2::Sha256>>,
    pub(crate) http: reqwest::Client,
}

pub(crate) fn roll(seed: u64, key: &str) -> u64 {
    // FNV-1a, then a mix: deterministic per seed and order number.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

pub(crate) fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `yyyyMMddHHmmss` in Beijing time, as WeChat Pay writes `time_end`.
pub(crate) fn beijing_time(secs: i64) -> String {
    let secs = secs + 8 * 3600;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl Mock {
    /// A v3 notice, best effort in the background: a few attempts, until the merchant answers
    /// 2xx (WeChat Pay takes 200 or 204 as received).
    pub(crate) fn post_v3_callback(&self, url: String, headers: Vec<(&'static str, String)>, body: String) {
        let (http, book, options) = (self.http.clone(), self.book.clone(), self.options.clone());
        tokio::spawn(async move {
            for attempt in 0..options.callback_attempts.max(1) {
                if attempt > 0 {
                    tokio::time::sleep(options.callback_retry_delay).await;
                }
                let mut request = http.post(&url).header("content-type", "application/json").body(body.clone());
                for (name, value) in &headers {
                    request = request.header(*name, value);
                }
                if request.send().await.is_ok_and(|r| r.status().is_success()) {
                    if let Ok(mut book) = book.lock() {
                        book.callbacks_delivered += 1;
                    }
                    return;
                }
            }
            if let Ok(mut book) = book.lock() {
                book.callbacks_failed += 1;
            }
        });
    }

    /// Best effort, in the background: a few attempts, until the merchant acknowledges.
    pub(crate) fn post_callback(&self, url: String, xml: String) {
        if url.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
            return;
        }
        let (http, book, options) = (self.http.clone(), self.book.clone(), self.options.clone());
        tokio::spawn(async move {
            for attempt in 0..options.callback_attempts.max(1) {
                if attempt > 0 {
                    tokio::time::sleep(options.callback_retry_delay).await;
                }
                let sent = http.post(&url).header("content-type", "text/xml").body(xml.clone()).send().await;
                let acknowledged = match sent {
                    Ok(r) if r.status().is_success() => r
                        .text()
                        .await
                        .ok()
                        .and_then(|t| v2::from_xml(&t).ok())
                        .is_some_and(|p| p.get("return_code").map(|c| c.trim()) == Some("SUCCESS")),
                    _ => false,
                };
                if acknowledged {
                    if let Ok(mut book) = book.lock() {
                        book.callbacks_delivered += 1;
                    }
                    return;
                }
            }
            if let Ok(mut book) = book.lock() {
                book.callbacks_failed += 1;
            }
        });
    }
}
