/**
 * The documented order of consumption, written out independently of the database's definition
 * (`spendable_grants`, migration 20261203081000_one_definition_of_debits), as the model the tests
 * hold it to: the seat's own grants first, then the shared ones; within each, the grant that
 * expires soonest (no expiry last), then the lower priority number, then the oldest; the id (in
 * code-point order) breaks the last ties.
 */
export interface ModelGrant {
  id: string;
  seatId: string | null;
  remaining: number;
  expiresAt: Date | null;
  priority: number;
  createdAt: Date;
}

export function compareConsumptionOrder(a: ModelGrant, b: ModelGrant): number {
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

/** A greedy walk down the order, emptying each grant before the next, until the cost is paid. */
export function modelDraws(grants: readonly ModelGrant[], cost: number): { draws: Array<{ grantId: string; credits: number }>; shortfall: number } {
  const draws: Array<{ grantId: string; credits: number }> = [];
  let left = cost;
  for (const grant of [...grants].sort(compareConsumptionOrder)) {
    if (left > 0 && grant.remaining > 0) {
      const credits = Math.min(left, grant.remaining);
      draws.push({ grantId: grant.id, credits });
      left -= credits;
    }
  }
  return { draws, shortfall: left };
}
