//! The questions analytics answers from its read models.
use crate::store;
use autodebit_eventstore::{EventStore, StoreError};
use autodebit_proto::analytics::v1 as apb;
use autodebit_runtime::auth::Principal;
use std::collections::BTreeMap;

/// The platform's figures, or one merchant's.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub contracts_active: u64,
    pub contracts_terminated: u64,
    pub contracts_suspended: u64,
    pub contracts_expired: u64,
    /// Every charge was scheduled first, whatever its outcome since.
    pub charges_scheduled: u64,
    pub charges_succeeded: u64,
    pub charges_failed: u64,
    pub charges_rejected: u64,
    /// What succeeded charges took, in minor units per currency.
    pub succeeded_minor_units_by_currency: BTreeMap<String, i64>,
    pub notices_recorded: u64,
    /// Contracts flagged unused and not ended.
    pub contracts_zombie: u64,
    /// Merchants with a risk review open.
    pub merchants_under_review: u64,
    /// The events taken in: in the operator's summary only.
    pub events_projected: u64,
}

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

/// The summary `who` may see: the operator's covers the platform; a merchant's, only its own
/// contracts, charges and notices.
pub async fn summary(store: &EventStore, who: &Principal) -> Result<Summary, StoreError> {
    let merchant = match who {
        Principal::Operator => None,
        Principal::Merchant(m) => Some(m.as_str()),
    };
    let mut out = Summary::default();
    for r in store::contracts_by_state(store, merchant).await? {
        let n = count(r.n);
        match r.state.as_str() {
            "active" => out.contracts_active = n,
            "terminated" => out.contracts_terminated = n,
            "suspended" => out.contracts_suspended = n,
            "expired" => out.contracts_expired = n,
            _ => {}
        }
    }
    for r in store::charges_by_state(store, merchant).await? {
        let n = count(r.n);
        out.charges_scheduled += n;
        match r.state.as_str() {
            "succeeded" => out.charges_succeeded = n,
            "failed" => out.charges_failed = n,
            "rejected" => out.charges_rejected = n,
            _ => {}
        }
    }
    for r in store::succeeded_by_currency(store, merchant).await? {
        out.succeeded_minor_units_by_currency.insert(r.currency, r.total);
    }
    out.contracts_zombie = count(store::zombies(store, merchant).await?);
    out.merchants_under_review = count(store::under_review(store, merchant).await?);
    for r in store::counters(store, merchant).await? {
        let n = count(r.value);
        match r.name.as_str() {
            "notices_recorded" => out.notices_recorded = n,
            "events_projected" => out.events_projected = n,
            _ => {}
        }
    }
    Ok(out)
}

/// A question's scope: the merchant whose figures it covers (`None`: the platform), and its
/// range. A merchant's questions cover only its own figures; naming another merchant is an
/// error that says nothing of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub merchant: Option<String>,
    pub from_ms: i64,
    pub until_ms: i64,
}

/// Why a question cannot be answered as asked.
#[derive(Debug, PartialEq, Eq)]
pub struct BadQuestion {
    pub field: &'static str,
    pub problem: String,
}

impl std::fmt::Display for BadQuestion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for BadQuestion {}

impl Scope {
    pub fn of(
        who: &Principal,
        merchant_id: &str,
        range: Option<&autodebit_proto::analytics::v1::TimeRange>,
    ) -> Result<Scope, BadQuestion> {
        let (from_ms, until_ms) = range.map(|r| (r.from_ms, r.until_ms)).unwrap_or((0, 0));
        if from_ms < 0 || until_ms < 0 {
            return Err(BadQuestion {
                field: "range",
                problem: "times are milliseconds since the epoch, not negative".into(),
            });
        }
        if until_ms > 0 && until_ms <= from_ms {
            return Err(BadQuestion { field: "range", problem: "until_ms must be after from_ms (or 0)".into() });
        }
        let merchant = who.scope(merchant_id).map_err(|p| BadQuestion { field: "merchant_id", problem: p.into() })?;
        Ok(Scope { merchant, from_ms, until_ms })
    }

