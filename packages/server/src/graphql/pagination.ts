import { invalidInput } from '../domain/errors.ts';
import type { ObjectRef } from '@pothos/core';
import { builder, type BuilderTypes } from './builder.ts';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from './pageLimits.ts';

export { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE };

export function pageSize(first: number | null | undefined): number {
  if (first === null || first === undefined) return DEFAULT_PAGE_SIZE;
  if (!Number.isInteger(first) || first < 1 || first > MAX_PAGE_SIZE) {
    throw invalidInput(`first must be from 1 to ${MAX_PAGE_SIZE}`, 'first');
  }
  return first;
}

/** Cursors are opaque to clients: base64url of the sort key of the last row seen. */
export function encodeCursor(key: ReadonlyArray<string | number>): string {
  return Buffer.from(JSON.stringify(key)).toString('base64url');
}

const MAX_BIGINT = 2n ** 63n - 1n;

/** Date.parse reads 2026-02-30 as March 2: a real instant is one that prints back as itself. */
function isCalendarInstant(text: string): boolean {
  const date = new Date(text);
  return !Number.isNaN(date.getTime()) && date.toISOString() === text;
}

/**
 * What each part of a connection's sort key is. A cursor is decoded against these, so that a forged
 * one (right length, wrong values) is INVALID_INPUT here, never a failed query further on.
 */
const CURSOR_PARTS = {
  /** An instant as `toISOString` writes it. */
  instant: (part: unknown) => typeof part === 'string' && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/.test(part) && isCalendarInstant(part),
  /** A row id (a UUID, or another short token). */
  id: (part: unknown) => typeof part === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(part),
  /** A non-negative integer that fits PostgreSQL's bigint, as a number or a string of digits. */
  integer: (part: unknown) =>
    (typeof part === 'number' && Number.isSafeInteger(part) && part >= 0) || (typeof part === 'string' && /^\d{1,19}$/.test(part) && BigInt(part) <= MAX_BIGINT),
} as const;

export type CursorPart = keyof typeof CURSOR_PARTS;

export function decodeCursor(cursor: string | null | undefined, parts: readonly CursorPart[]): Array<string | number> | null {
  if (cursor === null || cursor === undefined) return null;
  try {
    const key: unknown = cursor.length <= 512 ? JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) : null;
    if (Array.isArray(key) && key.length === parts.length && parts.every((part, index) => CURSOR_PARTS[part](key[index]))) {
      return key as Array<string | number>;
    }
  } catch {
    // Falls through to the typed error below.
  }
  throw invalidInput('after is not a cursor this connection issued', 'after');
}

export interface Connection<T> {
  edges: Array<{ cursor: string; node: T }>;
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
}

/** `rows` were fetched with one extra row beyond `size`, which only tells whether a next page exists. */
export function toConnection<T>(rows: T[], size: number, cursorKey: (row: T) => ReadonlyArray<string | number>): Connection<T> {
  const page = rows.slice(0, size);
  const edges = page.map((node) => ({ cursor: encodeCursor(cursorKey(node)), node }));
  return { edges, pageInfo: { hasNextPage: rows.length > size, endCursor: edges.at(-1)?.cursor ?? null } };
}

export const PageInfoRef = builder.objectRef<Connection<unknown>['pageInfo']>('PageInfo').implement({
  description: 'Where a page of a connection ends and whether another follows.',
  fields: (t) => ({
    hasNextPage: t.exposeBoolean('hasNextPage', { description: 'True when a further page exists.' }),
    endCursor: t.exposeString('endCursor', { nullable: true, description: 'Pass as `after` to read the next page.' }),
  }),
});

/** Declares `<Name>Connection` and `<Name>Edge` for a node type, in the Relay shape clients expect. */
export function defineConnection<T>(name: string, nodeRef: ObjectRef<BuilderTypes, T>, noun: string) {
  const edgeRef = builder.objectRef<Connection<T>['edges'][number]>(`${name}Edge`).implement({
    description: `One ${noun} in a page, with its cursor.`,
    fields: (t) => ({
      cursor: t.exposeString('cursor', { description: 'Pass as `after` to read what follows this one.' }),
      // Pothos cannot relate a generic T to its resolver result type; the ref fixes the shape at runtime.
      node: t.field({ type: nodeRef, description: `The ${noun}.`, resolve: (edge) => edge.node as never }),
    }),
  });
  return builder.objectRef<Connection<T>>(`${name}Connection`).implement({
    description: `A page of ${noun}s.`,
    fields: (t) => ({
      edges: t.field({ type: [edgeRef], description: `The ${noun}s of this page, in order.`, resolve: (page) => page.edges }),
      pageInfo: t.field({ type: PageInfoRef, description: 'Whether more follow, and the cursor to ask for them.', resolve: (page) => page.pageInfo }),
    }),
  });
}
