/** A page of a connection, as every paginated field of the API answers. */
export interface Page<Node> {
  edges: ReadonlyArray<{ node: Node }>;
  pageInfo: { hasNextPage: boolean; endCursor?: string | null };
}

/**
 * Every node of a connection, page after page, fetched as the loop asks for them (a `break` stops
 * fetching). `fetchPage` gets the cursor to continue after (null: the first page).
 */
export async function* eachNode<Node>(fetchPage: (after: string | null) => Promise<Page<Node>>): AsyncGenerator<Node, void, undefined> {
  let after: string | null = null;
  for (;;) {
    const page: Page<Node> = await fetchPage(after);
    for (const edge of page.edges) yield edge.node;
    if (!page.pageInfo.hasNextPage || !page.pageInfo.endCursor) return;
    after = page.pageInfo.endCursor;
  }
}
