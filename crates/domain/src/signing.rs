//! The signing session aggregate: a payer's way from the authorization page to a signed
//! contract, with the double confirmation (tick the agreement, then confirm with a credential)
//! and the sign-time risk checks. Every step is an event, so analytics can build the funnel.
use crate::{Aggregate, ContractId, IdError, MerchantId, Timestamp};

/// How long a session stays open when the operator does not say (`--signing-session-minutes`).
pub const DEFAULT_SESSION_MINUTES: u64 = 10;
/// More distinct payer accounts than this on one device within the velocity window hold a
/// session for an operator's review.
pub const MAX_ACCOUNTS_PER_DEVICE: u32 = 3;
/// The device velocity window, in hours.
pub const DEVICE_WINDOW_HOURS: i64 = 24;
/// Digits of the SMS code a payer signing far from home is sent.
pub const SMS_CODE_DIGITS: u32 = 6;
/// The fewest digits a payer's phone number has after its `+` (E.164).
pub const PHONE_MIN_DIGITS: usize = 8;
/// The most digits a payer's phone number has after its `+` (E.164).
pub const PHONE_MAX_DIGITS: usize = 15;

/// Whether `phone` is a mobile number in E.164 form: `+`, then 8 to 15 digits (country code
/// first), nothing else.
pub fn is_e164(phone: &str) -> bool {
    phone.strip_prefix('+').is_some_and(|digits| {
        (PHONE_MIN_DIGITS..=PHONE_MAX_DIGITS).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The language a contract signed through a session records, from the session's page
/// language (`zh` or `en`): "en" for English, "zh-CN" otherwise.
pub fn contract_language(session_language: &str) -> &'static str {
    if session_language == "en" { "en" } else { "zh-CN" }
}

/// The stream a session's events are kept in.
pub fn stream(session_id: &str) -> String {
    format!("signing-{session_id}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    H5,
    MiniProgram,
    App,
}

/// Every step a session can take; each is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    PageViewed,
    AgreementTicked,
    HeldForReview,
    ReviewApproved,
    ReviewRejected,
    SmsRequired,
    SmsVerified,
    Confirmed,
    Abandoned,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Open,
    /// Waiting for an operator's review (sign-time risk).
    Held,
    Confirmed,
    Abandoned,
    Expired,
    Rejected,
}

impl SessionStatus {
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            SessionStatus::Confirmed | SessionStatus::Abandoned | SessionStatus::Expired | SessionStatus::Rejected
        )
    }
}

/// Where a session is on its way: the status and what the payer has done so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub expires_at: Timestamp,
    pub status: SessionStatus,
    pub ticked: bool,
    pub sms_required: bool,
    pub sms_verified: bool,
    /// When the SMS code was last issued (sent through the log to the notifier).
    pub sms_code_issued_at: Option<Timestamp>,
    /// Every step recorded: the step, its detail and when.
    pub steps: Vec<(Step, String, Timestamp)>,
}

impl Session {
    pub fn new(expires_at: Timestamp) -> Self {
        Session {
            expires_at,
            status: SessionStatus::Open,
            ticked: false,
            sms_required: false,
            sms_verified: false,
            sms_code_issued_at: None,
            steps: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("the session has ended ({0:?})")]
    Ended(SessionStatus),
    #[error("the session expired")]
    Expired,
    #[error("tick the agreement first")]
    NotTicked,
    #[error("the session is waiting for a manual review")]
    Held,
    #[error("the session is not waiting for a review")]
    NotHeld,
    #[error("an SMS verification is needed first")]
    SmsNeeded,
    #[error("no SMS verification was asked for")]
    NoSms,
    #[error("no such signing session")]
    NoSession,
    #[error("the session is open already")]
    AlreadyOpened,
}

/// How a session was opened: what the merchant asked for, and where the payer was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub session_id: String,
    pub merchant_id: String,
    pub plan_id: String,
    pub payer_id: String,
    pub channel: Channel,
    pub device_id: String,
    pub client_ip: String,
    pub return_url: String,
    /// The page's language: `zh` or `en`.
    pub language: String,
    pub expires_at: Timestamp,
    pub opened_at: Timestamp,
    pub merchant_contract_code: String,
    /// The client IP's region ("" when unknown).
    pub client_region: String,
    /// The payer's mobile number (E.164) as the merchant gave it ("" when none was).
    pub payer_phone: String,
}