    fn merchant(&self) -> Option<&str> {
        self.merchant.as_deref()
    }
}

/// `part` of `whole` in basis points (0 of nothing).
pub fn basis_points(part: i64, whole: i64) -> u32 {
    if whole <= 0 { 0 } else { u32::try_from(part.max(0) * 10_000 / whole).unwrap_or(10_000) }
}

/// The median of `v` (the lower middle for an even count; 0 for none).
fn median(mut v: Vec<i64>) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[(v.len() - 1) / 2]
}

/// The signing funnel grouped by `group` (`plan`, `channel`, `merchant`, or "" for one row).
pub async fn funnel(store: &EventStore, scope: &Scope, group: &str) -> Result<Vec<apb::FunnelRow>, StoreError> {
    let column = match group {
        "plan" => "plan_id",
        "channel" => "channel",
        "merchant" => "merchant_id",
        _ => "''",
    };
    let (counts, times) = store::funnel(store, column, scope.merchant(), scope.from_ms, scope.until_ms).await?;
    let mut by_group: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for t in times {
        by_group.entry(t.grp).or_default().push(t.ms);
    }
    Ok(counts
        .into_iter()
        .map(|c| apb::FunnelRow {
            median_ms_to_sign: median(by_group.remove(&c.grp).unwrap_or_default()),
            group: c.grp,
            opened: count(c.opened),
            page_viewed: count(c.page_viewed),
            agreement_ticked: count(c.ticked),
            signed: count(c.signed),
            held_for_review: count(c.held),
            sms_challenged: count(c.sms),
            abandoned: count(c.abandoned),
            expired: count(c.expired),
            rejected: count(c.rejected),
        })
        .collect())
}

/// Charges due in the range grouped by `group` (`plan`, `code`, `hour`, `merchant`, or "").
pub async fn charge_stats(
    store: &EventStore,
    scope: &Scope,
    group: &str,
) -> Result<Vec<apb::ChargeStatsRow>, StoreError> {
    let expr = match group {
        "plan" => "plan_id",
        "code" => "code",
        "hour" => "CAST(local_hour AS TEXT)",
        "merchant" => "merchant_id",
        _ => "''",
    };
    let rows = store::charge_stats(store, expr, scope.merchant(), scope.from_ms, scope.until_ms).await?;
    let mut out: Vec<apb::ChargeStatsRow> = rows
        .into_iter()
        .map(|r| {
            let settled = r.succeeded + r.failed + r.rejected;
            let group = match (group, r.grp.parse::<i64>()) {
                ("hour", Ok(h)) if h >= 0 => format!("{h:02}"),
                ("hour", _) => String::new(),
                _ => r.grp,
            };
            apb::ChargeStatsRow {
                group,
                charges: count(r.charges),
                succeeded: count(r.succeeded),
                failed: count(r.failed),
                rejected: count(r.rejected),
                pending: count(r.charges - settled),
                recovered: count(r.recovered),
                success_rate_basis_points: basis_points(r.succeeded, settled),
            }
        })
        .collect();
    out.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(out)
}

/// A month, for retention: a twelfth of a Gregorian year.
pub const MONTH_MS: i64 = 2_629_746_000;
/// The months after signing retention is measured at.
pub const RETENTION_MONTHS: [u32; 5] = [1, 2, 3, 6, 12];

/// Cohorts by signing month (UTC) of the contracts signed in the range.
pub async fn retention(
    store: &EventStore,
    scope: &Scope,
    now_ms: i64,
) -> Result<Vec<apb::RetentionCohort>, StoreError> {
    let lifetimes = store::lifetimes(store, scope.merchant(), scope.from_ms, scope.until_ms).await?;
    let mut cohorts: BTreeMap<String, apb::RetentionCohort> = BTreeMap::new();
    for l in lifetimes {
        let month = autodebit_domain::clock::from_millis(l.signed_at_ms).format("%Y-%m").to_string();
        let c = cohorts.entry(month.clone()).or_insert_with(|| apb::RetentionCohort {
            month,
            signed: 0,
            points: RETENTION_MONTHS
                .iter()
                .map(|m| apb::RetentionPoint { months: *m, eligible: 0, retained: 0 })
                .collect(),
        });
        c.signed += 1;
        for p in &mut c.points {
            let at = l.signed_at_ms + i64::from(p.months) * MONTH_MS;
            if at > now_ms {
                continue;
            }
            p.eligible += 1;
            if l.ended_at_ms == 0 || l.ended_at_ms > at {
                p.retained += 1;
            }
        }
    }
    Ok(cohorts.into_values().collect())
}

