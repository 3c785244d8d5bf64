#!/usr/bin/env bash
# A walk through the API with curl: register two people, log in, deposit, transfer, read the history.
# Usage: scripts/demo.sh [BASE_URL]   (default http://127.0.0.1:8000, e.g. with `make run` in another terminal)
# Needs curl and python3 (which only pulls fields out of the JSON answers); each run makes new users.
set -euo pipefail

BASE="${1:-${WALLET_URL:-http://127.0.0.1:8000}}"
API="$BASE/api/v1"
RUN="$(date +%s)$RANDOM"
PASSWORD="demo-password-$RUN"
HEADERS=$(mktemp)
trap 'rm -f "$HEADERS"' EXIT

# call METHOD PATH [BODY] [extra curl args...]: prints the request and the answer's status; sets $BODY and
# $STATUS, and leaves the answer's headers in $HEADERS.
call() {
  local method=$1 path=$2 data=${3:-}
  shift $(($# < 3 ? $# : 3))
  local args=(-s -X "$method" "$API$path" -D "$HEADERS" -w '\n%{http_code}' "$@")
  [ -n "${TOKEN:-}" ] && args+=(-H "Authorization: Bearer $TOKEN")
  [ -n "$data" ] && args+=(-H 'Content-Type: application/json' -d "$data")
  local out
  out=$(curl "${args[@]}")
  BODY=${out%$'\n'*}
  STATUS=${out##*$'\n'}
  printf '\n$ %s %s\n  -> %s\n' "$method" "$path" "$STATUS"
}

# field EXPR: evaluates a Python expression over the last answer, bound to d.
field() { python3 -c "import json, sys; d = json.loads(sys.argv[1]); print($1)" "$BODY"; }

expect() {
  if [ "$STATUS" != "$1" ]; then
    echo "  unexpected answer: $BODY" >&2
    exit 1
  fi
}

echo "Wallet API demo against $BASE"

TOKEN=
call POST /auth/register "{\"username\": \"alice_$RUN\", \"password\": \"$PASSWORD\"}"
expect 201
echo "  registered $(field 'd["user"]["username"]') with wallet $(field 'd["wallet"]["number"]') ($(field 'd["wallet"]["currency"]'))"

call POST /auth/register "{\"username\": \"bob_$RUN\", \"password\": \"$PASSWORD\"}"
expect 201
echo "  registered $(field 'd["user"]["username"]') with wallet $(field 'd["wallet"]["number"]')"

call POST /auth/login "{\"username\": \"alice_$RUN\", \"password\": \"$PASSWORD\"}"
expect 200
TOKEN=$(field 'd["access_token"]')
echo "  logged in as alice_$RUN; the access token expires in $(field 'd["expires_in"]') s"

call GET /wallets
expect 200
WALLET=$(field 'd["items"][0]["id"]')
echo "  wallet $WALLET holds $(field 'd["items"][0]["balance"]') $(field 'd["items"][0]["currency"]')"

call POST "/wallets/$WALLET/deposit" '{"amount": "50.00", "description": "first deposit"}' \
  -H "Idempotency-Key: demo-deposit-$RUN"
expect 201
echo "  deposited $(field 'd["amount"]') $(field 'd["currency"]'): $(field 'd["status"]')"

call POST "/wallets/$WALLET/deposit" '{"amount": "50.00", "description": "first deposit"}' \
  -H "Idempotency-Key: demo-deposit-$RUN"
expect 201
echo "  header: $(grep -i '^Idempotent-Replayed' "$HEADERS" | tr -d '\r')"
echo "  the same request again (same Idempotency-Key) answers the same transaction $(field 'd["id"]'); nothing moved twice"

call POST /transfers "{\"from_wallet_id\": \"$WALLET\", \"to_username\": \"bob_$RUN\", \"amount\": \"12.50\", \"description\": \"lunch\"}" \
  -H "Idempotency-Key: demo-transfer-$RUN"
expect 201
echo "  sent $(field 'd["amount"]') $(field 'd["currency"]') to $(field 'd["counterparty"]["username"]'): $(field 'd["status"]')"

call POST /transfers "{\"from_wallet_id\": \"$WALLET\", \"to_username\": \"bob_$RUN\", \"amount\": \"1000.00\"}"
expect 400
echo "  sending 1000.00 is refused: $(field 'd["code"]') - $(field 'd["error"]')"

call GET "/transactions?limit=10"
expect 200
echo "  history, newest first:"
field '"\n".join("    %s  %-10s %-4s %8s %s  %-9s %s" % (t["created_at"], t["type"], t["direction"], t["amount"], t["currency"], t["status"], t["description"] or "") for t in d["items"])'

call GET "/wallets/$WALLET/balance"
expect 200
echo "  balance: $(field 'd["balance"]') $(field 'd["currency"]')"
