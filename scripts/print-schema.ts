import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { printSortedSchema } from '../packages/server/src/graphql/schema.ts';

const target = fileURLToPath(new URL('../packages/schema/schema.graphql', import.meta.url));
writeFileSync(target, printSortedSchema());
process.stdout.write(`printed ${target}\n`);
