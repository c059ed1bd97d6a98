export type SpendLimitScope = 'ACCOUNT' | 'SEAT' | 'FEATURE' | 'TAG';

/** What a usage or hold would spend, as far as limits are concerned. */
export interface SpendScope {
  creditType: string;
  featureKey: string;
  seatId: string | null;
  tags: readonly string[];
}

/** What the decision needs to know of a limit: its scope, its amount and what already counts against it. */
export interface LimitStanding {
  scope: SpendLimitScope;
  scopeValue: string | null;
  creditType: string | null;
  limit: number;
  /** Credits charged within the limit's scope and period, net of refunds. */
  used: number;
  /** Credits held by open reservations within the scope. */
  held: number;
}

export function limitApplies(limit: LimitStanding, spend: SpendScope): boolean {
  if (limit.creditType !== null && limit.creditType !== spend.creditType) return false;
  switch (limit.scope) {
    case 'ACCOUNT':
      return true;
    case 'SEAT':
      return spend.seatId === limit.scopeValue;
    case 'FEATURE':
      return spend.featureKey === limit.scopeValue;
    case 'TAG':
      return limit.scopeValue !== null && spend.tags.includes(limit.scopeValue);
  }
}

/**
 * A spend of `cost` more against the limits (kept free of the database so fast unit tests and
 * mutation testing can drive it): the first applicable limit it would exceed, and the applicable
 * limits it would use up exactly or beyond (for the "limit reached" alert). Holds count as spent.
 */
export function decideSpendLimits<L extends LimitStanding>(limits: readonly L[], spend: SpendScope, cost: number): { exceeded: L | null; reached: L[] } {
  if (cost <= 0) return { exceeded: null, reached: [] };
  const applicable = limits.filter((limit) => limitApplies(limit, spend));
  const exceeded = applicable.find((limit) => limit.used + limit.held + cost > limit.limit) ?? null;
  return { exceeded, reached: applicable.filter((limit) => limit.used + limit.held + cost >= limit.limit) };
}
