#!/usr/bin/env bash
# The README's Quickstart, from a merchant's application to a signed contract and its first
# charge, against a freshly started platform (its merchant applies once):
#
#   autodebit run --test-clock --operator-key op-secret --decline-basis-points 0
#
# Run it as `AUTODEBIT_OPERATOR_KEY=op-secret examples/quickstart.sh` with `autodebit`, jq and
# curl on PATH (AUTODEBIT_ADDR, default 127.0.0.1:50051, says where the platform listens). It
# stops, non-zero, at the first step that fails or answers other than expected.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# 1. An enterprise applies (no key needed): licence, legal representative's ID, bank account.
M=$(autodebit call ApplyMerchant '{
  "legal_name": "示例视频科技有限公司", "credit_code": "91330100MA2XXXXX1X",
  "entity": "ENTITY_KIND_ENTERPRISE", "industry": "membership", "merchant_type": "MERCHANT_TYPE_OTHER",
  "contact_email": "ops@example.cn",
  "documents": [
    {"kind": "DOCUMENT_KIND_BUSINESS_LICENCE",       "sha256": "'$(printf a%.0s {1..64})'", "location": "s3://docs/licence.pdf"},
    {"kind": "DOCUMENT_KIND_LEGAL_REPRESENTATIVE_ID", "sha256": "'$(printf b%.0s {1..64})'", "location": "s3://docs/id.pdf"},
    {"kind": "DOCUMENT_KIND_CORPORATE_BANK_ACCOUNT",  "sha256": "'$(printf c%.0s {1..64})'", "location": "s3://docs/bank.pdf"}]
}' | jq -r .merchant.merchantId)
[[ $M == mch_* ]] || fail "the application gave no merchant id"

# 2. An operator reviews and approves it; approval returns the merchant's first API key, once.
autodebit call ReviewMerchant --key "$OP" '{"merchant_id": "'$M'", "action": "REVIEW_ACTION_START"}' >/dev/null
MK=$(autodebit call ReviewMerchant --key "$OP" '{"merchant_id": "'$M'", "action": "REVIEW_ACTION_APPROVE"}' |
  jq -r .apiKey)
[[ $MK == adk_key_* ]] || fail "approval gave no API key"

# 3. The merchant creates a deduction plan: monthly, at most 19.90 CNY a charge.
PLAN=$(autodebit call CreatePlan --key "$MK" '{"terms": {
  "service_name": "视频会员", "charge_mode": "CHARGE_MODE_FIXED_CYCLE", "cycle": "CYCLE_MONTHLY",
  "amount_type": "AMOUNT_TYPE_FIXED", "amount": {"minor_units": 1990, "currency": "CNY"},
  "per_charge_cap": {"minor_units": 1990, "currency": "CNY"},
  "service_period_days": 365, "validity_days": 395, "retry_schedule_hours": [6, 24]}}' | jq -r .plan.planId)

# 4. It opens a signing session for a payer and sends them to the authorization page.
SESSION=$(autodebit call CreateSigningSession --key "$MK" '{"plan_id": "'$PLAN'", "payer_id": "payer-42",
  "channel": "SIGNING_CHANNEL_H5", "device_id": "phone-1", "client_ip": "192.0.2.10",
  "return_url": "https://example.cn/done"}')

# 5. The payer opens the page, ticks the agreement and confirms; the contract is signed.
sign_in_browser "$(jq -r .session.authorizationUrl <<<"$SESSION")"
SIGNED=$(autodebit call GetSigningSession --key "$MK" '{"session_id": "'$(jq -r .session.sessionId <<<"$SESSION")'"}')
CT=$(jq -r .session.contractId <<<"$SIGNED")
expect "the session's state" "$(jq -r .session.state <<<"$SIGNED")" SIGNING_STATE_CONFIRMED
expect "the session's steps" "$(jq -c '[.session.steps[].step]' <<<"$SIGNED")" \
  '["SIGNING_STEP_PAGE_VIEWED","SIGNING_STEP_AGREEMENT_TICKED","SIGNING_STEP_CONFIRMED"]'

