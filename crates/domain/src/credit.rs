//! A merchant's credit score: where it starts, what moves it and by how much, and what a low
//! score stops. Every change is an event naming its cause.
//!
//! | cause | points |
//! |---|---|
//! | a complaint filed against the merchant (unauthorized charge) | −5 |
//! | a complaint filed against the merchant (any other kind) | −2 |
//! | a complaint's deadline missed | −10 |
//! | its refund rate over 30 days above 5% (a refund-rate review opened) | −5 |
//! | an operator's adjustment | as given, with a reason |
//!
//! Below [`SIGNING_REFUSED_BELOW`] the merchant opens no new signing sessions; below
//! [`CHARGING_FROZEN_BELOW`] it charges nothing either. The score never leaves 0..=1000.
use crate::complaint::Kind;

/// Where a merchant's score starts unless the platform is configured otherwise.
pub const DEFAULT_INITIAL: i64 = 100;
/// Below this, new signings are refused.
pub const SIGNING_REFUSED_BELOW: i64 = 60;
/// Below this, charging is frozen too.
pub const CHARGING_FROZEN_BELOW: i64 = 40;
/// The score's bounds.
pub const MIN: i64 = 0;
pub const MAX: i64 = 1000;

pub const COMPLAINT_UNAUTHORIZED: i64 = -5;
pub const COMPLAINT_OTHER: i64 = -2;
pub const MISSED_DEADLINE: i64 = -10;
pub const REFUND_RATE_REVIEW: i64 = -5;

/// Why a score moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    ComplaintFiled { complaint_id: String, kind: Kind },
    DeadlineMissed { complaint_id: String },
    RefundRateReview { review: String },
    Adjusted { reason: String },
}

impl Cause {
    /// The points this cause moves the score by (an adjustment's are its own).
    pub fn weight(&self) -> Option<i64> {
        match self {
            Cause::ComplaintFiled { kind: Kind::UnauthorizedCharge, .. } => Some(COMPLAINT_UNAUTHORIZED),
            Cause::ComplaintFiled { .. } => Some(COMPLAINT_OTHER),
            Cause::DeadlineMissed { .. } => Some(MISSED_DEADLINE),
            Cause::RefundRateReview { .. } => Some(REFUND_RATE_REVIEW),
            Cause::Adjusted { .. } => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Cause::ComplaintFiled { .. } => "complaint_filed",
            Cause::DeadlineMissed { .. } => "deadline_missed",
            Cause::RefundRateReview { .. } => "refund_rate_review",
            Cause::Adjusted { .. } => "adjusted",
        }
    }
}

/// What a score lets the merchant do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Good,
    /// No new signings.
    SigningRefused,
    /// No new signings, no charges.
    ChargingFrozen,
}

pub fn standing(score: i64) -> Standing {
    if score < CHARGING_FROZEN_BELOW {
        Standing::ChargingFrozen
    } else if score < SIGNING_REFUSED_BELOW {
        Standing::SigningRefused
    } else {
        Standing::Good
    }
}

/// The score after moving `score` by `delta`, kept within the bounds.
pub fn moved(score: i64, delta: i64) -> i64 {
    score.saturating_add(delta).clamp(MIN, MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_weigh_as_documented_and_the_score_stays_in_bounds() {
        let filed = |kind| Cause::ComplaintFiled { complaint_id: "cp".into(), kind };
        assert_eq!(filed(Kind::UnauthorizedCharge).weight(), Some(-5));
        assert_eq!(filed(Kind::AmountDispute).weight(), Some(-2));
        assert_eq!(Cause::DeadlineMissed { complaint_id: "cp".into() }.weight(), Some(-10));
        assert_eq!(Cause::RefundRateReview { review: "r".into() }.weight(), Some(-5));
        assert_eq!(Cause::Adjusted { reason: "x".into() }.weight(), None);
        assert_eq!(moved(5, -10), 0);
        assert_eq!(moved(995, 10), 1000);
    }

    #[test]
    fn a_low_score_refuses_signings_then_freezes_charging() {
        assert_eq!(standing(DEFAULT_INITIAL), Standing::Good);
        assert_eq!(standing(60), Standing::Good);
        assert_eq!(standing(59), Standing::SigningRefused);
        assert_eq!(standing(40), Standing::SigningRefused);
        assert_eq!(standing(39), Standing::ChargingFrozen);
    }
}