/// Notices recorded in the range, per channel that took them; and how many none took yet.
pub async fn notice_channels(
    store: &EventStore,
    scope: &Scope,
) -> Result<(Vec<apb::NoticeChannelRow>, u64), StoreError> {
    let mut unsent = 0;
    let mut rows = Vec::new();
    for r in store::notice_channels(store, scope.merchant(), scope.from_ms, scope.until_ms).await? {
        if r.channel.is_empty() {
            unsent = count(r.sent);
            continue;
        }
        rows.push(apb::NoticeChannelRow {
            channel: r.channel,
            sent: count(r.sent),
            delivered: count(r.delivered),
            opened: count(r.opened),
            converted: count(r.converted),
            open_rate_basis_points: basis_points(r.opened, r.sent),
            conversion_rate_basis_points: basis_points(r.converted, r.sent),
        });
    }
    Ok((rows, unsent))
}

/// Money per merchant and currency in the range, and MRR at its end (`now_ms` when open).
pub async fn revenue(store: &EventStore, scope: &Scope, now_ms: i64) -> Result<Vec<apb::RevenueRow>, StoreError> {
    let end = if scope.until_ms > 0 { scope.until_ms } else { now_ms + 1 };
    let m = scope.merchant();
    let mut rows: BTreeMap<(String, String), apb::RevenueRow> = BTreeMap::new();
    let mut add = |sums: Vec<store::MoneySum>, f: fn(&mut apb::RevenueRow, i64)| {
        for s in sums {
            let row = rows.entry((s.merchant_id.clone(), s.currency.clone())).or_insert_with(|| apb::RevenueRow {
                merchant_id: s.merchant_id,
                currency: s.currency,
                ..Default::default()
            });
            f(row, s.total);
        }
    };
    add(store::charged(store, m, scope.from_ms, scope.until_ms, false).await?, |r, t| r.gross += t);
    add(store::refunded(store, m, scope.from_ms, scope.until_ms).await?, |r, t| r.refunds += t);
    add(store::fixed_monthly(store, m, end).await?, |r, t| r.mrr += t);
    let trailing = (end - 30 * 86_400_000).max(0);
    add(store::charged(store, m, trailing, end, true).await?, |r, t| r.mrr += t);
    for s in store::settled(store, m, scope.from_ms, scope.until_ms).await? {
        let row = rows.entry((s.merchant_id.clone(), s.currency.clone())).or_insert_with(|| apb::RevenueRow {
            merchant_id: s.merchant_id,
            currency: s.currency,
            ..Default::default()
        });
        row.fees += s.fees;
        row.splits += s.splits;
        row.settled += s.net;
    }
    Ok(rows
        .into_values()
        .map(|mut r| {
            r.net = r.gross - r.refunds;
            r
        })
        .collect())
}

/// Risk holds and complaints in the range, per merchant (`GetRiskOutcomes`).
pub async fn risk_outcomes(
    store: &EventStore,
    scope: &Scope,
) -> Result<(Vec<apb::HoldOutcomeRow>, Vec<apb::ComplaintOutcomeRow>), StoreError> {
    let n = |v: i64| v.max(0) as u64;
    let holds = store::hold_outcomes(store, scope.merchant(), scope.from_ms, scope.until_ms)
        .await?
        .into_iter()
        .map(|h| apb::HoldOutcomeRow {
            merchant_id: h.merchant_id,
            rule: h.rule,
            held: n(h.held),
            released_by_payer: n(h.by_payer),
            released_by_operator: n(h.by_operator),
            rejected: n(h.rejected),
            open: n(h.open),
        })
        .collect();
    let complaints = store::complaint_outcomes(store, scope.merchant(), scope.from_ms, scope.until_ms)
        .await?
        .into_iter()
        .map(|c| apb::ComplaintOutcomeRow {
            merchant_id: c.merchant_id,
            kind: c.kind,
            source: c.source,
            filed: n(c.filed),
            answered_in_time: n(c.in_time),
            answered_late: n(c.late),
            missed: n(c.missed),
            open: n(c.open),
            refunds: n(c.refunds),
            rejections: n(c.rejections),
            resolutions: n(c.resolutions),
            refunded: c.refunded,
            currency: c.currency,
        })
        .collect();
    Ok((holds, complaints))
}

