//! Generated protobuf messages and gRPC stubs; imports nothing of ours.

/// Encoded `FileDescriptorSet` of every autodebit proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/autodebit_descriptor.bin"));

pub mod events {
    pub mod v1 {
        tonic::include_proto!("autodebit.events.v1");
    }
}
pub mod contracts {
    pub mod v1 {
        tonic::include_proto!("autodebit.contracts.v1");
    }
}
pub mod scheduler {
    pub mod v1 {
        tonic::include_proto!("autodebit.scheduler.v1");
    }
}
pub mod charger {
    pub mod v1 {
        tonic::include_proto!("autodebit.charger.v1");
    }
}
pub mod notifier {
    pub mod v1 {
        tonic::include_proto!("autodebit.notifier.v1");
    }
}
pub mod analytics {
    pub mod v1 {
        tonic::include_proto!("autodebit.analytics.v1");
    }
}
pub mod admin {
    pub mod v1 {
        tonic::include_proto!("autodebit.admin.v1");
    }
}

pub use events::v1::{Event, event::Kind as EventKind};

impl events::v1::Event {
    /// The event's type name as stored in the log (the oneof variant, e.g. `ContractSigned`).
    pub fn type_name(&self) -> &'static str {
        use events::v1::event::Kind;
        match &self.kind {
            Some(Kind::ContractSigned(_)) => "ContractSigned",
            Some(Kind::ContractTerminated(_)) => "ContractTerminated",
            Some(Kind::ChargeScheduled(_)) => "ChargeScheduled",
            Some(Kind::ChargeSucceeded(_)) => "ChargeSucceeded",
            Some(Kind::ChargeFailed(_)) => "ChargeFailed",
            Some(Kind::ChargeRejected(_)) => "ChargeRejected",
            Some(Kind::NoticeRecorded(_)) => "NoticeRecorded",
            Some(Kind::ContractModified(_)) => "ContractModified",
            Some(Kind::ContractSuspended(_)) => "ContractSuspended",
            Some(Kind::ContractResumed(_)) => "ContractResumed",
            Some(Kind::ContractExpired(_)) => "ContractExpired",
            Some(Kind::ContractZombieFlagged(_)) => "ContractZombieFlagged",
            Some(Kind::MerchantApplied(_)) => "MerchantApplied",
            Some(Kind::MerchantDocumentFiled(_)) => "MerchantDocumentFiled",
            Some(Kind::MerchantReviewed(_)) => "MerchantReviewed",
            Some(Kind::ApiKeyIssued(_)) => "ApiKeyIssued",
            Some(Kind::ApiKeyRevoked(_)) => "ApiKeyRevoked",
            Some(Kind::PlanCreated(_)) => "PlanCreated",
            Some(Kind::SigningSessionOpened(_)) => "SigningSessionOpened",
            Some(Kind::SigningStepRecorded(_)) => "SigningStepRecorded",
            Some(Kind::ChargeRetryScheduled(_)) => "ChargeRetryScheduled",
            Some(Kind::PreDebitNoticeIssued(_)) => "PreDebitNoticeIssued",
            Some(Kind::UsageRecorded(_)) => "UsageRecorded",
            Some(Kind::ChargeAttemptStarted(_)) => "ChargeAttemptStarted",
            Some(Kind::RefundRequested(_)) => "RefundRequested",
            Some(Kind::RefundSucceeded(_)) => "RefundSucceeded",
            Some(Kind::RefundFailed(_)) => "RefundFailed",
            Some(Kind::ProviderContractChanged(_)) => "ProviderContractChanged",
            Some(Kind::NoticeDeliveryRecorded(_)) => "NoticeDeliveryRecorded",
            Some(Kind::NoticeOpened(_)) => "NoticeOpened",
            Some(Kind::NoticeConverted(_)) => "NoticeConverted",
            Some(Kind::NotifierSettingsSet(_)) => "NotifierSettingsSet",
            Some(Kind::NoticeTemplateSet(_)) => "NoticeTemplateSet",
            Some(Kind::WebhookEndpointCreated(_)) => "WebhookEndpointCreated",
            Some(Kind::WebhookEndpointUpdated(_)) => "WebhookEndpointUpdated",
            Some(Kind::WebhookEndpointDeleted(_)) => "WebhookEndpointDeleted",
            Some(Kind::WebhookSecretRotated(_)) => "WebhookSecretRotated",
            Some(Kind::WebhookEndpointDisabled(_)) => "WebhookEndpointDisabled",
            Some(Kind::ContractExpiring(_)) => "ContractExpiring",
            Some(Kind::VerificationCodeIssued(_)) => "VerificationCodeIssued",
            Some(Kind::SettlementBatchClosed(_)) => "SettlementBatchClosed",
            Some(Kind::FeeRateSet(_)) => "FeeRateSet",
            Some(Kind::SplitRulesSet(_)) => "SplitRulesSet",
            Some(Kind::MerchantReviewOpened(_)) => "MerchantReviewOpened",
            Some(Kind::MerchantReviewResolved(_)) => "MerchantReviewResolved",
            Some(Kind::StatementReconciled(_)) => "StatementReconciled",
            Some(Kind::DiscrepancyFound(_)) => "DiscrepancyFound",
            Some(Kind::DiscrepancyEscalated(_)) => "DiscrepancyEscalated",
            Some(Kind::DiscrepancyResolved(_)) => "DiscrepancyResolved",
            Some(Kind::ProfitSharingEnded(_)) => "ProfitSharingEnded",
            Some(Kind::ChargeHeld(_)) => "ChargeHeld",
            Some(Kind::ChargeHoldReleased(_)) => "ChargeHoldReleased",
            Some(Kind::RiskRuleSet(_)) => "RiskRuleSet",
            Some(Kind::ComplaintFiled(_)) => "ComplaintFiled",
            Some(Kind::ComplaintAnswered(_)) => "ComplaintAnswered",
            Some(Kind::ComplaintDeadlineMissed(_)) => "ComplaintDeadlineMissed",
            Some(Kind::CreditScoreChanged(_)) => "CreditScoreChanged",
            Some(Kind::ChargingFreezeChanged(_)) => "ChargingFreezeChanged",
            None => "Unknown",
        }
    }
}
