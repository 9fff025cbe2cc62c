//! `autodebit bench charges` as the benchmark pages quote it: a small run reports every charge
//! settled, and the keys `docs/benchmarks.md` reads, consistent with each other.

#[test]
fn bench_charges_reports_the_figures_the_benchmark_pages_quote() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autodebit"))
        .args(["bench", "charges", "--contracts", "300", "--json"])
        .env("RUST_LOG", "error")
        .output()
        .expect("run autodebit bench charges");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(r["contracts"], 300, "{r}");
    assert_eq!(r["succeeded"].as_i64().unwrap() + r["failed"].as_i64().unwrap(), 300, "{r}");
    for key in ["charges_per_second", "middle_charges_per_second", "p50_ms", "p99_ms", "peak_rss_bytes"] {
        assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {r}");
    }
    // Signing's pace is the contracts over its time (rounded to a tenth of a second).
    let (seconds, pace) = (r["signing_seconds"].as_f64().unwrap(), r["signings_per_second"].as_f64().unwrap());
    assert!(seconds > 0.0 && pace > 0.0, "{r}");
    let implied = 300.0 / pace;
    assert!((implied - seconds).abs() <= 0.06, "{seconds} s against {pace}/s: {r}");
}
