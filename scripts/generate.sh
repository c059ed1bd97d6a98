#!/usr/bin/env bash
# The one generate step: Prisma client, then the printed schema, then the SDK's types.
set -euo pipefail
cd "$(dirname "$0")/.."
# `prisma generate` only checks that a schema engine binary exists; none can be downloaded here.
PRISMA_SCHEMA_ENGINE_BINARY="$PWD/scripts/schema-engine-stub.sh" PRISMA_HIDE_UPDATE_MESSAGE=1 \
  pnpm exec prisma generate --no-hints >/dev/null
pnpm exec tsx scripts/print-schema.ts
pnpm exec graphql-codegen --config packages/sdk/codegen.ts >/dev/null
pnpm exec tsx scripts/print-error-codes.ts >/dev/null
pnpm --filter @credit-billing/sdk run build >/dev/null
echo "generated: prisma client, packages/schema (schema.graphql, schema.json), SDK types, error codes and build"
