//! The simulator provider: deterministic from a seed, so a run can be repeated exactly.
use crate::{BoxFuture, ChargeAttempt, Provider, ProviderOutcome};
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
    /// Time each call takes.
    pub latency: Duration,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig { seed: 1, decline_basis_points: 500, hard_decline_basis_points: 0, latency: Duration::ZERO }
    }
}

pub struct Simulator {
    config: SimulatorConfig,
}

impl Simulator {
    pub fn new(config: SimulatorConfig) -> Self {
        Simulator { config }
    }

    /// Charges `amount` for `charge`'s attempt `attempt`: the same seed, charge and attempt
    /// always give the same answer; another attempt rolls again.
    pub async fn roll(&self, charge: ChargeId, attempt: u32, amount: Money) -> ProviderOutcome {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        let roll =
            mix(self.config.seed ^ fnv1a(charge.to_string().as_bytes()) ^ u64::from(attempt).wrapping_mul(0x9E37_79B9));
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
}

impl Provider for Simulator {
    fn name(&self) -> &'static str {
        "simulator"
    }

    fn charge<'a>(&'a self, attempt: &'a ChargeAttempt) -> BoxFuture<'a, ProviderOutcome> {
        Box::pin(self.roll(attempt.charge_id, attempt.attempt, attempt.amount))
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
            latency: Duration::ZERO,
        });
        let contract = ContractId::generate();
        let mut declined = 0;
        for p in 0..2_000 {
            let id = ChargeId::for_period(contract, p);
            let a = sim.roll(id, 1, Money::cny(100)).await;
            assert_eq!(a, sim.roll(id, 1, Money::cny(100)).await);
            if matches!(a, ProviderOutcome::Declined { .. }) {
                declined += 1;
            }
        }
        assert!((120..=280).contains(&declined), "{declined} declines of 2000 at 10%");
        let never = Simulator::new(SimulatorConfig {
            seed: 7,
            decline_basis_points: 0,
            hard_decline_basis_points: 0,
            latency: Duration::ZERO,
        });
        let hard = Simulator::new(SimulatorConfig {
            seed: 7,
            decline_basis_points: 10_000,
            hard_decline_basis_points: 10_000,
            latency: Duration::ZERO,
        });
        assert!(matches!(
            hard.roll(ChargeId::for_period(contract, 1), 1, Money::cny(1)).await,
            ProviderOutcome::Declined { retryable: false, .. }
        ));
        assert!(matches!(
            never.roll(ChargeId::for_period(contract, 1), 1, Money::cny(1)).await,
            ProviderOutcome::Succeeded { .. }
        ));
    }
}
