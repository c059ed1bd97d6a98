import { randomUUID } from 'node:crypto';
import { getOperationAST, isObjectType, type ExecutionResult, type GraphQLFieldResolver, type GraphQLSchema } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { Logger } from 'pino';
import type { Actor } from '../auth/access.ts';
import { BillingError } from '../domain/errors.ts';
import type { Metrics } from './metrics.ts';

/** What the mutations that move credits return, as far as counting needs it. */
interface ObservedResult {
  kind?: string;
  code?: string;
  replayed?: boolean;
  id?: string;
  credits?: number;
  creditType?: string;
  amount?: number;
  source?: string;
  usageEvent?: { credits?: number; creditType?: string };
}

type ResultObserver = (field: string, result: ObservedResult) => void;

/** The mutations whose resolver results feed the domain counters (debits, grants, refusals). */
const OBSERVED_MUTATIONS = ['recordUsage', 'reserveCredits', 'settleReservation', 'grantCredits'];

const instrumented = Symbol('observedResolver');
const observerByContext = new WeakMap<object, ResultObserver>();

/**
 * Counts what the domain returned rather than what the client selected: a client that asks only for
 * `__typename` must still be counted with its credits. The schema is a module singleton shared by
 * every app in the process, so each resolver is wrapped once and reports to the observer its
 * execution registered (found by the context object, which is per request).
 */
function instrumentMutations(schema: GraphQLSchema): void {
  const mutation = schema.getMutationType();
  if (!mutation || !isObjectType(mutation)) return;
  const fields = mutation.getFields();
  for (const name of OBSERVED_MUTATIONS) {
    const field = fields[name] as (typeof fields)[string] & { [instrumented]?: true };
    if (!field?.resolve || field[instrumented]) continue;
    const resolve: GraphQLFieldResolver<unknown, object> = field.resolve;
    field.resolve = async (root, args, context: object, info) => {
      const result = (await resolve(root, args, context, info)) as ObservedResult;
      observerByContext.get(context)?.(name, result);
      return result;
    };
    field[instrumented] = true;
  }
}

/** Ids already counted, so that idempotent replays (which return the first result) count once. */
class RecentIds {
  private readonly ids = new Set<string>();

  constructor(private readonly capacity: number) {}

  /** True the first time an id is seen (among the last `capacity`). */
  add(id: string): boolean {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    if (this.ids.size > this.capacity) this.ids.delete(this.ids.values().next().value as string);
    return true;
  }
}

interface RequestState {
  id: string;
  startedAt: number;
  operation?: string;
  operationType?: string;
  refused?: boolean;
  logged?: boolean;
}

const REQUEST_ID = /^[\w.:-]{1,128}$/;

/**
 * Execution errors are seen here before yoga masks them, so the code is the BillingError's own; a
 * GraphQL error without one (variables that do not coerce) is GRAPHQL_ERROR; anything else is what
 * the masker will call INTERNAL_SERVER_ERROR.
 */
function codeOf(error: unknown): string {
  for (let current = error; current; current = (current as { originalError?: unknown }).originalError) {
    if (current instanceof BillingError) return current.code;
    const code = (current as { extensions?: { code?: unknown } }).extensions?.code;
    if (typeof code === 'string') return code;
    if (current instanceof Error && current.name === 'GraphQLError' && !(current as { originalError?: unknown }).originalError) return 'GRAPHQL_ERROR';
  }
  return 'INTERNAL_SERVER_ERROR';
}

function errorCodes(result: ExecutionResult): string[] {
  return [...new Set((result.errors ?? []).map(codeOf))];
}

/**
 * One log line and one metric sample per GraphQL operation: request id (the caller's X-Request-Id
 * when it is sane, else a new one, echoed back), operation name and type, who called (role, and
 * the account of an ACCOUNT or SEAT key), duration, outcome and error codes. Never the query text,
 * variables or headers: those carry secrets and customer data.
 */
