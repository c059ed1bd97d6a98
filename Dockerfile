# The API server: one stateless instance per container (see README, "Running in production").
FROM node:20-slim

# The pnpm the lockfile was written with, through Node's own corepack, kept where the unprivileged
# user finds it (so nothing is downloaded when the container starts).
ENV COREPACK_HOME=/usr/local/share/corepack COREPACK_ENABLE_DOWNLOAD_PROMPT=0
RUN corepack enable && corepack prepare pnpm@12.21.0 --activate && chmod -R a+rX "$COREPACK_HOME"

WORKDIR /app
RUN chown node:node /app
USER node

# Dependencies first, from the manifests alone, so that a code change does not reinstall them.
# NODE_ENV is not production yet: esbuild, tsx, prisma and the code generators are devDependencies that
# `pnpm generate` and `pnpm start` need.
COPY --chown=node:node package.json pnpm-lock.yaml pnpm-workspace.yaml ./
COPY --chown=node:node packages/server/package.json packages/server/
COPY --chown=node:node packages/schema/package.json packages/schema/
COPY --chown=node:node packages/sdk/package.json packages/sdk/
RUN pnpm install --frozen-lockfile

COPY --chown=node:node . .
RUN pnpm generate

ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=4000 \
    DATA_DIR=/app/.data
EXPOSE 4000

# Liveness only: readiness (/readyz) is for the load balancer, which must not restart a container
# because the database is briefly away.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 4000) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# SIGTERM reaches the server through pnpm; it drains for SHUTDOWN_TIMEOUT_MS (25 s), so the
# orchestrator's grace period must be longer (Kubernetes' default is 30 s; `docker stop -t 30`).
STOPSIGNAL SIGTERM
CMD ["pnpm", "start"]
