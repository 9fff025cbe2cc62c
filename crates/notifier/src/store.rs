//! The notifier's tables, and every statement on them (`migrations/` holds their schema):
//!
//! - `notifier_notices`: every notice recorded, by contract, with where its delivery stands;
//! - `notifier_outbox`: notices still to send, written with them (one row each);
//! - `notifier_deliveries`: every try on a channel and every receipt;
//! - `notifier_contracts`, `notifier_merchants`: what later events do not carry (a contract's
//!   merchant, payer, phone, language and service; a merchant's name);
//! - `notifier_settings`, `notifier_templates`: merchants' channels and own templates;
//! - `notifier_webhook_endpoints`, `notifier_webhook_outbox`: endpoints and their deliveries;
//! - `notifier_keys`: the webhook signing key secrets derive from;
//! - `notifier_api_keys`: the API keys (kept by `runtime::auth`).
use autodebit_eventstore::{EventStore, Migrations, StoreError, Tx, Value};

pub static MIGRATIONS: Migrations = autodebit_eventstore::migrations!("notifier", 4000..5000);

/// A notice as `notifier_notices` keeps it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NoticeRow {
    pub notice_id: String,
    /// `NoticeKind` as a number.
    pub kind: i64,
    /// The channel that delivered it ("" while none has).
    pub channel: String,
    pub recipient: String,
    pub contract_id: String,
    /// Empty for a notice about no charge.
    pub charge_id: String,
    pub text: String,
    pub recorded_at_ms: i64,
    pub merchant_id: String,
    pub language: String,
    pub link_token: String,
    pub state: String,
    pub opened_at_ms: i64,
    pub converted_at_ms: i64,
}

const NOTICE_COLUMNS: &str = "notice_id, kind, channel, recipient, contract_id, charge_id, text, recorded_at_ms, \
     merchant_id, language, link_token, state, opened_at_ms, converted_at_ms";

/// A contract's notices, in the order they were recorded.
pub async fn notices_of(store: &EventStore, contract_id: &str) -> Result<Vec<NoticeRow>, StoreError> {
    store
        .query_as(
            &format!(
                "SELECT {NOTICE_COLUMNS} FROM notifier_notices WHERE contract_id = $1 ORDER BY recorded_at_ms, notice_id"
            ),
            &[Value::from(contract_id)],
        )
        .await
}

/// The notice a short link's token belongs to.
pub async fn notice_by_token(store: &EventStore, token: &str) -> Result<Option<NoticeRow>, StoreError> {
    if token.is_empty() {
        return Ok(None);
    }
    let found: Vec<NoticeRow> = store
        .query_as(
            &format!("SELECT {NOTICE_COLUMNS} FROM notifier_notices WHERE link_token = $1"),
            &[Value::from(token)],
        )
        .await?;
    Ok(found.into_iter().next())
}

/// One try of a notice, or a receipt, as `notifier_deliveries` keeps it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub notice_id: String,
    pub channel: String,
    pub outcome: i64,
    pub provider_message_id: String,
    pub detail: String,
    pub at_ms: i64,
}

/// The deliveries of a contract's notices, oldest first.
pub async fn deliveries_of_contract(store: &EventStore, contract_id: &str) -> Result<Vec<DeliveryRow>, StoreError> {
    store
        .query_as(
            "SELECT d.notice_id, d.channel, d.outcome, d.provider_message_id, d.detail, d.at_ms
             FROM notifier_deliveries d JOIN notifier_notices n ON n.notice_id = d.notice_id
             WHERE n.contract_id = $1 ORDER BY d.notice_id, d.seq",
            &[Value::from(contract_id)],
        )
        .await
}

#[derive(sqlx::FromRow)]
struct Owner {
    merchant_id: String,
}

/// The merchant of a contract the notifier has seen signed.
pub async fn merchant_of(store: &EventStore, contract_id: &str) -> Result<Option<String>, StoreError> {
    let found: Vec<Owner> = store
        .query_as("SELECT merchant_id FROM notifier_contracts WHERE contract_id = $1", &[Value::from(contract_id)])
        .await?;
    Ok(found.into_iter().next().map(|o| o.merchant_id))
}

