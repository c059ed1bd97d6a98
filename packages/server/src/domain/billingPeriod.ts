export type BillingInterval = 'MONTH' | 'YEAR';

export interface BillingPeriod {
  start: Date;
  end: Date;
}

const MONTHS_PER_INTERVAL: Record<BillingInterval, number> = { MONTH: 1, YEAR: 12 };

/**
 * The anchor moved by whole months, on the anchor's day of month or the last day of a shorter
 * month, at the anchor's time of day. Always computed from the anchor, never chained, so that a
 * January 31 anchor gives Feb 28 (or 29), then Mar 31 again, not Mar 28.
 */
export function addMonthsClamped(anchor: Date, months: number): Date {
  const year = anchor.getUTCFullYear();
  const month = anchor.getUTCMonth() + months;
  const targetYear = year + Math.floor(month / 12);
  const targetMonth = ((month % 12) + 12) % 12;
  const lastDay = new Date(Date.UTC(targetYear, targetMonth + 1, 0)).getUTCDate();
  const day = Math.min(anchor.getUTCDate(), lastDay);
  return new Date(
    Date.UTC(
      targetYear,
      targetMonth,
      day,
      anchor.getUTCHours(),
      anchor.getUTCMinutes(),
      anchor.getUTCSeconds(),
      anchor.getUTCMilliseconds(),
    ),
  );
}

/** The `index`-th billing period (0 is the first) of a subscription anchored at `anchor`. */
export function computeBillingPeriod(anchor: Date, interval: BillingInterval, index: number): BillingPeriod {
  const step = MONTHS_PER_INTERVAL[interval];
  return { start: addMonthsClamped(anchor, index * step), end: addMonthsClamped(anchor, (index + 1) * step) };
}
