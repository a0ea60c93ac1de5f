/**
 * The native addon as TypeScript sees it: the binding's types (types.ts), the test flavour's extra
 * exports (testing.ts), the loader (loader.ts), the addon's constants (info.ts) and the conversion of
 * its failures (call.ts). Internal: the public API is in model.ts; tests and benchmarks require this
 * folder as `dist/native`.
 */
export * from './types';
export type * from './testing';
export * from './loader';
export * from './info';
export * from './call';
