//! A merchant's notifier settings and own templates: an aggregate in the stream
//! `notifier-merchant-{merchant_id}` whose events are `NotifierSettingsSet` and
//! `NoticeTemplateSet`, kept in `notifier_settings` and `notifier_templates` for the follower.
//! Every rule a setting must meet is checked here, and a refusal names the field.
use crate::channels::secrets::check_ref;
use crate::store::{self, TemplateRow};
use autodebit_domain::notice::{self as rules, Channel, Language, NoticeKind, QuietHours};
use autodebit_domain::{Aggregate, Timestamp};
use autodebit_eventstore::{StoreError, Tx};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;
use autodebit_runtime::repository::{Hook, Stored};
use base64::Engine;
use prost::Message;
use std::collections::{BTreeMap, HashMap};

/// A refused setting: the field's path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SettingsError {
    pub field: String,
    pub problem: String,
}

fn refuse(field: impl Into<String>, problem: impl Into<String>) -> SettingsError {
    SettingsError { field: field.into(), problem: problem.into() }
}

#[derive(Debug, Clone, Default)]
pub struct MerchantNotices {
    pub merchant_id: String,
    pub settings: pb::NotifierSettings,
    /// The merchant's own templates by (kind, language tag).
    pub templates: BTreeMap<(i32, String), String>,
}

#[derive(Debug, Clone)]
pub enum Command {
    Set { merchant_id: String, settings: pb::NotifierSettings },
    SetTemplate { merchant_id: String, kind: i32, language: String, body: String },
}

#[derive(Debug, Clone)]
pub enum Event {
    Set { merchant_id: String, settings: pb::NotifierSettings, at: Timestamp },
    TemplateSet { merchant_id: String, kind: i32, language: String, body: String, at: Timestamp },
}

/// Settings checked and written the one way they are kept (language tags normalised).
pub fn check(mut s: pb::NotifierSettings) -> Result<pb::NotifierSettings, SettingsError> {
    for (i, name) in s.fallback_order.iter().enumerate() {
        if Channel::from_name(name).is_none() {
            return Err(refuse(
                format!("settings.fallback_order[{i}]"),
                format!("unknown channel `{name}` (mini_program, official_account, sms, log)"),
            ));
        }
    }
    if !s.language.is_empty() {
        let lang = Language::parse(&s.language)
            .ok_or_else(|| refuse("settings.language", format!("`{}`: zh-CN or en", s.language)))?;
        s.language = lang.tag().to_string();
    }
    QuietHours::parse(&s.quiet_hours).map_err(|e| refuse("settings.quiet_hours", e))?;
    if !s.time_zone.is_empty() {
        autodebit_domain::cycle::zone(&s.time_zone).map_err(|e| refuse("settings.time_zone", e))?;
    }
    for (name, w) in [("official_account", &s.official_account), ("mini_program", &s.mini_program)] {
        let Some(w) = w else { continue };
        let at = |f: &str| format!("settings.{name}.{f}");
        if w.app_id.is_empty() {
            return Err(refuse(at("app_id"), "required"));
        }
        check_ref(&w.secret_ref).map_err(|e| refuse(at("secret_ref"), e))?;
        for (kind_name, t) in &w.templates {
            let kind = template_kind(kind_name).map_err(|e| refuse(at("templates"), e))?;
            if t.template_id.is_empty() {
                return Err(refuse(at(&format!("templates[{kind_name}].template_id")), "required"));
            }
            for (field, text) in &t.fields {
                rules::check_template(kind, text)
                    .map_err(|e| refuse(at(&format!("templates[{kind_name}].fields[{field}]")), e.to_string()))?;
            }
        }
    }
    if let Some(sms) = &s.sms {
        let at = |f: &str| format!("settings.sms.{f}");
        for (field, v) in [("sdk_app_id", &sms.sdk_app_id), ("sign_name", &sms.sign_name)] {
            if v.is_empty() {
                return Err(refuse(at(field), "required"));
            }
        }
        check_ref(&sms.secret_id_ref).map_err(|e| refuse(at("secret_id_ref"), e))?;
        check_ref(&sms.secret_key_ref).map_err(|e| refuse(at("secret_key_ref"), e))?;
        for (kind_name, t) in &sms.templates {
            let kind = template_kind(kind_name).map_err(|e| refuse(at("templates"), e))?;
            if t.template_id.is_empty() {
                return Err(refuse(at(&format!("templates[{kind_name}].template_id")), "required"));
            }
            for (i, text) in t.params.iter().enumerate() {
                rules::check_template(kind, text)
                    .map_err(|e| refuse(at(&format!("templates[{kind_name}].params[{i}]")), e.to_string()))?;
            }
        }
    }
    Ok(s)
}

