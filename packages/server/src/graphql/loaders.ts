import DataLoader from 'dataloader';
import { loadAccountProfiles, type AccountProfile } from '../accounts/accountDirectory.ts';
import type { SeatRecord } from '../accounts/accounts.ts';
import { toGrantRecord, GRANT_COLUMNS, type GrantRecord, type GrantRow } from '../ledger/grants.ts';
import { findCorrections, listCorrectionEntries, type CorrectionRecord } from '../ledger/corrections.ts';
import type { LedgerEntryRecord } from '../ledger/queries.ts';
import { loadDraws, findUsageEvents, type UsageDrawRecord, type UsageEventRecord } from '../ledger/usageEvents.ts';
import { Prisma, type PrismaClient } from '../generated/prisma/client.ts';

/** Per-request batching, so that a list of events with their draws and seats is a few queries, not N. */
export interface Loaders {
  grant: DataLoader<string, GrantRecord | null>;
  seat: DataLoader<string, SeatRecord | null>;
  draws: DataLoader<string, UsageDrawRecord[]>;
  usageEvent: DataLoader<string, UsageEventRecord | null>;
  correction: DataLoader<string, CorrectionRecord | null>;
  /** Corrections' entries, read once per correction however many ledger entries select them, one statement per page. */
  correctionEntries: DataLoader<CorrectionRecord, LedgerEntryRecord[], string>;
  accountProfile: DataLoader<string, AccountProfile | null>;
}

export function createLoaders(prisma: PrismaClient): Loaders {
  return {
    grant: new DataLoader(async (ids) => {
      const rows = await prisma.$queryRaw<GrantRow[]>`
        SELECT ${Prisma.raw(GRANT_COLUMNS)} FROM grants WHERE id = ANY(${[...ids]}::text[])`;
      const byId = new Map(rows.map((row) => [row.id, toGrantRecord(row)]));
      return ids.map((id) => byId.get(id) ?? null);
    }),
    correctionEntries: new DataLoader(
      async (corrections) => {
        const byCorrection = await listCorrectionEntries(prisma, corrections);
        return corrections.map((correction) => byCorrection.get(correction.id) ?? []);
      },
      { cacheKeyFn: (correction) => correction.id },
    ),
    seat: new DataLoader(async (ids) => {
      const seats = await prisma.seat.findMany({ where: { id: { in: [...ids] } } });
      const byId = new Map(seats.map((seat) => [seat.id, seat]));
      return ids.map((id) => {
        const seat = byId.get(id);
        return seat ? { id: seat.id, accountId: seat.accountId, name: seat.name, canUseSharedPool: seat.canUseSharedPool } : null;
      });
    }),
    draws: new DataLoader(async (eventIds) => {
      const byEvent = await loadDraws(prisma, eventIds);
      return eventIds.map((id) => byEvent.get(id) ?? []);
    }),
    usageEvent: new DataLoader(async (ids) => {
      const byId = await findUsageEvents(prisma, ids);
      return ids.map((id) => byId.get(id) ?? null);
    }),
    correction: new DataLoader(async (ids) => {
      const byId = new Map((await findCorrections(prisma, ids)).map((correction) => [correction.id, correction]));
      return ids.map((id) => byId.get(id) ?? null);
    }),
    accountProfile: new DataLoader(async (ids) => {
      const byId = await loadAccountProfiles(prisma, ids);
      return ids.map((id) => byId.get(id) ?? null);
    }),
  };
}
