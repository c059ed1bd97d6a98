import type { Tx } from '../db/transaction.ts';
import { assertCredits, toCredits } from '../domain/credits.ts';
import { invalidInput } from '../domain/errors.ts';
import type { CreditPack } from '../generated/prisma/client.ts';
import { assertCode, assertMoney, assertName } from './validation.ts';

export interface CreditPackRecord {
  code: string;
  name: string;
  creditType: string;
  credits: number;
  price: { amount: number; currency: string };
  expiresAfterDays: number | null;
}

export interface CreditPackInput {
  code: string;
  name: string;
  creditType: string;
  credits: number;
  price: { amount: number; currency: string };
  expiresAfterDays?: number | null;
}

export function toCreditPackRecord(row: CreditPack): CreditPackRecord {
  return {
    code: row.code,
    name: row.name,
    creditType: row.creditType,
    credits: toCredits(row.credits),
    price: { amount: row.priceAmount, currency: row.priceCurrency },
    expiresAfterDays: row.expiresAfterDays,
  };
}

export async function upsertCreditPack(tx: Tx, input: CreditPackInput): Promise<CreditPackRecord> {
  const code = assertCode(input.code, 'code');
  const price = assertMoney(input.price.amount, input.price.currency);
  const expiresAfterDays = input.expiresAfterDays ?? null;
  if (expiresAfterDays !== null && (!Number.isSafeInteger(expiresAfterDays) || expiresAfterDays < 1 || expiresAfterDays > 36_500)) {
    throw invalidInput('expiresAfterDays must be a whole number of days from 1 to 36500', 'expiresAfterDays');
  }
  const data = {
    name: assertName(input.name),
    creditType: assertCode(input.creditType, 'creditType'),
    credits: BigInt(assertCredits(input.credits, 'credits')),
    priceAmount: price.amount,
    priceCurrency: price.currency,
    expiresAfterDays,
  };
  return toCreditPackRecord(await tx.creditPack.upsert({ where: { code }, create: { code, ...data }, update: data }));
}

export async function listCreditPacks(tx: Tx): Promise<CreditPackRecord[]> {
  return (await tx.creditPack.findMany({ orderBy: { code: 'asc' } })).map(toCreditPackRecord);
}
