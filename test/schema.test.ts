import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildSchema, findBreakingChanges, isObjectType } from 'graphql';
import { describe, expect, it } from 'vitest';
import { printSortedSchema } from '../packages/server/src/graphql/schema.ts';

const root = new URL('../', import.meta.url);
const shared = fileURLToPath(new URL('../shared/contract.graphql', root));
const committedCopy = fileURLToPath(new URL('packages/schema/contract.graphql', root));
// The committed print, checked below to be the server's schema exactly; read with this module's own
// graphql (the server's may be the other build of the package in this test runner).
const printed = readFileSync(fileURLToPath(new URL('packages/schema/schema.graphql', root)), 'utf8');
const schema = buildSchema(printed);

describe('the schema', () => {
  it('contains the whole public contract (findBreakingChanges(contract, schema) is empty)', () => {
    const contract = readFileSync(existsSync(shared) ? shared : committedCopy, 'utf8');
    const changes = findBreakingChanges(buildSchema(contract), schema);
    expect(changes.map((change) => change.description)).toEqual([]);
  });

  it('is committed as printed (pnpm generate)', () => {
    expect(printed).toBe(printSortedSchema());
  });

  it('describes every type and every field', () => {
    const undocumented: string[] = [];
    for (const type of Object.values(schema.getTypeMap())) {
      if (type.name.startsWith('__') || ['String', 'Int', 'Float', 'Boolean', 'ID'].includes(type.name)) continue;
      if (!type.description) undocumented.push(type.name);
      if (isObjectType(type)) {
        for (const field of Object.values(type.getFields())) {
          if (!field.description) undocumented.push(`${type.name}.${field.name}`);
          for (const arg of field.args) if (!arg.description) undocumented.push(`${type.name}.${field.name}(${arg.name})`);
        }
      }
    }
    expect(undocumented).toEqual([]);
  });
});
