//! The channels notices go out on, behind one trait: WeChat mini-program subscribe messages and
//! official-account template messages (`wechat`), Tencent Cloud SMS (`sms`), and the process
//! log. Each is a client of the real API; `autodebit-mock-channels` fakes those APIs for tests.
use autodebit_domain::notice::{Channel, NoticeKind};
use autodebit_proto::events::v1 as pb;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

pub mod secrets;
pub mod sms;
pub mod wechat;

use secrets::Secrets;
use std::sync::Arc;

/// A notice as a channel sends it.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub notice_id: &'a str,
    pub kind: NoticeKind,
    pub merchant_id: &'a str,
    /// The payer's WeChat openid.
    pub recipient: &'a str,
    /// The payer's mobile number ("" when unknown).
    pub phone: &'a str,
    /// The notice rendered from its template.
    pub text: &'a str,
    /// The values of its placeholders, for channel templates.
    pub fields: &'a BTreeMap<String, String>,
    /// Its short link ("" for none).
    pub link: &'a str,
    pub language: autodebit_domain::notice::Language,
}

/// What a channel did with a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Taken, under the channel's message id.
    Sent { message_id: String },
    /// This channel cannot reach this payer, or is not set up for this kind: try the next.
    Refused { detail: String },
    /// It failed; `retryable` when trying the same channel later may work.
    Failed { retryable: bool, detail: String },
}

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One channel.
pub trait NoticeChannel: Send + Sync {
    fn channel(&self) -> Channel;

    /// Sends `msg` with the merchant's `settings`.
    fn send<'a>(&'a self, settings: &'a pb::NotifierSettings, msg: &'a Outgoing<'a>) -> SendFuture<'a>;
}

/// The process log: a notice's text, its payer (masked: `domain::mask`) and ids as one line
/// under the `autodebit::notice` target. Where notices go for a merchant with no channel set up.
pub struct LogChannel;

impl NoticeChannel for LogChannel {
    fn channel(&self) -> Channel {
        Channel::Log
    }

    fn send<'a>(&'a self, _settings: &'a pb::NotifierSettings, msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        Box::pin(async move {
            tracing::info!(
                target: "autodebit::notice",
                channel = "log",
                notice_id = msg.notice_id,
                recipient = autodebit_domain::mask::payer(msg.recipient),
                kind = msg.kind.name(),
                "{}",
                msg.text
            );
            Outcome::Sent { message_id: msg.notice_id.to_string() }
        })
    }
}

/// Values of a channel template's fields: each field's text with the notice's placeholders
/// filled in.
fn fill(
    templates: &std::collections::HashMap<String, String>,
    fields: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    templates.iter().map(|(k, v)| (k.clone(), autodebit_domain::notice::render(v, fields))).collect()
}

/// WeChat messages: mini-program subscribe messages or official-account template messages.
pub struct WechatChannel {
    api: wechat::WechatApi,
    kind: wechat::MessageKind,
    secrets: Arc<Secrets>,
}

impl NoticeChannel for WechatChannel {
    fn channel(&self) -> Channel {
        match self.kind {
            wechat::MessageKind::Subscribe => Channel::MiniProgram,
            wechat::MessageKind::Template => Channel::OfficialAccount,
        }
    }

