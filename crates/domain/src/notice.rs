//! Notices to payers: their kinds, the texts they are written from (templates with
//! `{placeholders}`, one per kind and language, which a merchant may override), the channels
//! they go out on and in which order, the quiet hours, and which later event counts as the
//! payer acting on a notice (a conversion).
use crate::Timestamp;
use chrono::{NaiveTime, TimeDelta, Timelike};
use std::collections::BTreeMap;
use std::fmt;

const NOTICE_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x2c0b_51f4_8d7e_4a9b_a3c6_71e0_94d2_5f18);

/// A notice's id, one per causing event whatever happens. It leads with its contract id's
/// first eight bytes, as charge ids do, so that a billing run's notices (issued about in
/// contract order) land next to each other in the notices table and the stream index instead
/// of at random places.
pub fn notice_id(contract_id: &str, event_id: &str) -> String {
    let mut b = *uuid::Uuid::new_v5(&NOTICE_NAMESPACE, event_id.as_bytes()).as_bytes();
    if let Ok(contract) = crate::ContractId::parse(contract_id) {
        b[..8].copy_from_slice(&contract.leading_bytes());
    }
    format!("nt_{}", uuid::Uuid::from_bytes(b).simple())
}

/// The longest template a merchant may set, in characters.
pub const MAX_TEMPLATE_CHARS: usize = 1000;
/// A conversion is attributed to the last notice of a converting kind within this window.
pub const CONVERSION_WINDOW_HOURS: i64 = 72;
/// The default quiet hours: no SMS or template message in them unless the payer just acted.
pub const DEFAULT_QUIET_HOURS: &str = "22:00-07:00";

/// What a notice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoticeKind {
    ContractSigned,
    PreDebit,
    ChargeSucceeded,
    ChargeFailed,
    RetryScheduled,
    ContractModified,
    ContractSuspended,
    ContractResumed,
    ContractExpiring,
    ContractExpired,
    ContractTerminated,
    ContractZombie,
    RefundSucceeded,
    VerificationCode,
    /// A charge a risk rule held: the payer confirms it on the step-up page, or it lapses.
    ChargeHeld,
    /// The payer's complaint about a charge was received; the merchant answers by a deadline.
    ComplaintReceived,
}

impl NoticeKind {
    pub const ALL: [NoticeKind; 16] = [
        NoticeKind::ContractSigned,
        NoticeKind::PreDebit,
        NoticeKind::ChargeSucceeded,
        NoticeKind::ChargeFailed,
        NoticeKind::RetryScheduled,
        NoticeKind::ContractModified,
        NoticeKind::ContractSuspended,
        NoticeKind::ContractResumed,
        NoticeKind::ContractExpiring,
        NoticeKind::ContractExpired,
        NoticeKind::ContractTerminated,
        NoticeKind::ContractZombie,
        NoticeKind::RefundSucceeded,
        NoticeKind::VerificationCode,
        NoticeKind::ChargeHeld,
        NoticeKind::ComplaintReceived,
    ];

