//! The notifier's webhook signatures verify with the Standard Webhooks reference library for
//! Python (the PyPI package `standardwebhooks`), and a payload changed after signing does not.
//!
//! The interpreter is `$AUTODEBIT_PYTHON`, by default `$HOME/.cache/autodebit-venv/bin/python`:
//! the virtual environment `.ci/run` creates and installs the package into. The test fails,
//! saying how to install it, when that interpreter or the package is missing.

use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use autodebit_notifier::webhooks::sign::{Secret, derive, sign};

/// Reads the secret, payload and headers from the environment; prints the library's own
/// signature of the message, then exits 0 if `Webhook.verify` accepts it, 3 if it raises
/// `WebhookVerificationError`, 4 if the package is missing.
const SCRIPT: &str = r#"
import os, sys
from datetime import datetime, timezone
try:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
except ImportError as e:
    print(f"import failed: {e}", file=sys.stderr)
    sys.exit(4)
hook = Webhook(os.environ["WH_SECRET"])
headers = {
    "webhook-id": os.environ["WH_ID"],
    "webhook-timestamp": os.environ["WH_TIMESTAMP"],
    "webhook-signature": os.environ["WH_SIGNATURE"],
}
payload = os.environ["WH_PAYLOAD"]
when = datetime.fromtimestamp(int(os.environ["WH_TIMESTAMP"]), tz=timezone.utc)
print(hook.sign(os.environ["WH_ID"], when, payload))
try:
    hook.verify(payload, headers)
except WebhookVerificationError as e:
    print(f"refused: {e}", file=sys.stderr)
    sys.exit(3)
"#;

fn python() -> String {
    if let Ok(p) = std::env::var("AUTODEBIT_PYTHON")
        && !p.is_empty()
    {
        return p;
    }
    let home = std::env::var("HOME").expect("HOME is set (the default interpreter lives under it)");
    format!("{home}/.cache/autodebit-venv/bin/python")
}

const INSTALL: &str = "run .ci/run, or: python3 -m venv $HOME/.cache/autodebit-venv && \
     $HOME/.cache/autodebit-venv/bin/python -m pip install standardwebhooks==1.1.0 \
     (or point AUTODEBIT_PYTHON at an interpreter that has the package)";

/// Runs the script on one message whose headers say `signature`, with `payload` as the body.
fn python_verify(secret: &Secret, id: &str, timestamp: i64, signature: &str, payload: &str) -> Output {
    let python = python();
    let output = Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .env("WH_SECRET", secret.format())
        .env("WH_ID", id)
        .env("WH_TIMESTAMP", timestamp.to_string())
        .env("WH_SIGNATURE", signature)
        .env("WH_PAYLOAD", payload)
        .env("PYTHONUTF8", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run the Python interpreter {python} ({e}); {INSTALL}"));
    if output.status.code() == Some(4) {
        panic!(
            "the Python package standardwebhooks is not installed for {python} ({}); {INSTALL}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    output
}

fn now_secs() -> i64 {
    // The library checks the timestamp against its own clock (5 minutes' tolerance).
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn the_reference_library_accepts_our_signature_and_refuses_a_tampered_payload() {
    let secret = derive(b"platform webhook key for the test", "ep_01J8Z", 2);
    let id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
    let t = now_secs();
    let payload = r#"{"type":"charge.succeeded","timestamp":"2026-01-02T03:04:05Z","data":{"charge_id":"ch_1","amount":1990,"note":"€ ✓"}}"#;
    let signature = sign(&secret, id, t, payload);

    let accepted = python_verify(&secret, id, t, &signature, payload);
    let stdout = String::from_utf8_lossy(&accepted.stdout);
    let stderr = String::from_utf8_lossy(&accepted.stderr);
    assert!(accepted.status.success(), "the library refused our signature ({}): {stdout}{stderr}", accepted.status);
    assert_eq!(stdout.trim(), signature, "the library signs the same message identically");

    let tampered = payload.replace("1990", "1991");
    let refused = python_verify(&secret, id, t, &signature, &tampered);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "a tampered payload must be refused: {stderr}");
    assert!(stderr.contains("No matching signature"), "{stderr}");

    // Another generation's secret does not verify either.
    let rotated = derive(b"platform webhook key for the test", "ep_01J8Z", 3);
    let refused = python_verify(&rotated, id, t, &signature, payload);
    assert_eq!(refused.status.code(), Some(3), "{}", String::from_utf8_lossy(&refused.stderr));
}

#[test]
fn the_reference_library_accepts_a_rotation_header_with_two_signatures() {
    let old = derive(b"k", "ep_1", 0);
    let new = derive(b"k", "ep_1", 1);
    let (id, t, payload) = ("msg_rotation", now_secs(), r#"{"a":1}"#);
    let header = format!("{} {}", sign(&old, id, t, payload), sign(&new, id, t, payload));
    for secret in [&old, &new] {
        let out = python_verify(secret, id, t, &header, payload);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
