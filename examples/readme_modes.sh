#!/usr/bin/env bash
# The README's three ways to charge — usage, event-triggered, hybrid — end to end, after the
# Quickstart (run first, for its merchant and key), against a platform started as
# examples/quickstart.sh says. It stops, non-zero, at the first step that fails or answers
# other than expected.
source "$(dirname "${BASH_SOURCE[0]}")/quickstart.sh"

# charge_of CONTRACT N: its Nth successful charge, once its notice is out.
charge_of() {
  local id succeeded='[.notices[] | select(.kind == "NOTICE_KIND_CHARGE_SUCCEEDED")]'
  id=$(until_true "charge $2 of $1" "$succeeded | length >= $2" \
    autodebit call ListNotices --key "$MK" '{"contract_id": "'"$1"'"}' | jq -r "$succeeded | .[$2 - 1].chargeId")
  autodebit call GetCharge --key "$MK" '{"charge_id": "'"$id"'"}'
}

# Usage: the first 10 minutes of a month free, then 0.50 CNY a minute.
USAGE_PLAN=$(autodebit call CreatePlan --key "$MK" '{"terms": {
  "service_name": "共享充电宝", "charge_mode": "CHARGE_MODE_USAGE", "cycle": "CYCLE_MONTHLY",
  "amount_type": "AMOUNT_TYPE_UP_TO_CAP", "per_charge_cap": {"minor_units": 50000, "currency": "CNY"},
  "service_period_days": 365, "validity_days": 395,
  "usage": {"unit": "minute", "grace_minutes": 60,
            "tiers": [{"up_to": 10, "unit_price": 0}, {"up_to": 0, "unit_price": 50}]}}}' | jq -r .plan.planId)
USAGE_CT=$(sign "$USAGE_PLAN" payer-7 phone-7)
NOW=$(autodebit call GetClock --key "$OP" | jq -r .nowMs)
record() {
  autodebit call RecordUsage --key "$MK" '{"contract_id": "'$USAGE_CT'", "quantity": 42, "unit": "minute",
  "occurred_at_ms": '$NOW', "idempotency_key": "session-8812"}'
}
first=$(record)
expect "the usage's period" "$(jq -r .period <<<"$first")" 1
expect "the same usage again" "$(record | jq -c '[.usageId, .period, .duplicate]')" \
  "$(jq -c '[.usageId, .period, true]' <<<"$first")"
until_true "usage on the schedule" '.schedule.openUsageQuantity == "42"' \
  autodebit call GetSchedule --key "$MK" '{"contract_id": "'$USAGE_CT'"}' >/dev/null

# Event-triggered: a ride ends and is charged at once; the 11th of a day is refused.
RIDES_PLAN=$(autodebit call CreatePlan --key "$MK" '{"terms": {
  "service_name": "共享单车", "charge_mode": "CHARGE_MODE_EVENT_TRIGGERED", "cycle": "CYCLE_MONTHLY",
  "amount_type": "AMOUNT_TYPE_UP_TO_CAP", "per_charge_cap": {"minor_units": 5000, "currency": "CNY"},
  "service_period_days": 365, "validity_days": 395}}' | jq -r .plan.planId)
RIDES_CT=$(sign "$RIDES_PLAN" payer-8 phone-8)
first=$(autodebit call TriggerCharge --key "$MK" '{"contract_id": "'$RIDES_CT'",
  "amount": {"minor_units": 350, "currency": "CNY"},
  "reason": "骑行结束 12 分钟", "idempotency_key": "ride-20261127-0001"}')
expect "the first ride" "$(jq -r .outcome <<<"$first")" TRIGGER_OUTCOME_SCHEDULED
ride() {
  autodebit call TriggerCharge --key "$MK" '{"contract_id": "'$RIDES_CT'",
    "amount": {"minor_units": 350, "currency": "CNY"}, "reason": "骑行结束", "idempotency_key": "ride-'$1'"}'
}
for n in 2 3 4 5 6 7 8 9 10; do
  expect "ride $n" "$(ride $n | jq -r .outcome)" TRIGGER_OUTCOME_SCHEDULED
done
expect "the 11th ride" "$(ride 11 | jq -c '[.outcome, .rule, .detail]')" \
  '["TRIGGER_OUTCOME_REJECTED","daily_count","charge 11 of the day > limit 10"]'
until_true "the first ride's charge" '.charge.state == "CHARGE_STATE_SUCCEEDED"' \
  autodebit call GetCharge --key "$MK" '{"charge_id": "'"$(jq -r .chargeId <<<"$first")"'"}' >/dev/null

# Hybrid: 1,200.00 CNY a year at signing, 100 GB a month included, 2.00 CNY per GB beyond.
HYBRID_PLAN=$(autodebit call CreatePlan --key "$MK" '{"terms": {
  "service_name": "云存储", "charge_mode": "CHARGE_MODE_HYBRID", "cycle": "CYCLE_YEARLY",
  "amount_type": "AMOUNT_TYPE_FIXED", "amount": {"minor_units": 120000, "currency": "CNY"},
  "per_charge_cap": {"minor_units": 200000, "currency": "CNY"}, "first_charge_at_signing": true,
  "service_period_days": 366, "validity_days": 396,
  "usage": {"unit": "GB", "tiers": [{"up_to": 100, "unit_price": 0}, {"up_to": 0, "unit_price": 200}]}}}' |
  jq -r .plan.planId)
