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
        enumsAsTypes: true,
        useTypeImports: true,
        scalars: { DateTime: 'string', Credits: 'number', JSON: 'unknown' },
      },
    },
  },
};

export default config;
