import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { BillingError, ErrorCode, invalidInput } from '../domain/errors.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import type { Actor } from './access.ts';
import { authenticateSession, isSessionToken } from './sessionTokens.ts';

export type ApiKeyRole = 'ADMIN' | 'ACCOUNT' | 'SEAT';

export interface ApiKeyRecord {
  id: string;
  name: string | null;
  role: ApiKeyRole;
  accountId: string | null;
  seatId: string | null;
  prefix: string;
  createdAt: Date;
  revokedAt: Date | null;
}

/** Lookups go by this many leading characters of the secret; it is also what a person sees. */
const PREFIX_LENGTH = 12;
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

export function randomToken(length: number): string {
  const bytes = randomBytes(length * 2);
  let token = '';
  // Rejection sampling keeps every character equally likely.
  for (const byte of bytes) {
    if (byte < 248) token += ALPHABET[byte % 62];
    if (token.length === length) return token;
  }
  return token + randomToken(length - token.length);
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/**
 * Our keys are found by their visible start. A key chosen by the operator (ADMIN_API_KEY) has no
 * such structure, so it is found by a digest of it instead: two such keys cannot collide on a
 * shared beginning.
 */
export function prefixOf(secret: string): string {
  return /^cbk_[A-Za-z0-9]{8}_/.test(secret) ? secret.slice(0, PREFIX_LENGTH) : `ext_${hashSecret(secret).slice(0, 16)}`;
}

/** `cbk_` + 8 characters (the visible prefix) + `_` + 32 secret characters: 190 bits of entropy. */
export function generateSecret(): string {
  return `cbk_${randomToken(8)}_${randomToken(32)}`;
}

function toRecord(row: {
  id: string;
  name: string | null;
  role: ApiKeyRole;
  accountId: string | null;
  seatId: string | null;
  prefix: string;
  createdAt: Date;
  revokedAt: Date | null;
}): ApiKeyRecord {
  return {
    id: row.id,
    name: row.name,
    role: row.role,
    accountId: row.accountId,
    seatId: row.seatId,
    prefix: row.prefix,
    createdAt: row.createdAt,
    revokedAt: row.revokedAt,
  };
}

/**
 * Resolves a bearer secret to the actor it stands for, or null. The row is found by the prefix and
 * the hashes are compared in constant time, so response time says nothing about how close a guess was.
 */
export async function authenticate(prisma: PrismaClient, secret: string): Promise<Actor | null> {
  if (secret.length < 16 || secret.length > 256) return null;
  const row = await prisma.apiKey.findUnique({ where: { prefix: prefixOf(secret) } });
  if (!row || row.revokedAt) return null;
  const expected = Buffer.from(row.secretHash, 'hex');
  const actual = Buffer.from(hashSecret(secret), 'hex');
  if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) return null;
  if (row.role === 'ADMIN') return { role: 'ADMIN', keyId: row.id };
  if (!row.accountId) return null;
  if (row.role === 'ACCOUNT') return { role: 'ACCOUNT', keyId: row.id, accountId: row.accountId };
  if (!row.seatId) return null;
  return { role: 'SEAT', keyId: row.id, accountId: row.accountId, seatId: row.seatId };
}

/** Verified keys remembered at most; beyond, the oldest are forgotten first. */
const MAX_CACHED_KEYS = 10_000;

/**
 * `authenticate` with the verified keys remembered for `ttlMs`, so that a busy caller costs no
 * lookup per request. Only keys that authenticated are remembered (by their digest, never the
 * secret); a revocation anywhere clears them all (`forgetAll`, through the event bus across
 * instances), so a revoked key stops working at once.
 */
export class ApiKeyAuthenticator {
  readonly #verified = new Map<string, { actor: Actor; until: number }>();
  /** Bumped by every revocation: a lookup that started before one must not be remembered. */
  #generation = 0;

  constructor(
    private readonly prisma: PrismaClient,
    private readonly ttlMs: number,
  ) {}

