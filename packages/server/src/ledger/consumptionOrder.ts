/** What the consumption order needs to know of a grant. */
export interface SpendableGrant {
  id: string;
  seatId: string | null;
  remaining: number;
  expiresAt: Date | null;
  priority: number;
  createdAt: Date;
}

export interface Draw {
  grantId: string;
  credits: number;
}

/**
 * The documented order of consumption: the seat's own grants first, then the account's shared ones;
 * within each, the grant that expires soonest (no expiry last), then the lower priority number, then
 * the oldest; the id breaks the last ties so the order is total. Included credits (expiring at the
 * period end) therefore burn before purchased ones (expiring in a year, or never).
 */
export function compareConsumptionOrder(a: SpendableGrant, b: SpendableGrant): number {
  const ownA = a.seatId !== null ? 0 : 1;
  const ownB = b.seatId !== null ? 0 : 1;
  if (ownA !== ownB) return ownA - ownB;
  const expiryA = a.expiresAt?.getTime() ?? Number.POSITIVE_INFINITY;
  const expiryB = b.expiresAt?.getTime() ?? Number.POSITIVE_INFINITY;
  if (expiryA !== expiryB) return expiryA < expiryB ? -1 : 1;
  if (a.priority !== b.priority) return a.priority - b.priority;
  const createdA = a.createdAt.getTime();
  const createdB = b.createdAt.getTime();
  if (createdA !== createdB) return createdA - createdB;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/**
 * Splits `cost` across the grants in consumption order. `shortfall` is what the grants could not
 * cover (0 when they cover it all); the caller decides whether that is a refusal or overage.
 */
export function computeDraws(grants: SpendableGrant[], cost: number): { draws: Draw[]; shortfall: number } {
  const draws: Draw[] = [];
  let left = cost;
  for (const grant of [...grants].sort(compareConsumptionOrder)) {
    if (left === 0) break;
    if (grant.remaining <= 0) continue;
    const credits = Math.min(grant.remaining, left);
    draws.push({ grantId: grant.id, credits });
    left -= credits;
  }
  return { draws, shortfall: left };
}