fn template_kind(name: &str) -> Result<NoticeKind, String> {
    NoticeKind::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = NoticeKind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown notice kind `{name}` (known: {})", known.join(", "))
    })
}

impl Aggregate for MerchantNotices {
    type State = MerchantNotices;
    type Command = Command;
    type Event = Event;
    type Error = SettingsError;

    fn decide(_: &MerchantNotices, command: Command, now: Timestamp) -> Result<Vec<Event>, SettingsError> {
        Ok(vec![match command {
            Command::Set { merchant_id, settings } => Event::Set { merchant_id, settings: check(settings)?, at: now },
            Command::SetTemplate { merchant_id, kind, language, body } => {
                let k =
                    crate::app::kind_from_pb(kind).ok_or_else(|| refuse("kind", "must be a NOTICE_KIND_… value"))?;
                let lang = Language::parse(&language)
                    .ok_or_else(|| refuse("language", format!("`{language}`: zh-CN or en")))?;
                rules::check_template(k, &body).map_err(|e| refuse("body", e.to_string()))?;
                Event::TemplateSet { merchant_id, kind, language: lang.tag().to_string(), body, at: now }
            }
        }])
    }

    fn apply(mut s: MerchantNotices, e: &Event) -> MerchantNotices {
        match e {
            Event::Set { merchant_id, settings, .. } => {
                s.merchant_id = merchant_id.clone();
                s.settings = settings.clone();
            }
            Event::TemplateSet { merchant_id, kind, language, body, .. } => {
                s.merchant_id = merchant_id.clone();
                if body.is_empty() {
                    s.templates.remove(&(*kind, language.clone()));
                } else {
                    s.templates.insert((*kind, language.clone()), body.clone());
                }
            }
        }
        s
    }
}

impl Stored for MerchantNotices {
    fn to_pb(_: &MerchantNotices, e: &Event) -> Option<pb::Event> {
        Some(pb::Event {
            kind: Some(match e {
                Event::Set { merchant_id, settings, at } => EventKind::NotifierSettingsSet(pb::NotifierSettingsSet {
                    merchant_id: merchant_id.clone(),
                    settings: Some(settings.clone()),
                    at_ms: at.timestamp_millis(),
                }),
                Event::TemplateSet { merchant_id, kind, language, body, at } => {
                    EventKind::NoticeTemplateSet(pb::NoticeTemplateSet {
                        merchant_id: merchant_id.clone(),
                        kind: *kind,
                        language: language.clone(),
                        body: body.clone(),
                        at_ms: at.timestamp_millis(),
                    })
                }
            }),
        })
    }

    fn from_pb(kind: &EventKind) -> Option<Event> {
        let at = autodebit_domain::clock::from_millis;
        match kind {
            EventKind::NotifierSettingsSet(s) => Some(Event::Set {
                merchant_id: s.merchant_id.clone(),
                settings: s.settings.clone().unwrap_or_default(),
                at: at(s.at_ms),
            }),
            EventKind::NoticeTemplateSet(t) => Some(Event::TemplateSet {
                merchant_id: t.merchant_id.clone(),
                kind: t.kind,
                language: t.language.clone(),
                body: t.body.clone(),
                at: at(t.at_ms),
            }),
            _ => None,
        }
    }
}

pub fn stream(merchant_id: &str) -> String {
    format!("notifier-merchant-{merchant_id}")
}

/// Keeps `notifier_settings` and `notifier_templates` in step with the stream.
pub struct SettingsTables;

impl Hook<MerchantNotices> for SettingsTables {
    type Error = StoreError;

    async fn on_events(&self, tx: &mut Tx, _: &MerchantNotices, events: &[Event]) -> Result<(), StoreError> {
        for e in events {
            match e {
                Event::Set { merchant_id, settings, .. } => {
                    store::save_settings(tx, merchant_id, &encode_settings(settings)).await?
                }
                Event::TemplateSet { merchant_id, kind, language, body, .. } => {
                    let row = TemplateRow {
                        merchant_id: merchant_id.clone(),
                        kind: i64::from(*kind),
                        language: language.clone(),
                        body: body.clone(),
                    };
                    store::save_template(tx, &row).await?
                }
            }
        }
        Ok(())
    }
}

pub fn encode_settings(s: &pb::NotifierSettings) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.encode_to_vec())
}

pub fn decode_settings(s: &str) -> pb::NotifierSettings {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .and_then(|b| pb::NotifierSettings::decode(b.as_slice()).ok())
        .unwrap_or_default()
}

