#!/bin/sh
# Prisma's CLI only checks that its native schema engine exists before `generate`; the engine is
# never run for it. Migrations go through scripts/migrate.ts (the WASM engine) instead.
echo "the native schema engine is not used here; see scripts/migrate.ts" >&2
exit 1
