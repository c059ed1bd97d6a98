import { timingSafeEqual } from 'node:crypto';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { BillingError, ErrorCode, invalidInput } from '../domain/errors.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import type { Actor } from './access.ts';
import { hashSecret, randomToken } from './apiKeys.ts';

/** Minutes a session token lives: at least a few minutes, at most a working day; default an hour. */
export const SESSION_TTL_MINUTES = { min: 5, max: 720, default: 60 } as const;
/** Live (unexpired, unrevoked) tokens an account may hold at once: bounds the rows a key can make. */
export const MAX_LIVE_SESSIONS_PER_ACCOUNT = 1_000;

/** Session tokens start with this, so that they are told from API keys without a lookup. */
const SESSION_PREFIX = 'cbs_';
const PREFIX_LENGTH = 12;

export interface SessionTokenRecord {
  id: string;
  accountId: string;
  seatId: string | null;
  canBuy: boolean;
  prefix: string;
  createdAt: Date;
  expiresAt: Date;
  revokedAt: Date | null;
}

export interface CreateSessionTokenCommand {
  accountId: string;
  seatId?: string | null;
  ttlMinutes?: number | null;
  canBuy?: boolean | null;
}

export function isSessionToken(secret: string): boolean {
  return secret.startsWith(SESSION_PREFIX);
}

function toRecord(row: SessionTokenRecord): SessionTokenRecord {
  const { id, accountId, seatId, canBuy, prefix, createdAt, expiresAt, revokedAt } = row;
  return { id, accountId, seatId, canBuy, prefix, createdAt, expiresAt, revokedAt };
}

/**
 * Issues a token for a browser: the operator for any account, an ACCOUNT key for its own. It reads
 * and follows the account (or only what its seat sees) and, with `canBuy`, buys credit packs through
 * Checkout; it can change nothing else and issue nothing. Times are the real clock's: a token expires
 * for the browser holding it, whatever an account's test clock says.
 */
export async function createSessionToken(
  tx: Tx,
  now: Date,
  actor: Actor,
  command: CreateSessionTokenCommand,
): Promise<{ session: SessionTokenRecord; token: string }> {
  if (actor.session || actor.role === 'SEAT') throw new BillingError(ErrorCode.FORBIDDEN, 'only ADMIN and ACCOUNT keys issue session tokens');
  const ttlMinutes = command.ttlMinutes ?? SESSION_TTL_MINUTES.default;
  if (!Number.isInteger(ttlMinutes) || ttlMinutes < SESSION_TTL_MINUTES.min || ttlMinutes > SESSION_TTL_MINUTES.max) {
    throw invalidInput(`ttlMinutes must be a whole number from ${SESSION_TTL_MINUTES.min} to ${SESSION_TTL_MINUTES.max}`, 'ttlMinutes');
  }
  if (actor.role === 'ACCOUNT' && actor.accountId !== command.accountId) {
    throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${command.accountId} not found`);
  }
  const account = await tx.account.findUnique({ where: { id: command.accountId }, select: { id: true } });
  if (!account) throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${command.accountId} not found`);
  if (command.seatId) {
    const seat = await tx.seat.findFirst({ where: { id: command.seatId, accountId: account.id, removedAt: null }, select: { id: true } });
    if (!seat) throw new BillingError(ErrorCode.SEAT_NOT_FOUND, `seat ${command.seatId} not found in this account`);
  }
  // Expired tokens of the account are of no use to anyone: issuing is where they are cleared.
  await tx.sessionToken.deleteMany({ where: { accountId: account.id, expiresAt: { lt: now } } });
  const live = await tx.sessionToken.count({ where: { accountId: account.id, revokedAt: null } });
  if (live >= MAX_LIVE_SESSIONS_PER_ACCOUNT) {
    throw invalidInput(`the account has ${live} live session tokens, the most allowed: revoke some or let them expire`, 'accountId');
  }
  const token = `${SESSION_PREFIX}${randomToken(8)}_${randomToken(32)}`;
  const row = await tx.sessionToken.create({
    data: {
      accountId: account.id,
      seatId: command.seatId ?? null,
      canBuy: command.canBuy ?? false,
      prefix: token.slice(0, PREFIX_LENGTH),
      secretHash: hashSecret(token),
      createdByKeyId: actor.keyId,
      createdAt: now,
      expiresAt: new Date(now.getTime() + ttlMinutes * 60_000),
    },
  });
  return { session: toRecord(row), token };
}

/** Ends a token at once (the operator, or an ACCOUNT key of its account). Revoking twice is harmless. */
export async function revokeSessionToken(tx: Tx, now: Date, actor: Actor, id: string): Promise<SessionTokenRecord> {
  if (actor.session || actor.role === 'SEAT') throw new BillingError(ErrorCode.FORBIDDEN, 'only ADMIN and ACCOUNT keys revoke session tokens');
  const row = await tx.sessionToken.findUnique({ where: { id } });
  if (!row || (actor.role === 'ACCOUNT' && row.accountId !== actor.accountId)) {
    throw new BillingError(ErrorCode.SESSION_NOT_FOUND, `session token ${id} not found`);
  }
  if (row.revokedAt) return toRecord(row);
  return toRecord(await tx.sessionToken.update({ where: { id }, data: { revokedAt: now } }));
}

/**
 * The actor a session token stands for, with its expiry, or null (unknown, wrong, expired, revoked,
 * or its seat removed). Found by prefix, hashes compared in constant time, as API keys are.
 */
export async function authenticateSession(prisma: PrismaClient, token: string, now: Date): Promise<{ actor: Actor; expiresAt: Date } | null> {
  if (!isSessionToken(token) || token.length < 16 || token.length > 256) return null;
  const row = await prisma.sessionToken.findUnique({ where: { prefix: token.slice(0, PREFIX_LENGTH) } });
  if (!row || row.revokedAt || row.expiresAt <= now) return null;
  const expected = Buffer.from(row.secretHash, 'hex');
  const actual = Buffer.from(hashSecret(token), 'hex');
  if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) return null;
  const session = { id: row.id, canBuy: row.canBuy, expiresAt: row.expiresAt };
  const keyId = `session:${row.id}`;
  if (!row.seatId) return { actor: { role: 'ACCOUNT', keyId, accountId: row.accountId, session }, expiresAt: row.expiresAt };
  const seat = await prisma.seat.findFirst({ where: { id: row.seatId, removedAt: null }, select: { id: true } });
  if (!seat) return null;
  return { actor: { role: 'SEAT', keyId, accountId: row.accountId, seatId: row.seatId, session }, expiresAt: row.expiresAt };
}
