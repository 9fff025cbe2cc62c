//! The ledger: double entry, per merchant and currency, in minor units. Each fact that moves
//! money is an entry of postings that sum to zero:
//!
//! | fact | postings |
//! |---|---|
//! | a charge of A succeeded | `payer_funds` −A, `merchant_pending` +A |
//! | a refund of R succeeded | `merchant_pending` −R, `payer_refunds` +R |
//! | a batch closed | `merchant_pending` −(gross − refunds), `platform_fees` +fees, `split:<receiver>` +share, `merchant_settled` +net |
//!
//! so that, for every merchant and currency, what payers paid (−`payer_funds`) equals what was
//! settled, taken as fees, split, refunded, and is still pending: "charged = settled + fees +
//! splits + refunds + pending".
use std::collections::BTreeMap;

pub const PAYER_FUNDS: &str = "payer_funds";
pub const MERCHANT_PENDING: &str = "merchant_pending";
pub const MERCHANT_SETTLED: &str = "merchant_settled";
pub const PLATFORM_FEES: &str = "platform_fees";
pub const PAYER_REFUNDS: &str = "payer_refunds";
/// The prefix of a profit-sharing receiver's account.
pub const SPLIT_PREFIX: &str = "split:";

/// One leg of an entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Posting {
    pub account: String,
    pub amount: i64,
}

fn leg(account: impl Into<String>, amount: i64) -> Posting {
    Posting { account: account.into(), amount }
}

pub fn charge_succeeded(amount: i64) -> Vec<Posting> {
    vec![leg(PAYER_FUNDS, -amount), leg(MERCHANT_PENDING, amount)]
}

pub fn refund_succeeded(amount: i64) -> Vec<Posting> {
    vec![leg(MERCHANT_PENDING, -amount), leg(PAYER_REFUNDS, amount)]
}

/// A closed batch: its lines' amounts leave `merchant_pending` for the fees, each receiver's
/// splits (summed per receiver, in name order) and the merchant's payout.
pub fn batch_closed(lines: &[crate::settlement::Line]) -> Vec<Posting> {
    let amount: i64 = lines.iter().map(|l| l.amount).sum();
    let fees: i64 = lines.iter().map(|l| l.fee).sum();
    let net: i64 = lines.iter().map(|l| l.net).sum();
    let mut by_receiver: BTreeMap<&str, i64> = BTreeMap::new();
    for (r, a) in lines.iter().flat_map(|l| l.splits.iter()) {
        *by_receiver.entry(r).or_default() += a;
    }
    let mut out = vec![leg(MERCHANT_PENDING, -amount), leg(PLATFORM_FEES, fees)];
    out.extend(by_receiver.into_iter().map(|(r, a)| leg(format!("{SPLIT_PREFIX}{r}"), a)));
    out.push(leg(MERCHANT_SETTLED, net));
    out
}

/// A merchant's balances in one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Balances(pub BTreeMap<String, i64>);

impl Balances {
    pub fn post(&mut self, postings: &[Posting]) {
        for p in postings {
            *self.0.entry(p.account.clone()).or_default() += p.amount;
        }
    }

    fn get(&self, account: &str) -> i64 {
        self.0.get(account).copied().unwrap_or(0)
    }

    pub fn charged(&self) -> i64 {
        -self.get(PAYER_FUNDS)
    }

    pub fn settled(&self) -> i64 {
        self.get(MERCHANT_SETTLED)
    }

    pub fn fees(&self) -> i64 {
        self.get(PLATFORM_FEES)
    }

    pub fn splits(&self) -> i64 {
        self.0.iter().filter(|(a, _)| a.starts_with(SPLIT_PREFIX)).map(|(_, v)| v).sum()
    }

    pub fn refunds(&self) -> i64 {
        self.get(PAYER_REFUNDS)
    }

    pub fn pending(&self) -> i64 {
        self.get(MERCHANT_PENDING)
    }

    /// "charged = settled + fees + splits + refunds + pending": `None` when it holds, else the
    /// two sides.
    pub fn imbalance(&self) -> Option<(i64, i64)> {
        let rhs = self.settled() + self.fees() + self.splits() + self.refunds() + self.pending();
        (self.charged() != rhs).then_some((self.charged(), rhs))
    }
}

