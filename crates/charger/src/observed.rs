//! Every provider call the charger makes, timed (`autodebit_provider_call_ms{provider, call,
//! outcome}`) and in a span of its own (`provider`, with the provider and the call), so a
//! charge's trace shows the time spent at the provider.
use autodebit_provider::{
    BoxFuture, ChargeAttempt, Lookup, PreDebitNotice, Provider, ProviderError, ProviderOutcome, RefundOutcome,
    RefundRequest, ShareOutcome, ShareRequest, SigningRequest, StatementRequest, Termination,
};
use autodebit_runtime::metrics;
use std::future::Future;
use tracing::Instrument;

/// A provider whose every call is timed and traced.
pub struct Observed<P>(pub P);

impl<P: Provider> Observed<P> {
    /// Runs `f`, the provider's `call`, in its span and records how long it took, labelled with
    /// the outcome `outcome` names.
    async fn timed<T>(
        &self,
        call: &'static str,
        f: impl Future<Output = T>,
        outcome: impl Fn(&T) -> &'static str,
    ) -> T {
        let provider = self.0.name();
        let span = tracing::info_span!("provider", provider, call);
        let started = std::time::Instant::now();
        let answer = f.instrument(span).await;
        let ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let labels = [("provider", provider), ("call", call), ("outcome", outcome(&answer))];
        metrics::observe_ms(metrics::PROVIDER_CALL_MS, &labels, ms);
        answer
    }
}

fn charged(o: &ProviderOutcome) -> &'static str {
    match o {
        ProviderOutcome::Succeeded { .. } => "succeeded",
        ProviderOutcome::Declined { .. } => "declined",
        ProviderOutcome::Unknown { .. } => "unknown",
    }
}

fn done<T>(r: &Result<T, ProviderError>) -> &'static str {
    if r.is_ok() { "ok" } else { "error" }
}

impl<P: Provider> Provider for Observed<P> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn charge<'a>(&'a self, attempt: &'a ChargeAttempt) -> BoxFuture<'a, ProviderOutcome> {
        Box::pin(self.timed("charge", self.0.charge(attempt), charged))
    }

    fn query<'a>(&'a self, attempt: &'a ChargeAttempt) -> BoxFuture<'a, Lookup> {
        Box::pin(self.timed("query", self.0.query(attempt), |l| match l {
            Lookup::Ended(o) => charged(o),
            Lookup::NotFound => "not_found",
            Lookup::Pending { .. } => "pending",
        }))
    }

    fn refund<'a>(&'a self, refund: &'a RefundRequest) -> BoxFuture<'a, RefundOutcome> {
        Box::pin(self.timed("refund", self.0.refund(refund), |r| match r {
            RefundOutcome::Succeeded { .. } => "succeeded",
            RefundOutcome::Failed { .. } => "failed",
            _ => "unknown",
        }))
    }

    fn notify<'a>(&'a self, notice: &'a PreDebitNotice) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.timed("notify", self.0.notify(notice), done))
    }

    fn terminate<'a>(&'a self, termination: &'a Termination) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.timed("terminate", self.0.terminate(termination), done))
    }

    fn signing_url<'a>(&'a self, request: &'a SigningRequest) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(self.timed("signing_url", self.0.signing_url(request), done))
    }

    fn shares_payments(&self, merchant: &str) -> bool {
        self.0.shares_payments(merchant)
    }

    fn share<'a>(&'a self, request: &'a ShareRequest) -> BoxFuture<'a, ShareOutcome> {
        Box::pin(self.timed("share", self.0.share(request), |s| match s {
            ShareOutcome::Finished { .. } => "succeeded",
            ShareOutcome::Failed { .. } => "failed",
            ShareOutcome::Pending { .. } => "pending",
        }))
    }

    fn statement_account(&self, merchant: &str) -> String {
        self.0.statement_account(merchant)
    }

    fn statement<'a>(
        &'a self,
        request: &'a StatementRequest,
        sink: &'a mut (dyn std::io::Write + Send),
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.timed("statement", self.0.statement(request, sink), done))
    }
}
