//! The README cannot rot: its Quickstart and its billing-mode examples run end to end against
//! the real binary (as `examples/quickstart.sh` and `examples/readme_modes.sh`, which hold
//! every `autodebit call` of the README word for word), and `autodebit demo` does what the
//! README says of it.
use crate::support;

use std::path::Path;
use std::process::{Command, Output};
use support::Process;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Whitespace runs as one space: a command reads the same however it is wrapped.
fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every `autodebit call …` command in the README's `sh` blocks, to the end of the command
/// (over line ends inside quotes, after `\` or `|`).
fn readme_calls() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let (mut calls, mut in_sh, mut current): (Vec<String>, bool, Option<String>) = (Vec::new(), false, None);
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let text = match (current.take(), line.find("autodebit call")) {
            (Some(open), _) => format!("{open}\n{line}"),
            (None, Some(at)) => line[at..].to_string(),
            (None, None) => continue,
        };
        let open = text.matches('\'').count() % 2 == 1 || text.ends_with('\\') || text.ends_with('|');
        if open {
            current = Some(text);
        } else {
            calls.push(squeeze(&text));
        }
    }
    assert!(current.is_none(), "a README command never ends: {current:?}");
    calls
}

#[test]
fn the_scripts_hold_every_readme_call_word_for_word() {
    let calls = readme_calls();
    assert!(calls.len() >= 14, "the README's calls: {calls:#?}");
    let scripts: String = ["quickstart.sh", "readme_modes.sh", "common.sh"]
        .iter()
        .map(|f| std::fs::read_to_string(Path::new(ROOT).join("examples").join(f)).unwrap())
        .collect();
    let scripts = squeeze(&scripts);
    let missing: Vec<&String> = calls.iter().filter(|c| !scripts.contains(c.as_str())).collect();
    assert!(missing.is_empty(), "README commands the example scripts do not run: {missing:#?}");
}

/// Runs `examples/SCRIPT` with `interpreter` against `p`, the built binary first on PATH;
/// fails with its output.
fn run_example(p: &Process, interpreter: &str, script: &str) -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_autodebit")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new(interpreter)
        .arg(Path::new(ROOT).join("examples").join(script))
        .env("PATH", path)
        .env("AUTODEBIT_ADDR", p.grpc.to_string())
        .env("AUTODEBIT_OPERATOR_KEY", "test-operator-key")
        .env_remove("AUTODEBIT_KEY")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {interpreter}: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed ({}):\n{stdout}\n{stderr}", out.status);
    stdout.into_owned()
}

/// `autodebit run` on a test clock in `dir`, every charge approved (as the Quickstart starts it).
fn quickstart_platform(dir: &Path) -> Process {
    Process::start(&["run", "--data-dir", dir.to_str().unwrap(), "--test-clock", "--decline-basis-points", "0"])
}

/// Whether `program ARGS` runs and succeeds.
fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().is_ok_and(|o| o.status.success())
}

#[test]
fn the_quickstart_and_every_billing_mode_run_as_the_readme_shows() {
    assert!(works("jq", &["--version"]), "the example scripts need jq (Debian: apt-get install jq)");
    let dir = tempfile::tempdir().unwrap();
    let p = quickstart_platform(dir.path());
    let out = run_example(&p, "bash", "readme_modes.sh");
    assert!(out.contains("quickstart: merchant mch_") && out.contains("signed contract ct_"), "{out}");
    assert!(out.contains("readme modes: usage, event-triggered and hybrid billed"), "{out}");
}