/// The `limit` payers who paid the most in `currency` ("": CNY) in the range, with how they
/// came to sign.
pub async fn high_value_payers(
    store: &EventStore,
    scope: &Scope,
    currency: &str,
    limit: u32,
) -> Result<Vec<apb::PayerProfile>, StoreError> {
    let currency = if currency.is_empty() { "CNY" } else { currency };
    let limit = i64::from(if limit == 0 { 10 } else { limit });
    let top = store::top_payers(store, scope.merchant(), scope.from_ms, scope.until_ms, currency, limit).await?;
    let mut out = Vec::with_capacity(top.len());
    for p in top {
        let session = store::signed_session(store, &p.merchant_id, &p.payer_id).await?;
        let mut profile = apb::PayerProfile {
            payer_id: p.payer_id,
            merchant_id: p.merchant_id,
            currency: currency.to_string(),
            paid: p.paid,
            charges: count(p.charges),
            contracts: count(p.contracts),
            ..Default::default()
        };
        if let Some(s) = session {
            let steps = [
                ("page_viewed", s.page_viewed_at_ms),
                ("agreement_ticked", s.ticked_at_ms),
                ("held_for_review", s.held_at_ms),
                ("sms_required", s.sms_required_at_ms),
                ("signed", s.confirmed_at_ms),
            ];
            let mut path: Vec<(i64, &str)> = steps.iter().filter(|(_, at)| *at > 0).map(|(n, at)| (*at, *n)).collect();
            // By time; steps at the same moment in the funnel's order.
            path.sort_by_key(|(at, _)| *at);
            profile.path = path.into_iter().map(|(_, n)| n.to_string()).collect();
            profile.ms_to_sign = s.confirmed_at_ms - s.opened_at_ms;
            profile.signing_channel = s.channel;
            profile.device_kind = s.device_kind;
        }
        out.push(profile);
    }
    Ok(out)
}

/// The reference figures per signing channel: time to sign (ms), second-confirmation rate and
/// dispute rate (basis points).
pub const CHANNEL_REFERENCES: [(&str, i64, u32, u32); 3] =
    [("h5", 48_000, 6_100, 230), ("mini_program", 32_000, 7_300, 170), ("app", 56_000, 5_400, 310)];
/// The reference figures per industry: first-authorization rate (basis points) and hesitation
/// from page view to tick (ms). The brief's "tools" has no industry of the platform's list.
pub const INDUSTRY_REFERENCES: [(&str, u32, i64); 2] = [("membership", 8_200, 7_200), ("paid_content", 6_400, 12_800)];

