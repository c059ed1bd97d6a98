import {
  getNullableType,
  isInputObjectType,
  isListType,
  isScalarType,
  type GraphQLField,
  type GraphQLFieldResolver,
  type GraphQLInputType,
  type GraphQLSchema,
} from 'graphql';
import type { Actor } from '../auth/access.ts';
import { Coalescer } from '../db/coalescer.ts';
import type { Database } from '../db/database.ts';

interface AccountRow {
  id: string;
  external_id: string | null;
}

/** How many value → account id facts one instance keeps (about 100 bytes each). */
const MAX_CACHED = 50_000;

/**
 * Turns what a caller gave as an account id (the account's id, or its external id) into the
 * account's id. Both are facts that never change once true (accounts are never deleted, their ids
 * never change, an external id is set once and cannot name another account's id), so every answer
 * found is kept and the next call with the same value costs no query; a value that names no account
 * is left as it is, for the operation to refuse as it refuses an unknown id.
 */
export class AccountRefResolver {
  private readonly known = new Map<string, string>();
  /**
   * The lookups of concurrent calls share statements (while two are in flight, the values that
   * arrive wait and go together): under load, accounts seen for the first time would otherwise
   * take a round trip each beside their operation's own.
   */
  private readonly lookups: Coalescer<readonly string[], AccountRow[]>;

  /** Over a prepared statement, not Prisma: an account's first call on the hot path waits for it. */
  constructor(database: Pick<Database, 'statement'>) {
    this.lookups = new Coalescer({
      concurrency: 2,
      // A batch operation brings up to 1,000 values: at most 20 calls' values in one statement.
      maxBatch: 20,
      run: async (batches) => {
        const values = [...new Set(batches.flat())];
        const rows = await database.statement<AccountRow>(
          'SELECT id, external_id FROM accounts WHERE id = ANY($1::text[]) OR external_id = ANY($1::text[])',
          [values],
          'account_refs',
        );
        return batches.map(() => rows);
      },
    });
  }

  /**
   * The account ids of `values`. A key bound to an account (ACCOUNT, SEAT, session) only ever has
   * its own account's external id resolved: any other value stays as given and is refused as
   * another tenant's, so nothing is learned about other accounts.
   */
  async resolve(actor: Actor, values: readonly string[]): Promise<Map<string, string>> {
    const resolved = new Map<string, string>();
    const unknown: string[] = [];
    for (const value of values) {
      if (actor.role !== 'ADMIN' && value === actor.accountId) resolved.set(value, value);
      else if (this.known.has(value)) resolved.set(value, this.known.get(value)!);
      else unknown.push(value);
    }
    if (unknown.length) {
      const rows = await this.lookups.submit(unknown);
      const ids = new Set(rows.map((row) => row.id));
      const byExternalId = new Map(rows.filter((row) => row.external_id !== null).map((row) => [row.external_id!, row.id]));
      for (const value of unknown) {
        const id = ids.has(value) ? value : byExternalId.get(value);
        if (id === undefined) continue;
        this.remember(value, id);
        resolved.set(value, id);
      }
    }
    return this.confine(actor, resolved);
  }

  /** The same answer without a query when every value is already known, else null. */
  resolveKnown(actor: Actor, values: readonly string[]): Map<string, string> | null {
    const resolved = new Map<string, string>();
    for (const value of values) {
      const id = actor.role !== 'ADMIN' && value === actor.accountId ? value : this.known.get(value);
      if (id === undefined) return null;
      resolved.set(value, id);
    }
    return this.confine(actor, resolved);
  }

  private confine(actor: Actor, resolved: Map<string, string>): Map<string, string> {
    if (actor.role !== 'ADMIN') {
      for (const [value, id] of resolved) if (id !== actor.accountId) resolved.set(value, value);
    }
    return resolved;
  }

  private remember(value: string, id: string): void {
    if (this.known.size >= MAX_CACHED) this.known.delete(this.known.keys().next().value!);
    this.known.set(value, id);
  }
}

/** Rewrites the account references inside one argument value, or null when its type holds none. */
type Rewriter = (value: unknown, map: (reference: string) => string) => unknown;