    /// The kind's name in settings and APIs, e.g. `charge_succeeded`.
    pub fn name(self) -> &'static str {
        match self {
            NoticeKind::ContractSigned => "contract_signed",
            NoticeKind::PreDebit => "pre_debit",
            NoticeKind::ChargeSucceeded => "charge_succeeded",
            NoticeKind::ChargeFailed => "charge_failed",
            NoticeKind::RetryScheduled => "retry_scheduled",
            NoticeKind::ContractModified => "contract_modified",
            NoticeKind::ContractSuspended => "contract_suspended",
            NoticeKind::ContractResumed => "contract_resumed",
            NoticeKind::ContractExpiring => "contract_expiring",
            NoticeKind::ContractExpired => "contract_expired",
            NoticeKind::ContractTerminated => "contract_terminated",
            NoticeKind::ContractZombie => "contract_zombie",
            NoticeKind::RefundSucceeded => "refund_succeeded",
            NoticeKind::VerificationCode => "verification_code",
            NoticeKind::ChargeHeld => "charge_held",
            NoticeKind::ComplaintReceived => "complaint_received",
        }
    }

    pub fn from_name(name: &str) -> Option<NoticeKind> {
        NoticeKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The placeholders a template of this kind may use. Every kind has the service's name,
    /// the merchant's name and the notice's short link.
    pub fn placeholders(self) -> &'static [&'static str] {
        match self {
            NoticeKind::ContractSigned => &["service_name", "merchant_name", "link", "terms"],
            NoticeKind::PreDebit => &["service_name", "merchant_name", "link", "amount", "charge_time"],
            NoticeKind::ChargeSucceeded => &["service_name", "merchant_name", "link", "amount", "time"],
            NoticeKind::ChargeFailed => &["service_name", "merchant_name", "link", "amount", "time", "reason"],
            NoticeKind::RetryScheduled => &["service_name", "merchant_name", "link", "amount", "retry_time", "attempt"],
            NoticeKind::ContractModified => &["service_name", "merchant_name", "link", "changes", "effective_time"],
            NoticeKind::ContractSuspended => &["service_name", "merchant_name", "link", "reason"],
            NoticeKind::ContractResumed => &["service_name", "merchant_name", "link"],
            NoticeKind::ContractExpiring => &["service_name", "merchant_name", "link", "expiry_time"],
            NoticeKind::ContractExpired => &["service_name", "merchant_name", "link"],
            NoticeKind::ContractTerminated => &["service_name", "merchant_name", "link"],
            NoticeKind::ContractZombie => &["service_name", "merchant_name", "link", "idle_since"],
            NoticeKind::RefundSucceeded => &["service_name", "merchant_name", "link", "amount", "time"],
            NoticeKind::VerificationCode => &["service_name", "merchant_name", "code", "minutes"],
            NoticeKind::ChargeHeld => &["service_name", "merchant_name", "amount", "confirm_link", "expiry_time"],
            NoticeKind::ComplaintReceived => &["service_name", "merchant_name", "link", "amount", "deadline_time"],
        }
    }

    /// Whether the notice answers something the payer just did (signing, ending, asking for a
    /// code), which quiet hours do not hold back.
    pub fn payer_acted(self) -> bool {
        matches!(
            self,
            NoticeKind::VerificationCode
                | NoticeKind::ContractSigned
                | NoticeKind::ContractTerminated
                | NoticeKind::ComplaintReceived
        )
    }

    /// Whether the notice carries a short link (a held charge's carries its step-up page's
    /// link instead).
    pub fn has_link(self) -> bool {
        !matches!(self, NoticeKind::VerificationCode | NoticeKind::ChargeHeld)
    }

    /// The platform's template of this kind in `language`.
    pub fn default_template(self, language: Language) -> &'static str {
        match (self, language) {
            (NoticeKind::ContractSigned, Language::ZhCn) => {
                "您已开通自动扣费服务{service_name}：{terms}。扣款前会提前通知您，您可随时解约。详情：{link}"
            }
            (NoticeKind::ContractSigned, Language::En) => {
                "You signed up for automatic payments for {service_name}: {terms}. We tell you before each charge; you can cancel at any time. Details: {link}"
            }
            (NoticeKind::PreDebit, Language::ZhCn) => {
                "扣款提醒：{service_name}将于 {charge_time} 自动扣款 {amount}。如不再需要，请在此之前解约：{link}"
            }
            (NoticeKind::PreDebit, Language::En) => {
                "Reminder: {service_name} will charge {amount} on {charge_time}. To cancel before then: {link}"
            }
            (NoticeKind::ChargeSucceeded, Language::ZhCn) => {
                "{service_name}已于 {time} 自动扣款 {amount}。账单：{link}"
            }
            (NoticeKind::ChargeSucceeded, Language::En) => {
                "{service_name} charged {amount} on {time}. Your bill: {link}"
            }
            (NoticeKind::ChargeFailed, Language::ZhCn) => {
                "{service_name}于 {time} 扣款 {amount} 未成功（{reason}）。请确认支付账户余额充足，我们会稍后重试：{link}"
            }
            (NoticeKind::ChargeFailed, Language::En) => {
                "{service_name} could not charge {amount} on {time} ({reason}). Please check your payment account has funds; we will try again: {link}"
            }
            (NoticeKind::RetryScheduled, Language::ZhCn) => {
                "{service_name}将于 {retry_time} 再次尝试扣款 {amount}（第 {attempt} 次）。详情：{link}"
            }
            (NoticeKind::RetryScheduled, Language::En) => {
                "{service_name} will try to charge {amount} again on {retry_time} (attempt {attempt}). Details: {link}"
            }
            (NoticeKind::ContractModified, Language::ZhCn) => {
                "{service_name}自动扣费协议变更：{changes}，自 {effective_time} 起生效。如不同意可随时解约：{link}"
            }
            (NoticeKind::ContractModified, Language::En) => {
                "Your {service_name} agreement changes: {changes}, from {effective_time}. If you disagree you can cancel at any time: {link}"
            }
            (NoticeKind::ContractSuspended, Language::ZhCn) => {
                "{service_name}自动扣费已暂停：{reason}。恢复后将继续扣款：{link}"
            }
            (NoticeKind::ContractSuspended, Language::En) => {
                "Automatic payments for {service_name} are paused: {reason}. Details: {link}"
            }
            (NoticeKind::ContractResumed, Language::ZhCn) => "{service_name}自动扣费已恢复。详情：{link}",
            (NoticeKind::ContractResumed, Language::En) => {
                "Automatic payments for {service_name} have resumed. Details: {link}"
            }
            (NoticeKind::ContractExpiring, Language::ZhCn) => {
                "{service_name}自动扣费协议将于 {expiry_time} 到期，到期后不再扣款。详情：{link}"
            }
            (NoticeKind::ContractExpiring, Language::En) => {
                "Your {service_name} automatic payment agreement ends on {expiry_time}; no charges after that. Details: {link}"
            }
            (NoticeKind::ContractExpired, Language::ZhCn) => {
                "{service_name}自动扣费协议已到期，此后不会再扣款。详情：{link}"
            }
            (NoticeKind::ContractExpired, Language::En) => {
                "Your {service_name} automatic payment agreement has ended; there will be no more charges. Details: {link}"
            }
            (NoticeKind::ContractTerminated, Language::ZhCn) => {
                "{service_name}自动扣费协议已解除，此后不会再扣款。详情：{link}"
            }
            (NoticeKind::ContractTerminated, Language::En) => {
                "Your {service_name} automatic payment agreement is cancelled; there will be no more charges. Details: {link}"
            }
            (NoticeKind::ContractZombie, Language::ZhCn) => {
                "{service_name}自动扣费协议自 {idle_since} 起未再使用，如继续不使用将自动解约：{link}"
            }
            (NoticeKind::ContractZombie, Language::En) => {
                "Your {service_name} automatic payment agreement has not been used since {idle_since}; unless it is used it will be cancelled: {link}"
            }
            (NoticeKind::RefundSucceeded, Language::ZhCn) => "{service_name}已于 {time} 退款 {amount}。详情：{link}",
            (NoticeKind::RefundSucceeded, Language::En) => {
                "{service_name} refunded {amount} on {time}. Details: {link}"
            }
            (NoticeKind::VerificationCode, Language::ZhCn) => {
                "【{merchant_name}】您正在开通{service_name}自动扣费，验证码 {code}，{minutes} 分钟内有效。如非本人操作请忽略。"
            }
            (NoticeKind::ChargeHeld, Language::ZhCn) => {
                "{service_name}的一笔扣款 {amount} 高于您平时的扣款金额，为保障资金安全已暂停。如确为您本人消费，请在 {expiry_time} 前确认：{confirm_link}，逾期将自动取消。"
            }
            (NoticeKind::ChargeHeld, Language::En) => {
                "A charge of {amount} from {service_name} is higher than usual and has been paused for your safety. If it is yours, confirm it before {expiry_time}: {confirm_link}; otherwise it is cancelled."
            }
            (NoticeKind::ComplaintReceived, Language::ZhCn) => {
                "您对{service_name}一笔 {amount} 扣款的投诉已受理，商户将于 {deadline_time} 前处理。详情：{link}"
            }
            (NoticeKind::ComplaintReceived, Language::En) => {
                "Your complaint about a charge of {amount} from {service_name} was received; the merchant answers by {deadline_time}. Details: {link}"
            }
            (NoticeKind::VerificationCode, Language::En) => {
                "[{merchant_name}] Your code to set up automatic payments for {service_name} is {code}, valid for {minutes} minutes. Ignore this if it was not you."
            }
        }
    }

    /// The notices a later event of the contract converts: paid after a failure or a retry
    /// notice, resumed after a suspension, kept after an unused-contract warning.
    pub fn converted_by(event: Conversion) -> &'static [NoticeKind] {
        match event {
            Conversion::Paid => &[NoticeKind::ChargeFailed, NoticeKind::RetryScheduled],
            Conversion::Resumed => &[NoticeKind::ContractSuspended],
            Conversion::Kept => &[NoticeKind::ContractZombie],
        }
    }
}