  /** An API key or a session token (`cbs_…`, remembered no longer than it lives). */
  async authenticate(secret: string): Promise<Actor | null> {
    const lookUp = async (): Promise<{ actor: Actor; expiresAt: number } | null> => {
      if (isSessionToken(secret)) {
        const session = await authenticateSession(this.prisma, secret, new Date());
        return session && { actor: session.actor, expiresAt: session.expiresAt.getTime() };
      }
      const actor = await authenticate(this.prisma, secret);
      return actor && { actor, expiresAt: Number.POSITIVE_INFINITY };
    };
    if (this.ttlMs <= 0) return (await lookUp())?.actor ?? null;
    const digest = hashSecret(secret);
    const known = this.#verified.get(digest);
    if (known && known.until > Date.now()) return known.actor;
    const generation = this.#generation;
    const found = await lookUp();
    // A revocation while the lookup was under way may have made its answer stale: not remembered.
    if (found && generation === this.#generation) {
      this.#verified.delete(digest);
      if (this.#verified.size >= MAX_CACHED_KEYS) this.#verified.delete(this.#verified.keys().next().value as string);
      this.#verified.set(digest, { actor: found.actor, until: Math.min(Date.now() + this.ttlMs, found.expiresAt) });
    }
    return found?.actor ?? null;
  }

  forgetAll(): void {
    this.#generation += 1;
    this.#verified.clear();
  }
}

export interface CreateApiKeyCommand {
  role: ApiKeyRole;
  accountId?: string | null;
  seatId?: string | null;
  name?: string | null;
}

/**
 * Issues a key; the secret is returned once and only its hash is kept. The operator issues any key;
 * an ACCOUNT key issues ACCOUNT and SEAT keys for its own account (a back end minting keys for its
 * front ends); a SEAT key issues none.
 */
export async function createApiKey(
  tx: Tx,
  clock: Clock,
  actor: Actor,
  command: CreateApiKeyCommand,
): Promise<{ apiKey: ApiKeyRecord; secret: string }> {
  if (actor.role === 'SEAT') throw new BillingError(ErrorCode.FORBIDDEN, 'a SEAT key cannot create keys');
  if (actor.role === 'ACCOUNT' && command.role === 'ADMIN') {
    throw new BillingError(ErrorCode.FORBIDDEN, 'an ACCOUNT key cannot create ADMIN keys');
  }
  const name = command.name?.trim() || null;
  if (name && (name.length > 200 || name.includes('\u0000'))) throw invalidInput('name must be at most 200 characters, without NUL', 'name');
  let accountId: string | null = null;
  let seatId: string | null = null;
  if (command.role !== 'ADMIN') {
    if (!command.accountId) throw invalidInput(`a ${command.role} key needs accountId`, 'accountId');
    if (actor.role === 'ACCOUNT' && actor.accountId !== command.accountId) {
      throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${command.accountId} not found`);
    }
    const account = await tx.account.findUnique({ where: { id: command.accountId }, select: { id: true } });
    if (!account) throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${command.accountId} not found`);
    accountId = account.id;
    if (command.role === 'SEAT') {
      if (!command.seatId) throw invalidInput('a SEAT key needs seatId', 'seatId');
      const seat = await tx.seat.findFirst({ where: { id: command.seatId, accountId, removedAt: null } });
      if (!seat) throw new BillingError(ErrorCode.SEAT_NOT_FOUND, `seat ${command.seatId} not found in this account`);
      seatId = seat.id;
    } else if (command.seatId) {
      throw invalidInput('seatId is only for SEAT keys', 'seatId');
    }
  } else if (command.accountId || command.seatId) {
    throw invalidInput('an ADMIN key belongs to no account', 'accountId');
  }
  const secret = generateSecret();
  const row = await tx.apiKey.create({
    data: { role: command.role, accountId, seatId, name, prefix: prefixOf(secret), secretHash: hashSecret(secret), createdAt: clock.now() },
  });
  return { apiKey: toRecord(row), secret };
}

export async function revokeApiKey(tx: Tx, clock: Clock, actor: Actor, id: string): Promise<ApiKeyRecord> {
  const row = await tx.apiKey.findUnique({ where: { id } });
  const visible = row && (actor.role === 'ADMIN' || (actor.role === 'ACCOUNT' && row.accountId === actor.accountId));
  if (actor.role === 'SEAT') throw new BillingError(ErrorCode.FORBIDDEN, 'a SEAT key cannot revoke keys');
  if (!row || !visible) throw new BillingError(ErrorCode.API_KEY_NOT_FOUND, `API key ${id} not found`);
  if (row.revokedAt) return toRecord(row);
  return toRecord(await tx.apiKey.update({ where: { id }, data: { revokedAt: clock.now() } }));
}

/**
 * Replaces a key by a new one with the same role, account, seat and name, and revokes it, in one
 * transaction. Only one rotation of a key can win: the revocation is conditional on it being live.
 */
export async function rotateApiKey(tx: Tx, clock: Clock, actor: Actor, id: string): Promise<{ apiKey: ApiKeyRecord; secret: string; replaced: ApiKeyRecord }> {
  if (actor.role === 'SEAT') throw new BillingError(ErrorCode.FORBIDDEN, 'a SEAT key cannot rotate keys');
  const row = await tx.apiKey.findUnique({ where: { id } });
  if (!row || (actor.role === 'ACCOUNT' && row.accountId !== actor.accountId)) {
    throw new BillingError(ErrorCode.API_KEY_NOT_FOUND, `API key ${id} not found`);
  }
  const now = clock.now();
  const revoked = await tx.apiKey.updateMany({ where: { id, revokedAt: null }, data: { revokedAt: now } });
  if (revoked.count !== 1) throw invalidInput(`API key ${id} is revoked: issue a new one with createApiKey`, 'id');
  const secret = generateSecret();
  const created = await tx.apiKey.create({
    data: { role: row.role, accountId: row.accountId, seatId: row.seatId, name: row.name, prefix: prefixOf(secret), secretHash: hashSecret(secret), createdAt: now },
  });
  return { apiKey: toRecord(created), secret, replaced: toRecord({ ...row, revokedAt: now }) };
}

export async function findApiKey(prisma: PrismaClient | Tx, id: string): Promise<ApiKeyRecord | null> {
  const row = await prisma.apiKey.findUnique({ where: { id } });
  return row ? toRecord(row) : null;
}

/**
 * Keeps the operator key named by ADMIN_API_KEY usable: created on first start, left alone after
 * (revoking it in the database is respected until the variable changes).
 */
export async function ensureOperatorKey(prisma: PrismaClient, secret: string, now: Date): Promise<void> {
  const prefix = prefixOf(secret);
  // Instances starting together may all create it: the unique prefix lets exactly one insert win.
  await prisma.apiKey.createMany({
    data: [{ role: 'ADMIN', name: 'ADMIN_API_KEY', prefix, secretHash: hashSecret(secret), createdAt: now }],
    skipDuplicates: true,
  });
  const stored = await prisma.apiKey.findUniqueOrThrow({ where: { prefix } });
  if (stored.secretHash !== hashSecret(secret) || stored.role !== 'ADMIN') {
    throw new Error('ADMIN_API_KEY collides with another key: choose another');
  }
}

/**
 * A first start with no operator key and no ADMIN_API_KEY would leave nobody able to do anything:
 * issue one operator key and hand it back once (the caller shows it and keeps it beside the data).
 */
export async function issueFirstOperatorKey(prisma: PrismaClient, now: Date): Promise<string | null> {
  const operators = await prisma.apiKey.count({ where: { role: 'ADMIN', revokedAt: null } });
  if (operators > 0) return null;
  const secret = generateSecret();
  await prisma.apiKey.create({
    data: { role: 'ADMIN', name: 'first-run operator key', prefix: prefixOf(secret), secretHash: hashSecret(secret), createdAt: now },
  });
  return secret;
}
