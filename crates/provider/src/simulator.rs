//! The simulator provider: deterministic from a seed, so a run can be repeated exactly. Each
//! call takes a log-normally distributed time (a median and a 99th percentile), a share of
//! deductions answer ambiguously (as a timeout would: the attempt was taken, but the answer
//! is lost, and only a query tells the outcome), and a share are declined.
use crate::{
    BoxFuture, ChargeAttempt, Lookup, PreDebitNotice, Provider, ProviderError, ProviderOutcome, RefundOutcome,
    RefundRequest, SigningRequest, Termination,
};
use autodebit_domain::{ChargeId, Money};
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
}

impl Simulator {
    pub fn new(config: SimulatorConfig) -> Self {
        Simulator { config }
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
            if (mix(roll ^ 0x7a) % 10_000) < u64::from(self.config.transient_basis_points) {
                return ProviderOutcome::Unknown { reason: "the answer was lost (simulated timeout)".into() };
            }
            self.outcome(attempt.charge_id, attempt.attempt, attempt.amount)
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
            RefundOutcome::Succeeded { refund_id: format!("simr{:016x}", mix(key)) }
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
