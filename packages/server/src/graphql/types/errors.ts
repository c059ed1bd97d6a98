import type { SpendRefusal } from '../../ledger/authorizeSpend.ts';
import type { SpendLimitRecord } from '../../ledger/spendLimits.ts';
import { builder } from '../builder.ts';
import { SpendLimitRef } from './spendLimits.ts';

/** Expected failures returned as union members; every one carries a stable code and a message. */
export interface ErrorShape {
  code: string;
  message: string;
}

export const ErrorInterface = builder.interfaceRef<ErrorShape>('Error').implement({
  description: 'Every expected failure; clients can always select `... on Error { code message }`.',
  fields: (t) => ({
    code: t.exposeString('code', { description: 'Stable machine-readable code.' }),
    message: t.exposeString('message', { description: 'What happened, for people.' }),
  }),
});

export interface InsufficientCreditsShape extends ErrorShape {
  kind: 'insufficientCredits';
  creditType: string;
  required: number;
  available: number;
}

export const InsufficientCreditsRef = builder.objectRef<InsufficientCreditsShape>('InsufficientCredits').implement({
  description: 'The pool cannot pay for the usage; nothing was debited.',
  interfaces: [ErrorInterface],
  isTypeOf: (value) => (value as { kind?: string }).kind === 'insufficientCredits',
  fields: (t) => ({
    creditType: t.exposeString('creditType', { description: 'The pool that ran short.' }),
    required: t.expose('required', { type: 'Credits', description: 'Credits the usage needed.' }),
    available: t.expose('available', { type: 'Credits', description: 'Credits the caller could spend.' }),
  }),
});

export interface FeatureNotAvailableShape extends ErrorShape {
  kind: 'featureNotAvailable';
  featureKey: string;
}

export const FeatureNotAvailableRef = builder.objectRef<FeatureNotAvailableShape>('FeatureNotAvailable').implement({
  description: "The account's plan does not enable the feature; nothing was debited.",
  interfaces: [ErrorInterface],
  isTypeOf: (value) => (value as { kind?: string }).kind === 'featureNotAvailable',
  fields: (t) => ({
    featureKey: t.exposeString('featureKey', { description: 'The feature refused.' }),
  }),
});

export function insufficientCredits(creditType: string, required: number, available: number): InsufficientCreditsShape {
  return {
    kind: 'insufficientCredits',
    code: 'INSUFFICIENT_CREDITS',
    message: `${creditType}: ${required} credits required, ${available} available`,
    creditType,
    required,
    available,
  };
}

export function featureNotAvailable(featureKey: string): FeatureNotAvailableShape {
  return {
    kind: 'featureNotAvailable',
    code: 'FEATURE_NOT_AVAILABLE',
    message: `the plan does not include ${featureKey}`,
    featureKey,
  };
}

export interface SpendLimitExceededShape extends ErrorShape {
  kind: 'spendLimitExceeded';
  spendLimit: SpendLimitRecord;
}

export const SpendLimitExceededRef = builder.objectRef<SpendLimitExceededShape>('SpendLimitExceeded').implement({
  description: 'The usage would take a spend limit beyond its amount; nothing was debited.',
  interfaces: [ErrorInterface],
  isTypeOf: (value) => (value as { kind?: string }).kind === 'spendLimitExceeded',
  fields: (t) => ({
    spendLimit: t.field({ type: SpendLimitRef, description: 'The limit that refused it.', resolve: (refusal) => refusal.spendLimit }),
  }),
});

/** The union member for a refusal of the ledger. */
export function toRefusalShape(refusal: SpendRefusal): InsufficientCreditsShape | FeatureNotAvailableShape | SpendLimitExceededShape {
  switch (refusal.kind) {
    case 'insufficientCredits':
      return insufficientCredits(refusal.creditType, refusal.required, refusal.available);
    case 'featureNotAvailable':
      return featureNotAvailable(refusal.featureKey);
    case 'spendLimitExceeded': {
      const { spendLimit } = refusal;
      const scope = spendLimit.scopeValue ? `${spendLimit.scope} ${spendLimit.scopeValue}` : spendLimit.scope;
      return {
        kind: 'spendLimitExceeded',
        code: 'SPEND_LIMIT_EXCEEDED',
        message: `spend limit on ${scope} reached: ${spendLimit.used} of ${spendLimit.limit} used${spendLimit.held ? `, ${spendLimit.held} held` : ''}`,
        spendLimit,
      };
    }
  }
}