# 6. A month on: a day before the charge the payer is told of it, then the charge is made.
autodebit call AdvanceClock --key "$OP" '{"seconds": 2678400}' >/dev/null
summary=$(until_true "successful charge" '.chargesSucceeded == "1"' autodebit call GetSummary --key "$MK")
expect "the contracts active" "$(jq -r .contractsActive <<<"$summary")" 1
expect "the charges scheduled" "$(jq -r .chargesScheduled <<<"$summary")" 1
notices=$(until_true "charge notice" '[.notices[].kind] | index("NOTICE_KIND_CHARGE_SUCCEEDED")' \
  autodebit call ListNotices --key "$MK" '{"contract_id": "'$CT'"}')
expect "the notices" "$(jq -c '[.notices[].kind] | sort' <<<"$notices")" \
  '["NOTICE_KIND_CHARGE_SUCCEEDED","NOTICE_KIND_CONTRACT_SIGNED","NOTICE_KIND_PRE_DEBIT"]'
expect "the notices' recipient" "$(jq -r '[.notices[].recipient] | unique | join(",")' <<<"$notices")" payer-42

# 7. On the next working day the charge is settled: 19.90 CNY less the 0.6% fee. A day at a time,
#    since a weekend or a holiday may come first.
batches='{"batches": []}'
for _ in $(seq 12); do
  autodebit call AdvanceClock --key "$OP" '{"seconds": 86400}' >/dev/null
  for _ in $(seq 30); do
    batches=$(autodebit call ListSettlementBatches --key "$MK")
    [[ $(jq '.batches | length' <<<"$batches") -ge 1 ]] && break 2
    sleep 0.1
  done
done
expect "the batch's gross, fees and net" "$(jq -c '[.batches[0] | .gross, .fees, .net]' <<<"$batches")" \
  '["1990","12","1978"]'

# 8. Every succeeded charge has a receipt: HTML, or PDF at …/pdf, for the merchant's key and,
#    through the signed payerUrl, for the payer.
CHARGE=$(autodebit call ListNotices --key "$MK" '{"contract_id": "'$CT'"}' |
  jq -r '.notices[] | select(.kind == "NOTICE_KIND_CHARGE_SUCCEEDED") | .chargeId')
receipts=$(autodebit call ListReceipts --key "$MK" '{"charge_id": "'$CHARGE'"}')
expect "the receipt's number and VAT" "$(jq -c '[.receipts[0] | .number, .tax.minorUnits]' <<<"$receipts")" '["1","113"]'
receipt=$(curl -sf -H "Authorization: Bearer $MK" "$(jq -r '.receipts[0].url' <<<"$receipts")")
[[ $receipt == *"19.90 CNY"* ]] || fail "the receipt page shows no amount"
curl -sf "$(jq -r '.receipts[0].payerUrl' <<<"$receipts")" >/dev/null || fail "the payer's link does not open"

# 9. The charge's day (in Beijing) reconciled against the provider's daily statement (here the
#    simulator's): each line matched against the books, or typed as a discrepancy with its deadline.
DAY=$(autodebit call ListReceipts --key "$MK" '{"charge_id": "'$CHARGE'"}' |
  jq -r '(.receipts[0].atMs | tonumber) / 1000 + 28800 | floor | strftime("%Y-%m-%d")')
reconciled=$(autodebit reconcile --key "$OP" --merchant "$M" --date "$DAY")
expect "the statement's lines and those matched" "$(jq -c '[.report | .lines, .matched, .source]' <<<"$reconciled")" \
  '["1","1","simulator"]'
expect "the discrepancies" "$(jq -c '.report.discrepancies // []' <<<"$reconciled")" '[]'

echo "quickstart: merchant $M signed contract $CT for payer-42 and charged it once"
