//! Many calls at once into one replica on PostgreSQL: no call waits for a second database
//! connection while it holds one, and past the process's limit calls are shed with a retry
//! hint instead of hanging. 64 concurrent `TriggerCharge` calls, twelve on one contract, all
//! answer, and the daily limit is still exact.
use crate::{scenario, support};

use autodebit_proto::events::v1::{ChargeMode, Cycle, Money};
use autodebit_proto::scheduler::v1::{
    GetScheduleRequest, TriggerChargeRequest, TriggerOutcome, scheduler_service_client::SchedulerServiceClient,
};
use scenario::{authed, create_plan, onboard, sign_on};
use std::time::Duration;
use support::{Backend, eventually, run_on};
use tonic::Code;

#[tokio::test]
async fn concurrent_triggers_into_one_replica_all_answer_and_stay_within_limits() {
    let p = run_on(Backend::Postgres, 0, &["--test-clock", "--charge-window", "00:00-24:00"]).await;
    let ch = p.channel().await;
    let m = onboard(&ch, "91330100MA2SHED001").await;
    let plan = create_plan(&ch, &m, |t| t.charge_mode = ChargeMode::EventTriggered as i32).await;
    let mut contracts = Vec::new();
    for i in 0..14 {
        contracts.push(sign_on(&ch, &m, &plan, &format!("payer-{i}"), 50_000, Cycle::Monthly).await);
    }
    for id in &contracts {
        eventually("the contract's schedule", 30, || {
            let (ch, id) = (ch.clone(), id.clone());
            async move {
                let req = support::op(GetScheduleRequest { contract_id: id });
                SchedulerServiceClient::new(ch).get_schedule(req).await.ok().map(|_| ())
            }
        })
        .await;
    }
    // Twelve rides on the first contract, four on each of the others: 64 calls at once.
    let mut calls = Vec::new();
    for (i, id) in contracts.iter().enumerate() {
        let rides = if i == 0 { 12 } else { 4 };
        for r in 0..rides {
            let (ch, key, id) = (ch.clone(), m.api_key.clone(), id.clone());
            calls.push(tokio::spawn(async move {
                let mut shed = 0;
                loop {
                    let mut req = authed(
                        TriggerChargeRequest {
                            contract_id: id.clone(),
                            amount: Some(Money { minor_units: 350, currency: "CNY".into() }),
                            reason: "ride".into(),
                            idempotency_key: format!("ride-{r}"),
                        },
                        &key,
                    );
                    req.set_timeout(Duration::from_secs(10));
                    match SchedulerServiceClient::new(ch.clone()).trigger_charge(req).await {
                        Err(e) if e.code() == Code::ResourceExhausted => {
                            // Shed: the answer says when to come back.
                            let wait = e.metadata().get("grpc-retry-pushback-ms").and_then(|v| v.to_str().ok());
                            let wait: u64 = wait.and_then(|v| v.parse().ok()).expect("a retry hint");
                            shed += 1;
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                        }
                        other => return (id, other.map(|r| r.into_inner()), shed),
                    }
                }
            }));
        }
    }
    assert_eq!(calls.len(), 64);
    let mut per_contract: std::collections::HashMap<String, (u32, u32)> = Default::default();
    for call in calls {
        let (id, answer, _shed) = call.await.unwrap();
        let answer = answer.unwrap_or_else(|e| panic!("a call failed: {e:?}"));
        let e = per_contract.entry(id).or_default();
        if answer.outcome == TriggerOutcome::Scheduled as i32 {
            e.0 += 1;
        } else {
            assert_eq!(answer.rule, "daily_count", "{answer:?}");
            e.1 += 1;
        }
    }
    assert_eq!(per_contract[&contracts[0]], (10, 2), "ten rides a day on one contract, no more");
    for id in &contracts[1..] {
        assert_eq!(per_contract[id], (4, 0));
    }
}
