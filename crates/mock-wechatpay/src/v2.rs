//! The papay v2 endpoints: flat XML, signed MD5 or HMAC-SHA256 with the merchant's APIv2 key —
//! deductions (`pappayapply`), order and contract queries, contract deletion and the signing
//! entries — and the signed v2 notices the mock posts (signing, deduction results).
use crate::state::{Book, Contract, Mock, Order, beijing_time, now_secs, roll};
use autodebit_provider::wechatpay::v2::{self, Params, SignType};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
impl Mock {
    /// A signed answer in the sign type of the request.
    fn answer(&self, mut p: Params, sign_type: SignType) -> String {
        p.insert("appid".into(), self.config.appid.clone());
        p.insert("mch_id".into(), self.config.mch_id.clone());
        p.insert("nonce_str".into(), format!("{:016x}", roll(self.config.seed, &format!("{p:?}"))));
        self.sign(&mut p, sign_type);
        v2::to_xml(&p)
    }

    /// Signs an answer or a notice as WeChat Pay does: in `sign_type`, without naming it.
    fn sign(&self, p: &mut Params, sign_type: SignType) {
        v2::sign_answer(p, &self.config.api_key, sign_type);
        if self.options.tamper_signatures
            && let Some(sign) = p.get_mut("sign")
        {
            // Flip the first hex digit: the same length, a different value.
            let flipped = if sign.starts_with('0') { "1" } else { "0" };
            sign.replace_range(0..1, flipped);
        }
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
        self.accept_params(v2::from_xml(body).map_err(|e| e.to_string())?, required)
    }

