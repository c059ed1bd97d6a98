import { complexityFromQuery, type FieldComplexityValue } from '@pothos/plugin-complexity';
import { Semaphore } from 'async-mutex';
import {
  GraphQLError,
  Kind,
  getNamedType,
  getNullableType,
  isInputObjectType,
  isListType,
  typeFromAST,
  type DocumentNode,
  type ExecutionArgs,
  type GraphQLSchema,
  type OperationDefinitionNode,
  type VariableDefinitionNode,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { TransportErrorCode } from '../domain/errors.ts';
import { DEFAULT_PAGE_SIZE } from './pageLimits.ts';

/**
 * What an operation may cost, computed with its variables (a `first: $n` counts as n) before any
 * resolver runs. A full page (500) of usage events with their draws and grants costs about 43,000,
 * so one such page passes and a second alias of it does not.
 */
export const DEFAULT_QUERY_COST_LIMIT = 75_000;

/**
 * Cost units that may execute at once in one process: operations at or above
 * COSTLY_OPERATION_THRESHOLD wait for their share (at most QUEUE_WAIT_MS), so that twenty maximal
 * queries in parallel are answered one at a time instead of holding twenty results in memory
 * (and of interleaving their work so that nothing else, /healthz included, is answered for seconds).
 */
export const DEFAULT_QUERY_COST_BUDGET = DEFAULT_QUERY_COST_LIMIT;
export const COSTLY_OPERATION_THRESHOLD = 5_000;
const QUEUE_WAIT_MS = 5_000;
/** Beyond this many operations waiting for the budget, the next is refused at once. */
const MAX_WAITING = 100;

/**
 * The cost of one field (the Pothos complexity plugin's `fieldComplexity`): 1, and what is selected
 * below a list counts once per item it may hold. A connection's or a paged list's items are its
 * `first` (its default page when absent), the `edges` of a connection are already counted by it, a
 * batch mutation's by its inputs; another list counts 10.
 */
export function fieldCost(args: Record<string, unknown>, _context: unknown, field: { name: string; args: ReadonlyArray<{ name: string }> }): FieldComplexityValue {
  if (typeof args.first === 'number') return { field: 1, multiplier: Math.max(0, args.first) };
  if (field.args.some((argument) => argument.name === 'first')) return { field: 1, multiplier: DEFAULT_PAGE_SIZE };
  if (field.name === 'edges') return { field: 1, multiplier: 1 };
  if (Array.isArray(args.inputs)) return { field: 1, multiplier: args.inputs.length };
  return 1;
}

/**
 * The variable definitions the cost is computed with. A variable that is a list of input objects,
 * given as an array, is declared JSON here, which takes the array as it is: its cost is its length
 * (fieldCost never looks inside the items, and coercion keeps a list's length), and coercing each
 * item is left to the execution, which does it anyway. For a batch of 1,000 usages that second
 * coercion of every item was a tenth of the server's CPU. Items that would not coerce then cost as
 * many as they are, and the execution refuses them.
 */
function costingDefinitions(schema: GraphQLSchema, operation: OperationDefinitionNode, variables: Readonly<Record<string, unknown>>): VariableDefinitionNode[] {
  return (operation.variableDefinitions ?? []).map((definition) => {
    const type = typeFromAST(schema, definition.type);
    const nullable = type === undefined ? undefined : getNullableType(type);
    if (!isListType(nullable) || !isInputObjectType(getNamedType(nullable)) || !Array.isArray(variables[definition.variable.name.value])) return definition;
    return { ...definition, type: { kind: Kind.NAMED_TYPE, name: { kind: Kind.NAME, value: 'JSON' } } };
  });
}

/** The selected operation's cost, or null when its variables do not coerce (execution reports that). */
export function operationCost(args: Pick<ExecutionArgs, 'schema' | 'document' | 'variableValues' | 'operationName' | 'contextValue'>): number | null {
  const operations = args.document.definitions.filter((definition) => definition.kind === Kind.OPERATION_DEFINITION);
  const selected = args.operationName ? operations.find((operation) => operation.name?.value === args.operationName) : operations[0];
  if (!selected) return null;
  const variables = (args.variableValues ?? {}) as Record<string, unknown>;
  const document: DocumentNode = {
    ...args.document,
    definitions: [
      { ...selected, variableDefinitions: costingDefinitions(args.schema, selected, variables) },
      ...args.document.definitions.filter((definition) => definition.kind === Kind.FRAGMENT_DEFINITION),
    ],
  };
  try {
    return complexityFromQuery(document, {
      schema: args.schema,
      ctx: (args.contextValue ?? {}) as object,
      variables,
    }).complexity;
  } catch {
    return null;
  }
}

function tooCostly(cost: number, limit: number): GraphQLError {
  return new GraphQLError(`this operation costs ${cost}, more than the limit of ${limit}: ask for smaller pages or fewer fields`, {
    extensions: { code: TransportErrorCode.QUERY_TOO_COSTLY, cost, limit, http: { status: 400 } },
  });
}

function serverBusy(): GraphQLError {
  return new GraphQLError('the server is answering other large queries: retry shortly', {
    extensions: { code: TransportErrorCode.SERVER_BUSY, retryable: true, retryAfter: 1, http: { status: 503, headers: { 'Retry-After': '1' } } },
  });
}

export interface QueryCostOptions {
  limit: number;
  budget: number;
}

/**
 * Refuses an operation over the cost limit before it executes (QUERY_TOO_COSTLY), over HTTP and
 * WebSocket alike (both run this envelop), and lets costly operations execute only within the
 * process's cost budget (SERVER_BUSY, retryable, when the wait is too long).
 */
export function useQueryCost(options: QueryCostOptions): Plugin {
  const semaphore = new Semaphore(options.budget);
  let waiting = 0;

  async function acquire(weight: number): Promise<(() => void) | null> {
    if (waiting >= MAX_WAITING) return null;
    waiting += 1;
    let timer: NodeJS.Timeout | undefined;
    const acquired = semaphore.acquire(weight);
    try {
      const outcome = await Promise.race([
        acquired.then(([, release]) => release),
        new Promise<null>((resolve) => {
          timer = setTimeout(() => resolve(null), QUEUE_WAIT_MS);
        }),
      ]);
      // A share granted after the wait was given up is handed straight back.
      if (outcome === null) void acquired.then(([, release]) => release());
      return outcome;
    } finally {
      clearTimeout(timer);
      waiting -= 1;
    }
  }

  return {
    async onExecute({ args, setResultAndStopExecution }) {
      const cost = operationCost(args);
      if (cost === null) return;
      if (cost > options.limit) return void setResultAndStopExecution({ errors: [tooCostly(cost, options.limit)] });
      if (cost < COSTLY_OPERATION_THRESHOLD) return;
      const release = await acquire(Math.min(cost, options.budget));
      if (!release) return void setResultAndStopExecution({ errors: [serverBusy()] });
      let released = false;
      const releaseOnce = () => {
        if (!released) release();
        released = true;
      };
      return { onExecuteDone: releaseOnce };
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      const cost = operationCost(args);
      if (cost !== null && cost > options.limit) setResultAndStopExecution({ errors: [tooCostly(cost, options.limit)] });
    },
  };
}
