//! Settlement end to end, on both backends: charges settle on the next working day at the
//! industry's fee with the merchant's profit-sharing splits; a refund after settlement is taken
//! from a later batch; the ledger balances and `autodebit ledger check` says so, and names the
//! entry once the ledger is tampered with. Merchants see only their own batches; fee rates are
//! the operator's; bad rules are refused naming the field.
use crate::scenario::{bill_next_period, charge_id, onboard, sign_request};
use crate::support::{Backend, TestApp, eventually};
use autodebit_proto::analytics::v1::{GetRevenueRequest, GetSummaryRequest};
use autodebit_proto::charger::v1::{
    ChargeState, GetChargeRequest, GetSettlementBatchRequest, GetSplitRulesRequest, ListFeeRatesRequest,
    ListMerchantReviewsRequest, ListProfitSharingOrdersRequest, ListReceiptsRequest, ListSettlementBatchesRequest,
    RefundChargeRequest, ResolveMerchantReviewRequest, SetFeeRateRequest, SetSplitRulesRequest, SettlementBatch,
};
use autodebit_proto::events::v1::{Money, SettlementItemKind, SplitRule};
use tonic::Code;

both!(charges_settle_on_the_next_working_day_and_the_ledger_balances);

fn agent(bp: u32, cap: i64) -> SplitRule {
    SplitRule { receiver: "agent".into(), basis_points: bp, fixed: 0, cap }
}

