#!/usr/bin/env bash
# Run the Postman collection with newman against WALLET_URL (see `make postman`): make an admin first, so the
# Admin folder runs too. Exit code is newman's.
set -euo pipefail
cd "$(dirname "$0")/.."

admin="pm_admin_$RANDOM$RANDOM"
export WALLET_ADMIN_PASSWORD="${WALLET_ADMIN_PASSWORD:-pm-admin-$RANDOM$RANDOM$RANDOM}"
.venv/bin/python server.py create-admin "$admin"

exec node_modules/.bin/newman run postman/wallet.postman_collection.json \
  --environment postman/local.postman_environment.json \
  --env-var "baseUrl=$WALLET_URL" \
  --env-var "adminUsername=$admin" \
  --env-var "adminPassword=$WALLET_ADMIN_PASSWORD" \
  --color off --no-insecure-file-read
