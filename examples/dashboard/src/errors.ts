import { BillingApiError, BillingNetworkError } from '@credit-billing/sdk';

export interface Problem {
  /** The API's stable code (what to switch on), or a local one for failures without an answer. */
  code: string;
  title: string;
  detail: string;
  /** Nothing else will work with this key: stop instead of retrying. */
  fatal: boolean;
}

/** A closed graphql-ws socket reaches the iterator as the CloseEvent itself, not as an Error. */
function closeCode(error: unknown): number | null {
  if (typeof error === 'object' && error !== null && 'code' in error && typeof (error as { code: unknown }).code === 'number') {
    return (error as { code: number }).code;
  }
  return null;
}

/** Turns whatever a call threw into words for the person looking at the page. */
export function describe(error: unknown, apiUrl: string): Problem {
  if (error instanceof BillingApiError) {
    switch (error.code) {
      case 'UNAUTHENTICATED':
        return {
          code: error.code,
          title: 'This session is not accepted',
          detail: 'It may have expired or been revoked. Open the dashboard again from your application to get a new session.',
          fatal: true,
        };
      case 'RATE_LIMITED': {
        const retryAfter = error.errors[0]?.extensions?.retryAfter;
        const wait = typeof retryAfter === 'number' ? ` Try again in ${Math.ceil(retryAfter)} s.` : ' Try again in a moment.';
        return { code: error.code, title: 'Too many requests', detail: `The billing API asked us to slow down.${wait}`, fatal: false };
      }
      case 'STRIPE_NOT_CONFIGURED':
        return {
          code: error.code,
          title: 'Buying credits is not available',
          detail: 'This billing server has no payment provider configured (STRIPE_SECRET_KEY). Everything else works.',
          fatal: false,
        };
      case 'STRIPE_UNAVAILABLE':
        return { code: error.code, title: 'The payment provider is unreachable', detail: 'Nothing was charged. Try again in a minute.', fatal: false };
      case 'FORBIDDEN':
        return { code: error.code, title: 'This key may not do that', detail: error.message, fatal: false };
      case 'ACCOUNT_NOT_FOUND':
        return {
          code: error.code,
          title: 'Account not found',
          detail: 'No account with this id is visible to this key. Check the `account` parameter of the address.',
          fatal: true,
        };
      default:
        return { code: error.code, title: 'The billing API refused the request', detail: error.message, fatal: false };
    }
  }
  if (error instanceof BillingNetworkError) {
    return {
      code: 'NETWORK',
      title: 'The billing API could not be reached',
      detail: `No answer from ${apiUrl}. Is the server running, and does the \`api\` parameter point at its /graphql endpoint?`,
      fatal: false,
    };
  }
  const code = closeCode(error);
  if (code === 4403) {
    return {
      code: 'UNAUTHENTICATED',
      title: 'Live updates refused',
      detail: 'The server refused this session for live updates: it may have expired or been revoked.',
      fatal: true,
    };
  }
  if (code !== null) return { code: `WS_${code}`, title: 'Live updates stopped', detail: `The WebSocket closed with code ${code}.`, fatal: false };
  return { code: 'ERROR', title: 'Something went wrong', detail: error instanceof Error ? error.message : String(error), fatal: false };
}
