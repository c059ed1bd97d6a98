import SchemaBuilder from '@pothos/core';
import { GraphQLError, Kind, type ValueNode } from 'graphql';
import { MAX_CREDITS } from '../domain/credits.ts';
import type { GraphQLContext } from './context.ts';

interface SchemaShape {
  Context: GraphQLContext;
  DefaultFieldNullability: false;
  Scalars: {
    DateTime: { Input: Date; Output: Date };
    Credits: { Input: number; Output: number };
    JSON: { Input: unknown; Output: unknown };
    ID: { Input: string; Output: string };
  };
}

/** Only the builder and its scalars live here; each type file adds its own fields. */
export const builder = new SchemaBuilder<SchemaShape>({ defaultFieldNullability: false });

export type BuilderTypes = PothosSchemaTypes.ExtendDefaultTypes<SchemaShape>;

function invalidScalar(code: string, message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code } });
}

builder.scalarType('DateTime', {
  description: 'An ISO-8601 instant in UTC.',
  serialize: (value) => (value as Date).toISOString(),
  parseValue: (value) => {
    if (typeof value !== 'string') throw invalidScalar('INVALID_INPUT', 'DateTime must be an ISO-8601 string');
    const date = new Date(value);
    if (Number.isNaN(date.getTime()) || !/^\d{4}-\d{2}-\d{2}T/.test(value)) {
      throw invalidScalar('INVALID_INPUT', `DateTime must be an ISO-8601 instant, got ${JSON.stringify(value).slice(0, 64)}`);
    }
    return date;
  },
});

function parseCredits(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    throw invalidScalar('INVALID_CREDITS', `Credits must be a whole number of at most ${MAX_CREDITS} in magnitude`);
  }
  return value;
}

builder.scalarType('Credits', {
  description: 'A whole number of credits, serialized as a JSON integer (at most 2^53 - 1).',
  serialize: (value) => value,
  parseValue: parseCredits,
  parseLiteral: (node: ValueNode) => {
    if (node.kind !== Kind.INT) throw invalidScalar('INVALID_CREDITS', 'Credits must be an integer literal');
    return parseCredits(Number(node.value));
  },
});

function parseJsonLiteral(node: ValueNode): unknown {
  switch (node.kind) {
    case Kind.STRING:
    case Kind.BOOLEAN:
      return node.value;
    case Kind.INT:
    case Kind.FLOAT:
      return Number(node.value);
    case Kind.NULL:
      return null;
    case Kind.LIST:
      return node.values.map(parseJsonLiteral);
    case Kind.OBJECT:
      return Object.fromEntries(node.fields.map((field) => [field.name.value, parseJsonLiteral(field.value)]));
    default:
      throw invalidScalar('INVALID_INPUT', 'JSON literals cannot contain variables or enums');
  }
}

builder.scalarType('JSON', {
  description: 'Any JSON value (usage metadata).',
  serialize: (value) => value,
  parseValue: (value) => value,
  parseLiteral: parseJsonLiteral,
});

builder.queryType({ description: 'Reads: the catalogue, accounts and who is calling.' });
builder.mutationType({ description: 'Writes: the catalogue, accounts, grants, usage and keys.' });
