//! Back-pressure in front of a provider: at most N calls in flight per merchant, and calls
//! spaced to the provider's quota (WeChat Pay allows 150 requests a second to `pappayapply`).
use crate::{
    BoxFuture, ChargeAttempt, Lookup, PreDebitNotice, Provider, ProviderError, ProviderOutcome, RefundOutcome,
    RefundRequest, SigningRequest, Termination,
};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// `per_second` calls a second spaced evenly, no bursts: one call every 1/`per_second` s.
pub fn quota(per_second: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN)).allow_burst(NonZeroU32::MIN)
}

/// A provider behind a per-merchant concurrency limit and, optionally, a rate limit.
pub struct Limited<P> {
    inner: P,
    per_merchant: usize,
    merchants: Mutex<HashMap<String, Arc<Semaphore>>>,
    rate: Option<DefaultDirectRateLimiter>,
}

impl<P: Provider> Limited<P> {
    /// `per_merchant` calls in flight per merchant; `per_second` 0 means no rate limit.
    pub fn new(inner: P, per_merchant: usize, per_second: u32) -> Self {
        Limited {
            inner,
            per_merchant: per_merchant.max(1),
            merchants: Mutex::new(HashMap::new()),
            rate: (per_second > 0).then(|| RateLimiter::direct(quota(per_second))),
        }
    }

    fn permits(&self, merchant: &str) -> Arc<Semaphore> {
        let mut all = self.merchants.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(merchant.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.per_merchant))).clone()
    }
}

impl<P: Provider> Limited<P> {
    /// Waits for a slot of `merchant`'s allowance (held until the permit drops) and, with
    /// `rated`, for the quota.
    async fn slot(&self, merchant: &str, rated: bool) -> Option<tokio::sync::OwnedSemaphorePermit> {
        // The semaphore is never closed.
        let permit = self.permits(merchant).acquire_owned().await.ok();
        if let (true, Some(rate)) = (rated, &self.rate) {
            rate.until_ready().await;
        }
        permit
    }
}

impl<P: Provider> Provider for Limited<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn charge<'a>(&'a self, attempt: &'a ChargeAttempt) -> BoxFuture<'a, ProviderOutcome> {
        Box::pin(async move {
            let _slot = self.slot(attempt.merchant_id.as_str(), true).await;
            self.inner.charge(attempt).await
        })
    }

    fn query<'a>(&'a self, attempt: &'a ChargeAttempt) -> BoxFuture<'a, Lookup> {
        Box::pin(async move {
            let _slot = self.slot(attempt.merchant_id.as_str(), true).await;
            self.inner.query(attempt).await
        })
    }

    fn refund<'a>(&'a self, refund: &'a RefundRequest) -> BoxFuture<'a, RefundOutcome> {
        Box::pin(async move {
            let _slot = self.slot(refund.merchant_id.as_str(), false).await;
            self.inner.refund(refund).await
        })
    }

    fn notify<'a>(&'a self, notice: &'a PreDebitNotice) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let _slot = self.slot(notice.merchant_id.as_str(), false).await;
            self.inner.notify(notice).await
        })
    }

    fn terminate<'a>(&'a self, termination: &'a Termination) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let _slot = self.slot(termination.merchant_id.as_str(), false).await;
            self.inner.terminate(termination).await
        })
    }

    fn signing_url<'a>(&'a self, request: &'a SigningRequest) -> BoxFuture<'a, Result<String, ProviderError>> {
        self.inner.signing_url(request)
    }

    fn share<'a>(&'a self, request: &'a crate::ShareRequest) -> BoxFuture<'a, crate::ShareOutcome> {
        Box::pin(async move {
            let _slot = self.slot(request.merchant_id.as_str(), false).await;
            self.inner.share(request).await
        })
    }

    fn shares_payments(&self, merchant: &str) -> bool {
        self.inner.shares_payments(merchant)
    }

    fn statement_account(&self, merchant: &str) -> String {
        self.inner.statement_account(merchant)
    }

    fn statement<'a>(
        &'a self,
        request: &'a crate::StatementRequest,
        sink: &'a mut (dyn std::io::Write + Send),
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.inner.statement(request, sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebit_domain::{ChargeId, ContractId, MerchantId, Money};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Counts calls in flight, and the most at once.
    #[derive(Default)]
    struct Probe {
        now: AtomicUsize,
        most: AtomicUsize,
    }

    impl Provider for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }
        fn charge<'a>(&'a self, _: &'a ChargeAttempt) -> BoxFuture<'a, ProviderOutcome> {
            Box::pin(async move {
                let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                self.most.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.now.fetch_sub(1, Ordering::SeqCst);
                ProviderOutcome::Succeeded { transaction_id: "t".into() }
            })
        }
        fn query<'a>(&'a self, _: &'a ChargeAttempt) -> BoxFuture<'a, Lookup> {
            Box::pin(async { Lookup::NotFound })
        }
        fn refund<'a>(&'a self, _: &'a RefundRequest) -> BoxFuture<'a, RefundOutcome> {
            Box::pin(async { RefundOutcome::Failed { code: "PROBE".into(), message: String::new() } })
        }
        fn notify<'a>(&'a self, _: &'a PreDebitNotice) -> BoxFuture<'a, Result<(), ProviderError>> {
            Box::pin(async { Ok(()) })
        }
        fn terminate<'a>(&'a self, _: &'a Termination) -> BoxFuture<'a, Result<(), ProviderError>> {
            Box::pin(async { Ok(()) })
        }
        fn signing_url<'a>(&'a self, _: &'a SigningRequest) -> BoxFuture<'a, Result<String, ProviderError>> {
            Box::pin(async { Err(ProviderError::Unsupported("probe".into())) })
        }
    }

    fn attempt(merchant: &str, n: u32) -> ChargeAttempt {
        let contract = ContractId::generate();
        ChargeAttempt::new(
            ChargeId::for_period(contract, n),
            contract,
            MerchantId::parse(merchant).unwrap(),
            1,
            Money::cny(100),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_n_in_flight_per_merchant() {
        let probe = Arc::new(Probe::default());
        let limited = Limited::new(probe.clone(), 3, 0);
        let attempts: Vec<_> = (0..12).map(|n| attempt("mch_a", n)).collect();
        futures::future::join_all(attempts.iter().map(|a| limited.charge(a))).await;
        assert_eq!(probe.most.load(Ordering::SeqCst), 3);
        // Another merchant has its own allowance.
        let probe = Arc::new(Probe::default());
        let limited = Limited::new(probe.clone(), 3, 0);
        let attempts: Vec<_> = (0..12).map(|n| attempt(if n % 2 == 0 { "mch_a" } else { "mch_b" }, n)).collect();
        futures::future::join_all(attempts.iter().map(|a| limited.charge(a))).await;
        assert_eq!(probe.most.load(Ordering::SeqCst), 6);
    }

    #[test]
    fn calls_are_spaced_to_the_quota() {
        let clock = governor::clock::FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(quota(150), clock.clone());
        let mut took = Duration::ZERO;
        for _ in 0..301 {
            // Each call waits (the fake clock moves) until the limiter lets it through.
            while let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(&clock));
                clock.advance(wait);
                took += wait;
            }
        }
        // 301 calls at 150 a second: the last goes two seconds after the first, none at once.
        assert!(took >= Duration::from_millis(1_990) && took <= Duration::from_millis(2_010), "{took:?}");
        assert!(limiter.check().is_err(), "no burst");
    }
}
