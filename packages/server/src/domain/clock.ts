/** Where time comes from. Domain code never calls `new Date()`: the real clock or a test clock is passed in. */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

export function fixedClock(instant: Date): Clock {
  return { now: () => new Date(instant.getTime()) };
}
