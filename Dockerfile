# syntax=docker/dockerfile:1
# Custos FHIR R4 server.
#   docker build -t custos .
#   docker run -p 8080:8080 -v custos-data:/data custos
# The FHIR base is http://localhost:8080/fhir (set BASE_URL to the public URL behind a proxy).
# DATA_DIR (/data) holds the database and, unless CUSTOS_MASTER_KEY is set, the generated
# master key (keys/master.key): keep the volume, and back it up, or the data is unreadable.
# /healthz (liveness), /readyz (readiness) and /metrics are outside the FHIR base; the server
# listens on 0.0.0.0 here, so /metrics answers a scraper in another container only with
# METRICS_TOKEN set (it serves loopback clients only otherwise).

# Node 24 LTS (supported until April 2028); Node 20 reached end of life in April 2026.
# Both stages must use the same image: better-sqlite3's native module is built for its Node ABI.
#   docker build --build-arg NODE_IMAGE=node:22-bookworm-slim -t custos .   (Node 22 LTS)
ARG NODE_IMAGE=node:24-bookworm-slim

# ---- build: compile TypeScript, build native modules, then drop dev dependencies ----
FROM ${NODE_IMAGE} AS build
# better-sqlite3 falls back to compiling from source when no prebuilt binary can be fetched.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# `npm ci` runs the `prepare` script (npm run build -> tsc + contracts + portal), so the sources must be present.
# NODE_ENV is deliberately not production here: the build needs the dev dependencies (typescript).
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
# The build also compiles the Solidity contracts (solc-js) into dist/contracts.
COPY contracts ./contracts
COPY scripts ./scripts
# The patient portal (Vite) is built into dist/web and served at /portal/.
COPY web ./web
RUN npm ci --no-audit --no-fund \
 && npm prune --omit=dev --no-audit --no-fund \
 && test -f dist/cli.js

# ---- runtime ----
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    DATA_DIR=/data
WORKDIR /app
# Application files stay owned by root (read-only for the service user); only /data is writable.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY openapi ./openapi
# The official image has an unprivileged `node` user (uid 1000).
RUN mkdir -p /data && chown node:node /data && chmod 700 /data
USER node
VOLUME /data
EXPOSE 8080
# Liveness only (/healthz). The first start makes keys and, with the embedded chain, deploys the
# contracts, hence the long start period. Orchestrators should probe /readyz for readiness.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/healthz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# The same as `npm start`; node is PID 1 and handles SIGTERM/SIGINT itself (graceful close).
CMD ["node", "dist/cli.js", "serve"]
