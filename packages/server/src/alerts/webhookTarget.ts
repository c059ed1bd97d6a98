import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { lookup as dnsLookupAsync } from 'node:dns/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';
import { invalidInput } from '../domain/errors.ts';

/**
 * Where alert webhooks may be sent. An account's key chooses the URL and the server's job runner
 * POSTs to it, so without these rules any customer could make the server call its own network
 * (server-side request forgery): the database, an admin port, a cloud metadata endpoint.
 */
export interface WebhookTargetPolicy {
  /**
   * Development only (ALERT_WEBHOOK_ALLOW_PRIVATE): plain http and loopback or private addresses,
   * for a receiver on the developer's machine.
   */
  allowPrivate: boolean;
  /** How long one delivery may take, connection to last byte (ALERT_WEBHOOK_TIMEOUT_MS). */
  timeoutMs: number;
}

export const DEFAULT_WEBHOOK_TARGET_POLICY: WebhookTargetPolicy = { allowPrivate: false, timeoutMs: 10_000 };

export const MAX_WEBHOOK_URL_LENGTH = 2_000;

/** What is read of a receiver's answer: only its status matters; the rest is drained unread. */
const MAX_RESPONSE_BYTES = 64 * 1024;

/**
 * Public unicast only. ipaddr.js names every special-purpose range (loopback, private, link-local,
 * multicast, unspecified, carrier-grade NAT, unique-local, 6to4, Teredo, documentation ...); an
 * IPv4-mapped IPv6 address is judged as the IPv4 address it carries.
 */
export function isPublicAddress(address: string): boolean {
  if (!ipaddr.isValid(address)) return false;
  let parsed = ipaddr.parse(address);
  if (parsed.kind() === 'ipv6' && (parsed as ipaddr.IPv6).isIPv4MappedAddress()) parsed = (parsed as ipaddr.IPv6).toIPv4Address();
  // The deprecated IPv4-compatible form (::a.b.c.d, ::/96), which ipaddr.js calls unicast: some
  // stacks route it to the IPv4 address it carries, so it is judged by that address (::127.0.0.1 is loopback).
  const parts = parsed.kind() === 'ipv6' ? (parsed as ipaddr.IPv6).parts : null;
  if (parts && parts.slice(0, 6).every((part) => part === 0)) {
    const [high = 0, low = 0] = parts.slice(6);
    parsed = ipaddr.fromByteArray([high >> 8, high & 0xff, low >> 8, low & 0xff]);
  }
  return parsed.range() === 'unicast';
}

/** A hostname the URL parser left as an IP literal: IPv4 in any notation becomes dotted decimal, IPv6 keeps its brackets. */
function literalAddress(hostname: string): string | null {
  const bare = hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
  return ipaddr.isValid(bare) ? bare : null;
}

function isLocalName(hostname: string): boolean {
  const name = hostname.toLowerCase().replace(/\.$/, '');
  return name === 'localhost' || name.endsWith('.localhost');
}

/**
 * Checks a URL as configured. A name is checked again, resolved, at each delivery (a DNS answer
 * can change); an address literal is judged here, in whatever notation it was written — the URL
 * parser turns `2130706433`, `0x7f.1` and `0177.0.0.1` all into `127.0.0.1`.
 */
export function checkWebhookUrl(raw: string, policy: Pick<WebhookTargetPolicy, 'allowPrivate'>): URL {
  if (raw.length > MAX_WEBHOOK_URL_LENGTH) throw invalidInput(`url must be at most ${MAX_WEBHOOK_URL_LENGTH} characters`, 'url');
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw invalidInput('url must be an absolute https URL', 'url');
  }
  if (url.protocol !== 'https:' && !(policy.allowPrivate && url.protocol === 'http:')) {
    throw invalidInput('url must be an https URL', 'url');
  }
  if (url.username !== '' || url.password !== '') throw invalidInput('url must not carry a user name or password', 'url');
  if (!policy.allowPrivate) {
    const literal = literalAddress(url.hostname);
    if (literal !== null ? !isPublicAddress(literal) : isLocalName(url.hostname)) {
      throw invalidInput('url must point to a public internet address (not loopback, private, link-local, multicast or unspecified)', 'url');
    }
  }
  return url;
}

