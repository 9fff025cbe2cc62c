//! The simulator provider: deterministic from a seed, so a run can be repeated exactly. Each
//! call takes a log-normally distributed time (a median and a 99th percentile), a share of
//! deductions answer ambiguously (as a timeout would: the attempt was taken, but the answer
//! is lost, and only a query tells the outcome), and a share are declined.
//!
//! Given a clock ([`Simulator::keeping_statements`]), it also keeps a book of what it debited
//! and paid back, in memory, and serves each merchant's daily statement from it in WeChat
//! Pay's `downloadbill` format; with discrepancies asked for, each day's statement leaves out
//! its first debit (a short payment), shows a failed attempt as paid (a status mismatch) and a
//! second debit of a charge under another of its order numbers (a duplicate).
use crate::{
    BoxFuture, ChargeAttempt, Lookup, PreDebitNotice, Provider, ProviderError, ProviderOutcome, RefundOutcome,
    RefundRequest, SigningRequest, StatementRequest, Termination,
};
use autodebit_domain::clock::Clock;
use autodebit_domain::statement::{Entry, Writer};
use autodebit_domain::{ChargeId, Money};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub seed: u64,
    /// Declines per 10,000 charges.
    pub decline_basis_points: u32,
    /// Of those declines, how many per 10,000 are hard (the contract is gone at the
    /// provider): never worth retrying.
    pub hard_decline_basis_points: u32,
    /// Deductions per 10,000 answered ambiguously (the charger must query).
    pub transient_basis_points: u32,
    /// Median time a call takes (zero: answers at once).
    pub latency_median: Duration,
    /// 99th percentile of the time a call takes (at most the median: every call takes the median).
    pub latency_p99: Duration,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            seed: 1,
            decline_basis_points: 500,
            hard_decline_basis_points: 0,
            transient_basis_points: 0,
            latency_median: Duration::ZERO,
            latency_p99: Duration::ZERO,
        }
    }
}

pub struct Simulator {
    config: SimulatorConfig,
    book: Option<Book>,
}

/// What the simulator debited, declined and paid back, per merchant.
struct Book {
    clock: Arc<dyn Clock>,
    discrepancies: bool,
    entries: Mutex<HashMap<String, Vec<Booked>>>,
}

struct Booked {
    at_ms: i64,
    entry: Entry,
    declined: bool,
}

impl Simulator {
    pub fn new(config: SimulatorConfig) -> Self {
        Simulator { config, book: None }
    }

    /// Keeps the book its statements are made from, dated by `clock`; `discrepancies` makes
    /// each day's statement disagree with the books in the three ways above.
    pub fn keeping_statements(mut self, clock: Arc<dyn Clock>, discrepancies: bool) -> Self {
        self.book = Some(Book { clock, discrepancies, entries: Mutex::default() });
        self
    }

    fn keep(&self, merchant: &str, entry: Entry, declined: bool) {
        let Some(book) = &self.book else { return };
        let now = book.clock.now();
        let time = now.with_timezone(&chrono_tz_shanghai()).format("%Y-%m-%d %H:%M:%S").to_string();
        if let Ok(mut entries) = book.entries.lock() {
            entries.entry(merchant.to_string()).or_default().push(Booked {
                at_ms: now.timestamp_millis(),
                entry: Entry { time, ..entry },
                declined,
            });
        }
    }