/// One step of a session, with its detail (a reason, or the contract a confirmation signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecorded {
    pub step: Step,
    pub detail: String,
    pub at: Timestamp,
    /// For a sign-time risk decision: the rule and its inputs.
    pub risk: Option<RiskInputs>,
}

/// The rule a risk decision was made under and what it looked at, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RiskInputs {
    pub rule: String,
    pub inputs: Vec<(String, String)>,
}

/// An SMS code issued for the session: the notifier sends it to the payer. Only its hash is
/// checked against what the payer types (the service's table keeps it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeIssued {
    pub code: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningEvent {
    Opened(Opened),
    StepRecorded(StepRecorded),
    /// Follows every `SmsRequired` step.
    CodeIssued(CodeIssued),
}

/// A session as its events left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningSession {
    pub opened: Opened,
    pub session: Session,
    /// The contract the session signed ("" until it is confirmed).
    pub contract_id: String,
}

impl SigningSession {
    /// The contract this session signs: the same every time it is derived.
    pub fn contract_to_sign(&self) -> Result<ContractId, IdError> {
        let merchant = MerchantId::parse(&self.opened.merchant_id)?;
        Ok(ContractId::for_signing_session(
            &merchant,
            &self.opened.session_id,
            self.opened.opened_at.timestamp_millis(),
        ))
    }
}

/// A session's state: `None` until it is opened.
pub type SigningState = Option<SigningSession>;

/// What the sign-time risk checks found as the session opened, and the settings in force
/// for the merchant and plan (`crate::risk::SETTINGS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignTimeRisk {
    /// Distinct payer accounts other than this session's that the device signed for within
    /// the velocity window.
    pub other_accounts_on_device: u32,
    /// The region of the payer's first session with the merchant, if one was known.
    pub usual_region: Option<String>,
    /// More accounts than this on the device hold the session.
    pub max_accounts: u32,
    /// The velocity window, in hours.
    pub window_hours: i64,
}

impl Default for SignTimeRisk {
    fn default() -> Self {
        SignTimeRisk {
            other_accounts_on_device: 0,
            usual_region: None,
            max_accounts: MAX_ACCOUNTS_PER_DEVICE,
            window_hours: DEVICE_WINDOW_HOURS,
        }
    }
}

/// The start of the device velocity window of `hours` that ends at `now`.
pub fn device_window_start(now: Timestamp, hours: i64) -> Timestamp {
    now - chrono::Duration::hours(hours)
}

/// The sign-time risk decisions for a session opening, each a step with its reason, rule and
/// inputs: a device that signed for more than `max_accounts` payer accounts within the window
/// (this one included) is held for review; a client IP in a known region other than the
/// payer's usual one needs an SMS code first.
pub fn risk_steps(opened: &Opened, risk: &SignTimeRisk) -> Vec<StepRecorded> {
    let mut steps = Vec::new();
    let accounts = risk.other_accounts_on_device.saturating_add(1);
    let at = opened.opened_at;
    let input = |k: &str, v: String| (k.to_string(), v);
    if accounts > risk.max_accounts {
        steps.push(StepRecorded {
            step: Step::HeldForReview,
            detail: format!(
                "device {} signed for {accounts} payer accounts within {} h (more than {})",
                opened.device_id, risk.window_hours, risk.max_accounts
            ),
            at,
            risk: Some(RiskInputs {
                rule: crate::risk::DEVICE_ACCOUNTS.into(),
                inputs: vec![
                    input("device_id", opened.device_id.clone()),
                    input("accounts", accounts.to_string()),
                    input("max_accounts", risk.max_accounts.to_string()),
                    input("window_hours", risk.window_hours.to_string()),
                ],
            }),
        });
    }
    let region = &opened.client_region;
    if let Some(usual) = risk.usual_region.as_ref().filter(|u| !region.is_empty() && *u != region) {
        steps.push(StepRecorded {
            step: Step::SmsRequired,
            detail: format!("client IP {} is in {region}, the payer usually signs from {usual}", opened.client_ip),
            at,
            risk: Some(RiskInputs {
                rule: crate::risk::REGION_CHANGE.into(),
                inputs: vec![
                    input("client_ip", opened.client_ip.clone()),
                    input("region", region.clone()),
                    input("usual_region", usual.clone()),
                ],
            }),
        });
    }
    steps
}

