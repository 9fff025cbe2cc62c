//! The contracts service over gRPC against `autodebit run`: merchant onboarding and review,
//! API keys, plans, the merchant boundary, contract reads and the contract lifecycle,
//! including what the platform does on its own as its clock moves (expiry, suspension after
//! failed charges, zombie clean-up).
use crate::{scenario, support};

use autodebit_proto::admin::v1::{AdvanceClockRequest, admin_service_client::AdminServiceClient};
use autodebit_proto::charger::v1::{ChargeState, GetChargeRequest, charger_service_client::ChargerServiceClient};
use autodebit_proto::contracts::v1::{
    Contract, ContractState, CreatePlanRequest, FileMerchantDocumentRequest, GetContractRequest, GetMerchantRequest,
    GetPlanRequest, IssueApiKeyRequest, ListContractsRequest, ListMerchantsRequest, ListPlansRequest, MerchantStatus,
    ModifyContractRequest, ResumeContractRequest, ReviewAction, ReviewMerchantRequest, RevokeApiKeyRequest,
    SuspendContractRequest, TerminateContractRequest, contracts_service_client::ContractsServiceClient,
    merchants_service_client::MerchantsServiceClient, plans_service_client::PlansServiceClient,
};
use autodebit_proto::events::v1::{Cycle, DocumentKind, EntityKind, MerchantType, Money, NoticeKind, TerminationMode};
use autodebit_proto::notifier::v1::{ListNoticesRequest, notifier_service_client::NotifierServiceClient};
use autodebit_proto::scheduler::v1::{GetScheduleRequest, scheduler_service_client::SchedulerServiceClient};
use scenario::{Merchant, OPERATOR_KEY, application, authed, documents, monthly_terms, onboard, sign_request};
use support::{Backend, TestApp, eventually};
use tonic::transport::Channel;
use tonic::{Code, Status};

const DAY_SECS: i64 = 86_400;
const DAY_MS: i64 = 86_400_000;

/// `autodebit run` on `backend`, declining as asked.
async fn run(backend: Backend, decline_basis_points: u32, extra: &[&str]) -> TestApp {
    support::run_on(backend, decline_basis_points, extra).await
}

both!(
    merchant_onboarding_admission_review_and_operator_auth,
    api_keys_are_issued_revoked_and_never_shown_again,
    plans_validate_terms_and_stay_with_their_merchant,
    a_merchant_never_reaches_another_merchants_contracts,
    contracts_are_read_by_code_paginated_and_filtered,
    lifecycle_modify_suspend_resume_terminate,
    a_modification_is_noticed_to_the_payer,
    a_contract_expires_at_the_end_of_its_plans_validity,
    three_failed_charges_in_a_row_suspend_the_contract,
    an_unused_contract_is_flagged_then_ended_by_the_platform,
    a_contract_used_again_after_its_zombie_flag_is_flagged_when_idle_again,
);

/// Asserts a refusal: its code and that its message starts with `prefix`.
#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<tonic::Response<T>, Status>, code: Code, prefix: &str) -> Status {
    let err = result.expect_err("the call should have been refused");
    assert_eq!(err.code(), code, "{err:?}");
    assert!(err.message().starts_with(prefix), "message {:?} should start with {prefix:?}", err.message());
    err
}

fn review(merchant_id: &str, action: ReviewAction, reason: &str, key: &str) -> tonic::Request<ReviewMerchantRequest> {
    authed(ReviewMerchantRequest { merchant_id: merchant_id.into(), action: action as i32, reason: reason.into() }, key)
}

fn by_id(id: &str, key: &str) -> tonic::Request<GetContractRequest> {
    authed(GetContractRequest { contract_id: id.into(), merchant_contract_code: String::new() }, key)
}

fn suspend(id: &str, reason: &str, expected_version: Option<u64>, key: &str) -> tonic::Request<SuspendContractRequest> {
    authed(SuspendContractRequest { contract_id: id.into(), reason: reason.into(), expected_version }, key)
}

fn resume(id: &str, key: &str) -> tonic::Request<ResumeContractRequest> {
    authed(ResumeContractRequest { contract_id: id.into(), expected_version: None }, key)
}

fn terminate(id: &str, key: &str) -> tonic::Request<TerminateContractRequest> {
    authed(
        TerminateContractRequest {
            contract_id: id.into(),
            mode: TerminationMode::Merchant as i32,
            remark: "service closed".into(),
            expected_version: None,
        },
        key,
    )
}

fn modify(
    id: &str,
    fen: i64,
    cycle: Cycle,
    expected_version: Option<u64>,
    key: &str,
) -> tonic::Request<ModifyContractRequest> {
    authed(
        ModifyContractRequest {
            contract_id: id.into(),
            amount_per_cycle: Some(Money { minor_units: fen, currency: "CNY".into() }),
            cycle: cycle as i32,
            expected_version,
        },
        key,
    )
}

fn list(
    state: ContractState,
    payer: &str,
    page_size: u32,
    token: &str,
    key: &str,
) -> tonic::Request<ListContractsRequest> {
    authed(
        ListContractsRequest {
            state: state as i32,
            payer_id: payer.into(),
            plan_id: String::new(),
            page_size,
            page_token: token.into(),
        },
        key,
    )
}

async fn sign(channel: &Channel, req: autodebit_proto::contracts::v1::SignContractRequest) -> Contract {
    ContractsServiceClient::new(channel.clone())
        .sign_contract(authed(req, OPERATOR_KEY))
        .await
        .unwrap()
        .into_inner()
        .contract
        .unwrap()
}

/// A contract without a plan (no cap but the platform's, no end of validity) on `cycle`.
fn planless(m: &Merchant, payer: &str, fen: i64, cycle: Cycle) -> autodebit_proto::contracts::v1::SignContractRequest {
    let mut r = sign_request(m, payer, fen);
    r.plan_id = String::new();
    r.cycle = cycle as i32;
    r
}

async fn get(channel: &Channel, id: &str) -> Contract {
    ContractsServiceClient::new(channel.clone())
        .get_contract(by_id(id, OPERATOR_KEY))
        .await
        .unwrap()
        .into_inner()
        .contract
        .unwrap()
}

/// Polls the contract until `done` holds.
async fn contract_until(
    channel: &Channel,
    id: &str,
    what: &str,
    secs: u64,
    done: impl Fn(&Contract) -> bool,
) -> Contract {
    eventually(what, secs, || {
        let ch = channel.clone();
        let id = id.to_string();
        let ok = &done;
        async move {
            let c = get(&ch, &id).await;
            ok(&c).then_some(c)
        }
    })
    .await
}

