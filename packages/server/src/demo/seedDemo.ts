import { addSeat, createAccount } from '../accounts/accounts.ts';
import type { Actor } from '../auth/access.ts';
import { createApiKey } from '../auth/apiKeys.ts';
import { createSessionToken, SESSION_TTL_MINUTES } from '../auth/sessionTokens.ts';
import { upsertCreditPack } from '../catalog/creditPacks.ts';
import { upsertFeature } from '../catalog/features.ts';
import { upsertPlan } from '../catalog/plans.ts';
import { inTransaction } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import { grantCredits } from '../ledger/grantCredits.ts';

const operator: Actor = { role: 'ADMIN', keyId: 'demo-seed' };

/**
 * An example catalogue modelled on the seeds: HubSpot-like tiers sharing one `credits` pool with
 * per-feature prices, B2B-Rocket-like separate pools, a Clay-like rollover plan and Hex-like per-seat
 * grants. Idempotent for the catalogue; demo accounts are created on the first run only.
 */
export async function seedDemo(prisma: PrismaClient, clock: Clock): Promise<Record<string, string>> {
  return inTransaction(prisma, async (tx): Promise<Record<string, string>> => {
    const features = [
      { key: 'customer_agent.conversation', name: 'Customer Agent conversation', creditType: 'credits', pricing: 'PER_UNIT', unitCredits: 100 },
      { key: 'prospecting_agent.contact', name: 'Prospecting Agent monitored contact', creditType: 'credits', pricing: 'PER_UNIT', unitCredits: 100 },
      { key: 'prospecting_agent.research', name: 'Prospecting Agent research', creditType: 'credits', pricing: 'PER_UNIT', unitCredits: 10 },
      { key: 'ai_workflow.action', name: 'AI workflow action', creditType: 'credits', pricing: 'PER_UNIT', unitCredits: 10 },
      { key: 'buyer_intent.company', name: 'Buyer intent (needs a positive balance)', creditType: 'credits', pricing: 'PER_UNIT', unitCredits: 0, requiresPositiveBalance: true },
      {
        key: 'data_studio.sync',
        name: 'Data Studio sync',
        creditType: 'credits',
        pricing: 'TIERED',
        tiers: [
          { upTo: 1_000, credits: 25 },
          { upTo: 100_000, credits: 100 },
          { upTo: null, credits: 200 },
        ],
      },
      { key: 'data.enrichment', name: 'Data enrichment (free)', creditType: 'credits', pricing: 'PER_UNIT', unitCredits: 0 },
      { key: 'ai.agent_task', name: 'AI agent task (effort-based)', creditType: 'credits', pricing: 'DYNAMIC', maxCreditsPerEvent: 50 },
      { key: 'database.export', name: 'Database contact export', creditType: 'database', pricing: 'PER_UNIT', unitCredits: 1 },
      { key: 'email.verify', name: 'Email verification', creditType: 'email_verification', pricing: 'PER_UNIT', unitCredits: 1 },
      { key: 'ai.task', name: 'AI task', creditType: 'ai_task', pricing: 'PER_UNIT', unitCredits: 1 },
      { key: 'voice.minute', name: 'AI voice agent minute', creditType: 'voice_minutes', pricing: 'PER_UNIT', unitCredits: 1 },
      { key: 'linkedin.sync', name: 'LinkedIn account sync', creditType: 'linkedin_sync', pricing: 'PER_UNIT', unitCredits: 1 },
    ] as const;
    for (const feature of features) await upsertFeature(tx, { ...feature, tiers: 'tiers' in feature ? [...feature.tiers] : null });

    const hubspotFeatures = features.filter((feature) => feature.creditType === 'credits').map((feature) => feature.key);
    const usd = (amount: number) => ({ amount, currency: 'USD' });
    for (const [code, name, credits, price] of [
      ['hubspot_starter', 'Starter', 500, 2_000],
      ['hubspot_pro', 'Professional', 3_000, 80_000],
      ['hubspot_enterprise', 'Enterprise', 5_000, 360_000],
    ] as const) {
      await upsertPlan(tx, {
        code,
        name,
        interval: 'MONTH',
        price: usd(price),
        allocations: [{ creditType: 'credits', amount: credits }],
        featureKeys: hubspotFeatures,
        overagePolicy: code === 'hubspot_starter' ? 'HARD_STOP' : 'PAY_AS_YOU_GO',
        maxOverageCredits: code === 'hubspot_starter' ? null : credits,
      });
    }
    await upsertPlan(tx, {
      code: 'rocket_basic',
      name: 'B2B Rocket Basic',
      interval: 'MONTH',
      price: usd(9_900),
      allocations: [
        { creditType: 'database', amount: 2_000 },
        { creditType: 'email_verification', amount: 2_000 },
        { creditType: 'ai_task', amount: 1_000 },
      ],
      featureKeys: ['database.export', 'email.verify', 'ai.task'],
    });
    await upsertPlan(tx, {
      code: 'rocket_scale',
      name: 'B2B Rocket Scale',
      interval: 'MONTH',
      price: usd(29_900),
      allocations: [
        { creditType: 'database', amount: 10_000 },
        { creditType: 'email_verification', amount: 10_000 },
        { creditType: 'ai_task', amount: 5_000 },
        { creditType: 'voice_minutes', amount: 60 },
        { creditType: 'linkedin_sync', amount: 1 },
      ],
      featureKeys: ['database.export', 'email.verify', 'ai.task', 'voice.minute', 'linkedin.sync'],
    });
    await upsertPlan(tx, {
      code: 'clay_monthly',
      name: 'Clay-like monthly (2x rollover cap)',
      interval: 'MONTH',
      price: usd(14_900),
      allocations: [{ creditType: 'credits', amount: 1_000, rollover: 'CAP_MULTIPLE', rolloverValue: 2 }],
      featureKeys: hubspotFeatures,
    });
    await upsertPlan(tx, {
      code: 'hex_team',
      name: 'Hex-like team (per-seat grants)',
      interval: 'MONTH',
      price: usd(7_500),
      allocations: [{ creditType: 'credits', amount: 10, perSeat: true }],
      featureKeys: ['ai.agent_task', 'data.enrichment'],
    });
    await upsertCreditPack(tx, { code: 'credits_1000', name: '1,000 credits', creditType: 'credits', credits: 1_000, price: usd(1_000), expiresAfterDays: 365 });
    await upsertCreditPack(tx, { code: 'credits_10000', name: '10,000 credits', creditType: 'credits', credits: 10_000, price: usd(9_000), expiresAfterDays: 365 });

    if ((await tx.account.count()) > 0) return {};
    const acme = await createAccount(tx, clock, { name: 'Acme (HubSpot-like Professional)', planCode: 'hubspot_pro' });
    const ada = await addSeat(tx, clock, { accountId: acme.id, name: 'Ada' });
    await grantCredits(tx, clock, { accountId: acme.id, creditType: 'credits', amount: 500, source: 'BONUS', idempotencyKey: 'demo-welcome-bonus' });
    const rocket = await createAccount(tx, clock, { name: 'Rocketeers (B2B-Rocket-like Basic)', planCode: 'rocket_basic' });
    const hex = await createAccount(tx, clock, { name: 'Hexagon (Hex-like per-seat)', planCode: 'hex_team' });
    await addSeat(tx, clock, { accountId: hex.id, name: 'Grace' });
    await addSeat(tx, clock, { accountId: hex.id, name: 'Linus', canUseSharedPool: false });
    const accountKey = await createApiKey(tx, clock, operator, { role: 'ACCOUNT', accountId: acme.id, name: 'demo back end' });
    const seatKey = await createApiKey(tx, clock, operator, { role: 'SEAT', accountId: acme.id, seatId: ada.id, name: 'demo front end' });
    // What a partner's back end would hand its front end: a short-lived token in the fragment.
    const { token } = await createSessionToken(tx, new Date(), operator, { accountId: acme.id, seatId: ada.id, ttlMinutes: SESSION_TTL_MINUTES.max });
    const dashboard = new URL('http://localhost:5173/');
    dashboard.search = new URLSearchParams({ api: 'http://localhost:4000/graphql', account: acme.id }).toString();
    dashboard.hash = `session=${token}`;
    return {
      'Acme dashboard (seat Ada, a 12-hour session)': dashboard.toString(),
      'Acme account id': acme.id,
      'Acme ACCOUNT key': accountKey.secret,
      'Acme seat (Ada) SEAT key': seatKey.secret,
      'Rocketeers account id': rocket.id,
      'Hexagon account id': hex.id,
    };
  });
}