HYBRID_CT=$(sign "$HYBRID_PLAN" payer-9 phone-9)
expect "the prepayment" "$(charge_of "$HYBRID_CT" 1 | jq -r .charge.amount.minorUnits)" 120000
autodebit call RecordUsage --key "$MK" '{"contract_id": "'$HYBRID_CT'", "quantity": 130, "unit": "GB",
  "occurred_at_ms": '$NOW', "idempotency_key": "month-1"}' >/dev/null

# A month on, each usage month closes with one charge for its total.
autodebit call AdvanceClock --key "$OP" '{"seconds": 2764800}' >/dev/null
expect "the usage charge (32 minutes at 0.50)" "$(charge_of "$USAGE_CT" 1 | jq -r .charge.amount.minorUnits)" 1600
expect "the hybrid true-up (30 GB at 2.00)" "$(charge_of "$HYBRID_CT" 2 | jq -r .charge.amount.minorUnits)" 6000

# Webhooks: the merchant's receiver verifies every delivery with the standardwebhooks package.
PY=${AUTODEBIT_PYTHON:-$HOME/.cache/autodebit-venv/bin/python}
"$PY" -c 'import standardwebhooks.webhooks' || fail "the webhook example needs python3 with standardwebhooks"
workdir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$workdir"' EXIT
"$PY" "$(dirname "${BASH_SOURCE[0]}")/webhook_receiver.py" "$workdir/secret" "$workdir/port" >"$workdir/received" 2>&1 &
for _ in $(seq 100); do [ -s "$workdir/port" ] && break; sleep 0.1; done
HOOK_URL=http://127.0.0.1:$(cat "$workdir/port")/hooks
HOOK=$(autodebit call CreateWebhookEndpoint --key "$MK" '{"url": "'$HOOK_URL'",
  "event_types": ["contract.signed", "charge.succeeded"]}')
jq -r .secret <<<"$HOOK" > "$workdir/secret"
HOOKED_CT=$(sign "$HYBRID_PLAN" payer-10 phone-10)
for _ in $(seq 200); do grep -q "contract.signed" "$workdir/received" && break; sleep 0.1; done
grep -q "contract.signed.*\"contract_id\": \"$HOOKED_CT\"" "$workdir/received" ||
  fail "no verified contract.signed webhook for $HOOKED_CT: $(cat "$workdir/received")"
if grep -q refused "$workdir/received"; then fail "a webhook did not verify: $(cat "$workdir/received")"; fi
# A host that resolves nowhere (or to a private address) is refused, naming the field.
refused=$(autodebit call CreateWebhookEndpoint --key "$MK" '{"url": "https://hooks.invalid/autodebit",
  "event_types": ["charge.succeeded"]}' 2>&1 || true)
case "$refused" in "INVALID_ARGUMENT: url:"*) ;; *) fail "an unresolvable endpoint was not refused: $refused" ;; esac

# Notices: the merchant's own wording of the charge notice, in Chinese; a placeholder the kind
# does not offer is refused, naming it.
autodebit call SetNoticeTemplate --key "$MK" '{"kind": "NOTICE_KIND_CHARGE_SUCCEEDED", "language": "zh-CN",
  "body": "{service_name}本期已扣款 {amount}，感谢您的支持。账单：{link}"}' >/dev/null
refused=$(autodebit call SetNoticeTemplate --key "$MK" '{"kind": "NOTICE_KIND_CHARGE_SUCCEEDED", "language": "zh-CN",
  "body": "已扣款 {amount}，优惠券 {coupon}"}' 2>&1 || true)
case "$refused" in "INVALID_ARGUMENT: body: unknown placeholder {coupon}"*) ;; *) fail "the template was not refused: $refused" ;; esac

# Analytics (projected in the background, so asked until they have caught up): the merchant's
# own funnel by signing channel, charges by hour of its day, money.
until_true "a signing funnel" '.rows | length > 0' \
  autodebit call GetSigningFunnel --key "$MK" '{"group_by": "FUNNEL_GROUPING_CHANNEL"}' >/dev/null
until_true "charges by hour" '[.rows[] | .succeeded // 0 | tonumber] | add > 0' \
  autodebit call GetChargeStats --key "$MK" '{"group_by": "CHARGE_GROUPING_HOUR_OF_DAY"}' >/dev/null
until_true "revenue" '.rows[0].currency == "CNY" and (.rows[0].gross // 0 | tonumber) > 0' \
  autodebit call GetRevenue --key "$MK" >/dev/null

echo "readme modes: usage, event-triggered and hybrid billed as the README says; webhooks verified; analytics answered"
