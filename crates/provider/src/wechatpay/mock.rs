//! A mock WeChat Pay for tests and local runs: it speaks the papay v2 deduction endpoints
//! (`/pay/pappayapply`, `/pay/paporderquery`), checks every request's signature with the code
//! of `v2` (verified against WeChat Pay's own worked example), and answers as WeChat Pay does —
//! including `SYSTEMERROR` (whose order may or may not have been taken: the caller must
//! query, never resend), `NOTENOUGH` and `ORDERPAID` for an `out_trade_no` used before. Each
//! `out_trade_no` is debited at most once; `GET /mock/orders` reports what it holds.
use super::v2::{self, Params, SignType};
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct MockConfig {
    pub appid: String,
    pub mch_id: String,
    /// The merchant's APIv2 key, shared with the client under test.
    pub api_key: String,
    pub seed: u64,
    /// Per 10,000 deductions: declined for lack of funds.
    pub notenough_basis_points: u32,
    /// Per 10,000 deductions: answered `SYSTEMERROR`; half of those were taken all the same.
    pub systemerror_basis_points: u32,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            appid: "wxd930ea5d5a258f4f".into(),
            mch_id: "10000100".into(),
            api_key: "192006250b4c09247ec02edce69f6a2d".into(),
            seed: 1,
            notenough_basis_points: 0,
            systemerror_basis_points: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Order {
    contract_id: String,
    total_fee: i64,
    /// `SUCCESS` (debited) or `PAYERROR`.
    trade_state: &'static str,
    transaction_id: String,
    /// How many `pappayapply` calls named it.
    applications: u32,
}

#[derive(Default)]
struct Book {
    orders: HashMap<String, Order>,
    /// Requests refused for a bad signature or a missing parameter.
    refused: u64,
}

#[derive(Clone)]
struct Mock {
    config: Arc<MockConfig>,
    book: Arc<Mutex<Book>>,
}

/// The mock's routes.
pub fn router(config: MockConfig) -> Router {
    let mock = Mock { config: Arc::new(config), book: Arc::default() };
    Router::new()
        .route("/pay/pappayapply", post(pappayapply))
        .route("/pay/paporderquery", post(paporderquery))
        .route("/mock/orders", get(orders))
        .with_state(mock)
}

/// Serves the mock on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, config: MockConfig) -> std::io::Result<()> {
    axum::serve(listener, router(config)).await
}