/// The sum of an entry's postings (zero when it balances).
pub fn entry_sum(postings: &[Posting]) -> i64 {
    postings.iter().map(|p| p.amount).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settlement::{Item, ItemKind, SplitRule, settle};
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Fact {
        Charge(i64),
        /// A refund of this share (in basis points) of an earlier charge.
        Refund(usize, u32),
        Batch,
    }

    fn fact() -> impl Strategy<Value = Fact> {
        prop_oneof![
            4 => (1i64..500_000).prop_map(Fact::Charge),
            1 => (any::<usize>(), 1u32..=10_000).prop_map(|(i, bp)| Fact::Refund(i, bp)),
            1 => Just(Fact::Batch),
        ]
    }

    proptest! {
        /// Over random histories of charges, refunds and batches, every entry balances and
        /// "charged = settled + fees + splits + refunds + pending" holds at every step, with
        /// pending what no batch has taken yet.
        #[test]
        fn money_is_conserved(facts in proptest::collection::vec(fact(), 1..80), bp in 0u32..=1_000) {
            let rules = vec![
                SplitRule { receiver: "agent".into(), basis_points: 500, fixed: 0, cap: 2_000 },
                SplitRule { receiver: "partner".into(), basis_points: 0, fixed: 100, cap: 0 },
            ];
            let mut b = Balances::default();
            let mut charges: Vec<(String, i64, i64)> = Vec::new(); // id, amount, refunded
            let mut waiting: Vec<Item> = Vec::new();
            let mut charged = 0;
            for (n, f) in facts.iter().enumerate() {
                let entry = match f {
                    Fact::Charge(a) => {
                        let id = format!("ch{n}");
                        charges.push((id.clone(), *a, 0));
                        waiting.push(Item { id: id.clone(), kind: ItemKind::Charge, charge_id: id, amount: *a });
                        charged += a;
                        charge_succeeded(*a)
                    }
                    Fact::Refund(i, share) => {
                        if charges.is_empty() { continue; }
                        let k = i % charges.len();
                        let c = &mut charges[k];
                        let r = (c.1 - c.2).min(c.1 * i64::from(*share) / 10_000);
                        if r <= 0 { continue; }
                        c.2 += r;
                        waiting.push(Item { id: format!("rf{n}"), kind: ItemKind::Refund, charge_id: c.0.clone(), amount: r });
                        refund_succeeded(r)
                    }
                    Fact::Batch => {
                        let (lines, totals) = settle(&waiting, bp, &rules);
                        waiting.clear();
                        let e = batch_closed(&lines);
                        prop_assert_eq!(e.iter().find(|p| p.account == MERCHANT_SETTLED).unwrap().amount, totals.net);
                        e
                    }
                };
                prop_assert_eq!(entry_sum(&entry), 0, "{:?}", f);
                b.post(&entry);
                prop_assert_eq!(b.imbalance(), None);
                prop_assert_eq!(b.charged(), charged);
                let unsettled: i64 = waiting.iter().map(|i| if i.kind == ItemKind::Charge { i.amount } else { -i.amount }).sum();
                prop_assert_eq!(b.pending(), unsettled);
            }
        }
    }

    #[test]
    fn a_batch_moves_pending_to_fees_splits_and_the_payout() {
        let items = vec![
            Item { id: "c1".into(), kind: ItemKind::Charge, charge_id: "c1".into(), amount: 10_000 },
            Item { id: "r1".into(), kind: ItemKind::Refund, charge_id: "c0".into(), amount: 1_000 },
        ];
        let rules = vec![SplitRule { receiver: "agent".into(), basis_points: 1_000, fixed: 0, cap: 0 }];
        let (lines, t) = settle(&items, 60, &rules);
        assert_eq!((t.gross, t.refunds, t.fees, t.splits, t.net), (10_000, 1_000, 60, 1_000, 7_940));
        assert_eq!(
            batch_closed(&lines),
            vec![
                leg(MERCHANT_PENDING, -9_000),
                leg(PLATFORM_FEES, 60),
                leg("split:agent", 1_000),
                leg(MERCHANT_SETTLED, 7_940),
            ]
        );
    }
}
