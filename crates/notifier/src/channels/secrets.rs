//! Channel credentials by reference: a merchant's settings say where a secret is (`env:NAME`
//! or `file:/path`), never the secret itself; it is read when a channel needs it, kept a
//! minute, and never logged.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a secret read is reused before it is read again (so a rotated file takes effect).
const KEEP: Duration = Duration::from_secs(60);

/// Whether `reference` has the form of a secret reference; the message names what is wrong.
pub fn check_ref(reference: &str) -> Result<(), String> {
    match reference.split_once(':') {
        Some(("env", name)) if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            Ok(())
        }
        Some(("file", path)) if path.starts_with('/') => Ok(()),
        // A malformed reference is repeated; anything else may be the secret itself, and none of
        // it is.
        Some(("env" | "file", _)) => {
            Err(format!("`{reference}` is not a secret reference: give `env:NAME` or `file:/absolute/path`"))
        }
        _ => Err("not a secret reference: give `env:NAME` or `file:/absolute/path`, never the secret itself".into()),
    }
}

/// Reads secrets by reference, keeping each a minute.
#[derive(Default)]
pub struct Secrets {
    read: Mutex<HashMap<String, (Instant, String)>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// The secret `reference` points at, or why it cannot be read (naming the reference,
    /// never the value).
    pub fn get(&self, reference: &str) -> Result<String, String> {
        if let Some((at, v)) = self.read.lock().unwrap_or_else(|p| p.into_inner()).get(reference)
            && at.elapsed() < KEEP
        {
            return Ok(v.clone());
        }
        check_ref(reference)?;
        let value = match reference.split_once(':') {
            Some(("env", name)) => std::env::var(name).map_err(|_| format!("{reference}: not set"))?,
            Some(("file", path)) => std::fs::read_to_string(path).map_err(|e| format!("{reference}: {e}"))?,
            _ => unreachable!("checked above"),
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(format!("{reference}: empty"));
        }
        self.read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(reference.to_string(), (Instant::now(), value.clone()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_variable_or_an_absolute_file() {
        assert!(check_ref("env:WECHAT_SECRET").is_ok());
        assert!(check_ref("file:/run/secrets/sms").is_ok());
        let e = check_ref("9f86d081884c7d659a2feaa0c55ad015").unwrap_err();
        assert!(e.contains("not a secret reference") && !e.contains("9f86d081884c7d659a2feaa0c55ad015"), "{e}");
        let e = check_ref("mini-secret").unwrap_err();
        assert!(!e.contains("mini") && !e.contains("secret`"), "no part of a short secret either: {e}");
        assert!(check_ref("file:relative").unwrap_err().contains("`file:relative`"));
        assert!(check_ref("env:").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "secret-1\n").unwrap();
        let s = Secrets::default();
        assert_eq!(s.get(&format!("file:{}", path.display())).unwrap(), "secret-1");
        assert!(s.get("env:AUTODEBIT_SURELY_UNSET_VARIABLE").unwrap_err().contains("not set"));
    }
}
