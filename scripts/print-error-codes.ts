import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ErrorCode, TransportErrorCode } from '../packages/server/src/domain/errors.ts';

/**
 * Prints the server's error codes into the SDK as a union type, so that a partner's `switch` on
 * `error.code` is checked against the codes the server really sends. Run by `pnpm generate`.
 */
const codes = [...new Set([...Object.values(ErrorCode), ...Object.values(TransportErrorCode)])].sort();
const directory = new URL('../packages/sdk/src/generated/', import.meta.url);
mkdirSync(fileURLToPath(directory), { recursive: true });
writeFileSync(
  fileURLToPath(new URL('errorCodes.ts', directory)),
  `/* Printed by scripts/print-error-codes.ts from the server's error codes: do not edit. */

/** Every \`extensions.code\` the server sends (on GraphQL errors) and \`code\` on refusals. */
export const SERVER_ERROR_CODES = [
${codes.map((code) => `  '${code}',`).join('\n')}
] as const;

/** A code the server sends. */
export type ServerErrorCode = (typeof SERVER_ERROR_CODES)[number];
`,
);
process.stdout.write(`printed ${codes.length} error codes into packages/sdk/src/generated/errorCodes.ts\n`);