    /// The statement of `merchant`'s day, from the book.
    fn write_statement(
        &self,
        request: &StatementRequest,
        sink: &mut (dyn std::io::Write + Send),
    ) -> Result<(), ProviderError> {
        let Some(book) = &self.book else {
            return Err(ProviderError::Unsupported("this simulator keeps no book of its debits".into()));
        };
        // Every charge the book ever debited (any day): a declined attempt of one of them is
        // not to be shown as paid, which would make the charge's real debit look doubled.
        let mut paid: std::collections::HashSet<ChargeId> = std::collections::HashSet::new();
        let day: Vec<(Entry, bool)> = {
            let entries = book.entries.lock().map_err(|_| ProviderError::Transport("the book is poisoned".into()))?;
            for b in entries.get(request.merchant_id.as_str()).into_iter().flatten() {
                if !b.declined
                    && b.entry.refund.is_none()
                    && let Some((c, _)) = ChargeId::from_out_trade_no(&b.entry.out_trade_no)
                {
                    paid.insert(c);
                }
            }
            let mut day: Vec<(i64, Entry, bool)> = entries
                .get(request.merchant_id.as_str())
                .into_iter()
                .flatten()
                .filter(|b| {
                    autodebit_domain::clock::from_millis(b.at_ms).with_timezone(&chrono_tz_shanghai()).date_naive()
                        == request.date
                })
                .map(|b| (b.at_ms, b.entry.clone(), b.declined))
                .collect();
            day.sort_by(|a, b| (a.0, &a.1.out_trade_no).cmp(&(b.0, &b.1.out_trade_no)));
            day.into_iter().map(|(_, e, d)| (e, d)).collect()
        };
        let mut lines: Vec<Entry> = day.iter().filter(|(_, declined)| !declined).map(|(e, _)| e.clone()).collect();
        if book.discrepancies {
            let debits: Vec<usize> = (0..lines.len()).filter(|i| lines[*i].refund.is_none()).collect();
            if let [first, second, ..] = debits[..] {
                // The second debit again, under its charge's next order number.
                if let Some((charge, attempt)) = ChargeId::from_out_trade_no(&lines[second].out_trade_no) {
                    let again = Entry {
                        out_trade_no: charge.out_trade_no(attempt + 1),
                        transaction_id: format!("{}d", lines[second].transaction_id),
                        ..lines[second].clone()
                    };
                    lines.push(again);
                }
                lines.remove(first);
            }
            // A declined attempt of a charge that took nothing (so far), shown as paid.
            if let Some((e, _)) = day.iter().rev().find(|(e, declined)| {
                *declined && ChargeId::from_out_trade_no(&e.out_trade_no).is_some_and(|(c, _)| !paid.contains(&c))
            }) {
                lines.push(Entry { transaction_id: format!("sim{}", e.out_trade_no), ..e.clone() });
            }
        }
        let fail = |e: std::io::Error| ProviderError::Transport(format!("writing the statement: {e}"));
        let mut w = Writer::new(sink, request.merchant_id.as_str()).map_err(fail)?;
        for e in &lines {
            w.entry(e).map_err(fail)?;
        }
        w.finish().map_err(fail)?;
        Ok(())
    }

    /// The outcome of `charge`'s attempt `attempt`: the same seed, charge and attempt always
    /// give the same answer; another attempt rolls again.
    pub fn outcome(&self, charge: ChargeId, attempt: u32, amount: Money) -> ProviderOutcome {
        let roll = self.roll(charge, attempt);
        if (roll % 10_000) < u64::from(self.config.decline_basis_points) {
            if (mix(roll ^ 0x5eed) % 10_000) < u64::from(self.config.hard_decline_basis_points) {
                return ProviderOutcome::Declined {
                    code: "CONTRACT_NOT_EXIST".into(),
                    message: "the payer's contract no longer exists at the provider".into(),
                    retryable: false,
                };
            }
            ProviderOutcome::Declined {
                code: "NOTENOUGH".into(),
                message: format!("balance too low for {amount}"),
                retryable: true,
            }
        } else {
            ProviderOutcome::Succeeded { transaction_id: format!("sim{:016x}", mix(roll)) }
        }
    }

    fn roll(&self, charge: ChargeId, attempt: u32) -> u64 {
        mix(self.config.seed ^ fnv1a(charge.to_string().as_bytes()) ^ u64::from(attempt).wrapping_mul(0x9E37_79B9))
    }

