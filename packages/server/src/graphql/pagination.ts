import { invalidInput } from '../domain/errors.ts';
import type { ObjectRef } from '@pothos/core';
import { builder, type BuilderTypes } from './builder.ts';

export const DEFAULT_PAGE_SIZE = 50;
/** The largest `first` any connection accepts; larger requests are refused, not truncated. */
export const MAX_PAGE_SIZE = 500;

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

export function decodeCursor(cursor: string | null | undefined, arity: number): Array<string | number> | null {
  if (cursor === null || cursor === undefined) return null;
  try {
    const key: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(key) && key.length === arity && key.every((part) => typeof part === 'string' || typeof part === 'number')) {
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
