//! Signing sessions in the log: `SigningSessionOpened`, then a `SigningStepRecorded` for every
//! step, each naming the session's merchant and payer so the funnel can be built from the log,
//! and a `VerificationCodeIssued` after each step that requires an SMS code, for the notifier
//! to send.
use super::from_millis;
use crate::repository::Stored;
use autodebit_domain::signing::{
    Channel, CodeIssued, Opened, RiskInputs, SigningEvent, SigningSession, Step, StepRecorded, contract_language,
};
use autodebit_proto::EventKind;
use autodebit_proto::events::v1 as pb;

pub fn channel_to_pb(c: Channel) -> pb::SigningChannel {
    match c {
        Channel::H5 => pb::SigningChannel::H5,
        Channel::MiniProgram => pb::SigningChannel::MiniProgram,
        Channel::App => pb::SigningChannel::App,
    }
}

/// `None` for `SIGNING_CHANNEL_UNSPECIFIED` and unknown values.
pub fn channel_from_pb(raw: i32) -> Option<Channel> {
    match pb::SigningChannel::try_from(raw).ok()? {
        pb::SigningChannel::Unspecified => None,
        pb::SigningChannel::H5 => Some(Channel::H5),
        pb::SigningChannel::MiniProgram => Some(Channel::MiniProgram),
        pb::SigningChannel::App => Some(Channel::App),
    }
}

pub fn step_to_pb(s: Step) -> pb::SigningStep {
    match s {
        Step::PageViewed => pb::SigningStep::PageViewed,
        Step::AgreementTicked => pb::SigningStep::AgreementTicked,
        Step::HeldForReview => pb::SigningStep::HeldForReview,
        Step::ReviewApproved => pb::SigningStep::ReviewApproved,
        Step::ReviewRejected => pb::SigningStep::ReviewRejected,
        Step::SmsRequired => pb::SigningStep::SmsRequired,
        Step::SmsVerified => pb::SigningStep::SmsVerified,
        Step::Confirmed => pb::SigningStep::Confirmed,
        Step::Abandoned => pb::SigningStep::Abandoned,
        Step::Expired => pb::SigningStep::Expired,
    }
}

pub fn step_from_pb(raw: i32) -> Option<Step> {
    Some(match pb::SigningStep::try_from(raw).ok()? {
        pb::SigningStep::Unspecified => return None,
        pb::SigningStep::PageViewed => Step::PageViewed,
        pb::SigningStep::AgreementTicked => Step::AgreementTicked,
        pb::SigningStep::HeldForReview => Step::HeldForReview,
        pb::SigningStep::ReviewApproved => Step::ReviewApproved,
        pb::SigningStep::ReviewRejected => Step::ReviewRejected,
        pb::SigningStep::SmsRequired => Step::SmsRequired,
        pb::SigningStep::SmsVerified => Step::SmsVerified,
        pb::SigningStep::Confirmed => Step::Confirmed,
        pb::SigningStep::Abandoned => Step::Abandoned,
        pb::SigningStep::Expired => Step::Expired,
    })
}

pub fn opened_to_pb(o: &Opened) -> pb::SigningSessionOpened {
    pb::SigningSessionOpened {
        session_id: o.session_id.clone(),
        merchant_id: o.merchant_id.clone(),
        plan_id: o.plan_id.clone(),
        payer_id: o.payer_id.clone(),
        channel: channel_to_pb(o.channel) as i32,
        device_id: o.device_id.clone(),
        client_ip: o.client_ip.clone(),
        return_url: o.return_url.clone(),
        language: o.language.clone(),
        expires_at_ms: o.expires_at.timestamp_millis(),
        opened_at_ms: o.opened_at.timestamp_millis(),
        merchant_contract_code: o.merchant_contract_code.clone(),
        client_region: o.client_region.clone(),
        payer_phone: o.payer_phone.clone(),
    }
}

pub fn opened_from_pb(o: &pb::SigningSessionOpened) -> Option<Opened> {
    Some(Opened {
        session_id: o.session_id.clone(),
        merchant_id: o.merchant_id.clone(),
        plan_id: o.plan_id.clone(),
        payer_id: o.payer_id.clone(),
        channel: channel_from_pb(o.channel)?,
        device_id: o.device_id.clone(),
        client_ip: o.client_ip.clone(),
        return_url: o.return_url.clone(),
        language: o.language.clone(),
        expires_at: from_millis(o.expires_at_ms),
        opened_at: from_millis(o.opened_at_ms),
        merchant_contract_code: o.merchant_contract_code.clone(),
        client_region: o.client_region.clone(),
        payer_phone: o.payer_phone.clone(),
    })
}