#[test]
fn the_quickstart_runs_as_a_python_grpc_client() {
    assert!(
        works("python3", &["-c", "import grpc, grpc_tools"]),
        "examples/quickstart.py needs python3 with grpcio and grpcio-tools (pip install grpcio grpcio-tools)"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = quickstart_platform(dir.path());
    let out = run_example(&p, "python3", "quickstart.py");
    assert!(out.contains("quickstart.py: merchant mch_") && out.contains("charged it once"), "{out}");
}

/// `autodebit call ARGS` against `p` with `stdin` and `env`: (exit code, stdout, stderr).
fn call(p: &Process, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_autodebit"))
        .args(["call", "--addr", &p.grpc.to_string()])
        .args(args)
        .env_remove("AUTODEBIT_KEY")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run autodebit call");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn call_speaks_json_to_any_method_and_prints_errors_as_code_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let p = quickstart_platform(dir.path());
    let op = ["--key", "test-operator-key"];

    // Full, short and bare names; the request from stdin; canonical JSON, pretty printed.
    for method in ["autodebit.admin.v1.AdminService/GetClock", "AdminService/GetClock", "GetClock"] {
        let (code, out, err) = call(&p, &[&[method, "-"][..], &op].concat(), "{}", &[]);
        assert_eq!(code, 0, "{method}: {err}");
        let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(answer["testClock"], true, "{out}");
        assert!(answer["nowMs"].is_string(), "int64 as a string: {out}");
        assert!(out.starts_with("{\n  \""), "pretty printed: {out}");
    }
    // The key from the environment; a server error is `CODE: message` on stderr, exit 1.
    let key = [("AUTODEBIT_KEY", "test-operator-key")];
    let (code, out, err) = call(&p, &["AdvanceClock", r#"{"seconds": 0}"#], "", &key);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.starts_with("INVALID_ARGUMENT: ") && err.contains("seconds"), "{err}");
    let (code, _, err) = call(&p, &["GetContract", r#"{"contract_id": "ct_0"}"#, "--key", "adk_key_nobody"], "", &[]);
    assert_eq!(code, 1);
    assert!(err.starts_with("UNAUTHENTICATED: "), "{err}");
    // Bad JSON and unknown methods are refused before anything is sent.
    let (code, _, err) = call(&p, &["AdvanceClock", r#"{"seconds": "soon"}"#], "", &key);
    assert_eq!(code, 1);
    assert!(err.starts_with("JSON: seconds: "), "{err}");
    let (code, _, err) = call(&p, &["Teleport"], "", &key);
    assert_eq!(code, 1);
    assert!(err.contains("no method \"Teleport\""), "{err}");
    let (_, out, _) = call(&p, &["GetClock"], "", &key);
    assert!(out.contains("\"testClock\": true"), "{out}");
}

/// `autodebit ARGS`, to its end.
fn autodebit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autodebit")).args(args).env("RUST_LOG", "error").output().expect("run autodebit")
}

/// The demo's report without its wall time.
fn report(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "demo failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    report.as_object_mut().unwrap().remove("wall_seconds").expect("wall_seconds");
    report
}

#[test]
fn the_demo_holds_outsized_charges_and_files_complaints_of_each_kind() {
    let args = ["demo", "--contracts", "20", "--days", "35", "--seed", "3", "--anomalies", "--complaints"];
    let first = report(&autodebit(&args));
    // Six outsized rides held: two confirmed by the payer and two approved (released), one
    // rejected by an operator and one lapsed after 48 hours (rejected). Four complaints: two
    // answered at once, one late (its deadline missed), one never (missed).
    let expected = serde_json::json!({
        "charges_held": 6, "held_released": 4, "held_rejected": 2,
        "complaints_opened": 4, "complaints_resolved": 3, "complaint_deadlines_missed": 2, "penalties_applied": 2,
    });
    assert_eq!(first["risk"], expected, "{first}");
    assert_eq!(first["contracts_signed"], 26, "the six ride contracts besides");
    assert_eq!(first["ledger_balanced"], true);
    assert_eq!(report(&autodebit(&args)), first, "the same seed, the same report");
}

#[tokio::test]
async fn the_demo_repeats_itself_for_a_seed_and_refuses_a_database_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    // A decline rate high enough that a different draw would show in the counts.
    // The simulator's statements disagree with the books (`--discrepancies`).
    let args = [
        "demo",
        "--contracts",
        "40",
        "--days",
        "62",
        "--decline-basis-points",
        "3000",
        "--seed",
        "7",
        "--discrepancies",
    ];
    let on_file = report(&autodebit(&[&args[..], &["--database-url", url.as_str()]].concat()));
    let in_temp = report(&autodebit(&args));
    assert_eq!(on_file, in_temp, "the same seed, the same report");
    assert_eq!(on_file["contracts_signed"], 40);
    assert!(on_file["charges_scheduled"].as_u64().unwrap() >= 40, "{on_file}");
    assert!(on_file["charges_failed"].as_u64().unwrap() > 0, "declines drawn: {on_file}");
    let r = &on_file["reconciliation"];
    for kind in ["short_payments", "status_mismatches", "duplicates"] {
        assert!(r[kind].as_u64().unwrap() >= 1, "{kind}: {on_file}");
    }
    assert_eq!(r["duplicates_refunded"], r["duplicates"], "every duplicate refunded: {on_file}");
    assert_eq!(r["days"], 62);
    assert!(r["matched"].as_u64().unwrap() > 0 && r["matched"].as_u64() < r["lines"].as_u64(), "{on_file}");
    assert_eq!(on_file["ledger_balanced"], true);
    assert!(on_file.get("risk").is_none(), "no risk figures without --anomalies or --complaints");

    let store =
        autodebit_eventstore::EventStore::open(autodebit_eventstore::StoreOptions::new(url.as_str())).await.unwrap();
    let held = store.count().await.unwrap();
    let again = autodebit(&[&args[..], &["--database-url", url.as_str()]].concat());
    assert!(!again.status.success(), "a database in use is refused");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("--database-url: the database already holds") && stderr.contains("events"), "{stderr}");
    assert!(again.stdout.is_empty(), "no report");
    assert_eq!(store.count().await.unwrap(), held, "nothing was added");

    // `--data-dir` keeps the database where `run` and `analytics export` find it.
    let kept = tempfile::tempdir().unwrap();
    let data = kept.path().join("demo");
    let in_dir = report(&autodebit(&[&args[..], &["--data-dir", data.to_str().unwrap()]].concat()));
    assert_eq!(in_dir, in_temp, "the same seed, the same report");
    let csv = kept.path().join("charges.csv");
    let out = autodebit(&[
        "analytics",
        "export",
        "--data-dir",
        data.to_str().unwrap(),
        "--table",
        "charges",
        "--format",
        "csv",
        "--out",
        csv.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "export: {}", String::from_utf8_lossy(&out.stderr));
    let rows = std::fs::read_to_string(&csv).unwrap().lines().count() as u64 - 1;
    assert_eq!(rows, in_dir["charges_scheduled"].as_u64().unwrap(), "a row per charge");
    let again = autodebit(&[&args[..], &["--data-dir", data.to_str().unwrap()]].concat());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--data-dir: the database already holds"));
}