/// What a notice needs of its merchant: name, settings, default language, own templates.
#[derive(Debug, Clone, Default)]
pub struct MerchantView {
    pub name: String,
    pub settings: pb::NotifierSettings,
    pub language: Language,
    pub templates: HashMap<(NoticeKind, Language), String>,
}

impl MerchantView {
    /// The template in force for `kind` in `language`: the merchant's own, or the platform's.
    pub fn template(&self, kind: NoticeKind, language: Language) -> &str {
        self.templates.get(&(kind, language)).map(String::as_str).unwrap_or_else(|| kind.default_template(language))
    }
}

pub fn view(name: String, settings: &str, templates: impl IntoIterator<Item = TemplateRow>) -> MerchantView {
    let settings = decode_settings(settings);
    let language = Language::parse(&settings.language).unwrap_or_default();
    let templates = templates
        .into_iter()
        .filter_map(|t| {
            Some(((crate::app::kind_from_pb(i32::try_from(t.kind).ok()?)?, Language::parse(&t.language)?), t.body))
        })
        .collect();
    MerchantView { name, settings, language, templates }
}

/// The views of `merchant_ids`, inside `tx`.
pub async fn views(tx: &mut Tx, merchant_ids: Vec<String>) -> Result<HashMap<String, MerchantView>, StoreError> {
    if merchant_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut templates: HashMap<String, Vec<TemplateRow>> = HashMap::new();
    for t in store::templates(tx, merchant_ids.clone()).await? {
        templates.entry(t.merchant_id.clone()).or_default().push(t);
    }
    Ok(store::merchants(tx, merchant_ids)
        .await?
        .into_iter()
        .map(|m| {
            let t = templates.remove(&m.merchant_id).unwrap_or_default();
            (m.merchant_id.clone(), view(m.name, &m.settings, t))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_setting_names_its_field() {
        let bad = |s: pb::NotifierSettings| check(s).unwrap_err().field;
        assert_eq!(
            bad(pb::NotifierSettings { fallback_order: vec!["sms".into(), "pigeon".into()], ..Default::default() }),
            "settings.fallback_order[1]"
        );
        assert_eq!(
            bad(pb::NotifierSettings { quiet_hours: "late".into(), ..Default::default() }),
            "settings.quiet_hours"
        );
        assert_eq!(bad(pb::NotifierSettings { language: "fr".into(), ..Default::default() }), "settings.language");
        let wechat = pb::WechatChannel {
            app_id: "wx1".into(),
            secret_ref: "env:WX_SECRET".into(),
            templates: [(
                "charge_succeeded".to_string(),
                pb::WechatTemplate {
                    template_id: "tpl".into(),
                    fields: [("thing1".to_string(), "{shop}".to_string())].into(),
                    page: String::new(),
                },
            )]
            .into(),
            per_second_limit: 0,
        };
        let e = check(pb::NotifierSettings { mini_program: Some(wechat.clone()), ..Default::default() }).unwrap_err();
        assert_eq!(e.field, "settings.mini_program.templates[charge_succeeded].fields[thing1]");
        assert!(e.problem.contains("unknown placeholder {shop}"), "{e}");
        let plain_secret = pb::WechatChannel { secret_ref: "abcdef0123456789".into(), ..wechat };
        assert_eq!(
            bad(pb::NotifierSettings { official_account: Some(plain_secret), ..Default::default() }),
            "settings.official_account.secret_ref"
        );
        let ok = check(pb::NotifierSettings { language: "en_US".into(), ..Default::default() }).unwrap();
        assert_eq!(ok.language, "en");
    }

    #[test]
    fn a_merchants_template_wins_and_an_empty_one_restores_the_platforms() {
        let set = |body: &str| Command::SetTemplate {
            merchant_id: "m".into(),
            kind: pb::NoticeKind::ChargeSucceeded as i32,
            language: "zh".into(),
            body: body.into(),
        };
        let now = autodebit_domain::clock::from_millis(0);
        let s = MerchantNotices::default();
        let events = MerchantNotices::decide(&s, set("扣款 {amount}"), now).unwrap();
        let s = MerchantNotices::fold(&events);
        assert_eq!(
            s.templates.get(&(pb::NoticeKind::ChargeSucceeded as i32, "zh-CN".into())).unwrap(),
            "扣款 {amount}"
        );
        let e = MerchantNotices::decide(&s, set("扣款 {amount} {coupon}"), now).unwrap_err();
        assert_eq!(e.field, "body");
        assert!(e.problem.starts_with("unknown placeholder {coupon}"));
        let events = MerchantNotices::decide(&s, set(""), now).unwrap();
        let s = events.iter().fold(s, MerchantNotices::apply);
        assert!(s.templates.is_empty());
    }
}