impl Stored for SigningSession {
    fn to_pb(before: &Option<SigningSession>, event: &SigningEvent) -> Option<pb::Event> {
        let kind = match event {
            SigningEvent::Opened(o) => EventKind::SigningSessionOpened(opened_to_pb(o)),
            SigningEvent::StepRecorded(r) => {
                // A step follows the opening, whose ids it repeats.
                let o = &before.as_ref()?.opened;
                EventKind::SigningStepRecorded(pb::SigningStepRecorded {
                    session_id: o.session_id.clone(),
                    step: step_to_pb(r.step) as i32,
                    detail: r.detail.clone(),
                    at_ms: r.at.timestamp_millis(),
                    merchant_id: o.merchant_id.clone(),
                    payer_id: o.payer_id.clone(),
                    rule: r.risk.as_ref().map(|k| k.rule.clone()).unwrap_or_default(),
                    inputs: r
                        .risk
                        .iter()
                        .flat_map(|k| &k.inputs)
                        .map(|(name, value)| pb::RiskInput { name: name.clone(), value: value.clone() })
                        .collect(),
                })
            }
            SigningEvent::CodeIssued(c) => {
                // Everything the notifier needs to send it: the code follows the opening.
                let s = before.as_ref()?;
                let o = &s.opened;
                EventKind::VerificationCodeIssued(pb::VerificationCodeIssued {
                    session_id: o.session_id.clone(),
                    merchant_id: o.merchant_id.clone(),
                    payer_id: o.payer_id.clone(),
                    phone: o.payer_phone.clone(),
                    code: c.code.clone(),
                    expires_at_ms: s.session.expires_at.timestamp_millis(),
                    issued_at_ms: c.at.timestamp_millis(),
                    language: contract_language(&o.language).to_string(),
                })
            }
        };
        Some(pb::Event { kind: Some(kind) })
    }

    fn from_pb(kind: &EventKind) -> Option<SigningEvent> {
        match kind {
            EventKind::SigningSessionOpened(o) => Some(SigningEvent::Opened(opened_from_pb(o)?)),
            EventKind::SigningStepRecorded(s) => Some(SigningEvent::StepRecorded(StepRecorded {
                step: step_from_pb(s.step)?,
                detail: s.detail.clone(),
                at: from_millis(s.at_ms),
                risk: (!s.rule.is_empty()).then(|| RiskInputs {
                    rule: s.rule.clone(),
                    inputs: s.inputs.iter().map(|i| (i.name.clone(), i.value.clone())).collect(),
                }),
            })),
            EventKind::VerificationCodeIssued(c) => {
                Some(SigningEvent::CodeIssued(CodeIssued { code: c.code.clone(), at: from_millis(c.issued_at_ms) }))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodebit_domain::Aggregate;
    use autodebit_domain::signing::{SignTimeRisk, SigningCommand};

    #[test]
    fn a_session_folds_back_from_its_logged_events() {
        let opened = Opened {
            session_id: "ss_1".into(),
            merchant_id: "mch_1".into(),
            plan_id: "pl_1".into(),
            payer_id: "p1".into(),
            channel: Channel::MiniProgram,
            device_id: "d1".into(),
            client_ip: "192.0.2.1".into(),
            return_url: "https://example.cn".into(),
            language: "en".into(),
            expires_at: from_millis(600_000),
            opened_at: from_millis(1_000),
            merchant_contract_code: "c-1".into(),
            client_region: "beijing".into(),
            payer_phone: "+8613800138000".into(),
        };
        let risk = SignTimeRisk { usual_region: Some("shanghai".into()), ..Default::default() };
        let open = SigningCommand::Open { opened, risk, sms_code: "042042".into() };
        let events = SigningSession::decide(&None, open, from_millis(1_000)).unwrap();
        let mut state = None;
        let mut logged = Vec::new();
        for e in &events {
            logged.push(SigningSession::to_pb(&state, e).unwrap());
            state = SigningSession::apply(state, e);
        }
        let decoded: Vec<SigningEvent> =
            logged.iter().map(|p| SigningSession::from_pb(p.kind.as_ref().unwrap()).unwrap()).collect();
        assert_eq!(decoded, events);
        let Some(EventKind::SigningSessionOpened(o)) = &logged[0].kind else { panic!("not the opening") };
        assert_eq!(o.payer_phone, "+8613800138000");
        // The code goes to the notifier with all it needs, good while the session is open.
        let Some(EventKind::VerificationCodeIssued(c)) = &logged[2].kind else { panic!("no code issued: {logged:?}") };
        assert_eq!(
            c,
            &pb::VerificationCodeIssued {
                session_id: "ss_1".into(),
                merchant_id: "mch_1".into(),
                payer_id: "p1".into(),
                phone: "+8613800138000".into(),
                code: "042042".into(),
                expires_at_ms: 600_000,
                issued_at_ms: 1_000,
                language: "en".into(),
            }
        );
        let state = state.unwrap();
        assert!(state.session.sms_required);
        assert_eq!(state.session.sms_code_issued_at, Some(from_millis(1_000)));
        // Folded back from the log, the session is the one decided.
        let folded = decoded.iter().fold(None, SigningSession::apply).unwrap();
        assert_eq!(folded, state);
    }
}
