import type { CodegenConfig } from '@graphql-codegen/cli';

const config: CodegenConfig = {
  schema: 'packages/schema/schema.graphql',
  documents: 'packages/sdk/src/operations/**/*.graphql',
  emitLegacyCommonJSImports: false,
  generates: {
    'packages/sdk/src/generated/': {
      preset: 'client',
      presetConfig: { fragmentMasking: false },
      config: {
        // Documents as strings: the SDK needs no GraphQL parser at run time (smaller in browsers).
        documentMode: 'string',
        enumsAsTypes: true,
        useTypeImports: true,
        scalars: { DateTime: 'string', Credits: 'number', JSON: 'unknown' },
      },
    },
  },
};

export default config;