/// What the notifier keeps of a signed contract.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct ContractRow {
    pub contract_id: String,
    pub merchant_id: String,
    pub payer_id: String,
    pub phone: String,
    pub language: String,
    pub service_name: String,
}

/// `ids` as a JSON array of one-element arrays, for `json_rows` (`value->>0` is the id on
/// both backends).
fn id_list(ids: &[String]) -> String {
    serde_json::Value::Array(ids.iter().map(|i| serde_json::json!([i])).collect()).to_string()
}

/// The kept contracts among `ids`.
pub async fn contracts(tx: &mut Tx, ids: Vec<String>) -> Result<Vec<ContractRow>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = id_list(&ids);
    tx.query_as(
        &format!(
            "SELECT contract_id, merchant_id, payer_id, phone, language, service_name FROM notifier_contracts
             WHERE contract_id IN (SELECT value->>0 FROM {})",
            tx.kind().json_rows(1)
        ),
        &[Value::from(list)],
    )
    .await
}

/// Keeps contracts; one kept already stays as it is.
pub async fn save_contracts(tx: &mut Tx, rows: &[ContractRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::json!([r.contract_id, r.merchant_id, r.payer_id, r.phone, r.language, r.service_name]))
        .collect();
    tx.execute(
        &format!(
            "INSERT INTO notifier_contracts (contract_id, merchant_id, payer_id, phone, language, service_name)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5 FROM {} WHERE true
             ON CONFLICT (contract_id) DO NOTHING",
            tx.kind().json_rows(1)
        ),
        &[Value::from(serde_json::Value::Array(json).to_string())],
    )
    .await?;
    Ok(())
}

/// Keeps merchants' names (the latest wins).
pub async fn save_merchant_names(tx: &mut Tx, names: &[(String, String)]) -> Result<(), StoreError> {
    for (id, name) in names {
        tx.execute(
            "INSERT INTO notifier_merchants (merchant_id, name) VALUES ($1, $2)
             ON CONFLICT (merchant_id) DO UPDATE SET name = excluded.name",
            &[Value::from(id.as_str()), Value::from(name.as_str())],
        )
        .await?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
pub struct MerchantRow {
    pub merchant_id: String,
    pub name: String,
    pub settings: String,
}

/// The names and settings (base64 protobuf, "" for none) of `ids`.
pub async fn merchants(tx: &mut Tx, ids: Vec<String>) -> Result<Vec<MerchantRow>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = id_list(&ids);
    tx.query_as(
        &format!(
            "SELECT i.id AS merchant_id, COALESCE(m.name, '') AS name, COALESCE(s.settings, '') AS settings
             FROM (SELECT DISTINCT value->>0 AS id FROM {}) i
             LEFT JOIN notifier_merchants m ON m.merchant_id = i.id
             LEFT JOIN notifier_settings s ON s.merchant_id = i.id",
            tx.kind().json_rows(1)
        ),
        &[Value::from(list)],
    )
    .await
}

/// A merchant's settings, base64 protobuf ("" for none), outside a transaction.
pub async fn settings_of(store: &EventStore, merchant_id: &str) -> Result<String, StoreError> {
    #[derive(sqlx::FromRow)]
    struct S {
        settings: String,
    }
    let found: Vec<S> = store
        .query_as("SELECT settings FROM notifier_settings WHERE merchant_id = $1", &[Value::from(merchant_id)])
        .await?;
    Ok(found.into_iter().next().map(|s| s.settings).unwrap_or_default())
}

pub async fn save_settings(tx: &mut Tx, merchant_id: &str, settings: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO notifier_settings (merchant_id, settings) VALUES ($1, $2)
         ON CONFLICT (merchant_id) DO UPDATE SET settings = excluded.settings",
        &[Value::from(merchant_id), Value::from(settings)],
    )
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TemplateRow {
    pub merchant_id: String,
    pub kind: i64,
    pub language: String,
    pub body: String,
}

/// The merchants' own templates.
pub async fn templates(tx: &mut Tx, merchant_ids: Vec<String>) -> Result<Vec<TemplateRow>, StoreError> {
    if merchant_ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = id_list(&merchant_ids);
    tx.query_as(
        &format!(
            "SELECT merchant_id, kind, language, body FROM notifier_templates
             WHERE merchant_id IN (SELECT value->>0 FROM {})",
            tx.kind().json_rows(1)
        ),
        &[Value::from(list)],
    )
    .await
}

/// One merchant's own templates, outside a transaction.
pub async fn templates_of(store: &EventStore, merchant_id: &str) -> Result<Vec<TemplateRow>, StoreError> {
    store
        .query_as(
            "SELECT merchant_id, kind, language, body FROM notifier_templates WHERE merchant_id = $1",
            &[Value::from(merchant_id)],
        )
        .await
}

/// Sets (or, with an empty body, removes) a merchant's template.
pub async fn save_template(tx: &mut Tx, t: &TemplateRow) -> Result<(), StoreError> {
    let key = [Value::from(t.merchant_id.as_str()), Value::Int(t.kind), Value::from(t.language.as_str())];
    if t.body.is_empty() {
        tx.execute("DELETE FROM notifier_templates WHERE merchant_id = $1 AND kind = $2 AND language = $3", &key)
            .await?;
    } else {
        tx.execute(
            "INSERT INTO notifier_templates (merchant_id, kind, language, body) VALUES ($1, $2, $3, $4)
             ON CONFLICT (merchant_id, kind, language) DO UPDATE SET body = excluded.body",
            &[key[0].clone(), key[1].clone(), key[2].clone(), Value::from(t.body.as_str())],
        )
        .await?;
    }
    Ok(())
}

/// Writes notices in one statement; each row is `[notice_id, kind, recipient, contract_id,
/// charge_id, text, recorded_at_ms, merchant_id, language, link_token, state]`. A notice
/// recorded already stays as it is.
pub async fn insert_notices(tx: &mut Tx, rows: Vec<serde_json::Value>) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    tx.execute(
        &format!(
            "INSERT INTO notifier_notices (notice_id, kind, channel, recipient, contract_id, charge_id, text, recorded_at_ms,
                                           merchant_id, language, link_token, state)
             SELECT value->>0, CAST(value->>1 AS BIGINT), '', value->>2, value->>3, value->>4, value->>5,
                    CAST(value->>6 AS BIGINT), value->>7, value->>8, value->>9, value->>10
             FROM {} WHERE true
             ON CONFLICT (notice_id) DO NOTHING",
            tx.kind().json_rows(1)
        ),
        &[Value::from(serde_json::Value::Array(rows).to_string())],
    )
    .await?;
    Ok(())
}

