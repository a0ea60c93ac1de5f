/**
 * The zip container of a PyTorch checkpoint (torch.save since 1.6):
 *
 *   <name>/data.pkl      the pickled object (state dict and friends)
 *   <name>/data/<key>    one raw little-endian storage per key
 *   <name>/version, <name>/byteorder (optional), ...
 *
 * yauzl parses the central directory; entries are read from the in-memory
 * file without copying when stored (torch stores them, 64-byte aligned) and
 * every entry that is used has its CRC-32 checked. Entries may not share bytes
 * (a zip bomb points many directory entries at one deflate stream), and what
 * deflated entries claim in all is bounded by the file's size.
 */
import * as zlib from 'node:zlib';
import * as yauzl from 'yauzl';
import { WeightsError } from '../errors';

/** The 4 bytes every zip file (and so every torch.save checkpoint) starts with. */
export const ZIP_MAGIC = Buffer.from([0x50, 0x4b, 0x03, 0x04]);

/** Weights barely compress; a deflated entry claiming more than this ratio is a zip bomb or corrupt. */
const MAX_DEFLATE_RATIO = 100;
/** All deflated entries together may inflate to at most this many times the file, plus a megabyte. */
const MAX_TOTAL_INFLATE_RATIO = 8;

interface ZipEntry {
  name: string;
  method: number;
  compressedSize: number;
  size: number;
  crc32: number;
  dataStart: number;
  /** Where its local header starts: [headerStart, dataStart + compressedSize) is the entry's span. */
  headerStart: number;
}

/** A torch.save archive held in memory. */
export class TorchZip {
  readonly #buf: Buffer;
  readonly #entries: Map<string, ZipEntry>;
  readonly #verified = new Map<string, Buffer>();
  /** The archive's top folder, e.g. "archive" or the file stem, without the slash. */
  readonly root: string;
  readonly source: string;

  private constructor(buf: Buffer, entries: Map<string, ZipEntry>, root: string, source: string) {
    this.#buf = buf;
    this.#entries = entries;
    this.root = root;
    this.source = source;
  }

  /**
   * Reads the central directory and locates `<root>/data.pkl`.
   * @throws WeightsError if the buffer is not a readable zip or not a torch.save archive
   */
  static async open(buf: Buffer, source: string): Promise<TorchZip> {
    const fail = (msg: string, cause?: unknown): never => {
      throw new WeightsError(`${source}: ${msg}`, cause === undefined ? undefined : { cause });
    };
    let zip: yauzl.ZipFile;
    try {
      zip = await yauzl.fromBufferPromise(buf, { lazyEntries: true, decodeStrings: true, validateEntrySizes: true, strictFileNames: true });
    } catch (e) {
      return fail(`not a readable zip archive (${(e as Error).message}); the file may be truncated`, e);
    }
    const entries = new Map<string, ZipEntry>();
    try {
      for await (const entry of zip.eachEntry()) {
        if (entry.fileName.endsWith('/')) continue;
        if (entries.has(entry.fileName)) fail(`zip entry ${entry.fileName} appears twice`);
        if (entry.isEncrypted()) fail(`zip entry ${entry.fileName} is encrypted`);
        if (entry.compressionMethod !== 0 && entry.compressionMethod !== 8)
          fail(`zip entry ${entry.fileName} uses compression method ${entry.compressionMethod}; only stored and deflated entries are read`);
        const { fileDataStart } = await zip.readLocalFileHeaderPromise(entry, { minimal: true });
        if (fileDataStart + entry.compressedSize > buf.length)
          fail(`zip entry ${entry.fileName} runs past the end of the file (needs bytes ${fileDataStart}-${fileDataStart + entry.compressedSize}, file is ${buf.length} bytes); the file is truncated`);
        if (entry.compressionMethod === 8 && entry.uncompressedSize > MAX_DEFLATE_RATIO * entry.compressedSize + 2 ** 20)
          fail(`zip entry ${entry.fileName} claims ${entry.uncompressedSize} bytes from ${entry.compressedSize} compressed; refused as implausible for weights`);
        if (entry.compressionMethod === 0 && entry.compressedSize !== entry.uncompressedSize)
          fail(`zip entry ${entry.fileName} is stored but its sizes differ (${entry.compressedSize} vs ${entry.uncompressedSize})`);
        entries.set(entry.fileName, {
          name: entry.fileName,
          method: entry.compressionMethod,
          compressedSize: entry.compressedSize,
          size: entry.uncompressedSize,
          crc32: entry.crc32,
          dataStart: fileDataStart,
          headerStart: entry.relativeOffsetOfLocalHeader,
        });
      }
      checkDisjoint(entries, fail);
      let inflated = 0;
      for (const e of entries.values()) if (e.method === 8) inflated += e.size;
      if (inflated > MAX_TOTAL_INFLATE_RATIO * buf.length + 2 ** 20)
        fail(`deflated entries claim ${inflated} bytes in all from a ${buf.length}-byte file; refused as implausible for weights`);
    } catch (e) {
      if (e instanceof WeightsError) throw e;
      return fail(`corrupt zip archive: ${(e as Error).message}`, e);
    } finally {
      zip.close();
    }
    const pickles = [...entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pickles.length === 0) {
      const names = [...entries.keys()].slice(0, 5).join(', ');
      fail(`zip archive has no <name>/data.pkl, so it is not a torch.save checkpoint (entries: ${names || 'none'})`);
    }
    if (pickles.length > 1) fail(`zip archive has ${pickles.length} data.pkl files (${pickles.join(', ')}); expected one`);
    return new TorchZip(buf, entries, pickles[0]!.slice(0, -'/data.pkl'.length), source);
  }

