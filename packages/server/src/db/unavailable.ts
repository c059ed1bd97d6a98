/**
 * Whether an error means "the database could not be asked or could not answer", as opposed to a bug:
 * a refused, reset or timed-out connection, a server shutting down or starting up, a pool with no
 * connection to give. Such a request may or may not have committed, so it answers UNAVAILABLE
 * (retryable with the same idempotency key, which makes the retry safe) instead of
 * INTERNAL_SERVER_ERROR. Errors arrive wrapped differently through pg, Prisma's driver adapter and
 * Prisma's client, so the whole chain (cause, driver adapter error) is inspected.
 */

/** Node's socket errors. */
const SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/**
 * PostgreSQL's: connection exceptions (class 08), operator intervention (57P01 admin shutdown,
 * 57P02 crash shutdown, 57P03 cannot connect now), too many connections (53300).
 */
const POSTGRES_CODES = /^(08\d{3}|08P01|57P0[123]|53300)$/;

/** Prisma's: cannot reach (P1001), timed out (P1002, P1008), connection closed (P1017), no pooled connection in time (P2024). */
const PRISMA_CODES = new Set(['P1001', 'P1002', 'P1008', 'P1017', 'P2024']);

/** Prisma's driver adapter error kinds. */
const ADAPTER_KINDS = new Set(['DatabaseNotReachable', 'ConnectionClosed', 'SocketTimeout', 'TooManyConnections']);

/** pg's own errors carry no code, only these messages. */
const MESSAGES =
  /Connection terminated|connection error and is not queryable|timeout exceeded when trying to connect|Can't reach database server|Server has closed the connection|terminating connection due to|the database system is (starting up|shutting down|in recovery mode)|Connection is closed|Client was closed and is not queryable/i;

export function isDatabaseUnavailable(error: unknown): boolean {
  const seen = new Set<unknown>();
  const visit = (value: unknown, depth: number): boolean => {
    if (!value || typeof value !== 'object' || seen.has(value) || depth > 6) return false;
    seen.add(value);
    const fields = value as { code?: unknown; kind?: unknown; message?: unknown; cause?: unknown; meta?: unknown; originalCode?: unknown };
    if (typeof fields.code === 'string' && (SOCKET_CODES.has(fields.code) || POSTGRES_CODES.test(fields.code) || PRISMA_CODES.has(fields.code))) return true;
    if (typeof fields.originalCode === 'string' && POSTGRES_CODES.test(fields.originalCode)) return true;
    if (typeof fields.kind === 'string' && ADAPTER_KINDS.has(fields.kind)) return true;
    if (typeof fields.message === 'string' && MESSAGES.test(fields.message)) return true;
    const meta = fields.meta as { driverAdapterError?: unknown } | undefined;
    return visit(fields.cause, depth + 1) || visit(meta?.driverAdapterError, depth + 1) || visit(meta, depth + 1);
  };
  return visit(error, 0);
}
