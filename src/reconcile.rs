//! `autodebit reconcile`: reconciles a merchant's statement of a day on a running platform
//! (`ReconciliationService/ReconcileStatement` with the operator key) and prints the report as
//! JSON: the provider's own statement, or one from a file (`--statement`, plain or gzip, as
//! WeChat Pay's `downloadbill` gives it).
use crate::call::{self, CallArgs};
use anyhow::Context;
use base64::Engine;

#[derive(clap::Args, Debug)]
pub struct ReconcileArgs {
    /// The day the statement covers, YYYY-MM-DD (Beijing time).
    #[arg(long)]
    date: String,
    /// The merchant whose statement it is.
    #[arg(long)]
    merchant: String,
    /// A statement file to reconcile instead of fetching the provider's.
    #[arg(long)]
    statement: Option<std::path::PathBuf>,
    /// The operator key.
    #[arg(long, env = "AUTODEBIT_KEY", hide_env_values = true)]
    key: Option<String>,
    /// The platform's gRPC address.
    #[arg(long, env = "AUTODEBIT_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
}

pub async fn run(args: ReconcileArgs) -> anyhow::Result<()> {
    let mut request = serde_json::json!({ "merchantId": args.merchant, "date": args.date });
    if let Some(path) = &args.statement {
        let bytes = std::fs::read(path).with_context(|| format!("--statement: cannot read {}", path.display()))?;
        request["statement"] = base64::engine::general_purpose::STANDARD.encode(bytes).into();
    }
    call::run(CallArgs::new(
        "autodebit.charger.v1.ReconciliationService/ReconcileStatement",
        request.to_string(),
        args.key,
        args.addr,
    ))
    .await
}
