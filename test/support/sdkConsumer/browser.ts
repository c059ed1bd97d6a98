/**
 * A browser front end of a bundler project (Vite, webpack, esbuild): type-checked with
 * `moduleResolution: Bundler` and the DOM library, and bundled for the browser by the test.
 */
import { BillingApiError, createBillingClient } from '@credit-billing/sdk';

const session = new URLSearchParams(window.location.hash.slice(1)).get('session') ?? '';
const billing = createBillingClient({ url: '/graphql', apiKey: session });

export async function render(accountId: string, element: HTMLElement): Promise<void> {
  try {
    for (const balance of await billing.balances(accountId)) element.append(`${balance.creditType}: ${balance.available}`);
    billing.subscribeToBalance(accountId, {
      onData: (balance) => element.append(`${balance.creditType}: ${balance.available}`),
      onError: (error) => element.append(`stopped: ${error.code}`),
    });
  } catch (error) {
    element.append(error instanceof BillingApiError ? error.code : 'failed');
  }
}