    fn send<'a>(&'a self, settings: &'a pb::NotifierSettings, msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        Box::pin(async move {
            let app = match self.kind {
                wechat::MessageKind::Subscribe => settings.mini_program.as_ref(),
                wechat::MessageKind::Template => settings.official_account.as_ref(),
            };
            let Some(app) = app else { return Outcome::Refused { detail: "not set up".into() } };
            let Some(template) = app.templates.get(msg.kind.name()) else {
                return Outcome::Refused { detail: format!("no template for {}", msg.kind) };
            };
            if msg.recipient.is_empty() {
                return Outcome::Refused { detail: "no openid".into() };
            }
            let secret = match self.secrets.get(&app.secret_ref) {
                Ok(s) => s,
                Err(e) => return Outcome::Failed { retryable: false, detail: e },
            };
            let fields = fill(&template.fields, msg.fields);
            let (link, lang) = match self.kind {
                wechat::MessageKind::Subscribe => (
                    template.page.as_str(),
                    match msg.language {
                        autodebit_domain::notice::Language::En => "en_US",
                        autodebit_domain::notice::Language::ZhCn => "zh_CN",
                    },
                ),
                wechat::MessageKind::Template => (msg.link, ""),
            };
            let m = wechat::WechatMessage {
                touser: msg.recipient,
                template_id: &template.template_id,
                fields: &fields,
                link,
                lang,
                dedup_id: match self.kind {
                    wechat::MessageKind::Template => Some(msg.notice_id),
                    wechat::MessageKind::Subscribe => None,
                },
            };
            let app = wechat::WechatApp { app_id: &app.app_id, secret: &secret };
            match self.api.send(&app, self.kind, &m).await {
                wechat::SendResult::Sent { msgid } => {
                    Outcome::Sent { message_id: msgid.unwrap_or_else(|| msg.notice_id.to_string()) }
                }
                wechat::SendResult::Refused { errcode, errmsg } => {
                    Outcome::Refused { detail: format!("{errcode}: {errmsg}") }
                }
                wechat::SendResult::Failed { retryable, detail } => Outcome::Failed { retryable, detail },
            }
        })
    }
}

/// Tencent Cloud SMS.
pub struct SmsChannel {
    api: sms::TencentSms,
    secrets: Arc<Secrets>,
}

impl NoticeChannel for SmsChannel {
    fn channel(&self) -> Channel {
        Channel::Sms
    }

    fn send<'a>(&'a self, settings: &'a pb::NotifierSettings, msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        Box::pin(async move {
            let Some(account) = settings.sms.as_ref() else { return Outcome::Refused { detail: "not set up".into() } };
            let Some(template) = account.templates.get(msg.kind.name()) else {
                return Outcome::Refused { detail: format!("no template for {}", msg.kind) };
            };
            if msg.phone.is_empty() {
                return Outcome::Refused { detail: "no phone number".into() };
            }
            let (id, key) = match (self.secrets.get(&account.secret_id_ref), self.secrets.get(&account.secret_key_ref))
            {
                (Ok(i), Ok(k)) => (i, k),
                (Err(e), _) | (_, Err(e)) => return Outcome::Failed { retryable: false, detail: e },
            };
            let params: Vec<String> =
                template.params.iter().map(|p| autodebit_domain::notice::render(p, msg.fields)).collect();
            let region = if account.region.is_empty() { "ap-guangzhou" } else { account.region.as_str() };
            let a = sms::SmsAccount {
                secret_id: &id,
                secret_key: &key,
                sdk_app_id: &account.sdk_app_id,
                sign_name: &account.sign_name,
                region,
            };
            let m = sms::SmsMessage {
                phone: msg.phone,
                template_id: &template.template_id,
                params: &params,
                session_context: msg.notice_id,
            };
            match self.api.send(&a, &m).await {
                sms::SendResult::Sent { serial_no } => Outcome::Sent { message_id: serial_no },
                sms::SendResult::Refused { code, message } => Outcome::Refused { detail: format!("{code}: {message}") },
                sms::SendResult::Failed { retryable, detail } => Outcome::Failed { retryable, detail },
            }
        })
    }
}

/// Every channel, by name.
pub struct Channels {
    all: Vec<Box<dyn NoticeChannel>>,
}

impl Channels {
    pub fn new(all: Vec<Box<dyn NoticeChannel>>) -> Self {
        Channels { all }
    }

