import { lexicographicSortSchema, printSchema, type GraphQLSchema } from 'graphql';
import { acceptAccountReferences } from './accountRefs.ts';
import { builder } from './builder.ts';
import './types/catalog.ts';
import './types/account.ts';
import './types/accountDirectory.ts';
import './types/errors.ts';
import './types/usage.ts';
import './types/access.ts';
import './types/sessions.ts';
import './types/spendLimits.ts';
import './types/reservations.ts';
import './types/time.ts';
import './types/topUps.ts';
import './types/invoices.ts';
import './types/paymentMethods.ts';
import './types/subscriptions.ts';
import './types/alerts.ts';
import './types/reporting.ts';
import './types/audit.ts';
import './types/finance.ts';
import './types/scheduledGrants.ts';
import './types/webhookEndpoints.ts';
import './types/corrections.ts';

export const schema: GraphQLSchema = acceptAccountReferences(builder.toSchema());

/** The committed form of the schema (packages/schema/schema.graphql): sorted, so diffs are real changes. */
export function printSortedSchema(): string {
  return `${printSchema(lexicographicSortSchema(schema))}\n`;
}