/// Queues notices to send; each row is `[notice_id, merchant_id, payload, channels, next_at_ms,
/// payer_acted]`. A notice queued already stays as it is.
pub async fn queue_notices(tx: &mut Tx, rows: Vec<serde_json::Value>) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    tx.execute(
        &format!(
            "INSERT INTO notifier_outbox (notice_id, merchant_id, payload, channels, channel_index, attempt, state,
                                          next_at_ms, payer_acted)
             SELECT value->>0, value->>1, value->>2, value->>3, 0, 0, 'pending', CAST(value->>4 AS BIGINT),
                    CAST(value->>5 AS BIGINT)
             FROM {} WHERE true
             ON CONFLICT (notice_id) DO NOTHING",
            tx.kind().json_rows(1)
        ),
        &[Value::from(serde_json::Value::Array(rows).to_string())],
    )
    .await?;
    Ok(())
}

/// A queued notice.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub notice_id: String,
    pub merchant_id: String,
    pub payload: String,
    pub channels: String,
    pub channel_index: i64,
    pub attempt: i64,
    pub payer_acted: i64,
}

/// Puts back notices taken for sending whose outcome is unknown (their sender stopped): they
/// are sent again, under the same notice id.
pub async fn release_notices(store: &EventStore) -> Result<u64, StoreError> {
    let mut tx = store.begin().await?;
    let n = tx.execute("UPDATE notifier_outbox SET state = 'pending' WHERE state = 'sending'", &[]).await?;
    tx.commit().await?;
    Ok(n)
}