    /// How long the call keyed `key` takes: log-normal through the median and the 99th
    /// percentile (z = 2.326 at the 99th).
    pub fn latency(&self, key: u64) -> Duration {
        let (median, p99) = (self.config.latency_median, self.config.latency_p99);
        if median.is_zero() || p99 <= median {
            return median;
        }
        let sigma = (p99.as_secs_f64() / median.as_secs_f64()).ln() / 2.326;
        // Box-Muller from two uniforms in (0, 1].
        let u1 = ((mix(key) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = ((mix(key ^ 0xa5a5) >> 11) as f64) / (1u64 << 53) as f64;
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        Duration::from_secs_f64((median.as_secs_f64() * (sigma * z).exp()).min(60.0))
    }

    async fn wait(&self, key: u64) {
        let d = self.latency(key);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

impl Provider for Simulator {
    fn name(&self) -> &'static str {
        "simulator"
    }

    fn charge<'a>(&'a self, attempt: &'a ChargeAttempt) -> BoxFuture<'a, ProviderOutcome> {
        Box::pin(async move {
            let roll = self.roll(attempt.charge_id, attempt.attempt);
            self.wait(roll).await;
            let outcome = self.outcome(attempt.charge_id, attempt.attempt, attempt.amount);
            let entry = Entry {
                transaction_id: match &outcome {
                    ProviderOutcome::Succeeded { transaction_id } => transaction_id.clone(),
                    _ => String::new(),
                },
                out_trade_no: attempt.out_trade_no.clone(),
                amount: attempt.amount.minor_units(),
                // 0.6%, in 0.00001 yuan.
                fee: attempt.amount.minor_units() * 6,
                currency: attempt.amount.currency().to_string(),
                ..Entry::default()
            };
            self.keep(attempt.merchant_id.as_str(), entry, !matches!(outcome, ProviderOutcome::Succeeded { .. }));
            if (mix(roll ^ 0x7a) % 10_000) < u64::from(self.config.transient_basis_points) {
                return ProviderOutcome::Unknown { reason: "the answer was lost (simulated timeout)".into() };
            }
            outcome
        })
    }

    fn query<'a>(&'a self, attempt: &'a ChargeAttempt) -> BoxFuture<'a, Lookup> {
        Box::pin(async move {
            self.wait(self.roll(attempt.charge_id, attempt.attempt) ^ 0x9).await;
            Lookup::Ended(self.outcome(attempt.charge_id, attempt.attempt, attempt.amount))
        })
    }

    fn refund<'a>(&'a self, refund: &'a RefundRequest) -> BoxFuture<'a, RefundOutcome> {
        Box::pin(async move {
            let key = fnv1a(refund.out_refund_no.as_bytes()) ^ self.config.seed;
            self.wait(key).await;
            let refund_id = format!("simr{:016x}", mix(key));
            let kept = self.book.as_ref().and_then(|b| b.entries.lock().ok()).is_some_and(|entries| {
                entries.get(refund.merchant_id.as_str()).is_some_and(|all| {
                    all.iter().any(|b| b.entry.refund.as_ref().is_some_and(|r| r.1 == refund.out_refund_no))
                })
            });
            if !kept {
                let entry = Entry {
                    transaction_id: refund.transaction_id.clone(),
                    out_trade_no: refund.out_trade_no.clone(),
                    amount: refund.charge_amount.minor_units(),
                    refund: Some((refund_id.clone(), refund.out_refund_no.clone(), refund.refund_amount.minor_units())),
                    fee: -(refund.refund_amount.minor_units() * 6),
                    currency: refund.charge_amount.currency().to_string(),
                    ..Entry::default()
                };
                self.keep(refund.merchant_id.as_str(), entry, false);
            }
            RefundOutcome::Succeeded { refund_id }
        })
    }

    fn notify<'a>(&'a self, _: &'a PreDebitNotice) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async { Ok(()) })
    }

    fn terminate<'a>(&'a self, _: &'a Termination) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async { Ok(()) })
    }

    fn signing_url<'a>(&'a self, _: &'a SigningRequest) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async {
            Err(ProviderError::Unsupported(
                "simulator merchants sign on the platform's own authorization page (StartSigning)".into(),
            ))
        })
    }

    fn shares_payments(&self, _: &str) -> bool {
        true
    }

    /// Every share is paid at once.
    fn share<'a>(&'a self, request: &'a crate::ShareRequest) -> BoxFuture<'a, crate::ShareOutcome> {
        Box::pin(async move {
            let key = fnv1a(request.out_order_no.as_bytes()) ^ self.config.seed;
            self.wait(key).await;
            crate::ShareOutcome::Finished { order_id: format!("simps{:016x}", mix(key)) }
        })
    }

    fn statement<'a>(
        &'a self,
        request: &'a StatementRequest,
        sink: &'a mut (dyn std::io::Write + Send),
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move { self.write_statement(request, sink) })
    }
}

