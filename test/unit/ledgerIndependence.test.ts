import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The ledger stands on its own: renewal (periods/), auto top-up (stripe/) and alerts (alerts/) react
 * to what it reports (ledger/ledgerPolicies.ts, wired in app.ts). No module of ledger/ imports one of
 * them, and none reaches one through the modules it does import (type-only imports are erased and
 * do not count for the reach; they may not name those folders directly either).
 */
const SRC = path.resolve(import.meta.dirname, '../../packages/server/src');
const POLICY_FOLDERS = ['stripe', 'periods', 'alerts'];

function importsOf(file: string): Array<{ target: string; typeOnly: boolean }> {
  const text = readFileSync(file, 'utf8');
  const found: Array<{ target: string; typeOnly: boolean }> = [];
  const statement = /(?:^|\n)\s*(import|export)\s+(type\s+)?(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]/g;
  for (const match of text.matchAll(statement)) {
    if (match[3]!.startsWith('.')) found.push({ target: path.resolve(path.dirname(file), match[3]!), typeOnly: match[2] !== undefined });
  }
  for (const match of text.matchAll(/import\(\s*['"]([^'"]+)['"]\s*\)/g)) {
    if (match[1]!.startsWith('.')) found.push({ target: path.resolve(path.dirname(file), match[1]!), typeOnly: false });
  }
  return found;
}

const folderOf = (file: string) => path.relative(SRC, file).split(path.sep)[0]!;

describe('the ledger stands on its own', () => {
  const ledgerFiles = readdirSync(path.join(SRC, 'ledger'))
    .filter((name) => name.endsWith('.ts'))
    .map((name) => path.join(SRC, 'ledger', name));

  it('no ledger module imports stripe/, periods/ or alerts/', () => {
    const direct = ledgerFiles.flatMap((file) =>
      importsOf(file)
        .filter((entry) => POLICY_FOLDERS.includes(folderOf(entry.target)))
        .map((entry) => `${path.relative(SRC, file)} → ${path.relative(SRC, entry.target)}`),
    );
    expect(direct).toEqual([]);
  });

  it('nor reaches one through what it imports', () => {
    const reached = new Map<string, string>();
    const queue = ledgerFiles.map((file) => [file, path.relative(SRC, file)] as const);
    for (let next = queue.shift(); next; next = queue.shift()) {
      const [file, via] = next;
      if (reached.has(file)) continue;
      reached.set(file, via);
      for (const entry of importsOf(file)) {
        if (!entry.typeOnly && entry.target.startsWith(SRC) && !entry.target.includes(`${path.sep}generated${path.sep}`)) {
          queue.push([entry.target, `${via} → ${path.relative(SRC, entry.target)}`]);
        }
      }
    }
    const violations = [...reached].filter(([file]) => POLICY_FOLDERS.includes(folderOf(file))).map(([, via]) => via);
    expect(violations).toEqual([]);
    // The walk did walk: the ledger's own modules and what they build on.
    expect(reached.size).toBeGreaterThan(ledgerFiles.length);
  });
});