export function useObservability(options: { schema: GraphQLSchema; logger: Logger; metrics: Metrics }): Plugin {
  const { logger, metrics } = options;
  instrumentMutations(options.schema);
  const states = new WeakMap<Request, RequestState>();
  const countedEvents = new RecentIds(10_000);
  const countedGrants = new RecentIds(10_000);

  const observe = (state: RequestState): ResultObserver => (field, result) => {
    if (result.kind && result.code && result.kind !== 'recorded' && result.kind !== 'reserved') {
      state.refused = true;
      metrics.refusals.inc({ operation: field, reason: result.code });
      return;
    }
    if (field === 'recordUsage' && result.kind === 'recorded' && !result.replayed && result.usageEvent?.creditType) {
      metrics.creditsDebited.inc({ credit_type: result.usageEvent.creditType }, result.usageEvent.credits ?? 0);
    } else if (field === 'settleReservation' && result.id && result.creditType && countedEvents.add(result.id)) {
      metrics.creditsDebited.inc({ credit_type: result.creditType }, result.credits ?? 0);
    } else if (field === 'grantCredits' && result.id && result.creditType && countedGrants.add(result.id)) {
      metrics.creditsGranted.inc({ credit_type: result.creditType, source: result.source ?? 'unknown' }, result.amount ?? 0);
    }
  };

  const finish = (state: RequestState, actor: Actor | null | undefined, result: ExecutionResult | null, httpStatus?: number) => {
    if (state.logged) return;
    state.logged = true;
    const durationMs = performance.now() - state.startedAt;
    const codes = result ? errorCodes(result) : [];
    // An HTTP status is only given for requests that never reached execution: those all failed.
    const failed = codes.length > 0 || httpStatus !== undefined;
    const outcome = failed ? 'error' : state.refused ? 'refused' : 'ok';
    const labels = { operation: metrics.operationLabel(state.operation), type: state.operationType ?? 'unknown', outcome };
    metrics.operations.inc(labels);
    metrics.operationDuration.observe(labels, durationMs / 1000);
    logger.info(
      {
        reqId: state.id,
        operation: state.operation ?? null,
        operationType: state.operationType ?? null,
        role: actor?.role ?? null,
        accountId: actor && actor.role !== 'ADMIN' ? actor.accountId : undefined,
        seatId: actor?.role === 'SEAT' ? actor.seatId : undefined,
        durationMs: Math.round(durationMs * 10) / 10,
        outcome,
        ...(httpStatus !== undefined ? { status: httpStatus } : {}),
        ...(codes.length > 0 ? { errorCodes: codes } : {}),
      },
      'graphql operation',
    );
  };

  return {
    onRequest({ request }) {
      const given = request.headers.get('x-request-id');
      states.set(request, { id: given && REQUEST_ID.test(given) ? given : randomUUID(), startedAt: performance.now() });
    },
    onParams({ params, request }) {
      const state = states.get(request);
      if (state && params.operationName) state.operation = params.operationName;
    },
    onExecute({ args }) {
      const context = args.contextValue as { request?: Request; actor?: Actor | null };
      // WebSocket operations come without an HTTP request: each is its own unit.
      const state = (context.request && states.get(context.request)) || { id: randomUUID(), startedAt: performance.now() };
      const operation = getOperationAST(args.document, args.operationName);
      state.operation = operation?.name?.value ?? args.operationName ?? state.operation;
      state.operationType = operation?.operation;
      observerByContext.set(args.contextValue as object, observe(state));
      return {
        onExecuteDone({ result }) {
          if (Symbol.asyncIterator in result) return;
          finish(state, context.actor, result);
        },
      };
    },
    onSubscribe({ args }) {
      const context = args.contextValue as { request?: Request; actor?: Actor | null };
      const state = (context.request && states.get(context.request)) || { id: randomUUID(), startedAt: performance.now() };
      state.operation = getOperationAST(args.document, args.operationName)?.name?.value ?? args.operationName ?? state.operation;
      state.operationType = 'subscription';
      finish(state, context.actor, null);
    },
    onResponse({ request, response }) {
      const state = states.get(request);
      if (!state) return;
      response.headers.set('x-request-id', state.id);
      // Requests refused before execution (unparsable, invalid, wrong method) are logged here.
      if (!state.logged && new URL(request.url).pathname === '/graphql' && request.method !== 'GET') {
        finish(state, null, null, response.status);
      }
    },
  };
}
