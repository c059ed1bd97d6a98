import { invalidInput } from '../domain/errors.ts';

const CODE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

/** Codes and keys (plans, features, packs, credit types) appear in URLs, logs and tags: keep them plain. */
export function assertCode(value: string, field: string): string {
  if (!CODE_PATTERN.test(value)) {
    throw invalidInput(`${field} must be 1-128 letters, digits, '_', '.', ':' or '-', starting with a letter or digit`, field);
  }
  return value;
}

export function assertName(value: string, field = 'name'): string {
  const trimmed = value.trim();
  if (trimmed.length === 0 || trimmed.length > 200 || trimmed.includes('\u0000')) {
    throw invalidInput(`${field} must be 1-200 characters, without NUL`, field);
  }
  return trimmed;
}

export function assertMoney(amount: number, currency: string): { amount: number; currency: string } {
  if (!Number.isSafeInteger(amount) || amount < 0) throw invalidInput('price.amount must be whole minor units from 0', 'price.amount');
  if (!/^[A-Za-z]{3}$/.test(currency)) throw invalidInput('price.currency must be an ISO 4217 code such as USD', 'price.currency');
  return { amount, currency: currency.toUpperCase() };
}