/// Signing per channel and per industry, beside the reference figures.
pub async fn signing_benchmarks(
    store: &EventStore,
    scope: &Scope,
) -> Result<(Vec<apb::SigningChannelBenchmark>, Vec<apb::IndustryBenchmark>), StoreError> {
    let (counts, times) = store::funnel(store, "channel", scope.merchant(), scope.from_ms, scope.until_ms).await?;
    let disputes = store::disputes(store, scope.merchant(), scope.from_ms, scope.until_ms).await?;
    let mut channels = Vec::new();
    for (channel, ms, second, dispute) in CHANNEL_REFERENCES {
        let c = counts.iter().find(|c| c.grp == channel);
        let signed: Vec<i64> = times.iter().filter(|t| t.grp == channel).map(|t| t.ms).collect();
        let mean = if signed.is_empty() { 0 } else { signed.iter().sum::<i64>() / signed.len() as i64 };
        channels.push(apb::SigningChannelBenchmark {
            channel: channel.to_string(),
            sessions: c.map(|c| count(c.opened)).unwrap_or(0),
            mean_ms_to_sign: mean,
            second_confirmation_basis_points: c.map(|c| basis_points(c.signed, c.ticked)).unwrap_or(0),
            reference_ms_to_sign: ms,
            reference_second_confirmation_basis_points: second,
            reference_dispute_basis_points: dispute,
            dispute_basis_points: disputes
                .iter()
                .find(|d| d.grp == channel)
                .map(|d| basis_points(d.disputed, d.signed))
                .unwrap_or(0),
        });
    }
    let mut by_industry: BTreeMap<String, Vec<store::Viewed>> = BTreeMap::new();
    for (industry, _, _) in INDUSTRY_REFERENCES {
        by_industry.entry(industry.to_string()).or_default();
    }
    for v in store::viewed_sessions(store, scope.merchant(), scope.from_ms, scope.until_ms).await? {
        by_industry.entry(v.industry.clone()).or_default().push(v);
    }
    let industries = by_industry
        .into_iter()
        .map(|(industry, viewed)| {
            let reference = INDUSTRY_REFERENCES.iter().find(|r| r.0 == industry);
            let signed = viewed.iter().filter(|v| v.confirmed_at_ms > 0).count() as i64;
            let hesitation = median(
                viewed.iter().filter(|v| v.ticked_at_ms > 0).map(|v| v.ticked_at_ms - v.page_viewed_at_ms).collect(),
            );
            apb::IndustryBenchmark {
                viewed: viewed.len() as u64,
                first_authorization_basis_points: basis_points(signed, viewed.len() as i64),
                median_hesitation_ms: hesitation,
                reference_first_authorization_basis_points: reference.map(|r| r.1).unwrap_or(0),
                reference_hesitation_ms: reference.map(|r| r.2).unwrap_or(0),
                industry,
            }
        })
        .collect();
    Ok((channels, industries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebit_proto::analytics::v1::TimeRange;

    #[test]
    fn a_merchant_is_scoped_to_itself_and_an_operator_to_whom_it_names() {
        let m = Principal::Merchant(autodebit_domain::MerchantId::parse("m1").unwrap());
        assert_eq!(Scope::of(&m, "", None).unwrap().merchant.as_deref(), Some("m1"));
        assert_eq!(Scope::of(&m, "m1", None).unwrap().merchant.as_deref(), Some("m1"));
        assert_eq!(Scope::of(&m, "m2", None).unwrap_err().field, "merchant_id");
        assert_eq!(Scope::of(&Principal::Operator, "", None).unwrap().merchant, None);
        assert_eq!(Scope::of(&Principal::Operator, "m2", None).unwrap().merchant.as_deref(), Some("m2"));
    }

    #[test]
    fn a_range_runs_forward_from_the_epoch() {
        let op = Principal::Operator;
        let r = |from_ms, until_ms| TimeRange { from_ms, until_ms };
        assert!(Scope::of(&op, "", Some(&r(0, 0))).is_ok(), "open at both ends");
        assert!(Scope::of(&op, "", Some(&r(10, 0))).is_ok(), "open at the end");
        assert!(Scope::of(&op, "", Some(&r(10, 11))).is_ok());
        assert_eq!(Scope::of(&op, "", Some(&r(10, 10))).unwrap_err().field, "range");
        assert_eq!(Scope::of(&op, "", Some(&r(-1, 0))).unwrap_err().field, "range");
    }

    #[test]
    fn rates_and_medians() {
        assert_eq!(basis_points(1, 3), 3_333);
        assert_eq!(basis_points(3, 3), 10_000);
        assert_eq!(basis_points(1, 0), 0, "nothing settled");
        assert_eq!(median(vec![]), 0);
        assert_eq!(median(vec![5, 1, 3]), 3);
        assert_eq!(median(vec![4, 1, 3, 2]), 2, "the lower middle");
    }
}
