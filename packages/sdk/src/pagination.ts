import { BillingApiError } from './errors.ts';

/** A page of a connection, as every paginated field of the API answers. */
export interface Page<Node> {
  edges: ReadonlyArray<{ node: Node }>;
  pageInfo: { hasNextPage: boolean; endCursor?: string | null };
}

/**
 * Every node of a connection, page after page, fetched as the loop asks for them (a `break` stops
 * fetching). `fetchPage` gets the cursor to continue after (null: the first page). A page that
 * cannot advance (more pages said to follow, but no edges, or a cursor already read) ends the loop
 * with a BillingApiError HTTP_ERROR: followed, it would repeat requests for ever (a broken proxy or
 * cache in front of the server). The cursors read are kept, a few dozen bytes a page.
 */
export async function* eachNode<Node>(fetchPage: (after: string | null) => Promise<Page<Node>>): AsyncGenerator<Node, void, undefined> {
  let after: string | null = null;
  const seen = new Set<string>();
  for (;;) {
    const page: Page<Node> = await fetchPage(after);
    for (const edge of page.edges) yield edge.node;
    if (!page.pageInfo.hasNextPage || !page.pageInfo.endCursor) return;
    if (page.edges.length === 0 || seen.has(page.pageInfo.endCursor)) {
      throw new BillingApiError(`the connection's page after ${JSON.stringify(after)} does not advance (no edges, or a cursor already read): listing stopped`, 'HTTP_ERROR', [], 200);
    }
    seen.add(page.pageInfo.endCursor);
    after = page.pageInfo.endCursor;
  }
}