fn chrono_tz_shanghai() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is an offset")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// splitmix64's finaliser: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebit_domain::ContractId;

    #[tokio::test]
    async fn deterministic_and_near_the_configured_rate() {
        let sim = Simulator::new(SimulatorConfig {
            seed: 7,
            decline_basis_points: 1_000,
            hard_decline_basis_points: 0,
            ..SimulatorConfig::default()
        });
        let contract = ContractId::generate();
        let mut declined = 0;
        for p in 0..2_000 {
            let id = ChargeId::for_period(contract, p);
            let a = sim.outcome(id, 1, Money::cny(100));
            assert_eq!(a, sim.outcome(id, 1, Money::cny(100)));
            if matches!(a, ProviderOutcome::Declined { .. }) {
                declined += 1;
            }
        }
        assert!((120..=280).contains(&declined), "{declined} declines of 2000 at 10%");
        let never = Simulator::new(SimulatorConfig {
            seed: 7,
            decline_basis_points: 0,
            hard_decline_basis_points: 0,
            ..SimulatorConfig::default()
        });
        let hard = Simulator::new(SimulatorConfig {
            seed: 7,
            decline_basis_points: 10_000,
            hard_decline_basis_points: 10_000,
            ..SimulatorConfig::default()
        });
        assert!(matches!(
            hard.outcome(ChargeId::for_period(contract, 1), 1, Money::cny(1)),
            ProviderOutcome::Declined { retryable: false, .. }
        ));
        assert!(matches!(
            never.outcome(ChargeId::for_period(contract, 1), 1, Money::cny(1)),
            ProviderOutcome::Succeeded { .. }
        ));
    }

    #[test]
    fn latency_is_log_normal_through_the_median_and_p99() {
        let sim = Simulator::new(SimulatorConfig {
            latency_median: Duration::from_millis(300),
            latency_p99: Duration::from_millis(1500),
            ..SimulatorConfig::default()
        });
        let mut all: Vec<Duration> = (0..20_000u64).map(|k| sim.latency(k)).collect();
        all.sort();
        let (p50, p99) = (all[10_000].as_millis(), all[19_800].as_millis());
        assert!((270..=330).contains(&p50), "p50 {p50} ms");
        assert!((1300..=1700).contains(&p99), "p99 {p99} ms");
    }

    #[tokio::test]
    async fn an_ambiguous_answer_is_settled_by_the_query() {
        let sim = Simulator::new(SimulatorConfig {
            transient_basis_points: 10_000,
            decline_basis_points: 0,
            ..SimulatorConfig::default()
        });
        let contract = ContractId::generate();
        let merchant = autodebit_domain::MerchantId::parse("m1").unwrap();
        let a = ChargeAttempt::new(ChargeId::for_period(contract, 1), contract, merchant, 1, Money::cny(1));
        assert!(matches!(sim.charge(&a).await, ProviderOutcome::Unknown { .. }));
        assert!(matches!(sim.query(&a).await, Lookup::Ended(ProviderOutcome::Succeeded { .. })));
    }
}
