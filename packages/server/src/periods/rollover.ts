import type { RolloverKind } from '../catalog/plans.ts';

export interface RolloverRule {
  rollover: RolloverKind;
  rolloverValue: number | null;
  /** The shared allocation per period the rule is relative to. */
  amount: number;
}

/** What one rule lets carry over of `unused` plan-sourced credits. */
function carryUnder(rule: RolloverRule | null, unused: number): number {
  if (!rule || unused <= 0) return 0;
  switch (rule.rollover) {
    case 'NONE':
      return 0;
    case 'PERCENT':
      return Math.floor((unused * (rule.rolloverValue ?? 0)) / 100);
    case 'CAP_MULTIPLE':
      // The plan-sourced balance after renewal (new allocation + carried) is capped at N x allocation.
      return Math.min(unused, Math.max(0, Math.floor(((rule.rolloverValue ?? 1) - 1) * rule.amount)));
  }
}

/**
 * The credits carried into the next period. The rule of the period that ended decides; when the plan
 * changes at renewal (a downgrade), the new plan's rule caps it too, so the balance is cut to the new
 * plan's rollover cap (Clay) and a plan without rollover carries nothing. Per-seat allocations never
 * roll over (Hex), so only shared allocations come here.
 */
export function computeRolloverCarry(unused: number, endedRule: RolloverRule | null, nextRule: RolloverRule | null, planChanged: boolean): number {
  const carried = carryUnder(endedRule, unused);
  return planChanged ? Math.min(carried, carryUnder(nextRule, unused)) : carried;
}
