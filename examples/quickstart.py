#!/usr/bin/env python3
"""The README's Quickstart as a Python gRPC client, against a platform started with

    autodebit run --test-clock --operator-key op-secret --decline-basis-points 0

Run it as `AUTODEBIT_OPERATOR_KEY=op-secret python3 examples/quickstart.py` after
`pip install grpcio grpcio-tools` (AUTODEBIT_ADDR, default 127.0.0.1:50051, says where the
platform listens). The stubs are generated from proto/ at start. It exits non-zero at the first
step that fails or answers other than expected.
"""
import os, re, sys, tempfile, time, urllib.parse, urllib.request
from importlib.resources import files
from pathlib import Path

import grpc
from google.protobuf import json_format
from grpc_tools import protoc

PROTO = Path(__file__).resolve().parent.parent / "proto"
OUT = tempfile.mkdtemp()
if protoc.main(["protoc", f"-I{PROTO}", f"-I{files('grpc_tools') / '_proto'}", f"--python_out={OUT}",
                f"--grpc_python_out={OUT}", *map(str, PROTO.rglob("*.proto"))]) != 0:
    sys.exit("protoc could not compile proto/")
sys.path.insert(0, OUT)
from autodebit.admin.v1 import admin_pb2 as admin, admin_pb2_grpc as admin_grpc
from autodebit.analytics.v1 import analytics_pb2 as analytics, analytics_pb2_grpc as analytics_grpc
from autodebit.contracts.v1 import contracts_pb2 as contracts, contracts_pb2_grpc as contracts_grpc
from autodebit.notifier.v1 import notifier_pb2 as notifier, notifier_pb2_grpc as notifier_grpc

channel = grpc.insecure_channel(os.environ.get("AUTODEBIT_ADDR", "127.0.0.1:50051"))
OP = os.environ["AUTODEBIT_OPERATOR_KEY"]


def call(method, request, body, key=None):
    """Calls `method` with `body` (the README's JSON) as `request`; returns the answer as JSON."""
    metadata = [("authorization", f"Bearer {key}")] if key else []
    answer = method(json_format.ParseDict(body, request()), metadata=metadata)
    return json_format.MessageToDict(answer)


def until(what, check, *args):
    """Calls until `check` accepts the answer (the followers are asynchronous)."""
    for _ in range(200):
        answer = call(*args)
        if check(answer):
            return answer
        time.sleep(0.1)
    sys.exit(f"no {what} after 20 s; the last answer: {answer}")


merchants = contracts_grpc.MerchantsServiceStub(channel)
plans = contracts_grpc.PlansServiceStub(channel)
signing = contracts_grpc.ContractsServiceStub(channel)

# 1. An enterprise applies (no key needed); 2. an operator approves it: the merchant's key.
docs = [("BUSINESS_LICENCE", "a", "licence"), ("LEGAL_REPRESENTATIVE_ID", "b", "id"),
        ("CORPORATE_BANK_ACCOUNT", "c", "bank")]
applied = call(merchants.ApplyMerchant, contracts.ApplyMerchantRequest, {
    "legal_name": "示例视频科技有限公司", "credit_code": "91330100MA2XXXXX1X",
    "entity": "ENTITY_KIND_ENTERPRISE", "industry": "membership", "merchant_type": "MERCHANT_TYPE_OTHER",
    "contact_email": "ops@example.cn",
    "documents": [{"kind": f"DOCUMENT_KIND_{k}", "sha256": c * 64, "location": f"s3://docs/{f}.pdf"}
                  for k, c, f in docs]})
m = applied["merchant"]["merchantId"]
call(merchants.ReviewMerchant, contracts.ReviewMerchantRequest,
     {"merchant_id": m, "action": "REVIEW_ACTION_START"}, OP)
mk = call(merchants.ReviewMerchant, contracts.ReviewMerchantRequest,
          {"merchant_id": m, "action": "REVIEW_ACTION_APPROVE"}, OP)["apiKey"]

# 3. A monthly plan of at most 19.90 CNY a charge; 4. a signing session for payer-42.
plan = call(plans.CreatePlan, contracts.CreatePlanRequest, {"terms": {
    "service_name": "视频会员", "charge_mode": "CHARGE_MODE_FIXED_CYCLE", "cycle": "CYCLE_MONTHLY",
    "amount_type": "AMOUNT_TYPE_FIXED", "amount": {"minor_units": 1990, "currency": "CNY"},
    "per_charge_cap": {"minor_units": 1990, "currency": "CNY"},
    "service_period_days": 365, "validity_days": 395, "retry_schedule_hours": [6, 24]}}, mk)["plan"]["planId"]
session = call(signing.CreateSigningSession, contracts.CreateSigningSessionRequest, {
    "plan_id": plan, "payer_id": "payer-42", "channel": "SIGNING_CHANNEL_H5", "device_id": "phone-1",
    "client_ip": "192.0.2.10", "return_url": "https://example.cn/done"}, mk)["session"]

# 5. What the payer's browser does: open the page, tick the agreement, confirm with the code.
url = session["authorizationUrl"]
code = re.search(r'id="code-hint">(\d+)<', urllib.request.urlopen(url).read().decode()).group(1)
for step, form in (("tick", {"agree": "yes"}), ("confirm", {"code": code})):
    urllib.request.urlopen(f"{url}/{step}", urllib.parse.urlencode(form).encode())
signed = call(signing.GetSigningSession, contracts.GetSigningSessionRequest,
              {"session_id": session["sessionId"]}, mk)["session"]
assert signed["state"] == "SIGNING_STATE_CONFIRMED", signed
ct = signed["contractId"]

# 6. A month on: the pre-debit notice, then the charge.
call(admin_grpc.AdminServiceStub(channel).AdvanceClock, admin.AdvanceClockRequest, {"seconds": 2678400}, OP)
until("successful charge", lambda s: s.get("chargesSucceeded") == "1",
      analytics_grpc.AnalyticsServiceStub(channel).GetSummary, analytics.GetSummaryRequest, {}, mk)
notices = until("charge notice", lambda n: len(n.get("notices", [])) == 3,
                notifier_grpc.NotifierServiceStub(channel).ListNotices, notifier.ListNoticesRequest,
                {"contract_id": ct}, mk)["notices"]
kinds = sorted(n["kind"] for n in notices)
assert kinds == ["NOTICE_KIND_CHARGE_SUCCEEDED", "NOTICE_KIND_CONTRACT_SIGNED", "NOTICE_KIND_PRE_DEBIT"], kinds
print(f"quickstart.py: merchant {m} signed contract {ct} for payer-42 and charged it once")
