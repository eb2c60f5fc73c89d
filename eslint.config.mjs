// `make lint`'s promise checks, with the type checker: a promise nobody awaits or handles (a rejection that would
// crash the server or vanish) and a promise passed where a callback's result is ignored. Formatting is
// prettier's and types are tsc's, so no other rules run here.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'node_modules/**', 'docs/**', 'examples/**', '**/*.mjs', '**/*.js'] },
  {
    files: ['src/**/*.ts', 'test/**/*.ts', 'bench/**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { project: ['./tsconfig.json', './tsconfig.web.json'], tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    // Directives for rules this config does not run (no-explicit-any, ...) are not stale.
    linterOptions: { reportUnusedDisableDirectives: 'off' },
    rules: {
      // node:test's test() and friends return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite', 'before', 'after'] },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
    },
  },
);