/// The SMS code for a random number: [`SMS_CODE_DIGITS`] decimal digits.
pub fn sms_code(random: u128) -> String {
    let digits = SMS_CODE_DIGITS as usize;
    format!("{:0digits$}", random % 10u128.pow(SMS_CODE_DIGITS))
}

/// A step the payer or an operator takes; `decide` says which steps it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningCommand {
    /// Opens the session, with what the sign-time risk checks found, and the SMS code issued
    /// should they require one (see [`sms_code`]).
    Open {
        opened: Opened,
        risk: SignTimeRisk,
        sms_code: String,
    },
    /// The payer's first view of the page, from a device of this kind ([`device_kind`]).
    View {
        device: &'static str,
    },
    Tick,
    /// The credential was checked by the caller; `contract_id` is the contract it signs.
    Confirm {
        contract_id: String,
    },
    /// The payer signed at the provider (which authenticated them): confirmed without the
    /// hosted page's tick and SMS, unless the session is held for review.
    ConfirmAtProvider {
        contract_id: String,
    },
    Abandon,
    Expire,
    Hold {
        reason: String,
    },
    /// Requires an SMS code first, and issues `sms_code`.
    RequireSms {
        reason: String,
        sms_code: String,
    },
    VerifySms,
    Approve,
    Reject {
        reason: String,
    },
}

/// The kind of device a browser's `User-Agent` names: `ios`, `android`, `harmonyos`, `desktop`,
/// or `other`; what the page view records, for the funnel's payer profiles.
pub fn device_kind(user_agent: &str) -> &'static str {
    let ua = user_agent.to_ascii_lowercase();
    if ua.contains("harmonyos") || ua.contains("openharmony") {
        "harmonyos"
    } else if ua.contains("iphone") || ua.contains("ipad") || ua.contains("ipod") {
        "ios"
    } else if ua.contains("android") {
        "android"
    } else if ua.contains("windows") || ua.contains("macintosh") || ua.contains("x11") || ua.contains("cros") {
        "desktop"
    } else {
        "other"
    }
}

impl Session {
    /// The steps `command` records, or why it cannot happen now. A session past its expiry
    /// takes no step but `Expired`.
    pub fn steps_for(&self, command: SigningCommand, now: Timestamp) -> Result<Vec<(Step, String)>, SigningError> {
        use SessionStatus::*;
        let s = self;
        if s.status.is_final() {
            return Err(SigningError::Ended(s.status));
        }
        if now >= s.expires_at
            && !matches!(command, SigningCommand::Expire | SigningCommand::Approve | SigningCommand::Reject { .. })
        {
            return Err(SigningError::Expired);
        }
        Ok(match command {
            SigningCommand::Open { .. } => return Err(SigningError::AlreadyOpened),
            SigningCommand::View { device } => vec![(Step::PageViewed, device.to_string())],
            SigningCommand::Tick if s.status == Held => return Err(SigningError::Held),
            SigningCommand::Tick => vec![(Step::AgreementTicked, String::new())],
            SigningCommand::Confirm { contract_id } => {
                if s.status == Held {
                    return Err(SigningError::Held);
                }
                if !s.ticked {
                    return Err(SigningError::NotTicked);
                }
                if s.sms_required && !s.sms_verified {
                    return Err(SigningError::SmsNeeded);
                }
                vec![(Step::Confirmed, contract_id)]
            }
            SigningCommand::ConfirmAtProvider { .. } if s.status == Held => return Err(SigningError::Held),
            SigningCommand::ConfirmAtProvider { contract_id } => vec![(Step::Confirmed, contract_id)],
            SigningCommand::Abandon => vec![(Step::Abandoned, String::new())],
            SigningCommand::Expire if now >= s.expires_at => vec![(Step::Expired, String::new())],
            SigningCommand::Expire => vec![],
            SigningCommand::Hold { reason } => vec![(Step::HeldForReview, reason)],
            SigningCommand::RequireSms { reason, .. } => vec![(Step::SmsRequired, reason)],
            SigningCommand::VerifySms if !s.sms_required => return Err(SigningError::NoSms),
            SigningCommand::VerifySms => vec![(Step::SmsVerified, String::new())],
            SigningCommand::Approve if s.status != Held => return Err(SigningError::NotHeld),
            SigningCommand::Approve => vec![(Step::ReviewApproved, String::new())],
            SigningCommand::Reject { .. } if s.status != Held => return Err(SigningError::NotHeld),
            SigningCommand::Reject { reason } => vec![(Step::ReviewRejected, reason)],
        })
    }

