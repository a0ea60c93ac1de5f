/**
 * Finds and loads the native addon: an explicit EVIT_BINDING, else a local source build, else the
 * prebuilt binary, and says in words a user can act on why none loaded. Internal.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NativeError } from '../errors';
import type { NativeBinding } from './types';

/** Where a candidate addon comes from: an explicit EVIT_BINDING, a source build, or the prebuilt one. */
export type AddonSource = 'EVIT_BINDING' | 'build' | 'prebuilt';

export interface AddonCandidate {
  file: string;
  source: AddonSource;
}

/** The addon in use: backendInfo().addon. */
export interface AddonInfo extends AddonCandidate {
  /** The N-API version the addon was built for, and the one this Node provides. */
  napi: number;
  nodeNapi: number;
}

/** The N-API version the addon is built against (package.json binary.napi_versions, NAPI_VERSION in the builds). */
export const ADDON_NAPI_VERSION = 8;

const SOURCE_LABEL: Record<AddonSource, string> = {
  EVIT_BINDING: 'EVIT_BINDING',
  build: 'local build',
  prebuilt: 'prebuilt binary',
};

let cached: { binding: NativeBinding; addon: AddonInfo } | undefined;

export interface PlatformId {
  /** prebuilds/ directory name: `${platform}-${arch}`. */
  dir: string;
  /** On Linux, the C library: a glibc binary cannot load on musl. */
  libc: 'glibc' | 'musl' | null;
  glibc: string | null;
}

let platform: PlatformId | undefined;

export function platformId(): PlatformId {
  if (platform) return platform;
  const dir = `${process.platform}-${process.arch}`;
  if (process.platform !== 'linux') return (platform = { dir, libc: null, glibc: null });
  // Node reports the glibc it runs on; there is none on musl.
  const report = process.report?.getReport?.() as { header?: { glibcVersionRuntime?: string } } | undefined;
  const glibc = report?.header?.glibcVersionRuntime ?? null;
  return (platform = { dir, libc: glibc ? 'glibc' : 'musl', glibc });
}

/**
 * Candidate addons, in the order they are tried. EVIT_BINDING, when set, is the only one: an explicit
 * choice that fails must not be replaced silently by another binary. Otherwise a local source build comes
 * before the prebuilt binary: it exists only when someone built from source on purpose (forced, or because
 * the prebuilt one did not load), and in a working checkout it is the code being developed.
 */
export function bindingCandidates(root = path.resolve(__dirname, '..', '..'), env = process.env): AddonCandidate[] {
  if (env.EVIT_BINDING) return [{ file: path.resolve(env.EVIT_BINDING), source: 'EVIT_BINDING' }];
  return [
    { file: path.join(root, 'build', 'Release', 'evit.node'), source: 'build' },
    { file: path.join(root, 'prebuilds', platformId().dir, 'evit.node'), source: 'prebuilt' },
  ];
}

/** Why an addon failed to load, in words a user can act on; `message` is the loader's own. */
export function explainLoadFailure(message: string): string {
  const first = message.split('\n')[0]!.trim();
  const hints: Array<[RegExp, string]> = [
    [/GLIBC_[\d.]+'? not found/, 'this system\'s glibc is older than the one the binary was built for'],
    [/GLIBCXX_[\d.]+'? not found|CXXABI_[\d.]+'? not found/, 'this system\'s libstdc++ is older than the one the binary was built for'],
    [/file too short/, 'truncated, or not a compiled library at all'],
    [/invalid ELF header|wrong ELF class|ELF file OS ABI invalid|not a valid Win32|incompatible architecture/i, 'built for another platform or architecture'],
    [/undefined symbol: napi_/, `this Node lacks N-API functions the binary uses (it needs N-API ${ADDON_NAPI_VERSION})`],
    [/Module did not self-register/, 'not a Node-API module, or built for another Node version'],
    [/cannot open shared object file/, 'a shared library it needs is missing'],
  ];
  const hint = hints.find(([re]) => re.test(message));
  return hint ? `${first} (${hint[1]})` : first;
}

function loadCandidate(c: AddonCandidate, exists: (f: string) => boolean): { binding?: NativeBinding; error?: string } {
  if (!exists(c.file)) return { error: 'not found' };
  // dlopen of a glibc binary on musl fails with an obscure relocation error: say it plainly instead.
  if (c.source === 'prebuilt' && platformId().libc === 'musl') return { error: 'built for glibc; this system uses musl' };
  let mod: Partial<NativeBinding>;
  try {
    mod = require(c.file) as Partial<NativeBinding>;
  } catch (err) {
    // dlopen() messages start with the file name, which the report already shows.
    const message = (err as Error).message;
    return { error: explainLoadFailure(message.startsWith(`${c.file}: `) ? message.slice(c.file.length + 2) : message) };
  }
  // A file that loads but is not this addon (or an older one) must not be taken for it.
  const missing = (['Model', 'backendInfo'] as const).filter((k) => mod[k] === undefined);
  if (missing.length) return { error: `loaded, but it is not a compatible evit addon (missing ${missing.join(', ')})` };
  return { binding: mod as NativeBinding };
}

/** The error when no candidate loads: what was tried, why each failed, and how to build from source. */
export function loadFailureMessage(tried: ReadonlyArray<AddonCandidate & { error: string }>): string {
  const p = platformId();
  const where = `${p.dir}${p.libc ? ` (${p.libc}${p.glibc ? ` ${p.glibc}` : ''})` : ''}`;
  const lines = [
    `could not load the evit native addon for ${where}, Node ${process.version} (N-API ${process.versions.napi ?? '?'}).`,
    'Tried:',
    ...tried.map((t) => `  - ${SOURCE_LABEL[t.source]} ${t.file}: ${t.error}`),
    'Possible solutions:',
  ];
  if (tried.some((t) => t.source === 'EVIT_BINDING'))
    lines.push('  - EVIT_BINDING is set, so only that file was tried: unset it to use the addon that came with evit.');
  if (p.dir !== 'linux-x64' || p.libc !== 'glibc')
    lines.push(`  - Prebuilt binaries ship for linux-x64 with glibc only; on ${where} evit must be built from source.`);
  lines.push(
    '  - Build from source in your project: `npm_config_build_from_source=true npm rebuild evit`',
    '    (needs a C++17 compiler, make, python3 and OpenBLAS; on Debian/Ubuntu:',
    '    `apt-get install build-essential python3 libopenblas-dev`).',
    '  - In a clone of the evit repository: `npm run build`.',
  );
  return lines.join('\n');
}

/** Loads the addon once; the error lists every place tried and why each failed. */
export function loadBinding(): NativeBinding {
  return loadAddon().binding;
}

/** Which addon file is in use, and why it was chosen. Loads it when needed. */
export function addonInfo(): AddonInfo {
  return loadAddon().addon;
}

function loadAddon(): { binding: NativeBinding; addon: AddonInfo } {
  if (cached) return cached;
  const tried: Array<AddonCandidate & { error: string }> = [];
  const nodeNapi = Number(process.versions.napi ?? 0);
  for (const c of bindingCandidates()) {
    const r = nodeNapi < ADDON_NAPI_VERSION
      ? { error: `this Node provides N-API ${nodeNapi}; the addon needs ${ADDON_NAPI_VERSION} (Node 20 or newer)` }
      : loadCandidate(c, fs.existsSync);
    if (r.binding) {
      cached = { binding: r.binding, addon: { ...c, napi: ADDON_NAPI_VERSION, nodeNapi } };
      return cached;
    }
    tried.push({ ...c, error: r.error! });
  }
  throw new NativeError(loadFailureMessage(tried));
}
