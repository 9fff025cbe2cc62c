//! `--wechatpay-config FILE`: which merchants' charges go to WeChat Pay, and with which keys.
//! A JSON file, read once at start; a wrong or missing field stops the start with its name.
use anyhow::{Context, bail};
use autodebit_provider::wechatpay::cert::{CertInfo, Validity};
use autodebit_provider::wechatpay::client::{PlatformKey, V3Config};
use autodebit_provider::wechatpay::v2::SignType;
use autodebit_provider::wechatpay::{WeChatPay, WeChatPayConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    merchants: Vec<Merchant>,
}

/// One merchant's WeChat Pay account. Paths are relative to the file's directory.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Merchant {
    /// The platform's merchant id (`MerchantApplied`), whose charges go here.
    merchant_id: String,
    appid: String,
    mch_id: String,
    /// The APIv2 key, or `api_v2_key_env`: the environment variable holding it.
    #[serde(default)]
    api_v2_key: String,
    #[serde(default)]
    api_v2_key_env: String,
    /// `HMAC-SHA256` (default) or `MD5`.
    #[serde(default)]
    sign_type: Option<String>,
    /// Where calls go: WeChat Pay by default; the mock (`autodebit mock-wechatpay`) in tests.
    #[serde(default)]
    base_url: Option<String>,
    /// Where WeChat Pay sends deduction results: the charger's `/callbacks/wechatpay/v2/deduction`.
    notify_url: String,
    #[serde(default)]
    refund_notify_url: String,
    /// The papay template id signing uses.
    #[serde(default)]
    plan_id: String,
    /// The merchant server's IP (`spbill_create_ip`).
    spbill_create_ip: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    /// Deductions made for profit sharing (`profit_sharing=Y`), shared at settlement through
    /// `/v3/profitsharing/orders` (needs `v3`).
    #[serde(default)]
    profit_sharing: bool,
    #[serde(default)]
    v3: Option<V3>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct V3 {
    merchant_serial: String,
    merchant_private_key_file: PathBuf,
    /// The merchant's API certificate, checked for expiry at start (optional).
    #[serde(default)]
    merchant_certificate_file: Option<PathBuf>,
    #[serde(default)]
    api_v3_key: String,
    #[serde(default)]
    api_v3_key_env: String,
    #[serde(default)]
    platform_certificate_files: Vec<PathBuf>,
    #[serde(default)]
    platform_public_key_id: String,
    #[serde(default)]
    platform_public_key_file: Option<PathBuf>,
}

/// The WeChat Pay provider of each merchant the file names.
pub fn load(path: &Path) -> anyhow::Result<Vec<(String, Arc<WeChatPay>)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--wechatpay-config {}", path.display()))?;
    let file: File =
        serde_json::from_str(&text).with_context(|| format!("--wechatpay-config {}: not valid", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, m) in file.merchants.into_iter().enumerate() {
        let at = format!("--wechatpay-config {}: merchants[{i}] ({})", path.display(), m.merchant_id);
        out.push(merchant(m, dir).with_context(|| at.clone())?);
    }
    Ok(out)
}

fn merchant(m: Merchant, dir: &Path) -> anyhow::Result<(String, Arc<WeChatPay>)> {
    let id = m.merchant_id;
    let mut config = WeChatPayConfig::new(m.appid, m.mch_id, secret("api_v2_key", m.api_v2_key, &m.api_v2_key_env)?);
    if let Some(url) = m.base_url {
        config = config.with_base_url(url);
    }
    config.sign_type = match m.sign_type.as_deref() {
        None | Some("HMAC-SHA256") => SignType::HmacSha256,
        Some("MD5") => SignType::Md5,
        Some(other) => bail!("sign_type: {other:?} is neither \"HMAC-SHA256\" nor \"MD5\""),
    };
    config.notify_url = m.notify_url;
    config.refund_notify_url = m.refund_notify_url;
    config.plan_id = m.plan_id;
    config.spbill_create_ip = m.spbill_create_ip;
    if let Some(body) = m.body {
        config.body = body;
    }
    if let Some(ms) = m.timeout_ms {
        config.timeout = std::time::Duration::from_millis(ms);
    }
    if m.profit_sharing && m.v3.is_none() {
        bail!("profit_sharing: sharing goes through WeChat Pay's v3 API; add v3");
    }
    config.profit_sharing = m.profit_sharing;
    if let Some(v3) = m.v3 {
        config.v3 = Some(v3_config(v3, dir)?);
    }
    let provider = WeChatPay::new(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((id, Arc::new(provider)))
}

fn v3_config(v3: V3, dir: &Path) -> anyhow::Result<V3Config> {
    let read = |field: &str, p: &Path| {
        let p = dir.join(p);
        std::fs::read_to_string(&p).with_context(|| format!("v3.{field}: {}", p.display()))
    };
    if let Some(cert) = &v3.merchant_certificate_file {
        check_certificate("merchant API certificate", &read("merchant_certificate_file", cert)?)?;
    }
    let mut platform_keys = Vec::new();
    for f in &v3.platform_certificate_files {
        let pem = read("platform_certificate_files", f)?;
        check_certificate("WeChat Pay platform certificate", &pem)?;
        platform_keys.push(PlatformKey::Certificate { pem });
    }
    if let Some(f) = &v3.platform_public_key_file {
        if v3.platform_public_key_id.is_empty() {
            bail!("v3.platform_public_key_id: required with platform_public_key_file");
        }
        platform_keys.push(PlatformKey::PublicKey {
            id: v3.platform_public_key_id.clone(),
            pem: read("platform_public_key_file", f)?,
        });
    }
    if platform_keys.is_empty() {
        bail!("v3: give platform_certificate_files or platform_public_key_file, to check WeChat Pay's answers with");
    }
    Ok(V3Config {
        merchant_serial: v3.merchant_serial,
        merchant_private_key_pem: read("merchant_private_key_file", &v3.merchant_private_key_file)?,
        api_v3_key: secret("v3.api_v3_key", v3.api_v3_key, &v3.api_v3_key_env)?,
        platform_keys,
    })
}

/// A secret given inline or, better, by the name of the environment variable holding it.
fn secret(field: &str, inline: String, env: &str) -> anyhow::Result<String> {
    match (inline.is_empty(), env.is_empty()) {
        (false, true) => Ok(inline),
        (true, false) => std::env::var(env).with_context(|| format!("{field}_env: ${env} is not set")),
        (false, false) => bail!("{field}: give it or {field}_env, not both"),
        (true, true) => bail!("{field}: missing (or name the environment variable holding it in {field}_env)"),
    }
}

/// An expired certificate stops the start; one expiring within 30 days is logged and counted
/// (`autodebit_certificate_expiring`), so it is renewed in time.
fn check_certificate(what: &'static str, pem: &str) -> anyhow::Result<()> {
    let info = CertInfo::from_pem(what, pem).map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    match info.check(what, now).map_err(|e| anyhow::anyhow!("{e}"))? {
        Validity::ExpiresSoon { days_left } => {
            tracing::warn!(certificate = what, serial = info.serial, days_left, "certificate expires within 30 days");
            autodebit_runtime::metrics::set(
                autodebit_runtime::metrics::CERTIFICATE_EXPIRING,
                &[("certificate", what), ("serial", &info.serial)],
                days_left,
            );
        }
        Validity::Valid => {}
    }
    Ok(())
}