impl fmt::Display for NoticeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the payer did that a notice asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// A charge of the contract succeeded.
    Paid,
    /// The contract was resumed.
    Resumed,
    /// An unused contract was used again (a charge succeeded).
    Kept,
}

impl Conversion {
    pub fn name(self) -> &'static str {
        match self {
            Conversion::Paid => "paid",
            Conversion::Resumed => "resumed",
            Conversion::Kept => "kept",
        }
    }
}

/// The language of a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Language {
    #[default]
    ZhCn,
    En,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::ZhCn, Language::En];

    pub fn tag(self) -> &'static str {
        match self {
            Language::ZhCn => "zh-CN",
            Language::En => "en",
        }
    }

    /// A language tag as merchants and pages give it ("zh", "zh-CN", "zh_CN", "en", "en-US"
    /// …); `None` for one we have no templates in.
    pub fn parse(tag: &str) -> Option<Language> {
        let t = tag.trim().to_ascii_lowercase().replace('_', "-");
        if t == "zh" || t.starts_with("zh-") {
            Some(Language::ZhCn)
        } else if t == "en" || t.starts_with("en-") {
            Some(Language::En)
        } else {
            None
        }
    }
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder {{{name}}} (this kind offers {offered})")]
    UnknownPlaceholder { name: String, offered: String },
    #[error("a `{{` at character {0} is not closed")]
    Unclosed(usize),
    #[error("is {0} characters long; at most {MAX_TEMPLATE_CHARS}")]
    TooLong(usize),
}

