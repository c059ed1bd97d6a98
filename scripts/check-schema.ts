/**
 * Fails when the printed schema breaks clients compared with the previous commit's, unless each
 * breaking change is listed, with a reason, in packages/schema/breaking-changes-allowed.json:
 * breaking changes must be deliberate.
 *
 *   tsx scripts/check-schema.ts [base-revision]     (default HEAD~1)
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildSchema, findBreakingChanges } from 'graphql';

const schemaPath = 'packages/schema/schema.graphql';
const allowListPath = fileURLToPath(new URL('../packages/schema/breaking-changes-allowed.json', import.meta.url));
const base = process.argv[2] ?? 'HEAD~1';

let previous: string;
try {
  previous = execFileSync('git', ['show', `${base}:${schemaPath}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
} catch {
  process.stdout.write(`no ${schemaPath} at ${base}: nothing to compare\n`);
  process.exit(0);
}
const current = readFileSync(fileURLToPath(new URL(`../${schemaPath}`, import.meta.url)), 'utf8');
const allowed = (JSON.parse(readFileSync(allowListPath, 'utf8')) as Array<{ change: string; reason: string }>).map((entry) => entry.change);
const breaking = findBreakingChanges(buildSchema(previous), buildSchema(current)).filter((change) => !allowed.includes(change.description));
if (breaking.length > 0) {
  process.stderr.write(`breaking schema changes against ${base} (list them with a reason in packages/schema/breaking-changes-allowed.json if deliberate):\n`);
  for (const change of breaking) process.stderr.write(`- ${change.description}\n`);
  process.exit(1);
}
process.stdout.write(`no unlisted breaking changes against ${base}\n`);