    /// The session after step `r`; a session that has ended records nothing more.
    pub fn record(mut self, r: &StepRecorded) -> Session {
        use SessionStatus::*;
        if self.status.is_final() {
            return self;
        }
        match r.step {
            Step::PageViewed => {}
            Step::AgreementTicked => self.ticked = true,
            Step::HeldForReview => self.status = Held,
            Step::ReviewApproved => self.status = Open,
            Step::ReviewRejected => self.status = Rejected,
            Step::SmsRequired => self.sms_required = true,
            Step::SmsVerified => self.sms_verified = true,
            Step::Confirmed => self.status = Confirmed,
            Step::Abandoned => self.status = Abandoned,
            Step::Expired => self.status = Expired,
        }
        self.steps.push((r.step, r.detail.clone(), r.at));
        self
    }
}

/// The events of `steps` taken at `at`: each step recorded, and after an `SmsRequired` step the
/// SMS code issued.
fn step_events(steps: Vec<StepRecorded>, sms_code: &str) -> Vec<SigningEvent> {
    let mut events = Vec::with_capacity(steps.len() + 1);
    for step in steps {
        let (sms, at) = (step.step == Step::SmsRequired, step.at);
        events.push(SigningEvent::StepRecorded(step));
        if sms {
            events.push(SigningEvent::CodeIssued(CodeIssued { code: sms_code.to_string(), at }));
        }
    }
    events
}

/// Steps taken at `at` with their details, none a risk decision.
fn plain_steps(steps: Vec<(Step, String)>, at: Timestamp) -> Vec<StepRecorded> {
    steps.into_iter().map(|(step, detail)| StepRecorded { step, detail, at, risk: None }).collect()
}

impl Aggregate for SigningSession {
    type State = SigningState;
    type Command = SigningCommand;
    type Event = SigningEvent;
    type Error = SigningError;

    /// Opening records the session and its sign-time risk steps at the opening time; every
    /// other command records the steps `Session::steps_for` allows, at `now`. Each
    /// `SmsRequired` step is followed by the SMS code issued.
    fn decide(
        state: &SigningState,
        command: SigningCommand,
        now: Timestamp,
    ) -> Result<Vec<SigningEvent>, SigningError> {
        let Some(s) = state else {
            let SigningCommand::Open { opened, risk, sms_code } = command else {
                return Err(SigningError::NoSession);
            };
            let steps = risk_steps(&opened, &risk);
            let mut events = vec![SigningEvent::Opened(opened)];
            events.extend(step_events(steps, &sms_code));
            return Ok(events);
        };
        let sms_code = match &command {
            SigningCommand::RequireSms { sms_code, .. } => sms_code.clone(),
            _ => String::new(),
        };
        Ok(step_events(plain_steps(s.session.steps_for(command, now)?, now), &sms_code))
    }