/// The placeholders `body` uses, in order, or why it is not a template of `kind`: a
/// placeholder the kind does not offer, an unclosed brace, too long. `{{` and `}}` stand for
/// literal braces.
pub fn check_template(kind: NoticeKind, body: &str) -> Result<Vec<String>, TemplateError> {
    check_against(kind.placeholders(), body)
}

/// As [`check_template`], against any list of placeholder names.
pub fn check_against(offered: &[&str], body: &str) -> Result<Vec<String>, TemplateError> {
    let chars = body.chars().count();
    if chars > MAX_TEMPLATE_CHARS {
        return Err(TemplateError::TooLong(chars));
    }
    let mut used = Vec::new();
    for piece in parse(body)? {
        if let Piece::Field(name) = piece {
            if !offered.contains(&name) {
                return Err(TemplateError::UnknownPlaceholder {
                    name: name.to_string(),
                    offered: offered.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", "),
                });
            }
            used.push(name.to_string());
        }
    }
    Ok(used)
}

enum Piece<'a> {
    Text(&'a str),
    Field(&'a str),
}

fn parse(body: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut offset = 0;
    while let Some(i) = rest.find(['{', '}']) {
        let (text, tail) = rest.split_at(i);
        if !text.is_empty() {
            out.push(Piece::Text(text));
        }
        if tail.starts_with("{{") {
            out.push(Piece::Text("{"));
            rest = &tail[2..];
            offset += i + 2;
        } else if tail.starts_with("}}") {
            out.push(Piece::Text("}"));
            rest = &tail[2..];
            offset += i + 2;
        } else if tail.starts_with('}') {
            out.push(Piece::Text("}"));
            rest = &tail[1..];
            offset += i + 1;
        } else {
            let Some(end) = tail.find('}') else {
                return Err(TemplateError::Unclosed(body[..offset + i].chars().count()));
            };
            out.push(Piece::Field(tail[1..end].trim()));
            rest = &tail[end + 1..];
            offset += i + end + 1;
        }
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// `body` with each placeholder replaced by its value in `fields` (empty when missing). A
/// body that does not parse is rendered as it is (templates are checked when they are set).
pub fn render(body: &str, fields: &BTreeMap<String, String>) -> String {
    let Ok(pieces) = parse(body) else { return body.to_string() };
    let mut out = String::with_capacity(body.len() + 32);
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Field(name) => out.push_str(fields.get(name).map(String::as_str).unwrap_or("")),
        }
    }
    out
}

/// A channel a notice goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    /// WeChat mini-program subscribe message (服务通知).
    MiniProgram,
    /// WeChat official-account template message.
    OfficialAccount,
    /// Tencent Cloud SMS.
    Sms,
    /// The process log: where a notice goes when a merchant has configured no channel.
    Log,
}