  /** True when `<root>/<name>` exists. */
  has(name: string): boolean {
    return this.#entries.has(`${this.root}/${name}`);
  }

  /** True when `<root>/<name>` is deflated (reading it inflates), false when stored or absent. */
  deflated(name: string): boolean {
    return this.#entries.get(`${this.root}/${name}`)?.method === 8;
  }

  /** Size in bytes of `<root>/<name>` once read, or undefined when absent. */
  size(name: string): number | undefined {
    return this.#entries.get(`${this.root}/${name}`)?.size;
  }

  /**
   * The bytes of `<root>/<name>`, CRC-checked. Stored entries are views into the file buffer.
   * @throws WeightsError if the entry is missing, does not inflate, or fails its CRC
   */
  read(name: string): Buffer {
    const full = `${this.root}/${name}`;
    const cached = this.#verified.get(full);
    if (cached) return cached;
    const e = this.#entries.get(full);
    if (!e) throw new WeightsError(`${this.source}: zip entry ${full} is missing`);
    const raw = this.#buf.subarray(e.dataStart, e.dataStart + e.compressedSize);
    let data: Buffer;
    if (e.method === 0) {
      data = raw;
    } else {
      try {
        data = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(e.size, 1) });
      } catch (err) {
        throw new WeightsError(`${this.source}: zip entry ${full} does not inflate: ${(err as Error).message}`, { cause: err });
      }
      if (data.length !== e.size)
        throw new WeightsError(`${this.source}: zip entry ${full} inflates to ${data.length} bytes, its header says ${e.size}`);
    }
    const crc = zlib.crc32(data) >>> 0;
    if (crc !== e.crc32 >>> 0)
      throw new WeightsError(
        `${this.source}: zip entry ${full} fails its CRC-32 check (stored ${hex(e.crc32)}, computed ${hex(crc)}); the file is corrupt`,
      );
    this.#verified.set(full, data);
    return data;
  }
}

/** Two directory entries whose bytes overlap describe one stored object twice: refused. */
function checkDisjoint(entries: Map<string, ZipEntry>, fail: (msg: string) => never): void {
  const spans = [...entries.values()].sort((a, b) => a.headerStart - b.headerStart);
  for (let i = 1; i < spans.length; i++) {
    const prev = spans[i - 1]!, cur = spans[i]!;
    if (cur.headerStart < prev.dataStart + prev.compressedSize)
      fail(`zip entries ${prev.name} and ${cur.name} overlap in the file; each entry must have bytes of its own`);
  }
}

function hex(v: number): string {
  return '0x' + (v >>> 0).toString(16).padStart(8, '0');
}
