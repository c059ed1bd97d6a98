import SchemaBuilder from '@pothos/core';
import ComplexityPlugin from '@pothos/plugin-complexity';
import ScopeAuthPlugin from '@pothos/plugin-scope-auth';
import { GraphQLError, Kind, type GraphQLField, type GraphQLResolveInfo, type ValueNode } from 'graphql';
import { scopesOf, SCOPE_ROLES, type Actor, type ApiKeyRole, type AuthScope } from '../auth/access.ts';
import { MAX_CREDITS } from '../domain/credits.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import type { GraphQLContext } from './context.ts';
import { fieldCost } from './queryCost.ts';

interface SchemaShape {
  Context: GraphQLContext;
  AuthScopes: Record<AuthScope, boolean>;
  AuthContexts: Record<AuthScope, GraphQLContext & { actor: Actor }>;
  DefaultFieldNullability: false;
  Scalars: {
    DateTime: { Input: Date; Output: Date };
    Credits: { Input: number; Output: number };
    JSON: { Input: unknown; Output: unknown };
    ID: { Input: string; Output: string };
  };
}

/**
 * The key roles a field's declared `authScopes` admit (a plain map of scopes, any of which admits),
 * or null when it declares none or declares them by a function, which this cannot read.
 */
export function declaredRoles(field: GraphQLField<unknown, unknown>): ApiKeyRole[] | null {
  const scopes = (field.extensions as { pothosOptions?: { authScopes?: unknown } }).pothosOptions?.authScopes;
  if (!scopes || typeof scopes !== 'object') return null;
  const roles = new Set<ApiKeyRole>();
  for (const [scope, wanted] of Object.entries(scopes)) {
    if (wanted !== true || !(scope in SCOPE_ROLES)) return null;
    for (const role of SCOPE_ROLES[scope as AuthScope]) roles.add(role);
  }
  return roles.size ? [...roles].sort() : null;
}

function unauthorized(context: GraphQLContext, info: GraphQLResolveInfo): BillingError {
  if (!context.actor) return new BillingError(ErrorCode.UNAUTHENTICATED, 'a valid API key is required (Authorization: Bearer <key>)');
  const roles = declaredRoles(info.parentType.getFields()[info.fieldName]!) ?? [];
  if (context.actor.session) {
    return new BillingError(ErrorCode.FORBIDDEN, `${info.fieldName} is for ${roles.join(' and ')} keys, not session tokens (they read, follow, and buy if allowed)`);
  }
  return new BillingError(ErrorCode.FORBIDDEN, `${info.fieldName} is for ${roles.join(' and ')} keys, not ${context.actor.role} keys`);
}

/**
 * Only the builder and its scalars live here; each type file adds its own fields. Who may call a
 * root field is declared on it (`authScopes`, checked before its resolver or subscription starts);
 * test/accessDeclared.test.ts lists them all.
 */
export const builder = new SchemaBuilder<SchemaShape>({
  defaultFieldNullability: false,
  plugins: [ScopeAuthPlugin, ComplexityPlugin],
  // The cost of each field; the limit is applied with the variables before execution (queryCost.ts).
  complexity: { fieldComplexity: fieldCost },
  scopeAuth: {
    authScopes: (context) => scopesOf(context.actor),
    authorizeOnSubscribe: true,
    unauthorizedError: (_parent, context, info) => unauthorized(context, info),
  },
});

export type BuilderTypes = PothosSchemaTypes.ExtendDefaultTypes<SchemaShape>;

function invalidScalar(code: string, message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code } });
}

const INSTANT = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(?:Z|[+-](\d{2}):(\d{2}))$/i;

/**
 * An ISO-8601 instant whose every field is in range: JavaScript's Date reads 2026-02-30 as March 2
 * and 24:00 as the next day, which a client never meant. Years 0001-9999 only.
 */
export function parseInstant(text: string): Date | null {
  const match = INSTANT.exec(text);
  if (!match) return null;
  const [year, month, day, hour, minute, second = 0, offsetHours = 0, offsetMinutes = 0] = match.slice(1).map((part) => (part === undefined ? undefined : Number(part))) as number[];
  const daysInMonth = new Date(Date.UTC(year!, month!, 0)).getUTCDate();
  if (year! < 1 || month! < 1 || month! > 12 || day! < 1 || day! > daysInMonth || hour! > 23 || minute! > 59 || second > 59 || offsetHours > 23 || offsetMinutes > 59) {
    return null;
  }
  const date = new Date(text);
  // The years are checked once more in UTC: an offset carries 0001-01-01T00:00+00:01 into the year 0,
  // which PostgreSQL refuses (a failed statement), and 9999-12-31T23:59-00:01 into 10000, answered as
  // "+010000-…", text that this scalar then refuses from the same client.
  const utcYear = date.getUTCFullYear();
  return Number.isNaN(date.getTime()) || utcYear < 1 || utcYear > 9999 ? null : date;
}

builder.scalarType('DateTime', {
  description: 'An ISO-8601 instant in UTC.',
  serialize: (value) => (value as Date).toISOString(),
  parseValue: (value) => {
    if (typeof value !== 'string') throw invalidScalar('INVALID_INPUT', 'DateTime must be an ISO-8601 string');
    const date = parseInstant(value);
    if (!date) throw invalidScalar('INVALID_INPUT', `DateTime must be an ISO-8601 instant with Z or an offset, on a real calendar date, got ${JSON.stringify(value).slice(0, 64)}`);
    return date;
  },
});

function parseCredits(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    throw invalidScalar('INVALID_CREDITS', `Credits must be a whole number of at most ${MAX_CREDITS} in magnitude`);
  }
  return value;
}

builder.scalarType('Credits', {
  description: 'A whole number of credits, serialized as a JSON integer (at most 2^53 - 1).',
  serialize: (value) => value,
  parseValue: parseCredits,
  parseLiteral: (node: ValueNode) => {
    if (node.kind !== Kind.INT) throw invalidScalar('INVALID_CREDITS', 'Credits must be an integer literal');
    return parseCredits(Number(node.value));
  },
});

function parseJsonLiteral(node: ValueNode): unknown {
  switch (node.kind) {
    case Kind.STRING:
    case Kind.BOOLEAN:
      return node.value;
    case Kind.INT:
    case Kind.FLOAT:
      return Number(node.value);
    case Kind.NULL:
      return null;
    case Kind.LIST:
      return node.values.map(parseJsonLiteral);
    case Kind.OBJECT:
      return Object.fromEntries(node.fields.map((field) => [field.name.value, parseJsonLiteral(field.value)]));
    default:
      throw invalidScalar('INVALID_INPUT', 'JSON literals cannot contain variables or enums');
  }
}

builder.scalarType('JSON', {
  description: 'Any JSON value (usage metadata).',
  serialize: (value) => value,
  parseValue: (value) => value,
  parseLiteral: parseJsonLiteral,
});

builder.queryType({ description: 'Reads: the catalogue, accounts and who is calling.' });
builder.mutationType({ description: 'Writes: the catalogue, accounts, grants, usage and keys.' });