    fn accept_params(&self, p: Params, required: &[&'static str]) -> Result<(Params, SignType), String> {
        let sign_type = SignType::of(&p).map_err(|e| e.to_string())?;
        v2::verify(&p, &self.config.api_key, sign_type).map_err(|e| format!("SIGNERROR: {e}"))?;
        v2::require(&p, required).map_err(|e| e.to_string())?;
        if p.get("mch_id") != Some(&self.config.mch_id) || p.get("appid") != Some(&self.config.appid) {
            return Err("appid and mch_id do not match".into());
        }
        Ok((p, sign_type))
    }

    /// The WeChat Pay id of a contract signed now (the same template and code: the same contract).
    fn sign_contract(&self, p: &Params) -> String {
        let (plan_id, code) = (p["plan_id"].clone(), p["contract_code"].clone());
        let contract_id = format!("2{:017}", roll(self.config.seed, &format!("{plan_id}/{code}")) % 10u64.pow(17));
        let Ok(mut book) = self.book.lock() else { return contract_id };
        book.contracts.insert(
            contract_id.clone(),
            Contract {
                plan_id: plan_id.clone(),
                contract_code: code.clone(),
                display_account: p["contract_display_account"].clone(),
                request_serial: p["request_serial"].clone(),
                state: "0",
                terminated_time: String::new(),
                termination_remark: String::new(),
            },
        );
        drop(book);
        let mut callback: Params = [
            ("return_code", "SUCCESS"),
            ("result_code", "SUCCESS"),
            ("mch_id", self.config.mch_id.as_str()),
            ("contract_code", code.as_str()),
            ("plan_id", plan_id.as_str()),
            ("openid", "oMockPayer0000000000000000000"),
            ("change_type", "ADD"),
            ("contract_id", contract_id.as_str()),
            ("request_serial", p["request_serial"].as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        callback.insert("operate_time".into(), beijing_time(now_secs()));
        self.sign(&mut callback, SignType::Md5);
        self.post_callback(p["notify_url"].clone(), v2::to_xml(&callback));
        contract_id
    }

    /// Decides every accepted order whose time has come, and posts each one's result notice.
    pub(crate) fn settle_due(&self) {
        let now = std::time::Instant::now();
        let decided: Vec<(String, Order)> = match self.book.lock() {
            Ok(mut book) => {
                book.orders.iter_mut().filter_map(|(no, o)| o.settle(now).then(|| (no.clone(), o.clone()))).collect()
            }
            Err(_) => return,
        };
        for (out_trade_no, order) in decided {
            self.deduction_callback(&out_trade_no, &order);
        }
    }

    /// Posts the deduction-result callback of a decided order.
    pub(crate) fn deduction_callback(&self, out_trade_no: &str, order: &Order) {
        let mut p = Params::new();
        p.insert("return_code".into(), "SUCCESS".into());
        p.insert("appid".into(), self.config.appid.clone());
        p.insert("mch_id".into(), self.config.mch_id.clone());
        p.insert("nonce_str".into(), format!("{:016x}", roll(self.config.seed ^ 7, out_trade_no)));
        p.insert("out_trade_no".into(), out_trade_no.into());
        p.insert("contract_id".into(), order.contract_id.clone());
        p.insert("total_fee".into(), order.total_fee.to_string());
        p.insert("fee_type".into(), "CNY".into());
        p.insert("trade_type".into(), "PAP".into());
        p.insert("bank_type".into(), "CFT".into());
        p.insert("trade_state".into(), order.trade_state.into());
        if order.outcome == "SUCCESS" {
            p.insert("result_code".into(), "SUCCESS".into());
            p.insert("transaction_id".into(), order.transaction_id.clone());
            p.insert("time_end".into(), beijing_time(now_secs()));
        } else {
            p.insert("result_code".into(), "FAIL".into());
            p.insert("err_code".into(), order.err_code.into());
            p.insert("err_code_des".into(), order.err_code.into());
        }
        self.sign(&mut p, order.sign_type);
        self.post_callback(order.notify_url.clone(), v2::to_xml(&p));
    }
}

/// An XML body, typed as WeChat Pay types it.
pub(crate) struct Xml(String);

impl IntoResponse for Xml {
    fn into_response(self) -> Response {
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

pub(crate) async fn pappayapply(State(mock): State<Mock>, body: String) -> Xml {
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
    if total_fee <= 0 {
        return mock.refuse("total_fee must be positive".into());
    }
    let out_trade_no = p["out_trade_no"].clone();
    let contract_id = p["contract_id"].clone();
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
    match book.contracts.get(&contract_id) {
        Some(c) if c.state != "0" => {
            drop(book);
            return mock.answer(result("FAIL", Some(("CONTRACT_NOT_EXIST", "签约协议不存在"))), sign_type);
        }
        Some(_) => {}
        None => {
            // Not seen before: taken as signed, as the mock has always taken it.
            book.contracts.insert(
                contract_id.clone(),
                Contract {
                    plan_id: String::new(),
                    contract_code: String::new(),
                    display_account: String::new(),
                    request_serial: String::new(),
                    state: "0",
                    terminated_time: String::new(),
                    termination_remark: String::new(),
                },
            );
        }
    }
    let r = roll(mock.config.seed, &out_trade_no) % 10_000;
    let notenough = u64::from(mock.config.notenough_basis_points);
    let systemerror = notenough + u64::from(mock.config.systemerror_basis_points);
    let userpaying = systemerror + u64::from(mock.options.userpaying_basis_points);
    // Accepted, then decided: the payer's funds, or an answer that hides whether it was taken.
    let (state, outcome, err_code, answer) = if r < notenough {
        ("ACCEPT", "PAY_FAIL", "NOTENOUGH", result("SUCCESS", None))
    } else if r < systemerror {
        let taken = roll(mock.config.seed ^ 1, &out_trade_no).is_multiple_of(2);
        let (outcome, err_code) = if taken { ("SUCCESS", "") } else { ("PAY_FAIL", "SYSTEMERROR") };
        ("ACCEPT", outcome, err_code, result("FAIL", Some(("SYSTEMERROR", "系统超时"))))
    } else if r < userpaying {
        ("USERPAYING", "SUCCESS", "", result("FAIL", Some(("USERPAYING", "用户支付中"))))
    } else {
        ("ACCEPT", "SUCCESS", "", result("SUCCESS", None))
    };
    let order = Order {
        contract_id,
        total_fee,
        trade_state: state,
        outcome,
        decided_at: std::time::Instant::now() + mock.options.deduct_after,
        err_code,
        transaction_id: if outcome == "SUCCESS" {
            format!("4200{:016}", roll(mock.config.seed, &out_trade_no) % 10u64.pow(16))
        } else {
            String::new()
        },
        applications: 1,
        notify_url: p["notify_url"].clone(),
        sign_type,
        refunded_fen: 0,
        applied_secs: now_secs(),
        profit_sharing: p.get("profit_sharing").map(String::as_str) == Some("Y"),
        shared_fen: 0,
    };
    book.orders.insert(out_trade_no, order);
    drop(book);
    let later = mock.clone();
    tokio::spawn(async move {
        tokio::time::sleep(later.options.deduct_after).await;
        later.settle_due();
    });
    mock.answer(answer, sign_type)
}

/// `POST /pay/downloadbill`: the statement of a day (Beijing time) from what the mock debited
/// and paid back that day, in WeChat Pay's format — raw text, or gzip for `tar_type=GZIP`;
/// refusals are XML, unsigned: `No Bill Exist` (20002) for a day with nothing on it,
/// `invalid bill_date` (20001), `invalid bill_type`.
pub(crate) async fn downloadbill(State(mock): State<Mock>, body: String) -> Response {
    let fail = |msg: &str, code: &str| {
        let p: Params = [("return_code", "FAIL"), ("return_msg", msg), ("error_code", code)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Xml(v2::to_xml(&p)).into_response()
    };
    let p = match mock.accept(&body, &["bill_date", "bill_type"]) {
        Ok((p, _)) => p,
        Err(e) => return Xml(mock.refuse(e)).into_response(),
    };
    let date = p["bill_date"].clone();
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return fail("invalid bill_date", "20001");
    }
    let (trades, refunds) = match p["bill_type"].as_str() {
        "ALL" => (true, true),
        "SUCCESS" => (true, false),
        "REFUND" => (false, true),
        _ => return fail("invalid bill_type", "20003"),
    };
    mock.settle_due();
    let Ok(book) = mock.book.lock() else { return fail("SYSTEMERROR", "20007") };
    let on_day = |secs: i64| beijing_time(secs).starts_with(&date);
    let dashed = |secs: i64| {
        let t = beijing_time(secs);
        format!("{}-{}-{} {}:{}:{}", &t[0..4], &t[4..6], &t[6..8], &t[8..10], &t[10..12], &t[12..14])
    };
    let mut entries: Vec<(i64, autodebit_domain::statement::Entry)> = Vec::new();
    let entry = |no: &str, o: &Order| autodebit_domain::statement::Entry {
        appid: mock.config.appid.clone(),
        transaction_id: o.transaction_id.clone(),
        out_trade_no: no.to_string(),
        openid: format!("o{}", &o.contract_id),
        amount: o.total_fee,
        fee: o.total_fee * 6,
        currency: "CNY".into(),
        body: "papay".into(),
        ..Default::default()
    };
    if trades {
        for (no, o) in book.orders.iter().filter(|(_, o)| o.trade_state == "SUCCESS" && on_day(o.applied_secs)) {
            entries.push((
                o.applied_secs,
                autodebit_domain::statement::Entry { time: dashed(o.applied_secs), ..entry(no, o) },
            ));
        }
    }
    if refunds {
        for (out_refund_no, r) in book.refunds.iter().filter(|(_, r)| on_day(r.at_secs)) {
            let Some(o) = book.orders.get(&r.out_trade_no) else { continue };
            entries.push((
                r.at_secs,
                autodebit_domain::statement::Entry {
                    time: dashed(r.at_secs),
                    refund: Some((r.refund_id.clone(), out_refund_no.clone(), r.amount)),
                    fee: -(r.amount * 6),
                    ..entry(&r.out_trade_no, o)
                },
            ));
        }
    }
    drop(book);
    if entries.is_empty() {
        return fail("No Bill Exist", "20002");
    }
    entries.sort_by(|a, b| (a.0, &a.1.out_trade_no).cmp(&(b.0, &b.1.out_trade_no)));
    let write = || -> std::io::Result<Vec<u8>> {
        let mut w = autodebit_domain::statement::Writer::new(Vec::new(), &mock.config.mch_id)?;
        for (_, e) in &entries {
            w.entry(e)?;
        }
        w.finish()
    };
    let Ok(text) = write() else { return fail("SYSTEMERROR", "20007") };
    if p.get("tar_type").map(String::as_str) == Some("GZIP") {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let Ok(bytes) = gz.write_all(&text).and_then(|_| gz.finish()) else { return fail("SYSTEMERROR", "20007") };
        return ([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response();
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain;charset=utf-8")], text).into_response()
}

pub(crate) async fn orderquery(State(mock): State<Mock>, body: String) -> Xml {
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
    mock.settle_due();
    let (found, decided) = {
        let Ok(mut book) = mock.book.lock() else { return mock.refuse("mock state poisoned".into()) };
        let found = book.orders.iter_mut().find(|(no, o)| {
            Some(*no) == by_number || (by_transaction.is_some() && Some(&o.transaction_id) == by_transaction)
        });
        match found {
            None => (None, None),
            Some((no, order)) => {
                let seen = (no.clone(), order.clone());
                // The payer finished paying: the next look sees it decided.
                let decided = if order.trade_state == "USERPAYING" {
                    order.trade_state = order.outcome;
                    Some((no.clone(), order.clone()))
                } else {
                    None
                };
                (Some(seen), decided)
            }
        }
    };
    if let Some((no, order)) = decided {
        mock.deduction_callback(&no, &order);
    }
    let Some((out_trade_no, order)) = found else {
        return mock.answer(result("FAIL", Some(("ORDERNOTEXIST", "此交易订单号不存在"))), sign_type);
    };
    let mut answer = result("SUCCESS", None);
    answer.insert("out_trade_no".into(), out_trade_no);
    let state = if order.trade_state == "SUCCESS" && order.refunded_fen > 0 { "REFUND" } else { order.trade_state };
    answer.insert("trade_state".into(), state.into());
    answer.insert("trade_type".into(), "PAP".into());
    answer.insert("total_fee".into(), order.total_fee.to_string());
    answer.insert("contract_id".into(), order.contract_id);
    answer.insert("transaction_id".into(), order.transaction_id);
    if order.trade_state == "PAY_FAIL" {
        answer.insert("err_code".into(), order.err_code.into());
        answer.insert("trade_state_desc".into(), format!("支付失败: {}", order.err_code));
    }
    mock.answer(answer, sign_type)
}

/// The contract a contract call names, by `contract_id` or by `plan_id` + `contract_code`.
fn named_contract(book: &Book, p: &Params) -> Option<String> {
    if let Some(id) = p.get("contract_id").filter(|v| !v.is_empty()) {
        return book.contracts.contains_key(id).then(|| id.clone());
    }
    let (plan, code) = (p.get("plan_id")?, p.get("contract_code")?);
    book.contracts
        .iter()
        .filter(|(_, c)| &c.plan_id == plan && &c.contract_code == code)
        .min_by_key(|(_, c)| c.state)
        .map(|(id, _)| id.clone())
}

fn contract_request(mock: &Mock, body: &str) -> Result<(Params, SignType), String> {
    let (p, sign_type) = mock.accept(body, &["appid", "mch_id", "sign", "version"])?;
    let by_id = p.get("contract_id").is_some_and(|v| !v.is_empty());
    let by_code = ["plan_id", "contract_code"].iter().all(|k| p.get(*k).is_some_and(|v| !v.is_empty()));
    if !by_id && !by_code {
        return Err("missing parameter contract_id, or plan_id and contract_code".into());
    }
    Ok((p, sign_type))
}

pub(crate) async fn querycontract(State(mock): State<Mock>, body: String) -> Xml {
    let (p, sign_type) = match contract_request(&mock, &body) {
        Ok(ok) => ok,
        Err(e) => return Xml(mock.refuse(e)),
    };
    let found = {
        let Ok(book) = mock.book.lock() else { return Xml(mock.refuse("mock state poisoned".into())) };
        named_contract(&book, &p).and_then(|id| book.contracts.get(&id).map(|c| (id, c.clone())))
    };
    let Some((id, c)) = found else {
        return Xml(mock.answer(result("FAIL", Some(("CONTRACT_NOT_EXIST", "签约协议不存在"))), sign_type));
    };
    let mut answer = result("SUCCESS", None);
    for (k, v) in [
        ("contract_id", id),
        ("plan_id", c.plan_id),
        ("contract_code", c.contract_code),
        ("contract_display_account", c.display_account),
        ("request_serial", c.request_serial),
        ("openid", "oMockPayer0000000000000000000".into()),
        ("contract_state", c.state.into()),
        ("contract_terminated_time", c.terminated_time.clone()),
        ("contract_termination_remark", c.termination_remark),
        ("contract_termination_mode", if c.state == "1" { "3".into() } else { String::new() }),
    ] {
        answer.insert(k.into(), v);
    }
    Xml(mock.answer(answer, sign_type))
}

pub(crate) async fn deletecontract(State(mock): State<Mock>, body: String) -> Xml {
    let (p, sign_type) = match contract_request(&mock, &body) {
        Ok(ok) => ok,
        Err(e) => return Xml(mock.refuse(e)),
    };
    if p.get("contract_termination_remark").is_none_or(|r| r.is_empty()) {
        return Xml(mock.refuse("missing parameter contract_termination_remark".into()));
    }
    let deleted = {
        let Ok(mut book) = mock.book.lock() else { return Xml(mock.refuse("mock state poisoned".into())) };
        match named_contract(&book, &p) {
            Some(id) => match book.contracts.get_mut(&id) {
                Some(c) if c.state == "0" => {
                    c.state = "1";
                    c.terminated_time = beijing_time(now_secs());
                    c.termination_remark = p["contract_termination_remark"].clone();
                    book.notices.remove(&id);
                    Some(id)
                }
                _ => None,
            },
            None => None,
        }
    };
    let Some(id) = deleted else {
        return Xml(mock.answer(result("FAIL", Some(("CONTRACT_NOT_EXIST", "签约协议不存在"))), sign_type));
    };
    let mut answer = result("SUCCESS", None);
    answer.insert("contract_id".into(), id);
    Xml(mock.answer(answer, sign_type))
}

const SIGNING_REQUIRED: &[&str] = &[
    "appid",
    "mch_id",
    "plan_id",
    "contract_code",
    "request_serial",
    "contract_display_account",
    "notify_url",
    "version",
    "timestamp",
    "sign",
];

/// `GET /papay/entrustweb`: MD5 only; the payer signs at once, and sees a page that says so.
pub(crate) async fn entrustweb(State(mock): State<Mock>, Query(query): Query<HashMap<String, String>>) -> Response {
    let p: Params = query.into_iter().collect();
    if p.get("sign_type").is_some_and(|t| !t.is_empty() && t != "MD5") {
        return (StatusCode::BAD_REQUEST, "entrustweb accepts MD5 signatures only").into_response();
    }
    match mock.accept_params(p, SIGNING_REQUIRED) {
        Ok((p, _)) => {
            let id = mock.sign_contract(&p);
            (StatusCode::OK, format!("signed: contract_id={id}")).into_response()
        }
        Err(e) => {
            if let Ok(mut book) = mock.book.lock() {
                book.refused += 1;
            }
            (StatusCode::BAD_REQUEST, e).into_response()
        }
    }
}

/// `GET /papay/h5entrustweb`: answers XML with the `redirect_url` the payer opens.
pub(crate) async fn h5entrustweb(
    State(mock): State<Mock>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Xml {
    let p: Params = query.into_iter().collect();
    let mut required = SIGNING_REQUIRED.to_vec();
    required.push("clientip");
    let (p, sign_type) = match mock.accept_params(p, &required) {
        Ok(ok) => ok,
        Err(e) => return Xml(mock.refuse(e)),
    };
    let id = mock.sign_contract(&p);
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let mut answer = result("SUCCESS", None);
    answer.insert("redirect_url".into(), format!("http://{host}/mock/signed?contract_id={id}"));
    Xml(mock.answer(answer, sign_type))
}

/// `POST /papay/preentrustweb`: answers the `pre_entrustweb_id` an APP hands to WeChat.
pub(crate) async fn preentrustweb(State(mock): State<Mock>, body: String) -> Xml {
    let (p, sign_type) = match mock.accept(&body, SIGNING_REQUIRED) {
        Ok(ok) => ok,
        Err(e) => return Xml(mock.refuse(e)),
    };
    let id = mock.sign_contract(&p);
    let pre = format!("mockpre{:016x}", roll(mock.config.seed, &id));
    let mut answer = result("SUCCESS", None);
    answer.insert("pre_entrustweb_id".into(), pre.clone());
    answer.insert("miniprogram_username".into(), "gh_mock0000000".into());
    answer.insert("miniprogram_path".into(), format!("pages/index/index?sign_scene=app&pre_entrustweb_id={pre}"));
    Xml(mock.answer(answer, sign_type))
}

pub(crate) async fn signed(Query(query): Query<HashMap<String, String>>) -> String {
    format!("signed: contract_id={}", query.get("contract_id").map_or("", String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MockConfig, MockOptions, router};
    use axum::Router;
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

    fn query(out_trade_no: &str, sign_type: SignType) -> String {
        let c = config();
        let mut q: Params = [
            ("appid", c.appid.as_str()),
            ("mch_id", c.mch_id.as_str()),
            ("nonce_str", "x"),
            ("out_trade_no", out_trade_no),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        v2::sign_in_place(&mut q, &c.api_key, sign_type);
        v2::to_xml(&q)
    }

    #[tokio::test]
    async fn accepts_then_deducts_once_per_out_trade_no_and_answers_signed() {
        let c = config();
        let r = router(c.clone());
        let first = call(&r, "/pay/pappayapply", apply("ch1_1", SignType::HmacSha256, &c.api_key)).await;
        assert_eq!((first["return_code"].as_str(), first["result_code"].as_str()), ("SUCCESS", "SUCCESS"));
        assert!(!first.contains_key("sign_type"), "answers do not name their sign type");
        assert_eq!(v2::verify(&first, &c.api_key, SignType::HmacSha256), Ok(()), "signed as the request was");
        let again = call(&r, "/pay/pappayapply", apply("ch1_1", SignType::Md5, &c.api_key)).await;
        assert_eq!(again["err_code"], "OUT_TRADE_NO_USED");

        let pending = call(&r, "/pay/paporderquery", query("ch1_1", SignType::HmacSha256)).await;
        assert_eq!(pending["trade_state"], "ACCEPT");
        assert_eq!(v2::verify(&pending, &c.api_key, SignType::HmacSha256), Ok(()));
        tokio::time::sleep(MockOptions::default().deduct_after).await;
        let found = call(&r, "/pay/paporderquery", query("ch1_1", SignType::Md5)).await;
        assert_eq!((found["trade_state"].as_str(), found["total_fee"].as_str()), ("SUCCESS", "1990"));
        assert!(found["transaction_id"].starts_with("4200"));
        assert_eq!(v2::verify(&found, &c.api_key, SignType::Md5), Ok(()));
        let paid = call(&r, "/pay/pappayapply", apply("ch1_1", SignType::Md5, &c.api_key)).await;
        assert_eq!(paid["err_code"], "ORDERPAID");
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
        let mut answers = std::collections::BTreeSet::new();
        for i in 0..40 {
            let a = call(&r, "/pay/pappayapply", apply(&format!("ch3_{i}"), SignType::Md5, &c.api_key)).await;
            answers.insert((a["result_code"].clone(), a.get("err_code").cloned().unwrap_or_default()));
        }
        let accepted = ("SUCCESS".to_string(), String::new());
        let systemerror = ("FAIL".to_string(), "SYSTEMERROR".to_string());
        assert_eq!(answers.into_iter().collect::<Vec<_>>(), vec![systemerror, accepted]);
        // Every order short of funds fails once decided, naming why.
        tokio::time::sleep(MockOptions::default().deduct_after).await;
        let mut failed = std::collections::BTreeSet::new();
        for i in 0..40 {
            let q = call(&r, "/pay/paporderquery", query(&format!("ch3_{i}"), SignType::Md5)).await;
            if q["trade_state"] == "PAY_FAIL" {
                failed.insert(q["err_code"].clone());
            }
        }
        assert_eq!(failed.into_iter().collect::<Vec<_>>(), vec!["NOTENOUGH".to_string(), "SYSTEMERROR".to_string()]);
    }
}
