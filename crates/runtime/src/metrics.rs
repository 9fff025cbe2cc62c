//! A small process-wide metrics registry, rendered in the Prometheus text format.
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

fn registry() -> &'static Mutex<BTreeMap<String, i64>> {
    static R: OnceLock<Mutex<BTreeMap<String, i64>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(BTreeMap::new()))
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let body: Vec<String> =
        labels.iter().map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    format!("{name}{{{}}}", body.join(","))
}

/// Adds `n` to a counter.
pub fn add(name: &str, labels: &[(&str, &str)], n: i64) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    *r.entry(key(name, labels)).or_insert(0) += n;
}

/// Sets a gauge.
pub fn set(name: &str, labels: &[(&str, &str)], v: i64) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.insert(key(name, labels), v);
}

pub fn get(name: &str, labels: &[(&str, &str)]) -> i64 {
    let r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.get(&key(name, labels)).copied().unwrap_or(0)
}

/// Every metric, one line each.
pub fn render() -> String {
    let r = registry().lock().unwrap_or_else(|p| p.into_inner());
    let mut out = String::new();
    for (k, v) in r.iter() {
        out.push_str(k);
        out.push(' ');
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}

/// Upper bounds, in milliseconds, of the latency histograms' buckets.
pub const LATENCY_BUCKETS_MS: [i64; 17] =
    [5, 10, 25, 50, 100, 200, 300, 400, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000, 30_000];

/// Records `ms` in the latency histogram `name`: Prometheus's `{name}_bucket{le="…"}`
/// (cumulative), `{name}_sum` and `{name}_count`.
pub fn observe_ms(name: &str, ms: i64) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    for b in LATENCY_BUCKETS_MS.iter().filter(|b| ms <= **b) {
        *r.entry(key(&format!("{name}_bucket"), &[("le", &b.to_string())])).or_insert(0) += 1;
    }
    *r.entry(key(&format!("{name}_bucket"), &[("le", "+Inf")])).or_insert(0) += 1;
    *r.entry(format!("{name}_sum")).or_insert(0) += ms;
    *r.entry(format!("{name}_count")).or_insert(0) += 1;
}

/// The `per_mille`/1000 quantile of the latency histogram `name`, interpolated within its
/// bucket as Prometheus's `histogram_quantile` does; `None` before any observation, and the
/// highest bound when it lies beyond it.
pub fn quantile_ms(name: &str, per_mille: i64) -> Option<i64> {
    let count = get(&format!("{name}_count"), &[]);
    if count == 0 {
        return None;
    }
    let rank = ((count * per_mille + 999) / 1000).max(1);
    let (mut lower, mut below) = (0i64, 0i64);
    for b in LATENCY_BUCKETS_MS {
        let upto = get(&format!("{name}_bucket"), &[("le", &b.to_string())]);
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
        let name = "test_latency_quantiles";
        assert_eq!(quantile_ms(name, 500), None);
        for ms in (1..=100).map(|i| i * 10) {
            observe_ms(name, ms);
        }
        // 100 observations 10..1000 ms: the median falls in the (400, 500] bucket.
        let p50 = quantile_ms(name, 500).unwrap();
        assert!((400..=500).contains(&p50), "{p50}");
        assert!((750..=1000).contains(&quantile_ms(name, 990).unwrap()));
        assert_eq!(get(&format!("{name}_count"), &[]), 100);
        assert!(render().contains(&format!("{name}_bucket{{le=\"+Inf\"}} 100")));
    }
}
