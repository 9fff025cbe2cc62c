//! Reconciliation end to end, on both backends: a statement with every kind of discrepancy is
//! matched against the books; each discrepancy is typed with its deadline, the duplicate debit
//! is refunded at once (and the ledger still balances), deadlines passed open are escalated, an
//! operator resolves one with evidence; reconciling again finds nothing twice; a statement that
//! is cut short, does not add up, has an unknown column or is another merchant's is refused
//! naming the line and changes nothing; merchants see only their own.
use crate::scenario::{bill_next_period, charge_id, onboard, sign_request};
use crate::support::{Backend, TestApp, eventually};
use autodebit_domain::ChargeId;
use autodebit_domain::statement::{COLUMNS, Entry, Writer};
use autodebit_proto::admin::v1::GetClockRequest;
use autodebit_proto::charger::v1::{
    ChargeState, GetChargeRequest, GetReconciliationReportRequest, GetRefundRequest, ListDiscrepanciesRequest,
    ReconcileStatementRequest, ReconciliationReport, RefundChargeRequest, RefundState, ResolveDiscrepancyRequest,
};
use autodebit_proto::events::v1::Money;
use tonic::Code;

both!(every_kind_of_discrepancy_is_found_once_and_handled);

fn entry(out_trade_no: &str, fen: i64) -> Entry {
    Entry {
        time: "2027-01-04 10:00:00".into(),
        appid: "wxd930ea5d5a258f4f".into(),
        transaction_id: format!("4200{}", out_trade_no.len()),
        out_trade_no: out_trade_no.into(),
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
        amount: fen,
        fee: fen * 6,
        currency: "CNY".into(),
        body: "会员".into(),
        refund: None,
    }
}

fn statement(account: &str, entries: &[Entry]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), account).unwrap();
    for e in entries {
        w.entry(e).unwrap();
    }
    w.finish().unwrap()
}

fn ledger_check(url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_autodebit"))
        .args(["ledger", "check", "--database-url", url])
        .output()
        .expect("run autodebit ledger check")
}

async fn report(app: &TestApp, key: &str, merchant: &str, date: &str) -> Result<ReconciliationReport, tonic::Status> {
    let request = GetReconciliationReportRequest { merchant_id: merchant.into(), date: date.into() };
    app.reconciliation_as(key).get_reconciliation_report(request).await.map(|r| r.into_inner().report.unwrap())
}