fn roll(seed: u64, key: &str) -> u64 {
    // FNV-1a, then a mix: deterministic per seed and order number.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl Mock {
    /// A signed answer in the sign type of the request.
    fn answer(&self, mut p: Params, sign_type: SignType) -> String {
        p.insert("appid".into(), self.config.appid.clone());
        p.insert("mch_id".into(), self.config.mch_id.clone());
        p.insert("nonce_str".into(), format!("{:016x}", roll(self.config.seed, &format!("{p:?}"))));
        v2::sign_in_place(&mut p, &self.config.api_key, sign_type);
        v2::to_xml(&p)
    }

    /// `return_code` FAIL: the request itself was not acceptable (not signed in reply).
    fn refuse(&self, message: String) -> String {
        if let Ok(mut book) = self.book.lock() {
            book.refused += 1;
        }
        let p: Params = [("return_code".to_string(), "FAIL".to_string()), ("return_msg".to_string(), message)]
            .into_iter()
            .collect();
        v2::to_xml(&p)
    }

    /// The request's parameters once its XML, signature, merchant and required fields hold.
    fn accept(&self, body: &str, required: &[&'static str]) -> Result<(Params, SignType), String> {
        let p = v2::from_xml(body).map_err(|e| e.to_string())?;
        let sign_type = SignType::of(&p).map_err(|e| e.to_string())?;
        v2::verify(&p, &self.config.api_key).map_err(|e| format!("SIGNERROR: {e}"))?;
        v2::require(&p, required).map_err(|e| e.to_string())?;
        if p.get("mch_id") != Some(&self.config.mch_id) || p.get("appid") != Some(&self.config.appid) {
            return Err("appid and mch_id do not match".into());
        }
        Ok((p, sign_type))
    }
}

/// An XML body, typed as WeChat Pay types it.
struct Xml(String);

impl axum::response::IntoResponse for Xml {
    fn into_response(self) -> axum::response::Response {
        ([(axum::http::header::CONTENT_TYPE, "text/xml; charset=utf-8")], self.0).into_response()
    }
}

fn result(code: &str, err: Option<(&str, &str)>) -> Params {
    let mut p = Params::new();
    p.insert("return_code".into(), "SUCCESS".into());
    p.insert("result_code".into(), code.into());
    if let Some((err_code, des)) = err {
        p.insert("err_code".into(), err_code.into());
        p.insert("err_code_des".into(), des.into());
    }
    p
}

async fn pappayapply(State(mock): State<Mock>, body: String) -> Xml {
    Xml(apply_answer(&mock, &body))
}

fn apply_answer(mock: &Mock, body: &str) -> String {
    const REQUIRED: &[&str] = &[
        "appid",
        "mch_id",
        "nonce_str",
        "sign",
        "body",
        "out_trade_no",
        "total_fee",
        "spbill_create_ip",
        "notify_url",
        "trade_type",
        "contract_id",
    ];
    let (p, sign_type) = match mock.accept(body, REQUIRED) {
        Ok(ok) => ok,
        Err(e) => return mock.refuse(e),
    };
    if p["trade_type"] != "PAP" {
        return mock.refuse("trade_type must be PAP".into());
    }
    let Ok(total_fee) = p["total_fee"].parse::<i64>() else {
        return mock.refuse("total_fee must be an integer number of fen".into());
    };
    let out_trade_no = p["out_trade_no"].clone();
    let Ok(mut book) = mock.book.lock() else { return mock.refuse("mock state poisoned".into()) };
    if let Some(order) = book.orders.get_mut(&out_trade_no) {
        // The same number is never debited twice.
        order.applications += 1;
        let answer = if order.trade_state == "SUCCESS" {
            result("FAIL", Some(("ORDERPAID", "该订单已支付")))
        } else {
            result("FAIL", Some(("OUT_TRADE_NO_USED", "商户订单号重复")))
        };
        drop(book);
        return mock.answer(answer, sign_type);
    }
    let r = roll(mock.config.seed, &out_trade_no) % 10_000;
    let notenough = u64::from(mock.config.notenough_basis_points);
    let systemerror = notenough + u64::from(mock.config.systemerror_basis_points);
    let (debited, answer) = if r < notenough {
        (false, result("FAIL", Some(("NOTENOUGH", "用户账户余额不足"))))
    } else if r < systemerror {
        // Ambiguous: taken or not, the answer is the same.
        (roll(mock.config.seed ^ 1, &out_trade_no) % 2 == 0, result("FAIL", Some(("SYSTEMERROR", "系统超时"))))
    } else {
        (true, result("SUCCESS", None))
    };
    book.orders.insert(
        out_trade_no.clone(),
        Order {
            contract_id: p["contract_id"].clone(),
            total_fee,
            trade_state: if debited { "SUCCESS" } else { "PAYERROR" },
            transaction_id: if debited {
                format!("4200{:016}", roll(mock.config.seed, &out_trade_no) % 10u64.pow(16))
            } else {
                String::new()
            },
            applications: 1,
        },
    );
    drop(book);
    mock.answer(answer, sign_type)
}

async fn paporderquery(State(mock): State<Mock>, body: String) -> Xml {
    Xml(query_answer(&mock, &body))
}

fn query_answer(mock: &Mock, body: &str) -> String {
    let (p, sign_type) = match mock.accept(body, &["appid", "mch_id", "nonce_str", "sign"]) {
        Ok(ok) => ok,
        Err(e) => return mock.refuse(e),
    };
    let by_number = p.get("out_trade_no").filter(|v| !v.is_empty());
    let by_transaction = p.get("transaction_id").filter(|v| !v.is_empty());
    if by_number.is_none() && by_transaction.is_none() {
        return mock.refuse("missing parameter out_trade_no or transaction_id".into());
    }
    let found = {
        let Ok(book) = mock.book.lock() else { return mock.refuse("mock state poisoned".into()) };
        book.orders
            .iter()
            .find(|(no, o)| {
                Some(*no) == by_number || (by_transaction.is_some() && Some(&o.transaction_id) == by_transaction)
            })
            .map(|(no, o)| (no.clone(), o.clone()))
    };
    let Some((out_trade_no, order)) = found else {
        return mock.answer(result("FAIL", Some(("ORDERNOTEXIST", "此交易订单号不存在"))), sign_type);
    };
    let mut answer = result("SUCCESS", None);
    answer.insert("out_trade_no".into(), out_trade_no);
    answer.insert("trade_state".into(), order.trade_state.into());
    answer.insert("total_fee".into(), order.total_fee.to_string());
    answer.insert("contract_id".into(), order.contract_id);
    answer.insert("transaction_id".into(), order.transaction_id);
    mock.answer(answer, sign_type)
}

async fn orders(State(mock): State<Mock>) -> axum::Json<serde_json::Value> {
    let Ok(book) = mock.book.lock() else { return axum::Json(serde_json::json!({"error": "mock state poisoned"})) };
    let debited = book.orders.values().filter(|o| o.trade_state == "SUCCESS").count();
    let reapplied: Vec<&String> = book.orders.iter().filter(|(_, o)| o.applications > 1).map(|(no, _)| no).collect();
    axum::Json(serde_json::json!({
        "orders": book.orders.len(),
        "debited": debited,
        "debited_fen": book.orders.values().filter(|o| o.trade_state == "SUCCESS").map(|o| o.total_fee).sum::<i64>(),
        "applied_more_than_once": reapplied,
        "refused_requests": book.refused,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn config() -> MockConfig {
        MockConfig { systemerror_basis_points: 0, notenough_basis_points: 0, ..MockConfig::default() }
    }

    fn apply(out_trade_no: &str, sign_type: SignType, key: &str) -> String {
        let c = config();
        let mut p: Params = [
            ("appid", c.appid.as_str()),
            ("mch_id", c.mch_id.as_str()),
            ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
            ("body", "视频会员 11月"),
            ("out_trade_no", out_trade_no),
            ("total_fee", "1990"),
            ("spbill_create_ip", "203.0.113.9"),
            ("notify_url", "https://merchant.example/wxpay/notify"),
            ("trade_type", "PAP"),
            ("contract_id", "201710180325670965"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        v2::sign_in_place(&mut p, key, sign_type);
        v2::to_xml(&p)
    }

    async fn call(router: &Router, path: &str, body: String) -> Params {
        let req = Request::post(path).body(Body::from(body)).unwrap();
        let res = router.clone().oneshot(req).await.unwrap();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        v2::from_xml(std::str::from_utf8(&bytes).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn deducts_once_per_out_trade_no_and_answers_signed() {
        let c = config();
        let r = router(c.clone());
        let first = call(&r, "/pay/pappayapply", apply("ch1_1", SignType::HmacSha256, &c.api_key)).await;
        assert_eq!((first["return_code"].as_str(), first["result_code"].as_str()), ("SUCCESS", "SUCCESS"));
        assert_eq!(v2::verify(&first, &c.api_key), Ok(()), "answers are signed");
        assert_eq!(first["sign_type"], "HMAC-SHA256");
        let again = call(&r, "/pay/pappayapply", apply("ch1_1", SignType::Md5, &c.api_key)).await;
        assert_eq!(again["err_code"], "ORDERPAID");

        let mut q: Params =
            [("appid", c.appid.as_str()), ("mch_id", c.mch_id.as_str()), ("nonce_str", "x"), ("out_trade_no", "ch1_1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        v2::sign_in_place(&mut q, &c.api_key, SignType::Md5);
        let found = call(&r, "/pay/paporderquery", v2::to_xml(&q)).await;
        assert_eq!((found["trade_state"].as_str(), found["total_fee"].as_str()), ("SUCCESS", "1990"));
        assert!(found["transaction_id"].starts_with("4200"));
    }

    #[tokio::test]
    async fn refuses_bad_signatures_and_missing_parameters() {
        let c = config();
        let r = router(c.clone());
        let forged = call(&r, "/pay/pappayapply", apply("ch2_1", SignType::Md5, "not-the-key")).await;
        assert_eq!(forged["return_code"], "FAIL");
        assert!(forged["return_msg"].contains("SIGNERROR") && forged["return_msg"].contains("out_trade_no=ch2_1"));
        let mut p = v2::from_xml(&apply("ch2_2", SignType::Md5, &c.api_key)).unwrap();
        p.remove("contract_id");
        v2::sign_in_place(&mut p, &c.api_key, SignType::Md5);
        let missing = call(&r, "/pay/pappayapply", v2::to_xml(&p)).await;
        assert!(missing["return_msg"].contains("contract_id"), "{missing:?}");
        let garbage = call(&r, "/pay/pappayapply", "<xml><a>".into()).await;
        assert_eq!(garbage["return_code"], "FAIL");
    }

    #[tokio::test]
    async fn declines_and_ambiguous_answers_as_configured() {
        let c = MockConfig { notenough_basis_points: 5_000, systemerror_basis_points: 5_000, ..config() };
        let r = router(c.clone());
        let mut codes = std::collections::BTreeSet::new();
        for i in 0..40 {
            let a = call(&r, "/pay/pappayapply", apply(&format!("ch3_{i}"), SignType::Md5, &c.api_key)).await;
            codes.insert(a["err_code"].clone());
        }
        assert_eq!(codes.into_iter().collect::<Vec<_>>(), vec!["NOTENOUGH".to_string(), "SYSTEMERROR".to_string()]);
    }
}
