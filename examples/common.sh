# Shared by the example scripts: checks that stop the script, waiting for the platform's
# followers, and what a payer's browser does on the authorization page. The commands
# themselves are the README's, word for word (tests/e2e/readme.rs holds them to it).
set -euo pipefail

OP=${AUTODEBIT_OPERATOR_KEY:?set AUTODEBIT_OPERATOR_KEY to the --operator-key the platform runs with}
export AUTODEBIT_ADDR=${AUTODEBIT_ADDR:-127.0.0.1:50051}
for tool in autodebit jq curl; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is needed and not found on PATH" >&2; exit 1; }
done

fail() { echo "$0: $*" >&2; exit 1; }

# expect WHAT ACTUAL WANTED
expect() { [ "$2" = "$3" ] || fail "$1 is '$2', expected '$3'"; }

# until_true WHAT JQ-CONDITION COMMAND…: repeats the command until its answer meets the
# condition (the followers are asynchronous), then prints the answer.
until_true() {
  local what=$1 condition=$2 answer
  shift 2
  for _ in $(seq 200); do
    answer=$("$@")
    if jq -e "$condition" >/dev/null <<<"$answer"; then
      printf '%s\n' "$answer"
      return
    fi
    sleep 0.1
  done
  fail "no $what after 20 s; the last answer: $answer"
}

# sign_in_browser URL: the payer opens the page, ticks the agreement and confirms with the
# credential (the simulator shows its code on the page).
sign_in_browser() {
  local url=$1 code
  code=$(curl -fsS "$url" | sed -n 's/.*id="code-hint">\([0-9]*\)<.*/\1/p')
  [ -n "$code" ] || fail "no credential on $url"
  curl -fsS -o /dev/null -d agree=yes "$url/tick"
  curl -fsS -o /dev/null -d "code=$code" "$url/confirm"
}

# sign PLAN PAYER DEVICE: a signing session on PLAN for PAYER, signed in the browser; prints
# the contract's id.
sign() {
  local session
  session=$(autodebit call CreateSigningSession --key "$MK" '{"plan_id": "'"$1"'", "payer_id": "'"$2"'",
    "channel": "SIGNING_CHANNEL_H5", "device_id": "'"$3"'", "client_ip": "192.0.2.10",
    "return_url": "https://example.cn/done"}')
  sign_in_browser "$(jq -r .session.authorizationUrl <<<"$session")"
  until_true "signed contract" '.session.state == "SIGNING_STATE_CONFIRMED"' \
    autodebit call GetSigningSession --key "$MK" '{"session_id": "'"$(jq -r .session.sessionId <<<"$session")"'"}' |
    jq -r .session.contractId
}