/// The order channels are tried in when the merchant gives none.
pub const DEFAULT_FALLBACK: [Channel; 3] = [Channel::MiniProgram, Channel::OfficialAccount, Channel::Sms];

impl Channel {
    pub const ALL: [Channel; 4] = [Channel::MiniProgram, Channel::OfficialAccount, Channel::Sms, Channel::Log];

    pub fn name(self) -> &'static str {
        match self {
            Channel::MiniProgram => "mini_program",
            Channel::OfficialAccount => "official_account",
            Channel::Sms => "sms",
            Channel::Log => "log",
        }
    }

    pub fn from_name(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether quiet hours hold it back (SMS and template messages do; a subscribe message the
    /// payer asked for does not).
    pub fn keeps_quiet_hours(self) -> bool {
        matches!(self, Channel::Sms | Channel::OfficialAccount)
    }
}

/// Hours in which SMS and template messages wait, in the merchant's zone; they may wrap past
/// midnight (22:00-07:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietHours {
    /// `HH:MM-HH:MM`; "" is the default (22:00-07:00); "none" is no quiet hours (`None`).
    pub fn parse(s: &str) -> Result<Option<QuietHours>, String> {
        let s = s.trim();
        if s.is_empty() {
            return QuietHours::parse(DEFAULT_QUIET_HOURS);
        }
        if s.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        let (a, b) = s.split_once('-').ok_or_else(|| format!("`{s}` is not HH:MM-HH:MM"))?;
        let time =
            |t: &str| NaiveTime::parse_from_str(t.trim(), "%H:%M").map_err(|_| format!("`{t}` is not a time HH:MM"));
        let (start, end) = (time(a)?, time(b)?);
        if start == end {
            return Err(format!("`{s}` is empty; use \"none\" for no quiet hours"));
        }
        Ok(Some(QuietHours { start, end }))
    }

    fn contains_time(&self, t: NaiveTime) -> bool {
        if self.start < self.end { t >= self.start && t < self.end } else { t >= self.start || t < self.end }
    }

    /// When a message that may not go out inside the quiet hours can go, as of `now` in
    /// `zone`: `now` itself outside them, their end inside.
    pub fn next_allowed(&self, now: Timestamp, zone: chrono_tz::Tz) -> Timestamp {
        let local = now.with_timezone(&zone);
        let t = local.time().with_nanosecond(0).unwrap_or(local.time());
        if !self.contains_time(t) {
            return now;
        }
        let mut day = local.date_naive();
        if self.start > self.end && t >= self.start {
            day = day.succ_opt().unwrap_or(day);
        }
        let end = day.and_time(self.end);
        match end.and_local_timezone(zone).earliest() {
            Some(e) => e.with_timezone(&chrono::Utc),
            // The end falls in a skipped hour: an hour later is past it.
            None => now + TimeDelta::hours(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_millis;
    use chrono::TimeZone;

    #[test]
    fn every_default_template_uses_only_its_kinds_placeholders() {
        for kind in NoticeKind::ALL {
            for lang in Language::ALL {
                let used = check_template(kind, kind.default_template(lang)).unwrap();
                assert!(!used.is_empty(), "{kind} {lang:?} says something specific");
                assert_eq!(used.contains(&"link".to_string()), kind.has_link(), "{kind} {lang:?}");
            }
            assert_eq!(NoticeKind::from_name(kind.name()), Some(kind));
        }
    }

    #[test]
    fn an_unknown_placeholder_is_named() {
        let e = check_template(NoticeKind::ChargeSucceeded, "paid {amount} at {shop}").unwrap_err();
        assert_eq!(
            e,
            TemplateError::UnknownPlaceholder {
                name: "shop".into(),
                offered: "{service_name}, {merchant_name}, {link}, {amount}, {time}".into()
            }
        );
        assert!(e.to_string().starts_with("unknown placeholder {shop}"));
        assert_eq!(check_template(NoticeKind::ChargeSucceeded, "a {amount"), Err(TemplateError::Unclosed(2)));
        let long = "x".repeat(MAX_TEMPLATE_CHARS + 1);
        assert_eq!(check_template(NoticeKind::ChargeSucceeded, &long), Err(TemplateError::TooLong(1001)));
        assert!(check_template(NoticeKind::ChargeSucceeded, &"中".repeat(MAX_TEMPLATE_CHARS)).is_ok());
    }

    #[test]
    fn rendering_fills_placeholders_and_keeps_escaped_braces() {
        let fields: BTreeMap<String, String> =
            [("amount".to_string(), "¥12.50".to_string()), ("time".to_string(), "2026-03-01 09:00".to_string())].into();
        assert_eq!(render("{{paid}} {amount} at { time }, {link}", &fields), "{paid} ¥12.50 at 2026-03-01 09:00, ");
        assert_eq!(render("a } b", &fields), "a } b");
    }

    #[test]
    fn languages_parse_loosely() {
        assert_eq!(Language::parse("zh"), Some(Language::ZhCn));
        assert_eq!(Language::parse("zh_CN"), Some(Language::ZhCn));
        assert_eq!(Language::parse("EN-us"), Some(Language::En));
        assert_eq!(Language::parse("fr"), None);
    }

    #[test]
    fn quiet_hours_wrap_past_midnight() {
        let q = QuietHours::parse("").unwrap().unwrap();
        let tz = chrono_tz::Asia::Shanghai;
        let at = |h, m| tz.with_ymd_and_hms(2026, 3, 1, h, m, 0).unwrap().with_timezone(&chrono::Utc);
        let seven_next_day = tz.with_ymd_and_hms(2026, 3, 2, 7, 0, 0).unwrap().with_timezone(&chrono::Utc);
        assert_eq!(q.next_allowed(at(12, 0), tz), at(12, 0));
        assert_eq!(q.next_allowed(at(21, 59), tz), at(21, 59));
        assert_eq!(q.next_allowed(at(22, 0), tz), seven_next_day);
        assert_eq!(q.next_allowed(at(23, 30), tz), seven_next_day);
        assert_eq!(q.next_allowed(at(3, 0), tz), at(7, 0));
        assert_eq!(q.next_allowed(at(7, 0), tz), at(7, 0));
        // In another zone the hours are that zone's.
        let london = chrono_tz::Europe::London;
        let noon_beijing = at(12, 0); // 04:00 in London
        let seven_london = london.with_ymd_and_hms(2026, 3, 1, 7, 0, 0).unwrap().with_timezone(&chrono::Utc);
        assert_eq!(q.next_allowed(noon_beijing, london), seven_london);
        assert_eq!(QuietHours::parse("none").unwrap(), None);
        let day = QuietHours::parse("12:00-13:00").unwrap().unwrap();
        assert_eq!(day.next_allowed(at(12, 30), tz), at(13, 0));
        assert!(QuietHours::parse("22:00").is_err());
        assert!(QuietHours::parse("25:00-07:00").is_err());
        assert!(QuietHours::parse("07:00-07:00").is_err());
        let _ = from_millis(0);
    }

    #[test]
    fn conversions_name_the_notices_they_convert() {
        assert_eq!(NoticeKind::converted_by(Conversion::Paid), &[NoticeKind::ChargeFailed, NoticeKind::RetryScheduled]);
        assert_eq!(NoticeKind::converted_by(Conversion::Resumed), &[NoticeKind::ContractSuspended]);
        assert_eq!(NoticeKind::converted_by(Conversion::Kept), &[NoticeKind::ContractZombie]);
        assert!(NoticeKind::VerificationCode.payer_acted());
        assert!(!NoticeKind::PreDebit.payer_acted());
        assert!(Channel::Sms.keeps_quiet_hours() && !Channel::MiniProgram.keeps_quiet_hours());
    }
}