/// Moves the clock a day at a time (weekends and holidays hold settlement back) until the
/// merchant has `n` batches; the newest.
async fn batches(app: &TestApp, key: &str, n: usize) -> Vec<SettlementBatch> {
    for _ in 0..12 {
        let got = app
            .settlement_as(key)
            .list_settlement_batches(ListSettlementBatchesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .batches;
        if got.len() >= n {
            return got;
        }
        app.advance(1).await;
        app.settled().await;
        tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    }
    panic!("no {n} settlement batches after twelve days");
}

fn ledger_check(url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_autodebit"))
        .args(["ledger", "check", "--database-url", url])
        .output()
        .expect("run autodebit ledger check")
}

async fn charges_settle_on_the_next_working_day_and_the_ledger_balances(backend: Backend) {
    let app = crate::support::run_on(backend, 0, &["--test-clock"]).await;
    let ch = app.channel().await;
    let m = onboard(&ch, "91330100MA2SET0001").await;
    let other = onboard(&ch, "91330100MA2SET0002").await;

    // The operator sets the industry's fee; the merchant shares 10% of each charge, at most
    // 1.00 CNY, with its agent.
    let mut op = app.settlement();
    op.set_fee_rate(SetFeeRateRequest { industry: "membership".into(), basis_points: 80 }).await.unwrap();
    let err =
        op.set_fee_rate(SetFeeRateRequest { industry: "membership".into(), basis_points: 1_001 }).await.unwrap_err();
    assert!(err.message().starts_with("basis_points"), "{}", err.message());
    let err = app
        .settlement_as(&m.api_key)
        .set_fee_rate(SetFeeRateRequest { industry: "membership".into(), basis_points: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "fees are the operator's");
    let mut mine = app.settlement_as(&m.api_key);
    let err = mine
        .set_split_rules(SetSplitRulesRequest {
            rules: vec![agent(6_000, 0), SplitRule { receiver: "b".into(), basis_points: 5_000, fixed: 0, cap: 0 }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("rules[1].basis_points"), "{}", err.message());
    mine.set_split_rules(SetSplitRulesRequest { rules: vec![agent(1_000, 100)] }).await.unwrap();
    eventually("the rules taken in", 30, || {
        let mut c = app.settlement_as(&m.api_key);
        async move {
            let r = c.get_split_rules(GetSplitRulesRequest::default()).await.ok()?.into_inner().rules;
            (r == vec![agent(1_000, 100)]).then_some(())
        }
    })
    .await;
    eventually("the fee rate taken in", 30, || {
        let mut c = app.settlement_as(&m.api_key);
        async move {
            let rates = c.list_fee_rates(ListFeeRatesRequest {}).await.ok()?.into_inner().rates;
            rates.iter().any(|r| r.industry == "membership" && r.basis_points == 80 && r.set).then_some(())
        }
    })
    .await;

    // Two contracts of 19.90 and 5.00 CNY, billed once each.
    let mut contracts = Vec::new();
    for (payer, fen) in [("payer-s1", 1_990), ("payer-s2", 500)] {
        let c = app.contracts().sign_contract(sign_request(&m, payer, fen)).await.unwrap().into_inner();
        contracts.push(c.contract.unwrap().contract_id);
    }
    // Signed together, they fall due together: billing one bills both.
    bill_next_period(&ch, &contracts[0]).await;
    app.settled().await;
    for c in &contracts {
        eventually("the charge to succeed", 30, || {
            let mut client = app.charger();
            let id = charge_id(c, 1);
            async move {
                let got = client.get_charge(GetChargeRequest { charge_id: id }).await.ok()?.into_inner().charge?;
                (got.state == ChargeState::Succeeded as i32).then_some(())
            }
        })
        .await;
    }

    // The next working day: one batch of both charges.
    let first = batches(&app, &m.api_key, 1).await;
    assert_eq!(first.len(), 1, "{first:?}");
    let b = &first[0];
    // Fees 0.8%: 15.92 → 16 fen and 4 fen; the agent: 10% capped at 100 fen, and 50 fen.
    assert_eq!((b.gross, b.refunds, b.fees, b.splits), (2_490, 0, 16 + 4, 100 + 50), "{b:?}");
    assert_eq!(b.net, 2_490 - 20 - 150);
    assert_eq!((b.currency.as_str(), b.fee_basis_points, b.lines), ("CNY", 80, 2));
    let detail = mine
        .get_settlement_batch(GetSettlementBatchRequest { batch_id: b.batch_id.clone() })
        .await
        .unwrap()
        .into_inner();
    let line =
        detail.lines.iter().find(|l| l.charge_id == charge_id(&contracts[0], 1)).expect("the first charge's line");
    assert_eq!((line.amount, line.fee, line.net), (1_990, 16, 1_990 - 16 - 100));
    assert_eq!(line.splits.iter().map(|s| (s.receiver.as_str(), s.amount)).collect::<Vec<_>>(), vec![("agent", 100)]);
    // Each charge's splits are shared through the provider (the simulator pays them at once).
    let orders = eventually("the splits shared", 30, || {
        let mut c = app.settlement_as(&m.api_key);
        let batch_id = b.batch_id.clone();
        async move {
            let orders = c
                .list_profit_sharing_orders(ListProfitSharingOrdersRequest { batch_id, charge_id: String::new() })
                .await
                .ok()?
                .into_inner()
                .orders;
            (orders.len() == 2 && orders.iter().all(|o| o.state == "finished")).then_some(orders)
        }
    })
    .await;
    let mut shared: Vec<i64> = orders.iter().map(|o| o.amount).collect();
    shared.sort();
    assert_eq!(shared, vec![50, 100]);
    assert!(orders.iter().all(|o| o.order_id.starts_with("simps") && o.out_order_no.len() == 34), "{orders:?}");
    let err = app
        .settlement_as(&m.api_key)
        .list_profit_sharing_orders(ListProfitSharingOrdersRequest::default())
        .await
        .unwrap_err();
    assert!(err.message().starts_with("batch_id"), "{}", err.message());

    // Another merchant sees none of it.
    let mut theirs = app.settlement_as(&other.api_key);
    assert!(
        theirs
            .list_settlement_batches(ListSettlementBatchesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .batches
            .is_empty()
    );
    let err =
        theirs.get_settlement_batch(GetSettlementBatchRequest { batch_id: b.batch_id.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = theirs
        .list_settlement_batches(ListSettlementBatchesRequest {
            merchant_id: m.merchant_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("merchant_id"), "{}", err.message());

    // A refund after settlement comes out of the next batch.
    app.charger_as(&m.api_key)
        .refund_charge(RefundChargeRequest {
            charge_id: charge_id(&contracts[0], 1),
            amount: Some(Money { minor_units: 700, currency: "CNY".into() }),
            reason: "asked".into(),
            idempotency_key: "settle-1".into(),
        })
        .await
        .unwrap();
    let all = batches(&app, &m.api_key, 2).await;
    let later = all.iter().find(|b| b.batch_id != first[0].batch_id).expect("a second batch");
    assert_eq!((later.gross, later.refunds, later.net, later.lines), (0, 700, -700, 1), "{later:?}");
    let detail = mine
        .get_settlement_batch(GetSettlementBatchRequest { batch_id: later.batch_id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.lines[0].kind, SettlementItemKind::Refund as i32);
    assert_eq!(detail.lines[0].charge_id, charge_id(&contracts[0], 1));

    receipts_are_served_to_the_merchant_and_the_payer(&app, &m, &other, &charge_id(&contracts[0], 1)).await;

    // One refund of two charges in 30 days is above 5%: the merchant is up for review, in the
    // operator's queue until resolved.
    let review = eventually("the refund rate reviewed", 30, || {
        let mut c = app.settlement();
        let m = m.merchant_id.clone();
        async move {
            let reviews = c
                .list_merchant_reviews(ListMerchantReviewsRequest { state: "open".into() })
                .await
                .ok()?
                .into_inner()
                .reviews;
            reviews.into_iter().find(|r| r.merchant_id == m)
        }
    })
    .await;
    assert_eq!(
        (review.reason.as_str(), review.refunds, review.charges, review.rate_basis_points),
        ("refund_rate", 1, 2, 5_000)
    );
    eventually("the review in the operator's summary", 30, || {
        let mut a = app.analytics();
        async move {
            (a.get_summary(GetSummaryRequest {}).await.ok()?.into_inner().merchants_under_review == 1).then_some(())
        }
    })
    .await;
    let err = mine.list_merchant_reviews(ListMerchantReviewsRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "the queue is the operator's");
    let done = op
        .resolve_merchant_review(ResolveMerchantReviewRequest {
            merchant_id: m.merchant_id.clone(),
            note: "refunds explained".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .review
        .unwrap();
    assert_eq!((done.state.as_str(), done.note.as_str()), ("resolved", "refunds explained"));
    let err = op
        .resolve_merchant_review(ResolveMerchantReviewRequest {
            merchant_id: m.merchant_id.clone(),
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "nothing open");
    assert!(
        op.list_merchant_reviews(ListMerchantReviewsRequest { state: "open".into() })
            .await
            .unwrap()
            .into_inner()
            .reviews
            .is_empty()
    );

    // Analytics has the settlement figures and the review; a rebuild from the log agrees.
    let revenue = eventually("the settlements projected", 30, || {
        let mut a = app.analytics_as(&m.api_key);
        async move {
            let rows = a.get_revenue(GetRevenueRequest::default()).await.ok()?.into_inner().rows;
            rows.into_iter().find(|r| r.currency == "CNY" && r.settled == 2_490 - 20 - 150 - 700)
        }
    })
    .await;
    assert_eq!((revenue.fees, revenue.splits, revenue.refunds), (20, 150, 700));
    eventually("the review resolved in the operator's summary", 30, || {
        let mut a = app.analytics();
        async move {
            (a.get_summary(GetSummaryRequest {}).await.ok()?.into_inner().merchants_under_review == 0).then_some(())
        }
    })
    .await;
    app.settled().await;
    let url = app.database().replace("mode=ro", "mode=rw");
    let before = crate::analytics::tables(&url).await;
    let reviews = &before.iter().find(|(t, _)| t == "analytics_merchant_reviews").unwrap().1;
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    assert_eq!(before.iter().find(|(t, _)| t == "analytics_settlements").unwrap().1.len(), 2);
    crate::analytics::rebuild(&url, &["--projection", "settlements"]);
    app.settled().await;
    assert_eq!(crate::analytics::tables(&url).await, before, "settlements rebuilt from the log");

    // The ledger balances and matches the log.
    app.settled().await;
    let url = app.database().replace("mode=ro", "mode=rw");
    let out = ledger_check(&url);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["balanced"], true);
    let account = report["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["merchant_id"] == m.merchant_id.as_str())
        .expect("the merchant's account")
        .clone();
    assert_eq!(account["charged"], 2_490);
    assert_eq!(account["refunds"], 700);
    assert_eq!(account["fees"], 20);
    assert_eq!(account["splits"], 150);
    assert_eq!(account["settled"], 2_490 - 20 - 150 - 700);
    assert_eq!(account["pending"], 0);

    // A tampered posting is named.
    let store =
        autodebit_eventstore::EventStore::open(autodebit_eventstore::StoreOptions::new(url.as_str())).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.execute(
        "UPDATE ledger_postings SET amount = amount + 1 WHERE entry_id = $1 AND account = 'platform_fees'",
        &[autodebit_eventstore::Value::from(format!("batch:{}", b.batch_id))],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let out = ledger_check(&url);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("entry batch:{}", b.batch_id)) && said.contains("does not balance"), "{said}");
}

/// The charge's receipt and its refund's: numbered, with the merchant's legal name, credit
/// code and the VAT; as HTML and as a PDF whose Chinese text `pdftotext` extracts; to the
/// merchant's key and the payer's signed link, and to no one else.
async fn receipts_are_served_to_the_merchant_and_the_payer(
    app: &TestApp,
    m: &crate::scenario::Merchant,
    other: &crate::scenario::Merchant,
    charge: &str,
) {
    let receipts = eventually("the refund's receipt", 30, || {
        let mut c = app.settlement_as(&m.api_key);
        let charge = charge.to_string();
        async move {
            let r = c.list_receipts(ListReceiptsRequest { charge_id: charge }).await.ok()?.into_inner().receipts;
            (r.len() == 2).then_some(r)
        }
    })
    .await;
    let (paid, refund) = (&receipts[0], &receipts[1]);
    assert_eq!((paid.kind.as_str(), refund.kind.as_str()), ("charge", "refund"));
    assert!(paid.number <= 2 && refund.number == 3, "{receipts:?}");
    assert_eq!((paid.amount.as_ref().unwrap().minor_units, paid.tax.as_ref().unwrap().minor_units), (1_990, 113));
    assert_eq!(paid.tax_basis_points, 600);
    assert!(
        app.settlement_as(&other.api_key)
            .list_receipts(ListReceiptsRequest { charge_id: charge.into() })
            .await
            .unwrap()
            .into_inner()
            .receipts
            .is_empty()
    );

    let http = reqwest::Client::new();
    let get = |url: String, key: Option<&str>| {
        let mut r = http.get(url);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        async move {
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let kind = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            (status, kind, resp.bytes().await.unwrap().to_vec())
        }
    };
    let (status, _, body) = get(paid.url.clone(), Some(&m.api_key)).await;
    assert_eq!(status, 200);
    let html = String::from_utf8(body).unwrap();
    for want in ["测试会员服务有限公司", "91330100MA2SET0001", "19.90 CNY", "1.13 CNY", "6.00%", "payer-s1"] {
        assert!(html.contains(want), "{want} in {html}");
    }
    assert_eq!(get(paid.url.clone(), Some(&other.api_key)).await.0, 404, "another merchant's key");
    assert_eq!(get(paid.url.clone(), None).await.0, 401, "no key");
    assert_eq!(get(paid.payer_url.clone(), None).await.0, 200, "the payer's link");
    let forged = format!("{}0", &paid.payer_url[..paid.payer_url.len() - 1]);
    let forged =
        if forged == paid.payer_url { format!("{}1", &paid.payer_url[..paid.payer_url.len() - 1]) } else { forged };
    assert_eq!(get(forged, None).await.0, 404, "a forged link");

    let (status, kind, pdf) = get(refund.payer_url.replace("?sig=", "/pdf?sig="), None).await;
    assert_eq!((status, kind.as_str()), (200, "application/pdf"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("receipt.pdf");
    std::fs::write(&file, &pdf).unwrap();
    let out = std::process::Command::new("pdftotext")
        .arg(&file)
        .arg("-")
        .output()
        .expect("this test needs pdftotext (Debian's poppler-utils); .ci/run installs it");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in ["电子收据", "测试会员服务有限公司", "91330100MA2SET0001", "-7.00 CNY", "退款", "0000000003"]
    {
        assert!(text.contains(want), "{want} in the PDF's text: {text}");
    }
}