/// Takes up to `limit` notices due at `now` for sending (marked `sending` until their outcome
/// is recorded).
pub async fn claim_notices(store: &EventStore, now_ms: i64, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
    let mut tx = store.begin().await?;
    let rows: Vec<OutboxRow> = tx
        .query_as(
            "UPDATE notifier_outbox SET state = 'sending'
             WHERE notice_id IN (SELECT notice_id FROM notifier_outbox WHERE state = 'pending' AND next_at_ms <= $1
                                 ORDER BY next_at_ms LIMIT $2)
             RETURNING notice_id, merchant_id, payload, channels, channel_index, attempt, payer_acted",
            &[Value::Int(now_ms), Value::Int(limit)],
        )
        .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Where a queued notice goes next: `[notice_id, state, channel_index, attempt, next_at_ms]`.
pub async fn update_outbox(tx: &mut Tx, rows: Vec<serde_json::Value>) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    tx.execute(
        &format!(
            "UPDATE notifier_outbox SET state = u.value->>1, channel_index = CAST(u.value->>2 AS BIGINT),
                    attempt = CAST(u.value->>3 AS BIGINT), next_at_ms = CAST(u.value->>4 AS BIGINT)
             FROM {} u WHERE notifier_outbox.notice_id = u.value->>0",
            tx.kind().json_rows(1)
        ),
        &[Value::from(serde_json::Value::Array(rows).to_string())],
    )
    .await?;
    Ok(())
}

/// Records tries and receipts: `[notice_id, channel, outcome, provider_message_id, detail,
/// at_ms]`, each after the notice's earlier ones.
pub async fn insert_deliveries(tx: &mut Tx, rows: Vec<serde_json::Value>) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    tx.execute(
        &format!(
            "INSERT INTO notifier_deliveries (notice_id, seq, channel, outcome, provider_message_id, detail, at_ms)
             SELECT value->>0,
                    (SELECT COUNT(*) FROM notifier_deliveries d WHERE d.notice_id = value->>0) + 1,
                    value->>1, CAST(value->>2 AS BIGINT), value->>3, value->>4, CAST(value->>5 AS BIGINT)
             FROM {} WHERE true",
            tx.kind().json_rows(1)
        ),
        &[Value::from(serde_json::Value::Array(rows).to_string())],
    )
    .await?;
    Ok(())
}

/// Sets where notices' delivery stands: `[notice_id, state, channel]` (an empty channel
/// leaves the one recorded).
pub async fn set_notice_states(tx: &mut Tx, rows: Vec<serde_json::Value>) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let from = tx.kind().json_rows(1);
    tx.execute(
        &format!(
            "UPDATE notifier_notices SET state = u.value->>1,
                    channel = CASE WHEN u.value->>2 = '' THEN notifier_notices.channel ELSE u.value->>2 END
             FROM {from} u WHERE notifier_notices.notice_id = u.value->>0"
        ),
        &[Value::from(serde_json::Value::Array(rows).to_string())],
    )
    .await?;
    Ok(())
}

/// Marks a notice opened at `at_ms` unless it was already; whether this was its first visit.
pub async fn mark_opened(tx: &mut Tx, notice_id: &str, at_ms: i64) -> Result<bool, StoreError> {
    let n = tx
        .execute(
            "UPDATE notifier_notices SET opened_at_ms = $2 WHERE notice_id = $1 AND opened_at_ms = 0",
            &[Value::from(notice_id), Value::Int(at_ms)],
        )
        .await?;
    Ok(n > 0)
}

/// The notices about `contract_ids` of one of `kinds` recorded since `from_ms` and not converted
/// yet: what a batch's events may convert.
pub async fn convertible(
    tx: &mut Tx,
    contract_ids: Vec<String>,
    kinds: Vec<i64>,
    from_ms: i64,
) -> Result<Vec<NoticeRow>, StoreError> {
    if contract_ids.is_empty() || kinds.is_empty() {
        return Ok(Vec::new());
    }
    let kinds = serde_json::Value::Array(kinds.iter().map(|k| serde_json::json!([k])).collect()).to_string();
    tx.query_as(
        &format!(
            "SELECT {NOTICE_COLUMNS} FROM notifier_notices
             WHERE contract_id IN (SELECT value->>0 FROM {}) AND recorded_at_ms >= $2 AND converted_at_ms = 0
               AND kind IN (SELECT CAST(value->>0 AS BIGINT) FROM {})",
            tx.kind().json_rows(1),
            tx.kind().json_rows(3)
        ),
        &[Value::from(id_list(&contract_ids)), Value::Int(from_ms), Value::from(kinds)],
    )
    .await
}

