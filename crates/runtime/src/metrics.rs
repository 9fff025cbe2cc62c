//! The process's metrics, recorded through the `metrics` crate and rendered in the Prometheus
//! text format by `metrics-exporter-prometheus` (on the HTTP listener's `/metrics`). Every
//! metric is named once below and described once in [`METRICS`]: its `# HELP` text, its
//! `# TYPE` and its unit.
use metrics::{Label, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

// === names ===

pub const GRPC_REQUESTS: &str = "autodebit_grpc_requests_total";
pub const GRPC_SHED: &str = "autodebit_grpc_shed_total";
pub const FOLLOWER_EVENTS: &str = "autodebit_follower_events_total";
pub const FOLLOWER_POSITION: &str = "autodebit_follower_position";
pub const FOLLOWER_ERRORS: &str = "autodebit_follower_errors_total";
pub const FOLLOWER_LAG_MS: &str = "autodebit_follower_lag_ms";
pub const FOLLOWER_BATCH_MS: &str = "autodebit_follower_batch_ms";
pub const SCHEDULER_ERRORS: &str = "autodebit_scheduler_errors_total";
pub const SCHEDULER_BATCHES_VOIDED: &str = "autodebit_scheduler_batches_voided_total";
pub const CHARGES_SCHEDULED: &str = "autodebit_charges_scheduled_total";
pub const CHARGES_REJECTED: &str = "autodebit_charges_rejected_total";
pub const CHARGES_HELD: &str = "autodebit_charges_held_total";
pub const CHARGES_WAITING_FOR_WINDOW: &str = "autodebit_charges_waiting_for_window_total";
pub const HOLDS_RELEASED: &str = "autodebit_holds_released_total";
pub const HOLDS_REJECTED: &str = "autodebit_holds_rejected_total";
pub const COMPLAINT_DEADLINES_MISSED: &str = "autodebit_complaint_deadlines_missed_total";
pub const CHARGE_RETRIES: &str = "autodebit_charge_retries_total";
pub const PRE_DEBIT_NOTICES: &str = "autodebit_pre_debit_notices_total";
pub const USAGE_RECORDS: &str = "autodebit_usage_records_total";
pub const CHARGER_ERRORS: &str = "autodebit_charger_errors_total";
pub const CHARGES_SUCCEEDED: &str = "autodebit_charges_succeeded_total";
pub const CHARGES_FAILED: &str = "autodebit_charges_failed_total";
pub const CHARGE_SETTLE_MS: &str = "autodebit_charge_settle_ms";
pub const PROVIDER_CALL_MS: &str = "autodebit_provider_call_ms";
pub const REFUNDS_REQUESTED: &str = "autodebit_refunds_requested_total";
pub const REFUNDS: &str = "autodebit_refunds_total";
pub const PROVIDER_NOTICES: &str = "autodebit_provider_notices_total";
pub const CALLBACKS: &str = "autodebit_callbacks_total";
pub const CERTIFICATE_EXPIRING: &str = "autodebit_certificate_expiring";
pub const NOTICE_DELIVERIES: &str = "autodebit_notice_deliveries_total";
pub const WEBHOOK_DELIVERIES: &str = "autodebit_webhook_deliveries_total";
pub const NOTICE_OPENS: &str = "autodebit_notice_opens_total";
pub const CHARGE_OUTCOMES: &str = "autodebit_charge_outcomes_total";
pub const CHARGES_ON_HOLD: &str = "autodebit_charges_on_hold";
pub const RETRIES_WAITING: &str = "autodebit_retries_waiting";
pub const ATTEMPTS_IN_FLIGHT: &str = "autodebit_attempts_in_flight";
pub const ATTEMPTS_OLDEST_STARTED: &str = "autodebit_attempts_oldest_started_unix_ms";
pub const REFUNDS_IN_FLIGHT: &str = "autodebit_refunds_in_flight";
pub const NOTICE_BACKLOG: &str = "autodebit_notice_backlog";
pub const WEBHOOK_BACKLOG: &str = "autodebit_webhook_backlog";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric: name, type, unit and help text.
pub const METRICS: &[(&str, Kind, Unit, &str)] = &[
    (GRPC_REQUESTS, Kind::Counter, Unit::Count, "gRPC calls answered, by method (rpc) and gRPC status code (code)"),
    (
        GRPC_SHED,
        Kind::Counter,
        Unit::Count,
        "gRPC calls shed with RESOURCE_EXHAUSTED: no room among the calls in flight",
    ),
    (FOLLOWER_EVENTS, Kind::Counter, Unit::Count, "Events of the log a follower has passed, by follower"),
    (FOLLOWER_POSITION, Kind::Gauge, Unit::Count, "The log position a follower has reached, by follower"),
    (FOLLOWER_ERRORS, Kind::Counter, Unit::Count, "Failed follower batches (retried after a back-off), by follower"),
    (
        FOLLOWER_LAG_MS,
        Kind::Gauge,
        Unit::Milliseconds,
        "How far behind the log a follower is: the age of the last event it took in (platform clock), 0 once it has read to the head, by follower",
    ),
    (
        FOLLOWER_BATCH_MS,
        Kind::Histogram,
        Unit::Milliseconds,
        "Time a follower spends on one batch of the log, by follower and stage: read (reading and decoding the events) and write (its own work, through the commit of its transaction)",
    ),
    (SCHEDULER_ERRORS, Kind::Counter, Unit::Count, "Failed rounds of the scheduler's due loop (retried)"),
    (
        SCHEDULER_BATCHES_VOIDED,
        Kind::Counter,
        Unit::Count,
        "Batches of due schedules dropped uncommitted because a schedule changed meanwhile",
    ),
    (CHARGES_SCHEDULED, Kind::Counter, Unit::Count, "Charges issued by the scheduler"),
    (
        CHARGES_REJECTED,
        Kind::Counter,
        Unit::Count,
        "Charges the scheduler refused, by the rule that refused them (a limit such as per_charge_cap, daily_count or daily_amount, or the contract's or merchant's state)",
    ),
    (CHARGES_HELD, Kind::Counter, Unit::Count, "Charges a risk rule held until the payer or an operator releases them"),
    (
        CHARGES_WAITING_FOR_WINDOW,
        Kind::Counter,
        Unit::Count,
        "Triggered charges admitted outside the charge window, waiting for it to open",
    ),
    (HOLDS_RELEASED, Kind::Counter, Unit::Count, "Held charges released by the payer or an operator"),
    (HOLDS_REJECTED, Kind::Counter, Unit::Count, "Held charges rejected: by an operator, the payer, or expiry"),
    (
        COMPLAINT_DEADLINES_MISSED,
        Kind::Counter,
        Unit::Count,
        "Complaints whose deadline passed unanswered (each brought its penalty)",
    ),
    (CHARGE_RETRIES, Kind::Counter, Unit::Count, "Retries of failed charges issued by the scheduler"),
    (PRE_DEBIT_NOTICES, Kind::Counter, Unit::Count, "Pre-debit notices issued by the scheduler"),
    (USAGE_RECORDS, Kind::Counter, Unit::Count, "Usage records accepted"),
    (CHARGER_ERRORS, Kind::Counter, Unit::Count, "Failed rounds of the charger's workers (retried)"),
    (CHARGES_SUCCEEDED, Kind::Counter, Unit::Count, "Charge attempts recorded as succeeded"),
    (CHARGES_FAILED, Kind::Counter, Unit::Count, "Charge attempts recorded as failed"),
    (
        CHARGE_SETTLE_MS,
        Kind::Histogram,
        Unit::Milliseconds,
        "Time from a charge attempt's start to its recorded outcome, in milliseconds",
    ),
    (
        PROVIDER_CALL_MS,
        Kind::Histogram,
        Unit::Milliseconds,
        "Time a call to a payment provider takes, by provider, call (charge, query, refund, notify, terminate, signing_url, share, statement) and outcome",
    ),
    (REFUNDS_REQUESTED, Kind::Counter, Unit::Count, "Refunds requested"),
    (REFUNDS, Kind::Counter, Unit::Count, "Refunds carried out at the provider, by outcome"),
    (PROVIDER_NOTICES, Kind::Counter, Unit::Count, "Pre-debit notices sent to a provider, by provider and outcome"),
    (CALLBACKS, Kind::Counter, Unit::Count, "Provider callbacks received, by kind and result"),
    (
        CERTIFICATE_EXPIRING,
        Kind::Gauge,
        Unit::Count,
        "Days left before a certificate that expires within 30 days, by certificate and serial",
    ),
    (NOTICE_DELIVERIES, Kind::Counter, Unit::Count, "Tries of notices on a channel, by channel and outcome"),
    (WEBHOOK_DELIVERIES, Kind::Counter, Unit::Count, "Webhook sends, by outcome"),
    (NOTICE_OPENS, Kind::Counter, Unit::Count, "Visits to notices' short links"),
    (
        CHARGE_OUTCOMES,
        Kind::Counter,
        Unit::Count,
        "Charges by outcome: succeeded and failed (attempts' outcomes recorded by the charger), rejected and held (at issue, by the scheduler)",
    ),
    (
        CHARGES_ON_HOLD,
        Kind::Gauge,
        Unit::Count,
        "Charges held by a risk rule now, waiting for the payer or an operator (counted from the tables; the same in every replica)",
    ),
    (
        RETRIES_WAITING,
        Kind::Gauge,
        Unit::Count,
        "Failed charges whose retry is waiting for its time (counted from the tables)",
    ),
    (
        ATTEMPTS_IN_FLIGHT,
        Kind::Gauge,
        Unit::Count,
        "Charge attempts started and not yet decided (sent or about to be, or waiting for a query or callback) (counted from the tables)",
    ),
    (
        ATTEMPTS_OLDEST_STARTED,
        Kind::Gauge,
        Unit::Milliseconds,
        "When the oldest charge attempt not yet decided started, in Unix milliseconds by the machine's clock (0: none); its age is time() * 1000 minus it",
    ),
    (REFUNDS_IN_FLIGHT, Kind::Gauge, Unit::Count, "Refunds asked for and not yet decided (counted from the tables)"),
    (
        NOTICE_BACKLOG,
        Kind::Gauge,
        Unit::Count,
        "Notices not yet delivered, by state: pending (waiting for their time or a retry) or sending (outcome unknown) (counted from the tables)",
    ),
    (
        WEBHOOK_BACKLOG,
        Kind::Gauge,
        Unit::Count,
        "Webhook deliveries not yet delivered, by state: pending or sending (counted from the tables)",
    ),
];

/// How often [`spawn_table_gauges`] counts its gauges afresh.
pub const TABLE_GAUGES_EVERY: Duration = Duration::from_secs(5);

/// A gauge counted from a service's own tables: its name and a query whose rows are a label
/// value and a count (`label` names the label), or a single count (`label` empty).
pub struct TableGauge {
    pub name: &'static str,
    pub label: &'static str,
    pub sql: &'static str,
}

impl TableGauge {
    /// A gauge set to the single count `sql` returns.
    pub const fn count(name: &'static str, sql: &'static str) -> Self {
        TableGauge { name, label: "", sql }
    }

    /// A gauge with one series per value of `label`, from `sql`'s rows of (value, count).
    pub const fn by(name: &'static str, label: &'static str, sql: &'static str) -> Self {
        TableGauge { name, label, sql }
    }
}

/// Sets `gauges` from their queries now and every [`TABLE_GAUGES_EVERY`] until the platform
/// stops. A depth (a backlog, a queue) is a count of rows, which only the tables know exactly:
/// counting it from the tables keeps it right across restarts and replicas, where counters of
/// what went in and out would drift. A label value a query no longer returns is set to 0.
pub fn spawn_table_gauges(platform: &crate::Platform, gauges: &'static [TableGauge]) {
    let platform = platform.clone();
    tokio::spawn(async move {
        let mut seen: std::collections::HashSet<(&'static str, String)> = std::collections::HashSet::new();
        loop {
            for g in gauges {
                let rows = match platform.store.query(g.sql, &[]).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::debug!(gauge = g.name, error = %e, "counting a gauge failed");
                        continue;
                    }
                };
                if g.label.is_empty() {
                    set(g.name, &[], rows.first().and_then(|r| r.i64(0)).unwrap_or(0));
                    continue;
                }
                let mut now_seen = std::collections::HashSet::new();
                for r in &rows {
                    let value = r.text(0).unwrap_or_default().to_string();
                    set(g.name, &[(g.label, &value)], r.i64(1).unwrap_or(0));
                    now_seen.insert(value);
                }
                for (_, value) in seen.iter().filter(|(n, v)| *n == g.name && !now_seen.contains(v)) {
                    set(g.name, &[(g.label, value)], 0);
                }
                seen.extend(now_seen.into_iter().map(|v| (g.name, v)));
            }
            tokio::select! {
                _ = tokio::time::sleep(TABLE_GAUGES_EVERY) => {}
                _ = platform.shutdown.wait() => return,
            }
        }
    });
}

