//! gRPC handlers of the notifier: each parses its request, calls `app`, and maps the result.
//! `webhooks`: the WebhooksService; `http`: short links and channel receipts on the HTTP
//! listener.
pub mod http;
pub mod webhooks;

use crate::app::settings::{self, Command, MerchantNotices, SettingsError, SettingsTables};
use crate::app::{self, ReadError};
use crate::store::{self, DeliveryRow, NoticeRow};
use autodebit_domain::ContractId;
use autodebit_domain::notice::{Language, NoticeKind};
use autodebit_proto::notifier::v1::{self as pb, notifier_service_server::NotifierService};
use autodebit_runtime::Platform;
use autodebit_runtime::auth::{Principal, caller};
use autodebit_runtime::codec::Cause;
use autodebit_runtime::grpc::{invalid, store_error};
use autodebit_runtime::repository::{self, VersionMismatch};
use std::collections::HashMap;
use tonic::{Request, Response, Status};

pub struct NotifierApi {
    platform: Platform,
    public_url: String,
}

impl NotifierApi {
    pub fn new(platform: Platform, public_url: String) -> Self {
        NotifierApi { platform, public_url }
    }
}

fn notice_to_pb(n: NoticeRow, deliveries: Vec<DeliveryRow>, public_url: &str) -> pb::Notice {
    pb::Notice {
        link: if n.link_token.is_empty() { String::new() } else { format!("{public_url}/n/{}", n.link_token) },
        notice_id: n.notice_id,
        kind: n.kind as i32,
        channel: n.channel,
        recipient: n.recipient,
        contract_id: n.contract_id,
        charge_id: n.charge_id,
        text: n.text,
        recorded_at_ms: n.recorded_at_ms,
        language: n.language,
        state: n.state,
        deliveries: deliveries
            .into_iter()
            .map(|d| pb::Delivery {
                channel: d.channel,
                outcome: d.outcome as i32,
                provider_message_id: d.provider_message_id,
                detail: d.detail,
                at_ms: d.at_ms,
            })
            .collect(),
        opened_at_ms: n.opened_at_ms,
        converted_at_ms: n.converted_at_ms,
    }
}

/// The merchant a settings call is about: the caller's own.
fn merchant(who: &Principal) -> Result<String, Status> {
    match who {
        Principal::Merchant(m) => Ok(m.to_string()),
        Principal::Operator => {
            Err(Status::permission_denied("notifier settings are a merchant's own: call with its key"))
        }
    }
}

enum SetError {
    Rule(SettingsError),
    Store(autodebit_eventstore::StoreError),
}

impl From<SettingsError> for SetError {
    fn from(e: SettingsError) -> Self {
        SetError::Rule(e)
    }
}
impl From<autodebit_eventstore::StoreError> for SetError {
    fn from(e: autodebit_eventstore::StoreError) -> Self {
        SetError::Store(e)
    }
}
impl From<VersionMismatch> for SetError {
    fn from(v: VersionMismatch) -> Self {
        SetError::Rule(SettingsError { field: "settings".into(), problem: v.to_string() })
    }
}

impl From<SetError> for Status {
    fn from(e: SetError) -> Status {
        match e {
            SetError::Rule(e) => invalid(&e.field, &e.problem),
            SetError::Store(e) => store_error(e),
        }
    }
}

impl NotifierApi {
    async fn execute(&self, merchant_id: &str, command: Command) -> Result<MerchantNotices, SetError> {
        let mut tx = self.platform.store.begin().await?;
        let done = repository::execute_in::<MerchantNotices, _, SetError>(
            &mut tx,
            &settings::stream(merchant_id),
            None,
            command,
            self.platform.clock.now(),
            &Cause::request(format!("notifier-settings/{merchant_id}")),
            &SettingsTables,
        )
        .await?;
        tx.commit().await?;
        Ok(done.state)
    }

