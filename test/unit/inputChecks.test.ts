import { describe, expect, it } from 'vitest';
import { assertCode, assertMoney, assertName } from '../../packages/server/src/catalog/validation.ts';
import { assertCredits, isUsageTotalOverflow, MAX_CREDITS, toCredits } from '../../packages/server/src/domain/credits.ts';
import { assertIdempotencyKey, assertMetadata, assertStorableText, normalizeTags } from '../../packages/server/src/ledger/usageInput.ts';
import { refusal } from './refusal.ts';

describe('credit amounts', () => {
  it('accepts whole credits from 1 (or 0 where allowed) to the largest safe integer', () => {
    expect(assertCredits(1, 'amount')).toBe(1);
    expect(assertCredits(MAX_CREDITS, 'amount')).toBe(MAX_CREDITS);
    expect(assertCredits(0, 'limit', { allowZero: true })).toBe(0);
    expect(refusal(() => assertCredits(0, 'amount'))).toEqual({
      code: 'INVALID_CREDITS',
      message: `amount must be a whole number of credits from 1 to ${MAX_CREDITS}`,
      details: { field: 'amount' },
    });
    for (const value of [-1, 1.5, MAX_CREDITS + 1, Number.NaN]) {
      expect(refusal(() => assertCredits(value, 'limit', { allowZero: true }))).toEqual({
        code: 'INVALID_CREDITS',
        message: `limit must be a whole number of credits from 0 to ${MAX_CREDITS}`,
        details: { field: 'limit' },
      });
    }
  });

  it('reads database sums exactly and refuses what a JS number cannot hold', () => {
    expect(toCredits(null)).toBe(0);
    expect(toCredits(undefined)).toBe(0);
    expect(toCredits(42)).toBe(42);
    expect(toCredits(42n)).toBe(42);
    expect(toCredits('-7')).toBe(-7);
    expect(toCredits({ toString: () => '9007199254740991' })).toBe(MAX_CREDITS);
    expect(() => toCredits(9007199254740992n)).toThrow('credit amount out of range: 9007199254740992');
    expect(() => toCredits('1.5')).toThrow('credit amount out of range: 1.5');
  });
});

describe('the usage-total overflow', () => {
  const CONSTRAINT = 'period_usage_totals_within_credits';
  it('is recognised by message, constraint or metadata, through up to five wrappings', () => {
    expect(isUsageTotalOverflow(new Error(`violates check constraint "${CONSTRAINT}"`))).toBe(true);
    expect(isUsageTotalOverflow({ constraint: CONSTRAINT })).toBe(true);
    expect(isUsageTotalOverflow({ meta: { driverAdapterError: { constraint: CONSTRAINT } } })).toBe(true);
    expect(isUsageTotalOverflow({ cause: { originalError: { cause: { constraint: CONSTRAINT } } } })).toBe(true);
    const wrapped = (depth: number): unknown => (depth === 0 ? { constraint: CONSTRAINT } : { cause: wrapped(depth - 1) });
    expect(isUsageTotalOverflow(wrapped(4))).toBe(true);
    expect(isUsageTotalOverflow(wrapped(5))).toBe(false);
  });

  it('is not any other error', () => {
    for (const error of [null, undefined, new Error('deadlock detected'), { constraint: 'grants_remaining_within_amount' }, { meta: null }, 'period_usage_totals']) {
      expect(isUsageTotalOverflow(error)).toBe(false);
    }
    expect(isUsageTotalOverflow(Object.assign(new Error('other'), { cause: new Error(CONSTRAINT) }))).toBe(true);
  });
});