/// Waits for a whole pass of the contracts clean-up job at the clock's present time. A pass
/// sweeps contracts, then expires signing sessions: a session opened now expires in the first
/// pass after the clock passes its end, and one opened after that in a later pass, whose
/// contract sweeps began after the first one ended, so after the clock moved.
async fn clean_up_passed(channel: &Channel, m: &Merchant) {
    use autodebit_proto::contracts::v1::{CreateSigningSessionRequest, GetSigningSessionRequest, SigningState};
    let mut c = ContractsServiceClient::new(channel.clone());
    for n in 0..2 {
        let req = CreateSigningSessionRequest {
            plan_id: m.plan_id.clone(),
            payer_id: "payer-witness".into(),
            channel: autodebit_proto::events::v1::SigningChannel::H5 as i32,
            device_id: format!("witness-{n}"),
            client_ip: "192.0.2.90".into(),
            return_url: "https://merchant.example/done".into(),
            ..Default::default()
        };
        let id =
            c.create_signing_session(authed(req, &m.api_key)).await.unwrap().into_inner().session.unwrap().session_id;
        AdminServiceClient::new(channel.clone())
            .advance_clock(support::op(AdvanceClockRequest { seconds: 11 * 60 }))
            .await
            .unwrap();
        eventually("a clean-up pass to expire the witness session", 30, || {
            let (mut c, id) = (c.clone(), id.clone());
            async move {
                let s = c.get_signing_session(authed(GetSigningSessionRequest { session_id: id }, &m.api_key)).await;
                (s.ok()?.into_inner().session?.state == SigningState::Expired as i32).then_some(())
            }
        })
        .await;
    }
}