async fn every_kind_of_discrepancy_is_found_once_and_handled(backend: Backend) {
    let app = crate::support::run_on(backend, 0, &["--test-clock"]).await;
    let ch = app.channel().await;
    let m = onboard(&ch, "91330100MA2REC0001").await;
    let other = onboard(&ch, "91330100MA2REC0002").await;

    // Four charges of the same day, and a refund of part of the fourth.
    let amounts = [1_990, 500, 800, 1_200];
    let (mut charges, mut contracts) = (Vec::new(), Vec::new());
    for (i, fen) in amounts.iter().enumerate() {
        let c = app.contracts().sign_contract(sign_request(&m, &format!("payer-r{i}"), *fen)).await.unwrap();
        let id = c.into_inner().contract.unwrap().contract_id;
        charges.push(charge_id(&id, 1));
        contracts.push(id);
    }
    // Signed together, they fall due together: billing one bills all.
    bill_next_period(&ch, &contracts[0]).await;
    app.settled().await;
    for c in &charges {
        eventually("the charge to succeed", 30, || {
            let mut client = app.charger();
            let id = c.clone();
            async move {
                let got = client.get_charge(GetChargeRequest { charge_id: id }).await.ok()?.into_inner().charge?;
                (got.state == ChargeState::Succeeded as i32).then_some(())
            }
        })
        .await;
    }
    let refund = app
        .charger_as(&m.api_key)
        .refund_charge(RefundChargeRequest {
            charge_id: charges[3].clone(),
            amount: Some(Money { minor_units: 100, currency: "CNY".into() }),
            reason: "asked".into(),
            idempotency_key: "rec-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .refund
        .unwrap();
    eventually("the refund to succeed", 30, || {
        let mut client = app.charger();
        let id = refund.refund_id.clone();
        async move {
            let r = client.get_refund(GetRefundRequest { refund_id: id }).await.ok()?.into_inner().refund?;
            (r.state == RefundState::Succeeded as i32).then_some(())
        }
    })
    .await;
    app.settled().await;
    let now = app.admin().get_clock(GetClockRequest {}).await.unwrap().into_inner().now_ms;
    let date = autodebit_charger::settlement::local_date(now).to_string();

    // The statement: the first charge as booked; the second for less than booked; the third
    // twice, the second time under its next order number; an order nobody knows; the fourth
    // charge and its refund missing.
    let no = |i: usize, attempt: u32| ChargeId::parse(&charges[i]).unwrap().out_trade_no(attempt);
    let lines = [
        entry(&no(0, 1), amounts[0]),
        entry(&no(1, 1), amounts[1] - 10),
        entry(&no(2, 1), amounts[2]),
        Entry { transaction_id: "4200dup".into(), ..entry(&no(2, 2), amounts[2]) },
        entry("nobody's order 1", 300),
        // The first charge's own order again: a duplicate, but not one to refund on its own.
        entry(&no(0, 1), amounts[0]),
    ];
    let text = statement(&m.merchant_id, &lines);
    let request = |statement: Vec<u8>| ReconcileStatementRequest {
        merchant_id: m.merchant_id.clone(),
        date: date.clone(),
        statement,
    };
    let got =
        app.reconciliation().reconcile_statement(request(text.clone())).await.unwrap().into_inner().report.unwrap();
    assert_eq!(
        (got.lines, got.matched, got.short_payments, got.status_mismatches, got.duplicates),
        (6, 2, 1, 1, 2),
        "{got:#?}"
    );
    assert_eq!((got.unknown_orders, got.amount_mismatches), (1, 1), "{got:#?}");
    let kinds: std::collections::BTreeMap<&str, &_> = got.discrepancies.iter().map(|d| (d.kind.as_str(), d)).collect();
    assert_eq!(kinds["amount_mismatch"].line, 3);
    let dup = got.discrepancies.iter().find(|d| d.kind == "duplicate" && d.out_trade_no == no(2, 2)).unwrap();
    let twice = got.discrepancies.iter().find(|d| d.kind == "duplicate" && d.out_trade_no == no(0, 1)).unwrap();
    assert_eq!((twice.line, twice.state.as_str(), twice.refund_id.as_str()), (7, "open", ""), "{twice:?}");
    let unknown = &kinds["unknown_order"].discrepancy_id;
    assert!(unknown.starts_with("dc_") && !unknown.contains(' ') && !unknown.contains('\''), "{unknown}");
    assert_eq!((kinds["amount_mismatch"].statement_amount, kinds["amount_mismatch"].platform_amount), (490, 500));
    assert_eq!(dup.line, 5);
    assert_eq!(dup.deadline_ms, dup.found_at_ms, "a duplicate is handled at once");
    assert_eq!(kinds["short_payment"].charge_id, charges[3]);
    assert_eq!((kinds["short_payment"].line, kinds["short_payment"].evidence.as_str()), (0, "bank_statement"));
    assert_eq!(kinds["status_mismatch"].out_trade_no, refund.refund_id, "the refund the statement lacks");
    assert_eq!(kinds["unknown_order"].evidence, "merchant_order_log");
    let day_ms = 86_400_000;
    assert!(kinds["short_payment"].deadline_ms >= now + 3 * day_ms - day_ms, "three working days");
    assert!(kinds["unknown_order"].deadline_ms > now && kinds["unknown_order"].deadline_ms <= now + 5 * day_ms);

    // Again: the same report, nothing found twice.
    let again =
        app.reconciliation().reconcile_statement(request(text.clone())).await.unwrap().into_inner().report.unwrap();
    assert_eq!(again.discrepancies.len(), 6);
    let ids = |r: &ReconciliationReport| r.discrepancies.iter().map(|d| d.discrepancy_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&got));

    // The command line says the same, from a file.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autodebit"))
        .args(["reconcile", "--date", &date, "--merchant", &m.merchant_id, "--statement"])
        .arg(file.path())
        .args(["--key", app.operator_key(), "--addr", &app.grpc.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let printed = &printed["report"];
    assert_eq!((printed["matched"].as_str(), printed["duplicates"].as_str()), (Some("2"), Some("2")), "{printed}");
    assert_eq!(printed["discrepancies"].as_array().map(Vec::len), Some(6));

    // The duplicate debit is paid back, as its own refund, and then resolved; the charge's own
    // order twice is left to an operator. The charge can still be refunded whole.
    let settled = eventually("the duplicate refunded", 30, || {
        let app = &app;
        let (key, date) = (m.api_key.clone(), date.clone());
        async move { report(app, &key, "", &date).await.ok().filter(|r| r.duplicates_refunded == 1) }
    })
    .await;
    let dup = settled.discrepancies.iter().find(|d| d.discrepancy_id == dup.discrepancy_id).unwrap();
    assert_eq!((dup.state.as_str(), dup.resolution.as_str()), ("resolved", "refunded"));
    let twice = settled.discrepancies.iter().find(|d| d.discrepancy_id == twice.discrepancy_id).unwrap();
    assert_eq!((twice.state.as_str(), twice.refund_id.as_str()), ("open", ""), "{twice:?}");
    let duplicate_refund = dup.refund_id.clone();
    eventually("the duplicate's refund to succeed", 30, || {
        let mut client = app.charger();
        let id = duplicate_refund.clone();
        async move {
            let r = client.get_refund(GetRefundRequest { refund_id: id }).await.ok()?.into_inner().refund?;
            (r.state == RefundState::Succeeded as i32).then_some(())
        }
    })
    .await;
    app.charger()
        .refund_charge(RefundChargeRequest {
            charge_id: charges[2].clone(),
            amount: Some(Money { minor_units: amounts[2], currency: "CNY".into() }),
            reason: "whole".into(),
            idempotency_key: "rec-2".into(),
        })
        .await
        .unwrap();
    app.settled().await;
    let out = ledger_check(app.database());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Refused statements change nothing, and say which line.
    let before = report(&app, &m.api_key, "", &date).await.unwrap();
    let text_str = String::from_utf8(text.clone()).unwrap();
    let cut: String = text_str.lines().take(4).map(|l| format!("{l}\n")).collect();
    let summed = text_str.replace("`6,", "`7,");
    let renamed = text_str.replacen(COLUMNS[26], "优惠标记", 1);
    for (bad, line, what) in [
        (cut, "line 4", "cut short"),
        (summed, "line 9", "总交易单数 says 7"),
        (renamed, "line 1", "unknown column"),
        (String::from_utf8(statement(&other.merchant_id, &lines)).unwrap(), "line 2", "another merchant"),
    ] {
        let err = app.reconciliation().reconcile_statement(request(bad.into_bytes())).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().starts_with("statement: "), "{}", err.message());
        assert!(err.message().contains(line) && err.message().contains(what), "{}", err.message());
    }
    let after = report(&app, &m.api_key, "", &date).await.unwrap();
    assert_eq!(after, before, "a refused statement changes nothing");

    // Merchants see their own; the operator acts.
    let theirs = report(&app, &other.api_key, "", &date).await.unwrap_err();
    assert_eq!(theirs.code(), Code::NotFound);
    let err = report(&app, &other.api_key, &m.merchant_id, &date).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let none = app
        .reconciliation_as(&other.api_key)
        .list_discrepancies(ListDiscrepanciesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(none.discrepancies.is_empty());
    let err = app.reconciliation_as(&m.api_key).reconcile_statement(request(text.clone())).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Past their deadlines, the open ones are escalated; the operator resolves one with evidence.
    app.advance(6).await;
    let escalated = eventually("the open discrepancies escalated", 30, || {
        let mut c = app.reconciliation_as(&m.api_key);
        async move {
            let list = c
                .list_discrepancies(ListDiscrepanciesRequest { state: "escalated".into(), ..Default::default() })
                .await
                .ok()?
                .into_inner()
                .discrepancies;
            (list.len() == 5).then_some(list)
        }
    })
    .await;
    let target = escalated.iter().find(|d| d.kind == "unknown_order").unwrap().discrepancy_id.clone();
    let resolve = |note: &str| ResolveDiscrepancyRequest { discrepancy_id: target.clone(), note: note.into() };
    let err = app.reconciliation().resolve_discrepancy(resolve("")).await.unwrap_err();
    assert!(err.message().starts_with("note"), "{}", err.message());
    let err = app.reconciliation_as(&m.api_key).resolve_discrepancy(resolve("mine")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let done = app
        .reconciliation()
        .resolve_discrepancy(resolve("a test order of the merchant's, per its order log"))
        .await
        .unwrap()
        .into_inner()
        .discrepancy
        .unwrap();
    assert_eq!((done.state.as_str(), done.resolution.as_str()), ("resolved", "evidence"));
    let err = app.reconciliation().resolve_discrepancy(resolve("again")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn each_day_is_reconciled_once_its_statement_is_ready() {
    let app = crate::support::run_on(Backend::Sqlite, 0, &["--test-clock"]).await;
    let ch = app.channel().await;
    let m = onboard(&ch, "91330100MA2REC0003").await;
    let c = app.contracts().sign_contract(sign_request(&m, "payer-daily", 1_990)).await.unwrap().into_inner();
    let contract = c.contract.unwrap().contract_id;
    bill_next_period(&ch, &contract).await;
    app.settled().await;
    let id = charge_id(&contract, 1);
    eventually("the charge to succeed", 30, || {
        let mut client = app.charger();
        let id = id.clone();
        async move {
            let got = client.get_charge(GetChargeRequest { charge_id: id }).await.ok()?.into_inner().charge?;
            (got.state == ChargeState::Succeeded as i32).then_some(())
        }
    })
    .await;
    let now = app.admin().get_clock(GetClockRequest {}).await.unwrap().into_inner().now_ms;
    let date = autodebit_charger::settlement::local_date(now).to_string();
    // Not before the statement is made (10:00 the next day, Beijing).
    assert_eq!(report(&app, &m.api_key, "", &date).await.unwrap_err().code(), Code::NotFound);
    app.advance(2).await;
    let got = eventually("the day reconciled on its own", 30, || {
        let app = &app;
        let (key, date) = (m.api_key.clone(), date.clone());
        async move { report(app, &key, "", &date).await.ok() }
    })
    .await;
    assert_eq!((got.source.as_str(), got.lines, got.matched), ("simulator", 1, 1), "{got:#?}");
    assert!(got.discrepancies.is_empty());
}