    /// The channels of a running notifier: WeChat's two message kinds and Tencent Cloud SMS at
    /// the configured addresses, and the log.
    pub fn standard(
        http: reqwest::Client,
        config: &crate::NotifierConfig,
        clock: autodebit_runtime::PlatformClock,
    ) -> Self {
        let secrets = Arc::new(Secrets::default());
        let wechat = wechat::WechatApi::new(http.clone(), config.wechat_api_url.clone(), clock.clone());
        Channels::new(vec![
            Box::new(WechatChannel {
                api: wechat.clone(),
                kind: wechat::MessageKind::Subscribe,
                secrets: secrets.clone(),
            }),
            Box::new(WechatChannel { api: wechat, kind: wechat::MessageKind::Template, secrets: secrets.clone() }),
            Box::new(SmsChannel { api: sms::TencentSms::new(http, config.tencent_sms_url.clone(), clock), secrets }),
            Box::new(LogChannel),
        ])
    }

    pub fn get(&self, c: Channel) -> Option<&dyn NoticeChannel> {
        self.all.iter().find(|x| x.channel() == c).map(|b| b.as_ref())
    }
}

/// Whether `settings` set up `channel` for notices of `kind`: the log always; the others
/// with an app or account and a template for the kind.
pub fn configured(settings: &pb::NotifierSettings, channel: Channel, kind: NoticeKind) -> bool {
    match channel {
        Channel::Log => true,
        Channel::MiniProgram => settings
            .mini_program
            .as_ref()
            .is_some_and(|w| !w.app_id.is_empty() && w.templates.contains_key(kind.name())),
        Channel::OfficialAccount => settings
            .official_account
            .as_ref()
            .is_some_and(|w| !w.app_id.is_empty() && w.templates.contains_key(kind.name())),
        Channel::Sms => {
            settings.sms.as_ref().is_some_and(|s| !s.sdk_app_id.is_empty() && s.templates.contains_key(kind.name()))
        }
    }
}

/// The channels a notice of `kind` is tried on, in order: the merchant's fallback order (the
/// default one when it gives none) kept to the channels set up for the kind; the log when none
/// is.
pub fn plan(settings: &pb::NotifierSettings, kind: NoticeKind) -> Vec<Channel> {
    let order: Vec<Channel> = if settings.fallback_order.is_empty() {
        autodebit_domain::notice::DEFAULT_FALLBACK.to_vec()
    } else {
        settings.fallback_order.iter().filter_map(|n| Channel::from_name(n)).collect()
    };
    let mut chosen: Vec<Channel> = order.into_iter().filter(|c| configured(settings, *c, kind)).collect();
    chosen.dedup();
    if chosen.is_empty() {
        chosen.push(Channel::Log);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wechat(kind: &str) -> pb::WechatChannel {
        pb::WechatChannel {
            app_id: "wx1".into(),
            secret_ref: "env:X".into(),
            templates: [(kind.to_string(), pb::WechatTemplate { template_id: "t".into(), ..Default::default() })]
                .into(),
            per_second_limit: 0,
        }
    }

    #[test]
    fn the_plan_keeps_the_fallback_order_to_channels_set_up_for_the_kind() {
        let none = pb::NotifierSettings::default();
        assert_eq!(plan(&none, NoticeKind::ChargeSucceeded), vec![Channel::Log]);
        let s = pb::NotifierSettings {
            official_account: Some(wechat("charge_succeeded")),
            mini_program: Some(wechat("charge_failed")),
            sms: Some(pb::SmsChannel {
                sdk_app_id: "1400".into(),
                templates: [("charge_succeeded".to_string(), pb::SmsTemplate::default())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(plan(&s, NoticeKind::ChargeSucceeded), vec![Channel::OfficialAccount, Channel::Sms]);
        assert_eq!(plan(&s, NoticeKind::ChargeFailed), vec![Channel::MiniProgram]);
        assert_eq!(plan(&s, NoticeKind::PreDebit), vec![Channel::Log]);
        let reordered = pb::NotifierSettings { fallback_order: vec!["sms".into(), "log".into()], ..s };
        assert_eq!(plan(&reordered, NoticeKind::ChargeSucceeded), vec![Channel::Sms, Channel::Log]);
    }
}