describe('usage input', () => {
  it('takes idempotency keys of 1 to 255 printable characters', () => {
    expect(assertIdempotencyKey('k')).toBe('k');
    expect(assertIdempotencyKey('k'.repeat(255))).toBe('k'.repeat(255));
    expect(assertIdempotencyKey('ünïcode key ~')).toBe('ünïcode key ~');
    for (const key of ['', 'k'.repeat(256), 'a\u0000b', 'tab\there', '\u001f', 'del\u007f', 'c1\u0085', 'rtl\u202e', 'zero\u200bwidth', 'line\u2028', 'para\u2029']) {
      expect(refusal(() => assertIdempotencyKey(key))).toEqual({
        code: 'INVALID_INPUT',
        message: 'idempotencyKey must be 1-255 printable characters',
        details: { field: 'idempotencyKey' },
      });
    }
  });

  it('sorts and de-duplicates tags, 32 at most, each 1 to 128 printable characters', () => {
    expect(normalizeTags(null)).toEqual([]);
    expect(normalizeTags(undefined)).toEqual([]);
    expect(normalizeTags(['b', 'a', 'b'])).toEqual(['a', 'b']);
    const many = Array.from({ length: 32 }, (_, index) => `t${String(index).padStart(2, '0')}`);
    expect(normalizeTags([...many, ...many])).toEqual(many);
    expect(normalizeTags(['x'.repeat(128)])).toEqual(['x'.repeat(128)]);
    expect(refusal(() => normalizeTags([...many, 'one-more']))).toEqual({ code: 'INVALID_INPUT', message: 'at most 32 tags', details: { field: 'tags' } });
    for (const tag of ['', 'x'.repeat(129), 'new\nline', '\u0000']) {
      expect(refusal(() => normalizeTags(['ok', tag]))).toEqual({
        code: 'INVALID_INPUT',
        message: 'each tag must be 1-128 printable characters',
        details: { field: 'tags' },
      });
    }
  });

  it('keeps metadata up to 16 KiB of JSON without NUL, and reads none as null', () => {
    expect(assertMetadata(undefined)).toBeNull();
    expect(assertMetadata(null)).toBeNull();
    const metadata = { a: 1 };
    expect(assertMetadata(metadata)).toBe(metadata);
    // JSON.stringify adds the two quotes: 16,382 characters are exactly 16 KiB.
    expect(assertMetadata('x'.repeat(16 * 1024 - 2))).toBe('x'.repeat(16 * 1024 - 2));
    expect(refusal(() => assertMetadata('x'.repeat(16 * 1024 - 1)))).toEqual({
      code: 'INVALID_INPUT',
      message: 'metadata must be at most 16384 bytes of JSON',
      details: { field: 'metadata' },
    });
    // Bytes, not characters: 'é' is two bytes in UTF-8.
    expect(refusal(() => assertMetadata('é'.repeat(8 * 1024))).code).toBe('INVALID_INPUT');
    expect(refusal(() => assertMetadata({ note: 'a\u0000b' }))).toEqual({
      code: 'INVALID_INPUT',
      message: 'metadata must not contain NUL characters',
      details: { field: 'metadata' },
    });
  });

  it('keeps free text as given unless it holds NUL', () => {
    expect(assertStorableText(' any\ttext ', 'reason')).toBe(' any\ttext ');
    expect(refusal(() => assertStorableText('a\u0000', 'reason'))).toEqual({
      code: 'INVALID_INPUT',
      message: 'reason must not contain NUL characters',
      details: { field: 'reason' },
    });
  });
});

describe('catalogue input', () => {
  it('takes codes of 1 to 128 plain characters starting with a letter or digit', () => {
    for (const code of ['a', 'Z9', '0abc', 'pro_2027.v1:eu-west', `a${'b'.repeat(127)}`]) expect(assertCode(code, 'code')).toBe(code);
    for (const code of ['', '_a', '-a', 'a b', 'a/b', `a${'b'.repeat(128)}`, 'é', 'a\n']) {
      expect(refusal(() => assertCode(code, 'planCode'))).toEqual({
        code: 'INVALID_INPUT',
        message: "planCode must be 1-128 letters, digits, '_', '.', ':' or '-', starting with a letter or digit",
        details: { field: 'planCode' },
      });
    }
  });

  it('trims names and takes 1 to 200 characters without NUL', () => {
    expect(assertName('  Pro  ')).toBe('Pro');
    expect(assertName('n'.repeat(200), 'title')).toBe('n'.repeat(200));
    for (const name of ['', '   ', 'n'.repeat(201), 'a\u0000b']) {
      expect(refusal(() => assertName(name))).toEqual({ code: 'INVALID_INPUT', message: 'name must be 1-200 characters, without NUL', details: { field: 'name' } });
    }
    expect(refusal(() => assertName('', 'title')).details).toEqual({ field: 'title' });
  });

  it('takes money as whole minor units and an ISO currency code, upper-cased', () => {
    expect(assertMoney(0, 'usd')).toEqual({ amount: 0, currency: 'USD' });
    expect(assertMoney(1999, 'EUR')).toEqual({ amount: 1999, currency: 'EUR' });
    for (const amount of [-1, 1.5, Number.MAX_SAFE_INTEGER + 1]) {
      expect(refusal(() => assertMoney(amount, 'USD'))).toEqual({
        code: 'INVALID_INPUT',
        message: 'price.amount must be whole minor units from 0',
        details: { field: 'price.amount' },
      });
    }
    for (const currency of ['US', 'USDT', 'U5D', ' USD', 'USD\n']) {
      expect(refusal(() => assertMoney(1, currency))).toEqual({
        code: 'INVALID_INPUT',
        message: 'price.currency must be an ISO 4217 code such as USD',
        details: { field: 'price.currency' },
      });
    }
  });
});
