import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { introspectionFromSchema, lexicographicSortSchema } from 'graphql';
import { printSortedSchema, schema } from '../packages/server/src/graphql/schema.ts';

const directory = new URL('../packages/schema/', import.meta.url);
writeFileSync(fileURLToPath(new URL('schema.graphql', directory)), printSortedSchema());
writeFileSync(
  fileURLToPath(new URL('schema.json', directory)),
  `${JSON.stringify(introspectionFromSchema(lexicographicSortSchema(schema), { descriptions: true }), null, 2)}\n`,
);
process.stdout.write('printed packages/schema/schema.graphql and schema.json\n');