    fn apply(state: SigningState, event: &SigningEvent) -> SigningState {
        match event {
            SigningEvent::Opened(o) => Some(state.unwrap_or_else(|| SigningSession {
                opened: o.clone(),
                session: Session::new(o.expires_at),
                contract_id: String::new(),
            })),
            SigningEvent::StepRecorded(r) => {
                let mut s = state?;
                if r.step == Step::Confirmed {
                    s.contract_id = r.detail.clone();
                }
                s.session = s.session.record(r);
                Some(s)
            }
            SigningEvent::CodeIssued(c) => {
                let mut s = state?;
                if !s.session.status.is_final() {
                    s.session.sms_code_issued_at = Some(c.at);
                }
                Some(s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_millis;

    fn opened(device: &str, region: &str) -> Opened {
        Opened {
            session_id: "ss_1".into(),
            merchant_id: "mch_1".into(),
            plan_id: "pl_1".into(),
            payer_id: "p1".into(),
            channel: Channel::H5,
            device_id: device.into(),
            client_ip: "198.51.100.7".into(),
            return_url: "https://example.cn/back".into(),
            language: "zh".into(),
            expires_at: from_millis(600_000),
            opened_at: from_millis(0),
            merchant_contract_code: String::new(),
            client_region: region.into(),
            payer_phone: "+8613800138000".into(),
        }
    }

    fn open(risk: SignTimeRisk) -> SigningState {
        let events = SigningSession::decide(
            &None,
            SigningCommand::Open { opened: opened("d1", "shanghai"), risk, sms_code: "123456".into() },
            from_millis(0),
        )
        .unwrap();
        SigningSession::fold(&events)
    }

    fn run(s: SigningState, c: SigningCommand, ms: i64) -> Result<SigningState, SigningError> {
        let events = SigningSession::decide(&s, c, from_millis(ms))?;
        Ok(events.iter().fold(s, SigningSession::apply))
    }

    fn status(s: &SigningState) -> SessionStatus {
        s.as_ref().unwrap().session.status
    }

    #[test]
    fn devices_are_told_by_their_user_agent() {
        let iphone =
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 MicroMessenger/8.0.44";
        assert_eq!(device_kind(iphone), "ios");
        assert_eq!(device_kind("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36"), "android");
        assert_eq!(
            device_kind("Mozilla/5.0 (Phone; OpenHarmony 4.0) ArkWeb/4.1.6.1 Mobile HuaweiBrowser"),
            "harmonyos"
        );
        assert_eq!(device_kind("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0"), "desktop");
        assert_eq!(device_kind("curl/8.5.0"), "other");
        assert_eq!(device_kind(""), "other");
    }

    #[test]
    fn double_confirmation() {
        let s = open(SignTimeRisk::default());
        let s = run(s, SigningCommand::View { device: "ios" }, 1).unwrap();
        assert_eq!(
            run(s.clone(), SigningCommand::Confirm { contract_id: "c".into() }, 2),
            Err(SigningError::NotTicked)
        );
        let s = run(s, SigningCommand::Tick, 3).unwrap();
        let s = run(s, SigningCommand::Confirm { contract_id: "c".into() }, 4).unwrap();
        assert_eq!(status(&s), SessionStatus::Confirmed);
        assert_eq!(s.as_ref().unwrap().contract_id, "c");
        assert_eq!(run(s, SigningCommand::Tick, 5), Err(SigningError::Ended(SessionStatus::Confirmed)));
    }

    #[test]
    fn risk_holds_and_sms() {
        let s = run(open(SignTimeRisk::default()), SigningCommand::Hold { reason: "device".into() }, 1).unwrap();
        assert_eq!(run(s.clone(), SigningCommand::Tick, 2), Err(SigningError::Held));
        let s = run(s, SigningCommand::Approve, 3).unwrap();
        let s = run(s, SigningCommand::RequireSms { reason: "region".into(), sms_code: "654321".into() }, 4).unwrap();
        assert_eq!(s.as_ref().unwrap().session.sms_code_issued_at, Some(from_millis(4)));
        let s = run(s, SigningCommand::Tick, 5).unwrap();
        assert_eq!(
            run(s.clone(), SigningCommand::Confirm { contract_id: "c".into() }, 6),
            Err(SigningError::SmsNeeded)
        );
        let s = run(s, SigningCommand::VerifySms, 7).unwrap();
        assert!(run(s, SigningCommand::Confirm { contract_id: "c".into() }, 8).is_ok());
        let held = run(open(SignTimeRisk::default()), SigningCommand::Hold { reason: "d".into() }, 1).unwrap();
        assert_eq!(
            status(&run(held, SigningCommand::Reject { reason: "fraud".into() }, 2).unwrap()),
            SessionStatus::Rejected
        );
    }

    #[test]
    fn sessions_expire() {
        let s = open(SignTimeRisk::default());
        assert_eq!(run(s.clone(), SigningCommand::Tick, 600_000), Err(SigningError::Expired));
        assert_eq!(status(&run(s.clone(), SigningCommand::Expire, 599_999).unwrap()), SessionStatus::Open);
        assert_eq!(status(&run(s, SigningCommand::Expire, 600_000).unwrap()), SessionStatus::Expired);
    }

    #[test]
    fn a_session_opens_once_and_steps_need_one() {
        assert_eq!(run(None, SigningCommand::Tick, 1), Err(SigningError::NoSession));
        let s = open(SignTimeRisk::default());
        let again =
            SigningCommand::Open { opened: opened("d1", ""), risk: SignTimeRisk::default(), sms_code: String::new() };
        assert_eq!(run(s, again, 1), Err(SigningError::AlreadyOpened));
    }

    #[test]
    fn a_fourth_account_on_a_device_within_a_day_is_held_for_review() {
        let three = SignTimeRisk { other_accounts_on_device: MAX_ACCOUNTS_PER_DEVICE - 1, ..Default::default() };
        assert_eq!(status(&open(three)), SessionStatus::Open);
        let four = SignTimeRisk { other_accounts_on_device: MAX_ACCOUNTS_PER_DEVICE, ..Default::default() };
        let s = open(four.clone()).unwrap();
        assert_eq!(s.session.status, SessionStatus::Held);
        assert_eq!(s.session.steps[0].1, "device d1 signed for 4 payer accounts within 24 h (more than 3)");
        assert_eq!(device_window_start(from_millis(100_000_000), 24), from_millis(100_000_000 - 24 * 3_600_000));
        // The decision names its rule and inputs.
        let step = &risk_steps(&opened("d1", ""), &four)[0];
        let risk = step.risk.as_ref().unwrap();
        assert_eq!(risk.rule, "device_accounts");
        assert!(risk.inputs.contains(&("accounts".to_string(), "4".to_string())), "{risk:?}");
        // A merchant's stricter setting: one account per device, over a week.
        let strict = SignTimeRisk { other_accounts_on_device: 1, max_accounts: 1, window_hours: 168, ..four };
        let s = open(strict).unwrap();
        assert_eq!(s.session.steps[0].1, "device d1 signed for 2 payer accounts within 168 h (more than 1)");
    }

    #[test]
    fn signing_from_another_region_than_usual_needs_an_sms_code() {
        let usual = |r: &str| SignTimeRisk { usual_region: Some(r.into()), ..Default::default() };
        let s = open(usual("beijing")).unwrap();
        assert!(s.session.sms_required);
        assert_eq!(s.session.steps[0].1, "client IP 198.51.100.7 is in shanghai, the payer usually signs from beijing");
        assert!(!open(usual("shanghai")).unwrap().session.sms_required, "the usual region");
        assert!(!open(SignTimeRisk::default()).unwrap().session.sms_required, "no usual region yet");
        let unknown = opened("d1", "");
        assert!(risk_steps(&unknown, &usual("beijing")).is_empty(), "the region of the IP is unknown");
        assert_eq!(sms_code(123), "000123");
        assert_eq!(sms_code(10u128.pow(SMS_CODE_DIGITS) + 42), "000042");
    }

    #[test]
    fn a_required_sms_code_is_issued_with_the_step_and_only_then() {
        let usual = SignTimeRisk { usual_region: Some("beijing".into()), ..Default::default() };
        let command = SigningCommand::Open { opened: opened("d1", "shanghai"), risk: usual, sms_code: "123456".into() };
        let events = SigningSession::decide(&None, command, from_millis(5)).unwrap();
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(matches!(&events[1], SigningEvent::StepRecorded(r) if r.step == Step::SmsRequired));
        assert_eq!(events[2], SigningEvent::CodeIssued(CodeIssued { code: "123456".into(), at: from_millis(0) }));
        let s = SigningSession::fold(&events).unwrap();
        assert_eq!(s.session.sms_code_issued_at, Some(from_millis(0)), "issued as the session opened");
        assert_eq!(s.opened.payer_phone, "+8613800138000");

        // No SMS step, no code; nor do other steps issue one.
        let quiet = open(SignTimeRisk::default());
        assert_eq!(quiet.as_ref().unwrap().session.sms_code_issued_at, None);
        let ticked = SigningSession::decide(&quiet, SigningCommand::Tick, from_millis(1)).unwrap();
        assert!(ticked.iter().all(|e| !matches!(e, SigningEvent::CodeIssued(_))));
        // A code issued to a session that has ended changes nothing.
        let ended = run(quiet, SigningCommand::Abandon, 2).unwrap();
        let late = SigningEvent::CodeIssued(CodeIssued { code: "1".into(), at: from_millis(3) });
        assert_eq!(SigningSession::apply(ended.clone(), &late), ended);
        assert_eq!(SigningSession::apply(None, &late), None, "nothing before the opening");
    }

    #[test]
    fn phones_are_e164_and_languages_normalised() {
        for good in ["+8613800138000", "+12025550123", "+12345678", "+123456789012345"] {
            assert!(is_e164(good), "{good}");
        }
        for bad in ["", "8613800138000", "+", "+1234567", "+1234567890123456", "+86 138 0013 8000", "+86-13800138000"] {
            assert!(!is_e164(bad), "{bad}");
        }
        assert!(!is_e164("+８６１３８００１３８０００"), "digits other than ASCII");
        assert_eq!(contract_language("en"), "en");
        assert_eq!(contract_language("zh"), "zh-CN");
        assert_eq!(contract_language(""), "zh-CN");
    }
}
