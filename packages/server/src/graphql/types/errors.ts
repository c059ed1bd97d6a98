import { builder } from '../builder.ts';

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