pub async fn mark_converted(tx: &mut Tx, notice_id: &str, at_ms: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE notifier_notices SET converted_at_ms = $2 WHERE notice_id = $1",
        &[Value::from(notice_id), Value::Int(at_ms)],
    )
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Key {
    key: String,
}

/// The webhook signing key, made on first use and kept in the database so that every replica
/// signs alike and secrets survive restarts.
pub async fn webhook_key(store: &EventStore, fresh: &str) -> Result<String, StoreError> {
    let mut tx = store.begin().await?;
    tx.execute(
        "INSERT INTO notifier_keys (name, key) VALUES ('webhooks', $1) ON CONFLICT (name) DO NOTHING",
        &[Value::from(fresh)],
    )
    .await?;
    let found: Vec<Key> = tx.query_as("SELECT key FROM notifier_keys WHERE name = 'webhooks'", &[]).await?;
    tx.commit().await?;
    Ok(found.into_iter().next().map(|k| k.key).unwrap_or_default())
}

/// The notice a channel's message id belongs to, inside `tx`.
pub async fn notice_of_message_in(
    tx: &mut Tx,
    channel: &str,
    message_id: &str,
) -> Result<Option<NoticeRow>, StoreError> {
    let found: Vec<NoticeRow> = tx
        .query_as(
            &format!(
                "SELECT {NOTICE_COLUMNS} FROM notifier_notices WHERE notice_id IN
                 (SELECT notice_id FROM notifier_deliveries WHERE channel = $1 AND provider_message_id = $2)"
            ),
            &[Value::from(channel), Value::from(message_id)],
        )
        .await?;
    Ok(found.into_iter().next())
}

/// A receipt kept until the send it reports on is recorded.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EarlyReceipt {
    pub channel: String,
    pub provider_message_id: String,
    pub delivered: i64,
    pub detail: String,
    pub at_ms: i64,
}

pub async fn keep_early_receipt(tx: &mut Tx, r: &EarlyReceipt) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO notifier_early_receipts (channel, provider_message_id, delivered, detail, at_ms)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (channel, provider_message_id) DO NOTHING",
        &[
            Value::from(r.channel.as_str()),
            Value::from(r.provider_message_id.as_str()),
            Value::Int(r.delivered),
            Value::from(r.detail.as_str()),
            Value::Int(r.at_ms),
        ],
    )
    .await?;
    Ok(())
}

/// Takes (removes and returns) the early receipts of `channel` for `message_ids`: whoever takes
/// one applies it, once.
pub async fn take_early_receipts(
    tx: &mut Tx,
    channel: &str,
    message_ids: &[String],
) -> Result<Vec<EarlyReceipt>, StoreError> {
    if message_ids.is_empty() {
        return Ok(Vec::new());
    }
    tx.query_as(
        &format!(
            "DELETE FROM notifier_early_receipts
             WHERE channel = $1 AND provider_message_id IN (SELECT value->>0 FROM {})
             RETURNING channel, provider_message_id, delivered, detail, at_ms",
            tx.kind().json_rows(2)
        ),
        &[Value::from(channel), Value::from(id_list(message_ids))],
    )
    .await
}

/// Appends `kind` to the stream of notice `notice_id` (after its `NoticeRecorded` and whatever
/// followed it).
pub async fn append_to_notice(
    tx: &mut Tx,
    notice_id: &str,
    kind: autodebit_proto::EventKind,
    cause: &autodebit_runtime::codec::Cause,
    now: i64,
) -> Result<(), StoreError> {
    let event = autodebit_proto::events::v1::Event { kind: Some(kind) };
    let encoded = autodebit_runtime::codec::encode(event, cause, now);
    tx.append(&format!("notice-{notice_id}"), autodebit_eventstore::ExpectedVersion::Any, vec![encoded]).await?;
    Ok(())
}
