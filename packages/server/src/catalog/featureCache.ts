import type { Database } from '../db/database.ts';
import { toCredits } from '../domain/credits.ts';
import type { PriceTier, PricingModel } from '../ledger/pricing.ts';
import type { FeatureRecord } from './features.ts';

export interface CachedFeature {
  feature: FeatureRecord;
  /** md5 of the feature's row as PostgreSQL prints it: the hot path refuses to charge on another one. */
  fingerprint: string;
}

interface FeatureRow {
  key: string;
  name: string;
  credit_type: string;
  pricing: PricingModel;
  unit_credits: string | bigint | number | null;
  tiers: PriceTier[] | string | null;
  requires_positive_balance: boolean;
  max_credits_per_event: string | bigint | number | null;
  fingerprint: string;
}

const LOAD_FEATURE = `
  SELECT key, name, credit_type, pricing::text AS pricing, unit_credits, tiers, requires_positive_balance,
         max_credits_per_event, md5(f::text) AS fingerprint
  FROM features f WHERE key = $1`;

/**
 * Features by key, so that pricing a usage costs no query. An entry is dropped when this instance
 * changes the feature; a change made by another instance is caught by the hot path itself, which
 * compares the fingerprint priced with against the row it reads under the lock and, when they
 * differ, leaves the usage to the complete path (which reads the feature afresh) and the entry is
 * dropped. A cache entry can therefore be stale but never charge a stale price.
 */
export class FeatureCache {
  readonly #entries = new Map<string, CachedFeature>();

  constructor(private readonly database: Pick<Database, 'statement'>) {}

  async get(key: string): Promise<CachedFeature | null> {
    const cached = this.#entries.get(key);
    if (cached) return cached;
    const [row] = await this.database.statement<FeatureRow>(LOAD_FEATURE, [key], 'load_feature');
    if (!row) return null;
    const entry = { feature: toFeature(row), fingerprint: row.fingerprint };
    this.#entries.set(key, entry);
    return entry;
  }

  forget(key: string): void {
    this.#entries.delete(key);
  }
}

function toFeature(row: FeatureRow): FeatureRecord {
  return {
    key: row.key,
    name: row.name,
    creditType: row.credit_type,
    pricing: row.pricing,
    unitCredits: row.unit_credits === null ? null : toCredits(row.unit_credits),
    tiers: typeof row.tiers === 'string' ? (JSON.parse(row.tiers) as PriceTier[]) : row.tiers,
    requiresPositiveBalance: row.requires_positive_balance,
    maxCreditsPerEvent: row.max_credits_per_event === null ? null : toCredits(row.max_credits_per_event),
  };
}
