//! `autodebit ledger check`: the ledger held to the log. Every entry the log calls for (a
//! succeeded charge, a succeeded refund, a closed batch) is in `ledger_postings` once, leg for
//! leg, and nothing else is; every entry sums to zero; every batch line adds up (amount = fee
//! + splits + net) and no charge or refund is in two batches; and for each merchant and
//! currency, charged = settled + fees + splits + refunds + pending.
use crate::analytics::Database;
use anyhow::Context;
use autodebit_charger::settlement::{FOLLOWER, entry_of};
use autodebit_domain::ledger::{Balances, Posting, entry_sum};
use autodebit_eventstore::{EventStore, StoreOptions};
use std::collections::{BTreeMap, HashMap};

#[derive(clap::Subcommand)]
pub enum LedgerCommand {
    /// Checks the ledger against the log; exits 1 naming the first imbalance.
    Check {
        #[command(flatten)]
        database: Database,
    },
}

/// An entry: merchant, currency, postings.
type Entry = (String, String, Vec<Posting>);

#[derive(serde::Serialize)]
pub(crate) struct Account {
    merchant_id: String,
    currency: String,
    charged: i64,
    settled: i64,
    fees: i64,
    splits: i64,
    refunds: i64,
    pending: i64,
}

#[derive(serde::Serialize)]
pub(crate) struct Report {
    entries: usize,
    batches: usize,
    balanced: bool,
    accounts: Vec<Account>,
}

pub async fn run(command: LedgerCommand) -> anyhow::Result<()> {
    let LedgerCommand::Check { database } = command;
    let url = database.url()?;
    let store = EventStore::open(StoreOptions::new(url.as_str())).await.context("opening the database")?;
    match check(&store).await? {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Err(imbalance) => {
            eprintln!("ledger: {imbalance}");
            std::process::exit(1);
        }
    }
}

/// The report, or the first imbalance found.
pub(crate) async fn check(store: &EventStore) -> anyhow::Result<Result<Report, String>> {
    // What the log calls for, each entry with the log position that made it.
    let taken_in = store.load_checkpoint(FOLLOWER).await?;
    let mut expected: BTreeMap<String, (i64, Entry)> = BTreeMap::new();
    let mut in_batch: HashMap<String, String> = HashMap::new();
    let mut batches = 0;
    let mut pages = store.pages(5_000);
    while let Some(page) = pages.next().await? {
        for r in page {
            let position = r.position;
            let Some(d) = autodebit_runtime::codec::decode(r) else { continue };
            if let autodebit_proto::EventKind::SettlementBatchClosed(b) = &d.kind {
                batches += 1;
                let (mut amount, mut fees, mut splits, mut net) = (0, 0, 0, 0);
                for l in &b.lines {
                    let s: i64 = l.splits.iter().map(|s| s.amount).sum();
                    if l.amount != l.fee + s + l.net {
                        return Ok(Err(format!(
                            "batch {}: line {} has amount {} but fee {} + splits {s} + net {}",
                            b.batch_id, l.item_id, l.amount, l.fee, l.net
                        )));
                    }
                    if let Some(other) = in_batch.insert(l.item_id.clone(), b.batch_id.clone()) {
                        return Ok(Err(format!(
                            "{} is settled twice: in batch {other} and in {}",
                            l.item_id, b.batch_id
                        )));
                    }
                    amount += l.amount;
                    fees += l.fee;
                    splits += s;
                    net += l.net;
                }
                if (b.gross - b.refunds, b.fees, b.splits, b.net) != (amount, fees, splits, net) {
                    return Ok(Err(format!("batch {}: its totals are not the sums of its lines", b.batch_id)));
                }
            }
            if let Some((id, merchant, currency, _, postings)) = entry_of(&d.kind) {
                if expected.insert(id.clone(), (position, (merchant, currency, postings))).is_some() {
                    return Ok(Err(format!("entry {id}: the log makes it twice")));
                }
            }
        }
    }

    // What the ledger holds.
    let rows = store
        .query(
            "SELECT entry_id, leg, merchant_id, currency, account, amount FROM ledger_postings ORDER BY entry_id, leg",
            &[],
        )
        .await?;
    let mut held: BTreeMap<String, Entry> = BTreeMap::new();
    for r in &rows {
        let id = r.text(0).unwrap_or_default().to_string();
        let e = held.entry(id).or_insert_with(|| {
            (r.text(2).unwrap_or_default().to_string(), r.text(3).unwrap_or_default().to_string(), Vec::new())
        });
        e.2.push(Posting { account: r.text(4).unwrap_or_default().to_string(), amount: r.i64(5).unwrap_or(0) });
    }

    let mut balances: BTreeMap<(String, String), Balances> = BTreeMap::new();
    for (id, entry) in &held {
        let sum = entry_sum(&entry.2);
        if sum != 0 {
            return Ok(Err(format!("entry {id} does not balance: its postings sum to {sum}")));
        }
        match expected.get(id) {
            None => return Ok(Err(format!("entry {id} is in the ledger but nothing in the log makes it"))),
            Some((_, want)) if want != entry => {
                return Ok(Err(format!("entry {id} differs from what the log makes: {:?} against {:?}", entry, want)));
            }
            Some(_) => {}
        }
        balances.entry((entry.0.clone(), entry.1.clone())).or_default().post(&entry.2);
    }
    for (id, (position, _)) in &expected {
        if *position <= taken_in.position && !held.contains_key(id) {
            return Ok(Err(format!("entry {id} is missing: the log made it at position {position}")));
        }
    }
    let mut accounts = Vec::new();
    for ((merchant_id, currency), b) in balances {
        if let Some((charged, rest)) = b.imbalance() {
            return Ok(Err(format!(
                "{merchant_id} {currency}: charged {charged} but settled + fees + splits + refunds + pending = {rest}"
            )));
        }
        accounts.push(Account {
            merchant_id,
            currency,
            charged: b.charged(),
            settled: b.settled(),
            fees: b.fees(),
            splits: b.splits(),
            refunds: b.refunds(),
            pending: b.pending(),
        });
    }
    Ok(Ok(Report { entries: held.len(), batches, balanced: true, accounts }))
}