/// Upper bounds, in milliseconds, of the latency histograms' buckets.
pub const LATENCY_BUCKETS_MS: [i64; 17] =
    [5, 10, 25, 50, 100, 200, 300, 400, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000, 30_000];

/// How often the exporter's histogram samples are folded into their buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's recorder, installed (and every metric described) on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets: Vec<f64> = LATENCY_BUCKETS_MS.iter().map(|b| *b as f64).collect();
        // Every histogram is a latency in milliseconds. UNWRAP: the bucket list is not empty.
        let recorder = PrometheusBuilder::new().set_buckets(&buckets).unwrap().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics stays empty");
        }
        for (name, kind, unit, help) in METRICS {
            match kind {
                Kind::Counter => metrics::describe_counter!(*name, *unit, *help),
                Kind::Gauge => metrics::describe_gauge!(*name, *unit, *help),
                Kind::Histogram => metrics::describe_histogram!(*name, *unit, *help),
            }
        }
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
        handle
    })
}

fn to_labels(labels: &[(&'static str, &str)]) -> Vec<Label> {
    labels.iter().map(|(k, v)| Label::new(*k, v.to_string())).collect()
}

/// Adds `n` to a counter.
pub fn add(name: &'static str, labels: &[(&'static str, &str)], n: i64) {
    handle();
    metrics::counter!(name, to_labels(labels)).increment(n.max(0) as u64);
}

