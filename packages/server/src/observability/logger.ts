import { pino, type DestinationStream, type Logger } from 'pino';

/**
 * Where a secret could sit in a logged object. Request bodies and headers are never logged whole,
 * so these are a second line of defence: configuration objects, errors of HTTP clients (Stripe's
 * carry the request's headers), and results of the mutations that return a secret once.
 */
export const REDACTED_PATHS = [
  'secret',
  '*.secret',
  'apiKey',
  '*.apiKey',
  'secretKey',
  '*.secretKey',
  'webhookSecret',
  '*.webhookSecret',
  'adminApiKey',
  '*.adminApiKey',
  'stripe.secretKey',
  'stripe.webhookSecret',
  'authorization',
  '*.authorization',
  '*.headers.authorization',
  '*.headers["stripe-signature"]',
  '*.headers["Stripe-Signature"]',
  'err.headers',
  'err.raw.headers',
  'err.requestOptions',
  'err.config',
  'connectionString',
  '*.connectionString',
  'databaseUrl',
  '*.databaseUrl',
  'redisUrl',
  '*.redisUrl',
];

export interface LoggerOptions {
  level: string;
  /** Outside production (NODE_ENV unset too): pretty lines when stdout is a terminal. */
  development: boolean;
}

/**
 * JSON lines for machines; pino-pretty for a person at a terminal in development (never in
 * production, where a TTY is an accident and the output is collected).
 */
export function createLogger(options: LoggerOptions, destination?: DestinationStream): Logger {
  const base = { level: options.level, redact: { paths: REDACTED_PATHS, censor: '[redacted]' } };
  if (!destination && options.development && process.stdout.isTTY) {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  return destination ? pino(base, destination) : pino(base);
}
