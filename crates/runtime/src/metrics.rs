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