    async fn templates(&self, merchant_id: &str) -> Result<Vec<pb::NoticeTemplate>, Status> {
        let own = store::templates_of(&self.platform.store, merchant_id).await.map_err(store_error)?;
        let view = settings::view(String::new(), "", own);
        let mut out = Vec::new();
        for kind in NoticeKind::ALL {
            for lang in Language::ALL {
                let overridden = view.templates.contains_key(&(kind, lang));
                out.push(pb::NoticeTemplate {
                    kind: app::kind_to_pb(kind) as i32,
                    language: lang.tag().to_string(),
                    body: view.template(kind, lang).to_string(),
                    overridden,
                    placeholders: kind.placeholders().iter().map(|p| p.to_string()).collect(),
                });
            }
        }
        Ok(out)
    }
}

#[tonic::async_trait]
impl NotifierService for NotifierApi {
    async fn list_notices(
        &self,
        req: Request<pb::ListNoticesRequest>,
    ) -> Result<Response<pb::ListNoticesResponse>, Status> {
        let who = caller(&req)?;
        let id = ContractId::parse(&req.get_ref().contract_id).map_err(|e| invalid("contract_id", e))?;
        let notices = app::notices(&self.platform.store, &who, id).await.map_err(|e| match e {
            e @ ReadError::NotFound(_) => Status::not_found(e.to_string()),
            ReadError::Store(e) => store_error(e),
        })?;
        let mut deliveries: HashMap<String, Vec<DeliveryRow>> = HashMap::new();
        for d in store::deliveries_of_contract(&self.platform.store, &id.to_string()).await.map_err(store_error)? {
            deliveries.entry(d.notice_id.clone()).or_default().push(d);
        }
        let notices = notices
            .into_iter()
            .map(|n| {
                let d = deliveries.remove(&n.notice_id).unwrap_or_default();
                notice_to_pb(n, d, &self.public_url)
            })
            .collect();
        Ok(Response::new(pb::ListNoticesResponse { notices }))
    }

    async fn get_notifier_settings(
        &self,
        req: Request<pb::GetNotifierSettingsRequest>,
    ) -> Result<Response<pb::GetNotifierSettingsResponse>, Status> {
        let m = merchant(&caller(&req)?)?;
        let s = store::settings_of(&self.platform.store, &m).await.map_err(store_error)?;
        Ok(Response::new(pb::GetNotifierSettingsResponse { settings: Some(settings::decode_settings(&s)) }))
    }

    async fn set_notifier_settings(
        &self,
        req: Request<pb::SetNotifierSettingsRequest>,
    ) -> Result<Response<pb::SetNotifierSettingsResponse>, Status> {
        let m = merchant(&caller(&req)?)?;
        let settings = req.into_inner().settings.unwrap_or_default();
        let s = self.execute(&m, Command::Set { merchant_id: m.clone(), settings }).await?;
        Ok(Response::new(pb::SetNotifierSettingsResponse { settings: Some(s.settings) }))
    }

    async fn list_notice_templates(
        &self,
        req: Request<pb::ListNoticeTemplatesRequest>,
    ) -> Result<Response<pb::ListNoticeTemplatesResponse>, Status> {
        let m = merchant(&caller(&req)?)?;
        Ok(Response::new(pb::ListNoticeTemplatesResponse { templates: self.templates(&m).await? }))
    }

    async fn set_notice_template(
        &self,
        req: Request<pb::SetNoticeTemplateRequest>,
    ) -> Result<Response<pb::SetNoticeTemplateResponse>, Status> {
        let m = merchant(&caller(&req)?)?;
        let r = req.into_inner();
        let lang = Language::parse(&r.language).map(|l| l.tag().to_string()).unwrap_or_default();
        let kind = r.kind;
        let command = Command::SetTemplate { merchant_id: m.clone(), kind: r.kind, language: r.language, body: r.body };
        self.execute(&m, command).await?;
        let template = self.templates(&m).await?.into_iter().find(|t| t.kind == kind && t.language == lang);
        Ok(Response::new(pb::SetNoticeTemplateResponse { template }))
    }
}