function rewriterFor(type: GraphQLInputType, isAccountReference: boolean, seen: Map<string, Rewriter | null>): Rewriter | null {
  const nullable = getNullableType(type);
  if (isListType(nullable)) {
    const inner = rewriterFor(nullable.ofType, isAccountReference, seen);
    return inner && ((value, map) => (Array.isArray(value) ? value.map((item) => inner(item, map)) : value));
  }
  if (isScalarType(nullable)) {
    return isAccountReference && nullable.name === 'ID' ? (value, map) => (typeof value === 'string' ? map(value) : value) : null;
  }
  if (!isInputObjectType(nullable)) return null;
  if (seen.has(nullable.name)) return seen.get(nullable.name)!;
  seen.set(nullable.name, null);
  const fields = Object.values(nullable.getFields())
    .map((field) => [field.name, rewriterFor(field.type, field.name === 'accountId', seen)] as const)
    .filter((entry): entry is readonly [string, Rewriter] => entry[1] !== null);
  const rewriter: Rewriter | null = fields.length
    ? (value, map) => {
        if (value === null || typeof value !== 'object') return value;
        const copy: Record<string, unknown> = { ...(value as Record<string, unknown>) };
        for (const [name, inner] of fields) if (name in copy) copy[name] = inner(copy[name], map);
        return copy;
      }
    : null;
  seen.set(nullable.name, rewriter);
  return rewriter;
}

interface ContextWithRefs {
  actor: Actor | null;
  accountRefs: AccountRefResolver;
}

/**
 * Makes every root field accept an account's external id wherever it takes an account id (an
 * argument or input field named `accountId`, and `account(id:)`): the value is replaced by the
 * account's id before the resolver (or a subscription's source and each of its events) sees it.
 * The key's own account id, the hot path's usual value, passes without any lookup.
 */
export function acceptAccountReferences(schema: GraphQLSchema): GraphQLSchema {
  const seen = new Map<string, Rewriter | null>();
  for (const root of [schema.getQueryType(), schema.getMutationType(), schema.getSubscriptionType()]) {
    if (!root) continue;
    for (const field of Object.values(root.getFields()) as Array<GraphQLField<unknown, ContextWithRefs>>) {
      const args = field.args
        .map((arg) => [arg.name, rewriterFor(arg.type, arg.name === 'accountId' || (root.name === 'Query' && field.name === 'account' && arg.name === 'id'), seen)] as const)
        .filter((entry): entry is readonly [string, Rewriter] => entry[1] !== null);
      if (!args.length) continue;
      const rewrite = (resolver: GraphQLFieldResolver<unknown, ContextWithRefs> | undefined) =>
        resolver && withAccountReferences(resolver, args);
      field.resolve = rewrite(field.resolve);
      field.subscribe = rewrite(field.subscribe);
    }
  }
  return schema;
}

function withAccountReferences(
  resolver: GraphQLFieldResolver<unknown, ContextWithRefs>,
  rewriters: ReadonlyArray<readonly [string, Rewriter]>,
): GraphQLFieldResolver<unknown, ContextWithRefs> {
  return (source, args: Record<string, unknown>, context, info) => {
    const actor = context.actor;
    if (!actor) return resolver(source, args, context, info);
    const references = new Set<string>();
    for (const [name, rewrite] of rewriters) {
      if (args[name] !== undefined) {
        rewrite(args[name], (reference) => {
          references.add(reference);
          return reference;
        });
      }
    }
    if (actor.role !== 'ADMIN') references.delete(actor.accountId);
    if (references.size === 0) return resolver(source, args, context, info);
    const call = (resolved: Map<string, string>) => {
      const rewritten = { ...args };
      for (const [name, rewrite] of rewriters) {
        if (args[name] !== undefined) rewritten[name] = rewrite(args[name], (reference) => resolved.get(reference) ?? reference);
      }
      return resolver(source, rewritten, context, info);
    };
    const known = context.accountRefs.resolveKnown(actor, [...references]);
    return known ? call(known) : context.accountRefs.resolve(actor, [...references]).then(call);
  };
}