/// Sets a gauge.
pub fn set(name: &'static str, labels: &[(&'static str, &str)], v: i64) {
    handle();
    metrics::gauge!(name, to_labels(labels)).set(v as f64);
}

/// Records `ms` in the latency histogram `name`: Prometheus's `{name}_bucket{le="…"}`
/// (cumulative), `{name}_sum` and `{name}_count`.
pub fn observe_ms(name: &'static str, labels: &[(&'static str, &str)], ms: i64) {
    handle();
    metrics::histogram!(name, to_labels(labels)).record(ms as f64);
}

/// Every metric in the Prometheus text format, each with its `# HELP` and `# TYPE`.
pub fn render() -> String {
    handle().render()
}

/// The value of one series as [`render`] shows it (a histogram's `_bucket`, `_sum` and
/// `_count` are series of their own), 0 when it has none yet.
pub fn get(name: &str, labels: &[(&str, &str)]) -> i64 {
    find(&render(), name, labels)
}

fn find(text: &str, name: &str, labels: &[(&str, &str)]) -> i64 {
    let key = if labels.is_empty() {
        name.to_string()
    } else {
        let body: Vec<String> =
            labels.iter().map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))).collect();
        format!("{name}{{{}}}", body.join(","))
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as i64)
}

/// The `per_mille`/1000 quantile of the latency histogram `name`, interpolated within its
/// bucket as Prometheus's `histogram_quantile` does; `None` before any observation, and the
/// highest bound when it lies beyond it.
pub fn quantile_ms(name: &str, labels: &[(&str, &str)], per_mille: i64) -> Option<i64> {
    let text = render();
    let count = find(&text, &format!("{name}_count"), labels);
    if count == 0 {
        return None;
    }
    let rank = ((count * per_mille + 999) / 1000).max(1);
    let (mut lower, mut below) = (0i64, 0i64);
    for b in LATENCY_BUCKETS_MS {
        let le = b.to_string();
        let mut with_le = labels.to_vec();
        with_le.push(("le", &le));
        let upto = find(&text, &format!("{name}_bucket"), &with_le);
        if upto >= rank {
            return Some(lower + (b - lower) * (rank - below) / (upto - below).max(1));
        }
        (lower, below) = (b, upto);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets() {
        let name = "test_latency_quantiles_ms";
        assert_eq!(quantile_ms(name, &[], 500), None);
        for ms in (1..=100).map(|i| i * 10) {
            observe_ms(name, &[], ms);
        }
        // 100 observations 10..1000 ms: the median falls in the (400, 500] bucket.
        let p50 = quantile_ms(name, &[], 500).unwrap();
        assert!((400..=500).contains(&p50), "{p50}");
        assert!((750..=1000).contains(&quantile_ms(name, &[], 990).unwrap()));
        assert_eq!(get(&format!("{name}_count"), &[]), 100);
        assert_eq!(get(&format!("{name}_sum"), &[]), 50_500);
        assert!(render().contains(&format!("{name}_bucket{{le=\"+Inf\"}} 100")));
    }

    #[test]
    fn counters_and_gauges_read_back() {
        add(CALLBACKS, &[("kind", "test"), ("result", "read-back")], 2);
        add(CALLBACKS, &[("kind", "test"), ("result", "read-back")], 3);
        assert_eq!(get(CALLBACKS, &[("kind", "test"), ("result", "read-back")]), 5);
        set(FOLLOWER_POSITION, &[("follower", "test.read-back")], 42);
        set(FOLLOWER_POSITION, &[("follower", "test.read-back")], 41);
        assert_eq!(get(FOLLOWER_POSITION, &[("follower", "test.read-back")]), 41);
        assert_eq!(get(FOLLOWER_POSITION, &[("follower", "test.none")]), 0);
    }

    /// Every metric named here is described, and every series `/metrics` shows comes under a
    /// `# HELP` and a `# TYPE` of its own family.
    #[test]
    fn every_metric_has_help_and_type() {
        for (name, kind, _, _) in METRICS {
            match kind {
                Kind::Counter => add(name, &[], 0),
                Kind::Gauge => set(name, &[], 0),
                Kind::Histogram => observe_ms(name, &[], 1),
            }
        }
        // Other tests of this process record test-only series (`test_…`).
        let text: String = render().lines().filter(|l| !l.contains("test_")).map(|l| format!("{l}\n")).collect();
        assert_eq!(undescribed(&text), Vec::<String>::new(), "{text}");
        for (name, kind, _, _) in METRICS {
            let kind = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}: {text}");
        }
        let names: std::collections::HashSet<_> = METRICS.iter().map(|m| m.0).collect();
        assert_eq!(names.len(), METRICS.len(), "a metric is named twice");
    }

    /// The sample lines of a Prometheus text whose family has no `# HELP` or no `# TYPE`.
    fn undescribed(text: &str) -> Vec<String> {
        let mut help = std::collections::HashSet::new();
        let mut types = std::collections::HashSet::new();
        let mut missing = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                help.insert(rest.split(' ').next().unwrap_or_default().to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                types.insert(rest.split(' ').next().unwrap_or_default().to_string());
            } else {
                let series = line.split(['{', ' ']).next().unwrap_or_default();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| series.strip_suffix(s).filter(|f| types.contains(*f)))
                    .unwrap_or(series);
                if !help.contains(family) || !types.contains(family) {
                    missing.push(line.to_string());
                }
            }
        }
        missing
    }
}