/** A configuration-time look-up that takes longer is given up: delivery looks again anyway. */
const CONFIGURE_LOOKUP_TIMEOUT_MS = 2_000;

/**
 * checkWebhookUrl, and a name must not resolve to a non-public address now. A name that does not
 * resolve (yet) is accepted: each delivery resolves it again and refuses what is not public.
 */
export async function checkWebhookTarget(raw: string, policy: Pick<WebhookTargetPolicy, 'allowPrivate'>): Promise<URL> {
  const url = checkWebhookUrl(raw, policy);
  if (policy.allowPrivate || literalAddress(url.hostname) !== null) return url;
  let timer: NodeJS.Timeout | undefined;
  const addresses = await Promise.race([
    dnsLookupAsync(url.hostname, { all: true }).catch(() => []),
    new Promise<LookupAddress[]>((resolve) => {
      timer = setTimeout(() => resolve([]), CONFIGURE_LOOKUP_TIMEOUT_MS);
    }),
  ]).finally(() => clearTimeout(timer));
  const refused = addresses.find((entry) => !isPublicAddress(entry.address));
  if (refused) throw invalidInput(`url's host ${url.hostname} resolves to ${refused.address}, which is not a public internet address`, 'url');
  return url;
}

export class WebhookTargetRefused extends Error {}

/**
 * Resolves the name and refuses the connection unless every address is public; the socket then
 * connects to the address checked here, so a second, different DNS answer (rebinding) is never used.
 */
function guardedLookup(allowPrivate: boolean): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (error, addresses: LookupAddress[]) => {
      if (error) return void callback(error, '', 4);
      const refused = allowPrivate ? undefined : addresses.find((entry) => !isPublicAddress(entry.address));
      if (refused || addresses.length === 0) {
        const reason = new WebhookTargetRefused(`${hostname} resolves to ${refused?.address ?? 'no address'}, which is not a public address`);
        return void callback(reason, '', 4);
      }
      if (options.all) return void (callback as unknown as (error: null, all: LookupAddress[]) => void)(null, addresses);
      const first = addresses[0]!;
      callback(null, first.address, first.family);
    });
  };
}

export interface WebhookResponse {
  status: number;
}

/**
 * POSTs once: the URL is checked again (it may predate these rules), redirects are not followed
 * (a 3xx is an answer, not a delivery), the whole exchange is bounded by the policy's timeout and
 * at most MAX_RESPONSE_BYTES of the answer are read.
 */
export async function postToWebhook(
  rawUrl: string,
  body: string,
  headers: Record<string, string>,
  policy: WebhookTargetPolicy,
): Promise<WebhookResponse> {
  const url = checkWebhookUrl(rawUrl, policy);
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<WebhookResponse>((resolve, reject) => {
    const request = send(
      url,
      {
        method: 'POST',
        headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
        lookup: guardedLookup(policy.allowPrivate),
        timeout: policy.timeoutMs,
        signal: AbortSignal.timeout(policy.timeoutMs),
      },
      (response: IncomingMessage) => {
        let read = 0;
        response.on('data', (chunk: Buffer) => {
          read += chunk.length;
          if (read > MAX_RESPONSE_BYTES) response.destroy();
        });
        const done = () => resolve({ status: response.statusCode ?? 0 });
        response.once('end', done);
        response.once('close', done);
        response.once('error', done);
      },
    );
    request.once('timeout', () => request.destroy(new Error(`no answer within ${policy.timeoutMs} ms`)));
    request.once('error', reject);
    request.end(body);
  });
}
