import { describe, expect, it } from 'vitest';
import { hashRequest } from '../../packages/server/src/domain/hash.ts';

// The fingerprints are stored beside idempotency keys: a retry sent before a deploy and received
// after it must hash as it did, or it would be refused as a conflict. These values are those of the
// first implementation (Object.entries, sort, map and join), which the faster one must reproduce.
describe('hashRequest', () => {
  it('keeps the fingerprints already stored', () => {
    expect(
      hashRequest({ featureKey: 'api.call', quantity: 3, credits: null, seatId: null, tags: ['a', 'b'], idempotencyKey: undefined, occurredAt: undefined, metadata: null }),
    ).toBe('0dce1ede0f1c2aa795fbcd0302094449e82e79935cbf95712840f0a0916134e2');
    expect(
      hashRequest({
        featureKey: 'x',
        quantity: 1,
        credits: 7,
        seatId: 's',
        tags: [],
        occurredAt: '2026-12-03T10:00:00.000Z',
        metadata: { z: 1, a: [1, undefined, { y: 'é', b: null }], 'k"ey': true, Z: 'upper', é: 2 },
      }),
    ).toBe('74bc499743d463554ca91265c84974782200028a67b0aa2b1cff38ba1f6337b8');
    expect(hashRequest({ reservationId: 'r-1', credits: 0 })).toBe('36dec562af3f06ac4dce9177c6f01d025774d5086a0bd0753c861a221353cb6f');
    expect(hashRequest([1, 'two', null, undefined, { b: 2, a: 1 }])).toBe('ef862bbb16dce970708cc6edad5ba767cfb70f0b41996b2e79cc8c7612b6b2dc');
    expect(hashRequest(null)).toBe(hashRequest(undefined));
  });

  it('does not depend on the order of keys, and leaves undefined members out', () => {
    expect(hashRequest({ a: 1, b: { d: [1, 2], c: 'x' } })).toBe(hashRequest({ b: { c: 'x', d: [1, 2] }, a: 1 }));
    expect(hashRequest({ a: 1, b: undefined })).toBe(hashRequest({ a: 1 }));
    expect(hashRequest({ a: 1, b: null })).not.toBe(hashRequest({ a: 1 }));
    expect(hashRequest([1, 2])).not.toBe(hashRequest([2, 1]));
  });
});