async fn merchant_onboarding_admission_review_and_operator_auth(backend: Backend) {
    let p = run(backend, 0, &[]).await;
    let ch = p.channel().await;
    let mut m = MerchantsServiceClient::new(ch.clone());

    // Admission rules name the field at fault.
    let mut individual = application("91330100MA2TST0001");
    individual.entity = EntityKind::Individual as i32;
    refused(m.apply_merchant(individual).await, Code::InvalidArgument, "entity");
    let mut gambling = application("91330100MA2TST0001");
    gambling.industry = "gambling".into();
    refused(m.apply_merchant(gambling).await, Code::InvalidArgument, "industry");
    let mut shop = application("91330100MA2TST0001");
    shop.industry = "ecommerce".into();
    shop.merchant_type = MerchantType::ECommerce as i32;
    shop.documents.extend(documents(&[DocumentKind::CategoryWhitelist]));
    refused(m.apply_merchant(shop.clone()).await, Code::InvalidArgument, "documents");
    let mut bad_code = application("91330100ma2tst0001");
    bad_code.idempotency_key = "x".into();
    refused(m.apply_merchant(bad_code).await, Code::InvalidArgument, "credit_code");
    // None of the refused applications was recorded.
    let all = m
        .list_merchants(authed(
            ListMerchantsRequest { status: 0, page_size: 0, page_token: String::new() },
            OPERATOR_KEY,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(all.merchants.is_empty(), "{:?}", all.merchants);

    // With its ICP filing the e-commerce application is admitted.
    shop.documents.extend(documents(&[DocumentKind::IcpFiling]));
    let applied = m.apply_merchant(shop.clone()).await.unwrap().into_inner().merchant.unwrap();
    assert_eq!(applied.status, MerchantStatus::Applied as i32);
    assert!(!applied.high_risk);
    assert!(applied.api_keys.is_empty());
    assert!(applied.review_due_earliest_ms > applied.applied_at_ms, "{applied:?}");
    assert!(applied.review_due_latest_ms > applied.review_due_earliest_ms, "{applied:?}");
    // 3 to 5 working days for an ordinary industry.
    assert!(applied.review_due_earliest_ms - applied.applied_at_ms >= 3 * DAY_MS);
    assert!(applied.review_due_latest_ms - applied.applied_at_ms <= 7 * DAY_MS);

    // One company, one application: the same credit code again is refused ...
    refused(m.apply_merchant(shop.clone()).await, Code::AlreadyExists, "");
    let mut other_name = application("91330100MA2TST0001");
    other_name.legal_name = "另一家公司".into();
    refused(m.apply_merchant(other_name).await, Code::AlreadyExists, "");

    // ... while a repeated request with its idempotency key gets the original back.
    let mut keyed = application("91330100MA2TST0002");
    keyed.idempotency_key = "apply-0002".into();
    let first = m.apply_merchant(keyed.clone()).await.unwrap().into_inner().merchant.unwrap();
    let again = m.apply_merchant(keyed.clone()).await.unwrap().into_inner().merchant.unwrap();
    assert_eq!(first.merchant_id, again.merchant_id);
    assert_eq!(first.applied_at_ms, again.applied_at_ms);
    assert_eq!(again.version, first.version, "the repeat appended nothing");
    let mut changed = keyed.clone();
    changed.contact_email = "other@example.cn".into();
    refused(m.apply_merchant(changed).await, Code::AlreadyExists, "");

    // Review: approval needs a review first; rejection needs a reason.
    let id = applied.merchant_id.clone();
    refused(
        m.review_merchant(review(&id, ReviewAction::Approve, "", OPERATOR_KEY)).await,
        Code::FailedPrecondition,
        "",
    );
    refused(
        m.review_merchant(review(&id, ReviewAction::Reinstate, "", OPERATOR_KEY)).await,
        Code::FailedPrecondition,
        "",
    );
    refused(
        m.review_merchant(review(&id, ReviewAction::Reject, "", OPERATOR_KEY)).await,
        Code::InvalidArgument,
        "reason",
    );
    refused(
        m.review_merchant(review(&id, ReviewAction::Reject, "  ", OPERATOR_KEY)).await,
        Code::InvalidArgument,
        "reason",
    );
    refused(
        m.review_merchant(review(&id, ReviewAction::Unspecified, "", OPERATOR_KEY)).await,
        Code::InvalidArgument,
        "action",
    );
    let started = m.review_merchant(review(&id, ReviewAction::Start, "", OPERATOR_KEY)).await.unwrap().into_inner();
    assert_eq!(started.merchant.unwrap().status, MerchantStatus::UnderReview as i32);
    assert!(started.api_key.is_empty(), "only approval hands out a key");
    refused(m.review_merchant(review(&id, ReviewAction::Start, "", OPERATOR_KEY)).await, Code::FailedPrecondition, "");
    let rejected = m
        .review_merchant(review(&id, ReviewAction::Reject, "licence expired", OPERATOR_KEY))
        .await
        .unwrap()
        .into_inner()
        .merchant
        .unwrap();
    assert_eq!(rejected.status, MerchantStatus::Rejected as i32);
    assert_eq!(rejected.reason, "licence expired");
    refused(
        m.review_merchant(review(&id, ReviewAction::Approve, "", OPERATOR_KEY)).await,
        Code::FailedPrecondition,
        "",
    );

    // A high-risk industry: a longer review, and no approval without its special filing.
    let mut finance = application("91330100MA2TST0003");
    finance.industry = "finance".into();
    let fin = m.apply_merchant(finance).await.unwrap().into_inner().merchant.unwrap();
    assert!(fin.high_risk);
    assert!(fin.review_due_earliest_ms - fin.applied_at_ms >= 7 * DAY_MS, "{fin:?}");
    assert!(fin.review_due_latest_ms - fin.applied_at_ms >= 20 * DAY_MS, "15 working days: {fin:?}");
    assert!(fin.review_due_latest_ms > fin.review_due_earliest_ms);
    let fid = fin.merchant_id.clone();
    m.review_merchant(review(&fid, ReviewAction::Start, "", OPERATOR_KEY)).await.unwrap();
    refused(
        m.review_merchant(review(&fid, ReviewAction::Approve, "", OPERATOR_KEY)).await,
        Code::FailedPrecondition,
        "",
    );
    let filing = documents(&[DocumentKind::SpecialIndustryFiling]).remove(0);
    let file = |key: &str| {
        authed(FileMerchantDocumentRequest { merchant_id: fid.clone(), document: Some(filing.clone()) }, key)
    };
    let filed = m.file_merchant_document(file(OPERATOR_KEY)).await.unwrap().into_inner().merchant.unwrap();
    assert!(filed.documents.iter().any(|d| d.kind == DocumentKind::SpecialIndustryFiling as i32), "{filed:?}");
    assert_eq!(filed.status, MerchantStatus::UnderReview as i32);
    let approved = m.review_merchant(review(&fid, ReviewAction::Approve, "", OPERATOR_KEY)).await.unwrap().into_inner();
    assert!(approved.api_key.starts_with("adk_"), "{}", approved.api_key);
    let approved_m = approved.merchant.unwrap();
    assert_eq!(approved_m.status, MerchantStatus::Approved as i32);
    assert_eq!(approved_m.api_keys.len(), 1);
    assert!(approved.api_key.contains(&approved_m.api_keys[0].key_id));
    let key = approved.api_key;
    // Documents are filed before the review ends.
    refused(m.file_merchant_document(file(OPERATOR_KEY)).await, Code::FailedPrecondition, "");

    // Operator calls: no key or a wrong key is UNAUTHENTICATED, a merchant's key is
    // PERMISSION_DENIED.
    let list_req = |status: MerchantStatus| ListMerchantsRequest {
        status: status as i32,
        page_size: 0,
        page_token: String::new(),
    };
    refused(m.list_merchants(list_req(MerchantStatus::Unspecified)).await, Code::Unauthenticated, "");
    refused(
        m.list_merchants(authed(list_req(MerchantStatus::Unspecified), "wrong-key")).await,
        Code::Unauthenticated,
        "",
    );
    refused(m.list_merchants(authed(list_req(MerchantStatus::Unspecified), &key)).await, Code::PermissionDenied, "");
    let bare = ReviewMerchantRequest {
        merchant_id: first.merchant_id.clone(),
        action: ReviewAction::Start as i32,
        reason: String::new(),
    };
    refused(m.review_merchant(bare.clone()).await, Code::Unauthenticated, "");
    refused(m.review_merchant(authed(bare.clone(), "test-operator-key-")).await, Code::Unauthenticated, "");
    refused(m.review_merchant(authed(bare.clone(), &key)).await, Code::PermissionDenied, "");
    let mut plain = tonic::Request::new(bare.clone());
    plain.metadata_mut().insert("authorization", OPERATOR_KEY.parse().unwrap());
    refused(m.review_merchant(plain).await, Code::Unauthenticated, "");
    refused(m.file_merchant_document(file(&key)).await, Code::PermissionDenied, "");
    let untouched = m
        .get_merchant(authed(GetMerchantRequest { merchant_id: first.merchant_id.clone() }, OPERATOR_KEY))
        .await
        .unwrap()
        .into_inner()
        .merchant
        .unwrap();
    assert_eq!(untouched.status, MerchantStatus::Applied as i32, "refused calls changed nothing");

    // A merchant reads itself, not others; reading needs a key.
    let me = m.get_merchant(authed(GetMerchantRequest { merchant_id: fid.clone() }, &key)).await.unwrap().into_inner();
    assert_eq!(me.merchant.unwrap().merchant_id, fid);
    refused(
        m.get_merchant(authed(GetMerchantRequest { merchant_id: first.merchant_id.clone() }, &key)).await,
        Code::NotFound,
        "",
    );
    refused(m.get_merchant(GetMerchantRequest { merchant_id: fid.clone() }).await, Code::Unauthenticated, "");

    // ListMerchants filters by status.
    let ids = |status: MerchantStatus| {
        let mut m = m.clone();
        async move {
            let mut ids: Vec<String> = m
                .list_merchants(authed(list_req(status), OPERATOR_KEY))
                .await
                .unwrap()
                .into_inner()
                .merchants
                .into_iter()
                .map(|x| x.merchant_id)
                .collect();
            ids.sort();
            ids
        }
    };
    let mut everyone = vec![applied.merchant_id.clone(), first.merchant_id.clone(), fid.clone()];
    everyone.sort();
    assert_eq!(ids(MerchantStatus::Unspecified).await, everyone);
    assert_eq!(ids(MerchantStatus::Applied).await, vec![first.merchant_id.clone()]);
    assert_eq!(ids(MerchantStatus::Rejected).await, vec![applied.merchant_id.clone()]);
    assert_eq!(ids(MerchantStatus::Approved).await, vec![fid.clone()]);
    assert!(ids(MerchantStatus::UnderReview).await.is_empty());
    assert!(ids(MerchantStatus::Suspended).await.is_empty());
    // Pagination walks all three.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = m
            .list_merchants(authed(ListMerchantsRequest { status: 0, page_size: 2, page_token: token }, OPERATOR_KEY))
            .await
            .unwrap()
            .into_inner();
        assert!(page.merchants.len() <= 2);
        seen.extend(page.merchants.into_iter().map(|x| x.merchant_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    seen.sort();
    assert_eq!(seen, everyone);
}

async fn api_keys_are_issued_revoked_and_never_shown_again(backend: Backend) {
    let p = run(backend, 0, &[]).await;
    let ch = p.channel().await;
    let merchant = onboard(&ch, "91330100MA2KEY0001").await;
    let mut m = MerchantsServiceClient::new(ch.clone());
    let plans = PlansServiceClient::new(ch.clone());
    let works = |key: &str| {
        let mut plans = plans.clone();
        let req = authed(ListPlansRequest { page_size: 0, page_token: String::new() }, key);
        async move { plans.list_plans(req).await }
    };

    let second = m
        .issue_api_key(authed(IssueApiKeyRequest { label: "backup".into() }, &merchant.api_key))
        .await
        .unwrap()
        .into_inner();
    assert!(second.api_key.starts_with("adk_"), "{}", second.api_key);
    assert!(second.api_key.contains(&second.key_id));
    assert_ne!(second.api_key, merchant.api_key);
    assert_eq!(works(&second.api_key).await.unwrap().into_inner().plans.len(), 1);
    refused(
        m.issue_api_key(authed(IssueApiKeyRequest { label: "ops".into() }, OPERATOR_KEY)).await,
        Code::PermissionDenied,
        "",
    );
    refused(m.issue_api_key(IssueApiKeyRequest { label: "anon".into() }).await, Code::Unauthenticated, "");

    // Ids and labels are shown; secrets (and their hashes) never.
    let read = m
        .get_merchant(authed(GetMerchantRequest { merchant_id: merchant.merchant_id.clone() }, &second.api_key))
        .await
        .unwrap()
        .into_inner()
        .merchant
        .unwrap();
    let mut labels: Vec<(String, String)> = read.api_keys.iter().map(|k| (k.label.clone(), k.key_id.clone())).collect();
    labels.sort();
    assert_eq!(labels.len(), 2);
    assert_eq!(labels[0], ("backup".to_string(), second.key_id.clone()));
    assert_eq!(labels[1].0, "initial");
    assert!(merchant.api_key.contains(&labels[1].1));
    assert!(read.api_keys.iter().all(|k| k.issued_at_ms > 0 && k.revoked_at_ms == 0));
    let shown = format!("{read:?}");
    for token in [&merchant.api_key, &second.api_key] {
        let secret = token.rsplit_once('_').unwrap().1;
        assert!(!shown.contains(secret), "a secret leaked: {shown}");
        assert!(!shown.contains(&autodebit_contracts::sha256_hex(token)), "a key hash leaked: {shown}");
    }

    // A forged secret for a real key id is refused.
    let forged = format!("adk_{}_{}", second.key_id, "0".repeat(64));
    refused(works(&forged).await, Code::Unauthenticated, "");

    // Revoking the second key: it stops working at once, the first goes on.
    m.revoke_api_key(authed(RevokeApiKeyRequest { key_id: second.key_id.clone() }, &merchant.api_key)).await.unwrap();
    refused(works(&second.api_key).await, Code::Unauthenticated, "");
    refused(
        m.issue_api_key(authed(IssueApiKeyRequest { label: "sneaky".into() }, &second.api_key)).await,
        Code::Unauthenticated,
        "",
    );
    assert_eq!(works(&merchant.api_key).await.unwrap().into_inner().plans.len(), 1);
    let after = m
        .get_merchant(authed(GetMerchantRequest { merchant_id: merchant.merchant_id.clone() }, &merchant.api_key))
        .await
        .unwrap()
        .into_inner()
        .merchant
        .unwrap();
    assert_eq!(after.api_keys.len(), 2);
    let revoked = after.api_keys.iter().find(|k| k.key_id == second.key_id).unwrap();
    assert!(revoked.revoked_at_ms >= revoked.issued_at_ms && revoked.revoked_at_ms > 0, "{revoked:?}");
    assert!(after.api_keys.iter().filter(|k| k.key_id != second.key_id).all(|k| k.revoked_at_ms == 0));

    // Revoking is once, and only of one's own keys.
    refused(
        m.revoke_api_key(authed(RevokeApiKeyRequest { key_id: second.key_id.clone() }, &merchant.api_key)).await,
        Code::NotFound,
        "",
    );
    refused(
        m.revoke_api_key(authed(RevokeApiKeyRequest { key_id: String::new() }, &merchant.api_key)).await,
        Code::InvalidArgument,
        "key_id",
    );
    let other = onboard(&ch, "91330100MA2KEY0002").await;
    let own_key_id = labels[1].1.clone();
    refused(
        m.revoke_api_key(authed(RevokeApiKeyRequest { key_id: own_key_id }, &other.api_key)).await,
        Code::NotFound,
        "",
    );
    assert_eq!(works(&merchant.api_key).await.unwrap().into_inner().plans.len(), 1);
}

async fn plans_validate_terms_and_stay_with_their_merchant(backend: Backend) {
    let p = run(backend, 0, &[]).await;
    let ch = p.channel().await;
    let a = onboard(&ch, "91330100MA2PLN0001").await;
    let b = onboard(&ch, "91330100MA2PLN0002").await;
    let mut plans = PlansServiceClient::new(ch.clone());
    let create = |terms, key: &str, idem: &str| {
        authed(CreatePlanRequest { terms: Some(terms), idempotency_key: idem.into() }, key)
    };

    let mut over_cap = monthly_terms();
    over_cap.per_charge_cap = Some(Money { minor_units: 5_000_001, currency: "CNY".into() });
    let mut too_long = monthly_terms();
    too_long.validity_days = too_long.service_period_days + 31;
    let mut quick_retry = monthly_terms();
    quick_retry.retry_schedule_hours = vec![6, 5];
    let mut no_cycle = monthly_terms();
    no_cycle.cycle = Cycle::Unspecified as i32;
    let mut unknown_provider = monthly_terms();
    unknown_provider.provider = "paypal".into();
    let cases = [
        (over_cap, "terms.per_charge_cap.minor_units"),
        (too_long, "terms.validity_days"),
        (quick_retry, "terms.retry_schedule_hours"),
        (no_cycle, "terms.cycle"),
        (unknown_provider, "terms.provider"),
    ];
    for (terms, field) in cases {
        refused(plans.create_plan(create(terms, &a.api_key, "")).await, Code::InvalidArgument, field);
    }
    refused(
        plans.create_plan(authed(CreatePlanRequest { terms: None, idempotency_key: String::new() }, &a.api_key)).await,
        Code::InvalidArgument,
        "terms",
    );
    // The limits themselves are allowed.
    let mut edge = monthly_terms();
    edge.per_charge_cap = Some(Money { minor_units: 5_000_000, currency: "CNY".into() });
    edge.validity_days = edge.service_period_days + 30;
    edge.retry_schedule_hours = vec![6, 6];
    let edge_plan = plans.create_plan(create(edge, &a.api_key, "")).await.unwrap().into_inner().plan.unwrap();
    assert_eq!(edge_plan.merchant_id, a.merchant_id);
    // Plans are a merchant's: the operator key and no key are refused.
    refused(plans.create_plan(create(monthly_terms(), OPERATOR_KEY, "")).await, Code::PermissionDenied, "");
    refused(
        plans.create_plan(CreatePlanRequest { terms: Some(monthly_terms()), idempotency_key: String::new() }).await,
        Code::Unauthenticated,
        "",
    );

    // Idempotency: the same request returns the original plan; a different one is refused.
    let first =
        plans.create_plan(create(monthly_terms(), &a.api_key, "plan-1")).await.unwrap().into_inner().plan.unwrap();
    let again =
        plans.create_plan(create(monthly_terms(), &a.api_key, "plan-1")).await.unwrap().into_inner().plan.unwrap();
    assert_eq!(first.plan_id, again.plan_id);
    assert_eq!(first.created_at_ms, again.created_at_ms);
    let mut cheaper = monthly_terms();
    cheaper.per_charge_cap = Some(Money { minor_units: 40_000, currency: "CNY".into() });
    refused(plans.create_plan(create(cheaper, &a.api_key, "plan-1")).await, Code::AlreadyExists, "");
    // The same key from another merchant is another plan.
    let b_same_key =
        plans.create_plan(create(monthly_terms(), &b.api_key, "plan-1")).await.unwrap().into_inner().plan.unwrap();
    assert_ne!(b_same_key.plan_id, first.plan_id);
    assert_eq!(b_same_key.merchant_id, b.merchant_id);

    // Defaults are stored explicitly.
    let got = plans
        .get_plan(authed(GetPlanRequest { plan_id: first.plan_id.clone() }, &a.api_key))
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    let terms = got.terms.unwrap();
    assert_eq!(terms.daily_count_limit, 10);
    assert_eq!(terms.notice_lead_hours, 24);
    assert_eq!(terms.provider, "simulator");
    assert_eq!(terms.amount.unwrap().minor_units, 50_000, "up to cap: the amount is the cap");

    // Another merchant's plan is not readable; the operator reads any.
    refused(
        plans.get_plan(authed(GetPlanRequest { plan_id: first.plan_id.clone() }, &b.api_key)).await,
        Code::NotFound,
        "",
    );
    plans.get_plan(authed(GetPlanRequest { plan_id: first.plan_id.clone() }, OPERATOR_KEY)).await.unwrap();
    refused(plans.get_plan(authed(GetPlanRequest { plan_id: "pl_nope".into() }, &a.api_key)).await, Code::NotFound, "");

    // Lists hold only the caller's plans.
    let listed = |key: &str| {
        let mut plans = plans.clone();
        let req = authed(ListPlansRequest { page_size: 0, page_token: String::new() }, key);
        async move {
            let mut ids: Vec<String> =
                plans.list_plans(req).await.unwrap().into_inner().plans.into_iter().map(|p| p.plan_id).collect();
            ids.sort();
            ids
        }
    };
    let mut a_plans = vec![a.plan_id.clone(), edge_plan.plan_id.clone(), first.plan_id.clone()];
    a_plans.sort();
    assert_eq!(listed(&a.api_key).await, a_plans);
    let mut b_plans = vec![b.plan_id.clone(), b_same_key.plan_id.clone()];
    b_plans.sort();
    assert_eq!(listed(&b.api_key).await, b_plans);
    refused(
        plans.list_plans(authed(ListPlansRequest { page_size: 0, page_token: String::new() }, OPERATOR_KEY)).await,
        Code::PermissionDenied,
        "",
    );

    // A contract cannot be signed against another merchant's plan.
    let mut foreign = sign_request(&a, "payer-1", 100);
    foreign.plan_id = b.plan_id.clone();
    refused(
        ContractsServiceClient::new(ch.clone()).sign_contract(authed(foreign, OPERATOR_KEY)).await,
        Code::InvalidArgument,
        "plan_id",
    );
}

async fn a_merchant_never_reaches_another_merchants_contracts(backend: Backend) {
    let p = run(backend, 0, &[]).await;
    let ch = p.channel().await;
    let a = onboard(&ch, "91330100MA2BND0001").await;
    let b = onboard(&ch, "91330100MA2BND0002").await;
    let mut c = ContractsServiceClient::new(ch.clone());
    let mine = sign(&ch, sign_request(&a, "payer-a", 1_000)).await;
    let mut theirs_req = sign_request(&b, "payer-b", 2_000);
    theirs_req.merchant_contract_code = "B-0001".into();
    let theirs = sign(&ch, theirs_req).await;
    let id = theirs.contract_id.clone();

    // Another merchant's contract is answered as one that does not exist.
    refused(c.get_contract(by_id(&id, &a.api_key)).await, Code::NotFound, "");
    refused(c.terminate_contract(terminate(&id, &a.api_key)).await, Code::NotFound, "");
    refused(c.suspend_contract(suspend(&id, "not yours", None, &a.api_key)).await, Code::NotFound, "");
    refused(c.resume_contract(resume(&id, &a.api_key)).await, Code::NotFound, "");
    refused(c.modify_contract(modify(&id, 500, Cycle::Unspecified, None, &a.api_key)).await, Code::NotFound, "");
    // B's own code is not found among A's.
    refused(
        c.get_contract(authed(
            GetContractRequest { contract_id: String::new(), merchant_contract_code: "B-0001".into() },
            &a.api_key,
        ))
        .await,
        Code::NotFound,
        "",
    );

    // Nothing happened to B's contract.
    let still = get(&ch, &id).await;
    assert_eq!(still.state, ContractState::Active as i32);
    assert_eq!(still.version, 1);
    assert_eq!(still.amount_per_cycle.unwrap().minor_units, 2_000);

    // Lists are per merchant, whatever the filter.
    let a_list = c.list_contracts(list(ContractState::Unspecified, "", 0, "", &a.api_key)).await.unwrap().into_inner();
    let a_ids: Vec<&str> = a_list.contracts.iter().map(|x| x.contract_id.as_str()).collect();
    assert_eq!(a_ids, vec![mine.contract_id.as_str()]);
    let by_payer = c.list_contracts(list(ContractState::Unspecified, "payer-b", 0, "", &a.api_key)).await.unwrap();
    assert!(by_payer.into_inner().contracts.is_empty());
    let b_list = c.list_contracts(list(ContractState::Active, "", 0, "", &b.api_key)).await.unwrap().into_inner();
    let b_ids: Vec<&str> = b_list.contracts.iter().map(|x| x.contract_id.as_str()).collect();
    assert_eq!(b_ids, vec![id.as_str()]);
    // Listing is a merchant's call.
    refused(
        c.list_contracts(list(ContractState::Unspecified, "", 0, "", OPERATOR_KEY)).await,
        Code::PermissionDenied,
        "",
    );

    // B itself may act on its contract.
    let done = c.terminate_contract(terminate(&id, &b.api_key)).await.unwrap().into_inner().contract.unwrap();
    assert_eq!(done.state, ContractState::Terminated as i32);
}

async fn contracts_are_read_by_code_paginated_and_filtered(backend: Backend) {
    let p = run(backend, 0, &[]).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2RDS0001").await;
    let mut c = ContractsServiceClient::new(ch.clone());

    let mut coded = sign_request(&m, "payer-1", 1_000);
    coded.merchant_contract_code = "ORDER-0001".into();
    let first = sign(&ch, coded.clone()).await;
    assert_eq!(first.merchant_contract_code, "ORDER-0001");
    let by_code = |code: &str, key: &str| {
        authed(GetContractRequest { contract_id: String::new(), merchant_contract_code: code.into() }, key)
    };
    let found = c.get_contract(by_code("ORDER-0001", &m.api_key)).await.unwrap().into_inner().contract.unwrap();
    assert_eq!(found.contract_id, first.contract_id);
    refused(c.get_contract(by_code("ORDER-0002", &m.api_key)).await, Code::NotFound, "");
    refused(c.get_contract(by_code("ORDER-0001", OPERATOR_KEY)).await, Code::InvalidArgument, "merchant_contract_code");
    refused(c.get_contract(by_code("", &m.api_key)).await, Code::InvalidArgument, "contract_id");

    // A code is used once per merchant.
    let mut dup = coded.clone();
    dup.payer_id = "payer-2".into();
    refused(c.sign_contract(authed(dup, OPERATOR_KEY)).await, Code::AlreadyExists, "");
    // Another merchant may use the same code.
    let other = onboard(&ch, "91330100MA2RDS0002").await;
    let mut other_coded = sign_request(&other, "payer-1", 1_000);
    other_coded.merchant_contract_code = "ORDER-0001".into();
    let other_contract = sign(&ch, other_coded).await;
    let found = c.get_contract(by_code("ORDER-0001", &m.api_key)).await.unwrap().into_inner().contract.unwrap();
    assert_eq!(found.contract_id, first.contract_id, "the code still names the first contract");
    let found = c.get_contract(by_code("ORDER-0001", &other.api_key)).await.unwrap().into_inner().contract.unwrap();
    assert_eq!(found.contract_id, other_contract.contract_id);

    // Five contracts in all: two for payer-1, three for payer-2.
    let mut ids = vec![first.contract_id.clone()];
    for (i, payer) in ["payer-1", "payer-2", "payer-2", "payer-2"].iter().enumerate() {
        let mut r = sign_request(&m, payer, 1_000 + i as i64);
        r.merchant_contract_code = format!("ORDER-1{i:03}");
        ids.push(sign(&ch, r).await.contract_id);
    }
    ids.sort();

    // page_size 2: three pages, each contract once, no token after the last.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page =
            c.list_contracts(list(ContractState::Unspecified, "", 2, &token, &m.api_key)).await.unwrap().into_inner();
        pages += 1;
        assert!(pages <= 3, "more than three pages");
        assert!(page.contracts.len() <= 2);
        assert!(!page.contracts.is_empty(), "an empty page");
        assert!(page.contracts.iter().all(|x| x.merchant_id == m.merchant_id));
        seen.extend(page.contracts.into_iter().map(|x| x.contract_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "a contract came twice: {seen:?}");
    assert_eq!(sorted, ids, "the refused duplicate left nothing behind");
    // The default page holds all five; a bad token is refused.
    let all = c.list_contracts(list(ContractState::Unspecified, "", 0, "", &m.api_key)).await.unwrap().into_inner();
    assert_eq!(all.contracts.len(), 5);
    assert!(all.next_page_token.is_empty());
    refused(
        c.list_contracts(list(ContractState::Unspecified, "", 2, "not-a-token", &m.api_key)).await,
        Code::InvalidArgument,
        "page_token",
    );
    refused(
        c.list_contracts(authed(
            ListContractsRequest {
                state: 42,
                payer_id: String::new(),
                plan_id: String::new(),
                page_size: 0,
                page_token: String::new(),
            },
            &m.api_key,
        ))
        .await,
        Code::InvalidArgument,
        "state",
    );

    // Filters: by payer, by state, both.
    let ids_of = |r: autodebit_proto::contracts::v1::ListContractsResponse| {
        let mut v: Vec<String> = r.contracts.into_iter().map(|x| x.contract_id).collect();
        v.sort();
        v
    };
    let payer2 = ids_of(
        c.list_contracts(list(ContractState::Unspecified, "payer-2", 0, "", &m.api_key)).await.unwrap().into_inner(),
    );
    assert_eq!(payer2.len(), 3);
    let payer1 = ids_of(
        c.list_contracts(list(ContractState::Unspecified, "payer-1", 0, "", &m.api_key)).await.unwrap().into_inner(),
    );
    assert_eq!(payer1.len(), 2);
    assert!(payer1.contains(&first.contract_id));
    assert!(payer1.iter().chain(&payer2).all(|x| ids.contains(x)));

    let paused = payer2[0].clone();
    c.suspend_contract(suspend(&paused, "payer on holiday", None, &m.api_key)).await.unwrap();
    let ended = payer1[0].clone();
    c.terminate_contract(terminate(&ended, &m.api_key)).await.unwrap();
    let suspended =
        ids_of(c.list_contracts(list(ContractState::Suspended, "", 0, "", &m.api_key)).await.unwrap().into_inner());
    assert_eq!(suspended, vec![paused.clone()]);
    let terminated =
        ids_of(c.list_contracts(list(ContractState::Terminated, "", 0, "", &m.api_key)).await.unwrap().into_inner());
    assert_eq!(terminated, vec![ended.clone()]);
    let active =
        ids_of(c.list_contracts(list(ContractState::Active, "", 0, "", &m.api_key)).await.unwrap().into_inner());
    assert_eq!(active.len(), 3);
    assert!(!active.contains(&paused) && !active.contains(&ended));
    let active2 =
        ids_of(c.list_contracts(list(ContractState::Active, "payer-2", 0, "", &m.api_key)).await.unwrap().into_inner());
    assert_eq!(active2, payer2[1..].to_vec());
    assert!(
        c.list_contracts(list(ContractState::Expired, "", 0, "", &m.api_key))
            .await
            .unwrap()
            .into_inner()
            .contracts
            .is_empty()
    );
    // By plan: every contract here is under the merchant's plan.
    let by_plan = c
        .list_contracts(authed(
            ListContractsRequest {
                state: 0,
                payer_id: String::new(),
                plan_id: m.plan_id.clone(),
                page_size: 0,
                page_token: String::new(),
            },
            &m.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_plan.contracts.len(), 5);
}

async fn lifecycle_modify_suspend_resume_terminate(backend: Backend) {
    let p = run(backend, 0, &[]).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2LIF0001").await;
    let mut c = ContractsServiceClient::new(ch.clone());
    let signed = sign(&ch, sign_request(&m, "payer-life", 2_500)).await;
    let id = signed.contract_id.clone();
    assert_eq!(signed.version, 1);
    assert_eq!(signed.plan_id, m.plan_id);
    assert!(signed.expires_at_ms > signed.signed_at_ms);

    // Modify: the amount changes and the cycle stays unless given.
    let modified =
        c.modify_contract(modify(&id, 3_000, Cycle::Unspecified, Some(1), &m.api_key)).await.unwrap().into_inner();
    let modified = modified.contract.unwrap();
    assert_eq!(modified.amount_per_cycle.as_ref().unwrap().minor_units, 3_000);
    assert_eq!(modified.cycle, Cycle::Monthly as i32);
    assert_eq!(modified.version, 2);
    let requarter = c.modify_contract(modify(&id, 3_000, Cycle::Quarterly, None, &m.api_key)).await.unwrap();
    assert_eq!(requarter.into_inner().contract.unwrap().cycle, Cycle::Quarterly as i32);
    // Above the plan's cap (500.00 CNY), and not positive, are refused.
    refused(
        c.modify_contract(modify(&id, 50_001, Cycle::Unspecified, None, &m.api_key)).await,
        Code::InvalidArgument,
        "amount_per_cycle",
    );
    refused(
        c.modify_contract(modify(&id, 0, Cycle::Unspecified, None, &m.api_key)).await,
        Code::InvalidArgument,
        "amount_per_cycle",
    );
    refused(c.modify_contract(modify(&id, 100, Cycle::Unspecified, Some(1), &m.api_key)).await, Code::Aborted, "");
    let now = get(&ch, &id).await;
    assert_eq!((now.version, now.amount_per_cycle.unwrap().minor_units), (3, 3_000), "refusals changed nothing");

    // Suspend needs a reason; suspended twice is refused; resume brings it back.
    refused(c.suspend_contract(suspend(&id, "", None, &m.api_key)).await, Code::InvalidArgument, "reason");
    refused(c.suspend_contract(suspend(&id, "   ", None, &m.api_key)).await, Code::InvalidArgument, "reason");
    refused(c.resume_contract(resume(&id, &m.api_key)).await, Code::FailedPrecondition, "");
    refused(c.suspend_contract(suspend(&id, "payer asked", Some(2), &m.api_key)).await, Code::Aborted, "");
    let paused = c
        .suspend_contract(suspend(&id, "payer asked", Some(3), &m.api_key))
        .await
        .unwrap()
        .into_inner()
        .contract
        .unwrap();
    assert_eq!(paused.state, ContractState::Suspended as i32);
    assert_eq!(paused.suspension_reason, "payer asked");
    assert_eq!(paused.version, 4);
    refused(c.suspend_contract(suspend(&id, "again", None, &m.api_key)).await, Code::FailedPrecondition, "");
    let resumed = c.resume_contract(resume(&id, &m.api_key)).await.unwrap().into_inner().contract.unwrap();
    assert_eq!(resumed.state, ContractState::Active as i32);
    assert!(resumed.suspension_reason.is_empty(), "{resumed:?}");
    // The operator may act on any contract.
    let by_operator = c.suspend_contract(suspend(&id, "risk review", None, OPERATOR_KEY)).await.unwrap();
    assert_eq!(by_operator.into_inner().contract.unwrap().state, ContractState::Suspended as i32);
    c.resume_contract(resume(&id, OPERATOR_KEY)).await.unwrap();

    // A stale version is a conflict on terminate too; nothing is written.
    let current = get(&ch, &id).await;
    let stale = TerminateContractRequest {
        contract_id: id.clone(),
        mode: TerminationMode::Payer as i32,
        remark: String::new(),
        expected_version: Some(current.version - 1),
    };
    refused(c.terminate_contract(authed(stale, &m.api_key)).await, Code::Aborted, "");
    assert_eq!(get(&ch, &id).await.version, current.version);

    // Terminate is final.
    let done = c.terminate_contract(terminate(&id, &m.api_key)).await.unwrap().into_inner().contract.unwrap();
    assert_eq!(done.state, ContractState::Terminated as i32);
    assert_eq!(done.termination_mode, TerminationMode::Merchant as i32);
    assert_eq!(done.termination_remark, "service closed");
    assert!(done.terminated_at_ms > 0);
    assert_eq!(done.ended_at_ms, done.terminated_at_ms);
    refused(c.resume_contract(resume(&id, &m.api_key)).await, Code::FailedPrecondition, "");
    refused(c.suspend_contract(suspend(&id, "late", None, &m.api_key)).await, Code::FailedPrecondition, "");
    refused(
        c.modify_contract(modify(&id, 100, Cycle::Unspecified, None, &m.api_key)).await,
        Code::FailedPrecondition,
        "",
    );
    refused(c.terminate_contract(terminate(&id, &m.api_key)).await, Code::FailedPrecondition, "");
    let last = get(&ch, &id).await;
    assert_eq!((last.state, last.version), (ContractState::Terminated as i32, done.version));

    // Without a key nothing changes.
    refused(
        c.modify_contract(ModifyContractRequest {
            contract_id: id.clone(),
            amount_per_cycle: Some(Money { minor_units: 1, currency: "CNY".into() }),
            cycle: 0,
            expected_version: None,
        })
        .await,
        Code::Unauthenticated,
        "",
    );
}

async fn a_modification_is_noticed_to_the_payer(backend: Backend) {
    let p = run(backend, 0, &[]).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2NTC0001").await;
    let mut c = ContractsServiceClient::new(ch.clone());
    let signed = sign(&ch, sign_request(&m, "payer-notice", 2_500)).await;
    let id = signed.contract_id.clone();
    let modified = c
        .modify_contract(modify(&id, 3_000, Cycle::Unspecified, None, &m.api_key))
        .await
        .unwrap()
        .into_inner()
        .contract
        .unwrap();
    assert_eq!(modified.amount_per_cycle.unwrap().minor_units, 3_000);

    let notifier = NotifierServiceClient::new(ch.clone());
    let notices = |id: String| {
        let mut n = notifier.clone();
        async move {
            n.list_notices(support::op(ListNoticesRequest { contract_id: id }))
                .await
                .ok()
                .map(|r| r.into_inner().notices)
        }
    };
    // The notifier is following: the signing notice is there.
    eventually("the signing notice", 10, || {
        let f = notices(id.clone());
        async move { f.await.filter(|l| l.iter().any(|n| n.kind == NoticeKind::ContractSigned as i32)) }
    })
    .await;
    let modified_notice = eventually("a CONTRACT_MODIFIED notice", 10, || {
        let f = notices(id.clone());
        async move { f.await?.into_iter().find(|n| n.kind == NoticeKind::ContractModified as i32) }
    })
    .await;
    assert_eq!(modified_notice.recipient, "payer-notice");
    assert_eq!(modified_notice.contract_id, id);
    assert!(!modified_notice.text.is_empty());
}

async fn a_contract_expires_at_the_end_of_its_plans_validity(backend: Backend) {
    let p = run(backend, 0, &["--test-clock"]).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2EXP0001").await;
    let mut c = ContractsServiceClient::new(ch.clone());
    let signed = sign(&ch, sign_request(&m, "payer-exp", 1_990)).await;
    let id = signed.contract_id.clone();
    assert_eq!(signed.expires_at_ms - signed.signed_at_ms, 395 * DAY_MS, "the plan's validity_days");
    assert_eq!(signed.ended_at_ms, 0);
    // A contract without a plan has no end of validity.
    let open = sign(&ch, planless(&m, "payer-open", 1_990, Cycle::Monthly)).await;
    assert_eq!(open.expires_at_ms, 0);

    p.advance(400).await;
    let expired =
        contract_until(&ch, &id, "the contract to expire", 20, |c| c.state == ContractState::Expired as i32).await;
    assert!(expired.ended_at_ms >= expired.expires_at_ms, "{expired:?}");
    assert_eq!(expired.terminated_at_ms, 0);
    assert_eq!(expired.termination_mode, TerminationMode::Unspecified as i32);
    // Expired is final.
    refused(c.resume_contract(resume(&id, &m.api_key)).await, Code::FailedPrecondition, "");
    refused(c.terminate_contract(terminate(&id, &m.api_key)).await, Code::FailedPrecondition, "");
    let listed = c.list_contracts(list(ContractState::Expired, "", 0, "", &m.api_key)).await.unwrap().into_inner();
    let listed: Vec<String> = listed.contracts.into_iter().map(|x| x.contract_id).collect();
    assert_eq!(listed, vec![id.clone()]);
    // The contract without validity did not expire.
    assert_ne!(get(&ch, &open.contract_id).await.state, ContractState::Expired as i32);
}

async fn three_failed_charges_in_a_row_suspend_the_contract(backend: Backend) {
    let p = run(backend, 10_000, &["--test-clock"]).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2FAL0001").await;
    let signed = sign(&ch, planless(&m, "payer-broke", 800, Cycle::Daily)).await;
    let id = signed.contract_id.clone();
    assert_eq!(signed.cycle, Cycle::Daily as i32);
    let charger = ChargerServiceClient::new(ch.clone());

    for period in 1..=3u32 {
        assert_eq!(scenario::bill_next_period(&ch, &id).await, period);
        let charge = scenario::charge_id(&id, period);
        eventually(&format!("charge {period} to fail"), 15, || {
            let mut charger = charger.clone();
            let charge = charge.clone();
            async move {
                let ch = charger
                    .get_charge(support::op(GetChargeRequest { charge_id: charge }))
                    .await
                    .ok()?
                    .into_inner()
                    .charge?;
                (ch.state == ChargeState::Failed as i32).then_some(())
            }
        })
        .await;
        if period < 3 {
            // Once the contracts follower has seen the failure: one or two do not suspend.
            p.caught_up().await;
            let c = get(&ch, &id).await;
            assert_eq!(c.state, ContractState::Active as i32, "after {period} failed charge(s): {c:?}");
        }
    }
    let suspended =
        contract_until(&ch, &id, "the contract to be suspended", 15, |c| c.state == ContractState::Suspended as i32)
            .await;
    assert!(suspended.suspension_reason.contains("3 consecutive failed charges"), "{:?}", suspended.suspension_reason);
    assert!(suspended.suspension_reason.contains(&scenario::charge_id(&id, 3)), "{:?}", suspended.suspension_reason);

    // Suspended: no more charges are issued as days go by.
    let scheduler = SchedulerServiceClient::new(ch.clone());
    eventually("the schedule to stop", 15, || {
        let mut s = scheduler.clone();
        let id = id.clone();
        async move {
            let sch =
                s.get_schedule(support::op(GetScheduleRequest { contract_id: id })).await.ok()?.into_inner().schedule?;
            (!sch.active).then_some(())
        }
    })
    .await;
    p.advance(2).await;
    p.settled().await;
    let mut charger = charger.clone();
    let err =
        charger.get_charge(support::op(GetChargeRequest { charge_id: scenario::charge_id(&id, 4) })).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(get(&ch, &id).await.state, ContractState::Suspended as i32);
}

async fn an_unused_contract_is_flagged_then_ended_by_the_platform(backend: Backend) {
    let p = run(backend, 0, &["--test-clock"]).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2ZMB0001").await;
    let signed = sign(&ch, planless(&m, "payer-idle", 9_900, Cycle::Yearly)).await;
    let id = signed.contract_id.clone();
    assert_eq!(signed.zombie_flagged_at_ms, 0);
    assert_eq!(signed.expires_at_ms, 0);

    // Not yet idle for 180 days: nothing happens.
    p.advance(170).await;
    clean_up_passed(&ch, &m).await;
    let c = get(&ch, &id).await;
    assert_eq!((c.state, c.zombie_flagged_at_ms), (ContractState::Active as i32, 0), "{c:?}");

    p.advance(11).await;
    let flagged = contract_until(&ch, &id, "the zombie flag", 20, |c| c.zombie_flagged_at_ms != 0).await;
    assert_eq!(flagged.state, ContractState::Active as i32);
    assert!(flagged.zombie_flagged_at_ms >= signed.signed_at_ms + 180 * DAY_MS, "{flagged:?}");

    p.advance(31).await;
    let ended =
        contract_until(&ch, &id, "the platform to end it", 20, |c| c.state == ContractState::Terminated as i32).await;
    assert_eq!(ended.termination_mode, TerminationMode::Platform as i32);
    assert!(ended.terminated_at_ms >= flagged.zombie_flagged_at_ms + 30 * DAY_MS, "{ended:?}");
    assert!(!ended.termination_remark.is_empty());
}

async fn a_contract_used_again_after_its_zombie_flag_is_flagged_when_idle_again(backend: Backend) {
    let p = run(backend, 0, &["--test-clock"]).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2ZMB0002").await;
    let mut c = ContractsServiceClient::new(ch.clone());
    let charger = ChargerServiceClient::new(ch.clone());
    let signed = sign(&ch, planless(&m, "payer-back", 1_500, Cycle::Monthly)).await;
    let id = signed.contract_id.clone();
    let nudge = || p.advance_seconds(1);

    // Suspended (so neither charged nor flagged) for half a year, then resumed: idle, flagged.
    c.suspend_contract(suspend(&id, "payer abroad", None, &m.api_key)).await.unwrap();
    scenario::wait_stopped(&ch, &id).await;
    p.advance_seconds(180 * DAY_SECS + 6 * 3_600).await;
    c.resume_contract(resume(&id, &m.api_key)).await.unwrap();
    nudge().await;
    let first_flag = contract_until(&ch, &id, "the first zombie flag", 15, |c| c.zombie_flagged_at_ms != 0)
        .await
        .zombie_flagged_at_ms;

    // Used again: the sixth month's charge (the first due after the resumption) succeeds.
    scenario::wait_billing(&ch, &id).await;
    assert_eq!(scenario::bill_next_period(&ch, &id).await, 6);
    let sixth = scenario::charge_id(&id, 6);
    eventually("the sixth period's charge to succeed", 15, || {
        let mut charger = charger.clone();
        let sixth = sixth.clone();
        async move {
            let ch = charger
                .get_charge(support::op(GetChargeRequest { charge_id: sixth }))
                .await
                .ok()?
                .into_inner()
                .charge?;
            (ch.state == ChargeState::Succeeded as i32).then_some(())
        }
    })
    .await;
    p.caught_up().await;

    // Idle again for more than 180 days: flagged again, later than the first time.
    c.suspend_contract(suspend(&id, "payer abroad again", None, &m.api_key)).await.unwrap();
    scenario::wait_stopped(&ch, &id).await;
    p.advance(181).await;
    c.resume_contract(resume(&id, &m.api_key)).await.unwrap();
    nudge().await;
    let again = contract_until(&ch, &id, "a second zombie flag", 15, |c| c.zombie_flagged_at_ms > first_flag).await;
    assert_eq!(again.state, ContractState::Active as i32);
}
