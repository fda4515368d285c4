/**
 * Safe application of image layers (tar, optionally gzip or zstd) onto a fresh rootfs directory.
 *
 *   blob -> sha256(blob) -> decompress -> sha256(tar) = diff_id -> readTar (./tar.ts) -> entries -> rootfs
 *
 * An image is hostile input. The rules, checked for every entry:
 *  - Names are split on '/'; empty and '.' components are dropped. Absolute names and any '..'
 *    component are rejected outright, in entry names, hardlink targets and whiteouts alike. (Docker
 *    strips a leading '/', which would also be safe; we refuse instead because layers written by
 *    docker, buildkit or GNU tar never hold one, so its presence marks a hand-crafted, hostile tar.)
 *  - Names are bytes: they reach the filesystem exactly as the header holds them (UTF-8 or not).
 *  - Every parent component is checked with lstat from the rootfs root down: it must be a real
 *    directory. A parent that is a symlink (pointing in or out) is rejected: nothing is ever written,
 *    removed or linked THROUGH a symlink. Missing parents are created (0755, like docker).
 *  - The final component is never followed either: files are created with O_CREAT|O_EXCL|O_NOFOLLOW
 *    and whatever already exists there is first removed (lstat/unlink/rm, which do not follow links),
 *    so a write never lands in a pre-existing inode.
 *  - Symlinks are created verbatim whatever they point at: they are only resolved later, inside the
 *    sandbox, never by us.
 *  - Hardlink targets are resolved by the same walk (inside the rootfs, no symlink parents) and must
 *    exist and not be a directory. link(2) on Linux does not follow a symlink target, so a hardlink to
 *    a symlink is just a second name for that symlink.
 *  - Whiteouts (.wh.<name>, .wh..wh..opq) resolve their directory by the same walk; they only hide
 *    lower layers' content (OCI image spec), never what the same layer wrote.
 *  - Sparse files (old GNU 'S', pax 0.0 / 0.1 / 1.0) are restored exactly: data at its offsets, holes
 *    left as holes, the file truncated to its real size.
 *  - Every other entry type (GNU volume labels 'V', dump directories 'D', multi-volume 'M', unknown
 *    letters) is refused: nothing is written for something we do not understand.
 *  - Device nodes and fifos are refused unless allowDevices is set.
 *  - setuid/setgid bits are kept: the rootfs only ever runs inside gVisor, whose Sentry contains them.
 *  - Only `user.*` and `security.capability` xattrs are applied (others, e.g. trusted.overlay.* that
 *    could steer an overlay mount, are skipped and counted); failures to set them are counted, not fatal.
 *  - Limits (ExtractLimits): total data bytes, entry count, name length and per-entry size. Crossing
 *    one stops the extraction with ImageLimitError naming the limit; nothing is kept.
 *
 * We are the only writer of the partial directory (mkdtemp, 0700, under a root-owned state dir), so
 * checking each component with lstat before use is not racy in this threat model: the attacker
 * controls the tar bytes, not a concurrent process. Everything happens in <target>.partial-XXXXXX,
 * renamed into place on success and removed on any failure.
 *
 * Filesystem calls are synchronous: each is a few microseconds, and a round trip through libuv's
 * thread pool per call cost more than the call (the unpack is CPU-light; decompression runs in zlib's
 * own thread). Extraction happens before a sandbox starts, when nothing else waits on this thread.
 */
import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { dirname } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { LatticeError, UsageError } from '../errors.js';
import { parseByteSize, parseCount } from '../units.js';
import { ImageLimitError, ImageRejectedError } from './errors.js';
import { readTar, TarFormatError, TarType, type TarHeader } from './tar.js';
import { lsetxattr } from './xattr.js';
import { zstdDecompress } from './zstd.js';

const execFileP = promisify(execFile);
const C = fs.constants;

export interface LayerInput {
  /** Shown in errors and progress: a digest or a file name. */
  readonly name: string;
  /** Opens the raw layer blob (tar, or gzip'd / zstd'd tar). Called once, when the layer's turn comes. */
  open(): Promise<Readable>;
  /** sha256 of the raw blob ("sha256:<hex>"), verified when given. */
  readonly digest?: string;
  /** sha256 of the uncompressed tar (config rootfs.diff_ids), verified when given. */
  readonly diffId?: string;
  /** Raw size in bytes when known (progress, and verified when given with digest). */
  readonly size?: number;
}

export interface ExtractProgress {
  readonly layer: number; // 0-based
  readonly layers: number;
  readonly name: string;
  readonly bytes: number; // raw bytes read of this layer so far
  readonly size?: number;
  readonly done: boolean;
}

/**
 * What one image may cost the host. Defaults are far above any real image (the largest public
 * images hold a few hundred thousand files and tens of GiB) and far below what fills a disk or the
 * launcher's memory by surprise.
 */
export interface ExtractLimits {
  /** Total bytes of file data written, over all layers (holes of sparse files are free). */
  readonly maxBytes: number;
  /** Total tar entries, over all layers. */
  readonly maxEntries: number;
  /** Longest entry name or link target, in bytes (Linux PATH_MAX is 4096). */
  readonly maxPathBytes: number;
  /** Largest single file's data, in bytes. */
  readonly maxEntryBytes: number;
}

export const DEFAULT_EXTRACT_LIMITS: ExtractLimits = {
  maxBytes: 64 * 2 ** 30,
  maxEntries: 2_000_000,
  maxPathBytes: 4096,
  maxEntryBytes: 32 * 2 ** 30,
};

export interface ExtractOptions {
  /** Create character/block devices and fifos instead of rejecting the image. */
  readonly allowDevices?: boolean;
  readonly onProgress?: (p: ExtractProgress) => void;
  /** Apply tar ownership (default: when running as root). */
  readonly chown?: boolean;
  /** Any limit not given keeps its default (DEFAULT_EXTRACT_LIMITS). */
  readonly limits?: Partial<ExtractLimits>;
}

export interface ExtractStats {
  entries: number;
  /** Uncompressed tar bytes read. */
  bytes: number;
  /** File data bytes written (what maxBytes limits). */
  dataBytes: number;
  xattrsSkipped: number;
  /** Another extractor committed the same target first; ours was discarded. */
  raced: boolean;
}

export class ImageExtractError extends LatticeError {
  override readonly name = 'ImageExtractError';
  constructor(layer: string, entry: string, options: { cause: unknown }) {
    const msg = options.cause instanceof Error ? options.cause.message : String(options.cause);
    super('EIMAGE_EXTRACT', `extracting layer ${layer}: entry ${JSON.stringify(entry)}: ${msg}`, options);
  }
}

const WH_PREFIX = '.wh.';
const WH_META_PREFIX = '.wh..wh.';
const WH_OPAQUE = '.wh..wh..opq';

/** What GNU tar calls the typeflags we refuse, for the message. */
const TYPE_NAMES: Record<string, string> = {
  V: 'GNU volume label',
  D: 'GNU dump directory (incremental archive)',
  M: 'GNU multi-volume continuation',
  N: 'old GNU long-name list',
  S: 'GNU sparse file outside the GNU format',
  X: 'Solaris extended header',
  A: 'Solaris ACL',
  E: 'Solaris extended attribute',
  I: 'inode metadata',
};

/** A byte string (latin1, one char per byte) shown as text: UTF-8 when it is, escaped otherwise. */
export function displayName(bytes: string): string {
  const b = Buffer.from(bytes, 'latin1');
  const u = b.toString('utf8');
  return Buffer.from(u, 'utf8').equals(b) ? u : bytes.replace(/[\x80-\xff]/g, (c) => `\\x${c.charCodeAt(0).toString(16)}`);
}

/** Split a tar name into safe components, or say why not. '.' and empty parts are dropped. */
export function safeComponents(name: string): string[] | { reason: string } {
  if (name.includes('\0')) return { reason: 'name contains a NUL byte' };
  if (name.startsWith('/')) return { reason: 'absolute path' };
  const out: string[] = [];
  for (const c of name.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') return { reason: "path contains a '..' component" };
    out.push(c);
  }
  return out;
}

function lstatOrNull(p: Buffer): fs.Stats | null {
  return fs.lstatSync(p, { throwIfNoEntry: false }) ?? null;
}

const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;

/** Extract `layers` in order into a new directory `target` (which must not exist yet). */
export async function extractLayers(
  layers: readonly LayerInput[],
  target: string,
  opts: ExtractOptions = {},
): Promise<ExtractStats> {
  await fsp.mkdir(dirname(target), { recursive: true, mode: 0o700 });
  const partial = await fsp.mkdtemp(`${target}.partial-`);
  const x = new Extractor(partial, opts);
  try {
    for (let i = 0; i < layers.length; i++) await x.applyLayer(layers[i], i, layers.length);
    x.finish();
  } catch (err) {
    await fsp.rm(partial, { recursive: true, force: true });
    throw err;
  }
  try {
    await fsp.rename(partial, target);
  } catch (err) {
    await fsp.rm(partial, { recursive: true, force: true });
    const code = errno(err);
    if (code === 'ENOTEMPTY' || code === 'EEXIST') return { ...x.stats, raced: true };
    throw err;
  }
  return x.stats;
}

class Extractor {
  readonly stats: ExtractStats = { entries: 0, bytes: 0, dataBytes: 0, xattrsSkipped: 0, raced: false };
  /** Relative paths (byte strings) known to be real directories (created or lstat-verified by us). */
  private readonly dirs = new Set<string>(['']);
  /** Directory mtimes (seconds), applied at the very end (writing children changes them). */
  private readonly dirTimes = new Map<string, number>();
  private readonly chown: boolean;
  private readonly limits: ExtractLimits;
  /** The partial directory as a byte string with a trailing '/'. */
  private readonly rootBytes: string;
  private rootModeSet = false;
  // per layer
  private layerName = '';
  private entryName = '';
  private written = new Set<string>();
  private opaque: string[] = [];

  constructor(
    private readonly root: string,
    private readonly opts: ExtractOptions,
  ) {
    this.chown = opts.chown ?? process.geteuid?.() === 0;
    this.limits = { ...DEFAULT_EXTRACT_LIMITS, ...opts.limits };
    this.rootBytes = `${Buffer.from(root, 'utf8').toString('latin1')}/`;
  }

  private reject(reason: string): never {
    throw new ImageRejectedError(this.layerName, displayName(this.entryName), reason);
  }

  private limit(which: keyof ExtractLimits, flag: string, detail: string): never {
    throw new ImageLimitError(this.layerName, displayName(this.entryName), which, this.limits[which], flag, detail);
  }

  private abs(rel: string): Buffer {
    return Buffer.from(rel === '' ? this.root : this.rootBytes + rel, rel === '' ? 'utf8' : 'latin1');
  }

  async applyLayer(layer: LayerInput, index: number, count: number): Promise<void> {
    this.layerName = layer.name;
    this.entryName = '(layer blob)';
    this.written = new Set();
    this.opaque = [];
    const rawHash = createHash('sha256');
    const tarHash = createHash('sha256');
    let rawBytes = 0;
    let lastReport = 0;
    const report = (done: boolean) =>
      this.opts.onProgress?.({ layer: index, layers: count, name: layer.name, bytes: rawBytes, size: layer.size, done });
    report(false);
    const raw = await layer.open();
    const counted = async function* (src: AsyncIterable<Buffer>) {
      for await (const c of src) {
        rawHash.update(c);
        rawBytes += c.length;
        if (rawBytes - lastReport >= 1 << 20) {
          lastReport = rawBytes;
          report(false);
        }
        yield c;
      }
    };
    const tar = tapHash(tarHash, (n) => (this.stats.bytes += n))(decompress(layer.name)(counted(raw)));
    try {
      for await (const entry of readTar(tar, { maxMeta: Math.max(1 << 20, this.limits.maxPathBytes * 4), maxSparseSegments: 1 << 16 })) {
        this.entryName = entry.header.name;
        if (++this.stats.entries > this.limits.maxEntries) this.limit('maxEntries', 'entries', `more than ${this.limits.maxEntries} entries`);
        try {
          await this.applyEntry(entry.header, entry.body);
        } catch (err) {
          if (err instanceof LatticeError) throw err;
          throw new ImageExtractError(this.layerName, displayName(this.entryName), { cause: err });
        }
      }
    } catch (err) {
      raw.destroy();
      if (err instanceof LatticeError) throw err;
      const what = err instanceof TarFormatError ? 'corrupt tar' : 'unreadable layer';
      throw new ImageRejectedError(layer.name, displayName(this.entryName), `${what} (${(err as Error).message})`, { cause: err });
    }
    this.entryName = '(layer blob)';
    if (layer.size !== undefined && layer.digest !== undefined && rawBytes !== layer.size) {
      this.reject(`blob is ${rawBytes} bytes, manifest says ${layer.size}`);
    }
    if (layer.digest !== undefined && `sha256:${rawHash.digest('hex')}` !== layer.digest) {
      this.reject(`blob digest does not match ${layer.digest}`);
    }
    if (layer.diffId !== undefined && `sha256:${tarHash.digest('hex')}` !== layer.diffId) {
      this.reject(`uncompressed layer digest does not match diff_id ${layer.diffId}`);
    }
    this.entryName = '(opaque directories)';
    for (const d of this.opaque) {
      if (this.walkDir(d === '' ? [] : d.split('/'), false) !== null) this.pruneUnwritten(d);
    }
    report(true);
  }

  /** Walk `comps` from the root; each must be a real directory. Returns the relative path or null if missing. */
  private walkDir(comps: readonly string[], create: boolean): string | null {
    let rel = '';
    for (const c of comps) {
      rel = rel === '' ? c : `${rel}/${c}`;
      if (this.dirs.has(rel)) continue;
      const abs = this.abs(rel);
      const st = lstatOrNull(abs);
      if (st === null) {
        if (!create) return null;
        fs.mkdirSync(abs, 0o755);
        fs.chmodSync(abs, 0o755);
        this.dirs.add(rel);
        this.written.add(rel);
        continue;
      }
      if (st.isSymbolicLink()) this.reject(`parent ${JSON.stringify(displayName(rel))} is a symlink; nothing may be written through a symlink`);
      if (!st.isDirectory()) this.reject(`parent ${JSON.stringify(displayName(rel))} is not a directory`);
      this.dirs.add(rel);
    }
    return rel;
  }

  /** Forget cached facts about rel and everything below it. */
  private invalidate(rel: string): void {
    const prefix = rel === '' ? '' : `${rel}/`;
    for (const d of this.dirs) if (d === rel || d.startsWith(prefix)) this.dirs.delete(d);
    for (const d of this.dirTimes.keys()) if (d === rel || d.startsWith(prefix)) this.dirTimes.delete(d);
    this.dirs.add('');
  }

  /** Remove whatever is at rel (never following a link). Its parent has been verified. */
  private removeExisting(rel: string): fs.Stats | null {
    const abs = this.abs(rel);
    const st = lstatOrNull(abs);
    if (st === null) return null;
    if (st.isDirectory()) {
      this.invalidate(rel);
      fs.rmSync(abs, { recursive: true, force: true });
    } else {
      fs.unlinkSync(abs);
    }
    return st;
  }

  /** Run `make` (which creates at abs); if something is already there, remove it and try once more. */
  private createFresh<T>(rel: string, make: () => T): T {
    try {
      return make();
    } catch (err) {
      if (errno(err) !== 'EEXIST') throw err;
    }
    this.removeExisting(rel);
    return make();
  }

  private async applyEntry(h: TarHeader, body: AsyncIterable<Buffer>): Promise<void> {
    if (h.name.length > this.limits.maxPathBytes) this.limit('maxPathBytes', 'path', `name is ${h.name.length} bytes`);
    if (h.linkname.length > this.limits.maxPathBytes) this.limit('maxPathBytes', 'path', `link target is ${h.linkname.length} bytes`);
    const comps = safeComponents(h.name);
    if (!Array.isArray(comps)) this.reject(comps.reason);
    const base = comps.length > 0 ? comps[comps.length - 1] : '';
    const parent = comps.slice(0, -1);

    const type = h.type;
    if (type === TarType.Unsupported) {
      const what = TYPE_NAMES[h.typeflag];
      this.reject(`unsupported entry type '${h.typeflag}'${what ? ` (${what})` : ''}; nothing of this kind can be unpacked safely`);
    }
    if (base.startsWith(WH_PREFIX)) return this.whiteout(parent, base);
    if (comps.length === 0) {
      // "./" itself: only metadata of the root directory.
      if (type !== TarType.Directory) this.reject('entry would replace the rootfs directory');
      this.rootModeSet = true;
      return this.meta('', h, 'dir');
    }
    const rel = comps.join('/');
    const isDevice = type === TarType.CharDevice || type === TarType.BlockDevice || type === TarType.Fifo;
    if (isDevice && !this.opts.allowDevices) this.reject(`${type} entries are refused (allowDevices is off)`);

    this.walkDir(parent, true);
    this.written.add(rel);
    await this.create(rel, type, h, body);
  }

  private async create(rel: string, type: TarType, h: TarHeader, body: AsyncIterable<Buffer>): Promise<void> {
    const abs = this.abs(rel);
    switch (type) {
      case TarType.Directory: {
        if (!this.dirs.has(rel)) {
          const st = lstatOrNull(abs);
          if (st === null || !st.isDirectory()) {
            if (st !== null) this.removeExisting(rel);
            fs.mkdirSync(abs, 0o700);
          }
        }
        this.dirs.add(rel);
        return this.meta(rel, h, 'dir');
      }
      case TarType.File: {
        if (h.size > this.limits.maxEntryBytes) this.limit('maxEntryBytes', 'entry-bytes', `file holds ${h.size} bytes`);
        if (this.stats.dataBytes + h.size > this.limits.maxBytes) {
          this.limit('maxBytes', 'bytes', `${this.stats.dataBytes + h.size} bytes of file data`);
        }
        this.stats.dataBytes += h.size;
        if (this.dirs.has(rel)) this.removeExisting(rel);
        const fd = this.createFresh(rel, () => fs.openSync(abs, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600));
        try {
          if (h.sparse) await writeSparse(fd, body, h.sparse.map, h.sparse.realSize);
          else {
            for await (const chunk of body) writeAll(fd, chunk, null);
          }
          if (this.chown) fs.fchownSync(fd, h.uid, h.gid);
          // chmod after chown: chown clears setuid/setgid.
          fs.fchmodSync(fd, h.mode & 0o7777);
          if (h.xattrs.length > 0) this.xattrs(abs, h.xattrs);
          fs.futimesSync(fd, h.mtime, h.mtime);
        } finally {
          fs.closeSync(fd);
        }
        return;
      }
      case TarType.Symlink: {
        if (h.linkname === '') this.reject('symlink with an empty target');
        if (this.dirs.has(rel)) this.removeExisting(rel);
        this.createFresh(rel, () => fs.symlinkSync(Buffer.from(h.linkname, 'latin1'), abs));
        return this.meta(rel, h, 'symlink');
      }
      case TarType.Link: {
        const t = safeComponents(h.linkname);
        if (!Array.isArray(t)) this.reject(`hardlink target: ${t.reason}`);
        if (t.length === 0) this.reject('hardlink to the rootfs directory');
        const tdir = this.walkDir(t.slice(0, -1), false);
        const trel = t.join('/');
        const tst = tdir === null ? null : lstatOrNull(this.abs(trel));
        if (tst === null) this.reject(`hardlink target ${JSON.stringify(displayName(h.linkname))} does not exist in the rootfs`);
        if (tst.isDirectory()) this.reject('hardlink to a directory');
        if (trel === rel) return;
        if (this.dirs.has(rel)) this.removeExisting(rel);
        this.createFresh(rel, () => fs.linkSync(this.abs(trel), abs)); // link(2) does not follow a symlink target on Linux
        return;
      }
      default: {
        // Devices and fifos, only with allowDevices. Node has no mknod(2); use the mknod tool.
        const path = abs.toString('utf8');
        if (!Buffer.from(path, 'utf8').equals(abs)) this.reject('device or fifo with a name that is not UTF-8');
        this.removeExisting(rel);
        const args = type === TarType.Fifo ? [path, 'p'] : [path, type === TarType.BlockDevice ? 'b' : 'c', String(h.devmajor), String(h.devminor)];
        await execFileP('mknod', ['--', ...args]);
        return this.meta(rel, h, 'file');
      }
    }
  }

  private whiteout(parent: string[], base: string): void {
    if (base === WH_OPAQUE) {
      const d = this.walkDir(parent, false);
      if (d !== null) this.opaque.push(d);
      return;
    }
    if (base.startsWith(WH_META_PREFIX)) return; // aufs bookkeeping (.wh..wh.plnk etc.): not content
    const name = base.slice(WH_PREFIX.length);
    if (name === '' || name === '.' || name === '..') this.reject('whiteout of an invalid name');
    const d = this.walkDir(parent, false);
    if (d === null) return; // nothing below to hide
    const rel = d === '' ? name : `${d}/${name}`;
    if (this.written.has(rel)) return; // a whiteout only hides lower layers
    this.removeExisting(rel);
  }

  /** Opaque directory: drop everything below `rel` that this layer did not write. */
  private pruneUnwritten(rel: string): void {
    for (const nb of fs.readdirSync(this.abs(rel), { encoding: 'buffer' })) {
      const name = nb.toString('latin1');
      const child = rel === '' ? name : `${rel}/${name}`;
      if (!this.written.has(child)) {
        this.removeExisting(child);
        continue;
      }
      if (fs.lstatSync(this.abs(child)).isDirectory()) this.pruneUnwritten(child);
    }
  }

  private meta(rel: string, h: TarHeader, kind: 'file' | 'dir' | 'symlink'): void {
    const abs = this.abs(rel);
    if (this.chown) fs.lchownSync(abs, h.uid, h.gid);
    // chmod after chown: chown clears setuid/setgid.
    if (kind !== 'symlink') fs.chmodSync(abs, h.mode & 0o7777);
    if (h.xattrs.length > 0) this.xattrs(abs, h.xattrs);
    if (kind === 'dir') this.dirTimes.set(rel, h.mtime);
    else fs.lutimesSync(abs, h.mtime, h.mtime);
  }

  private xattrs(abs: Buffer, xattrs: ReadonlyArray<[string, Buffer]>): void {
    for (const [name, value] of xattrs) {
      if (!(name.startsWith('user.') || name === 'security.capability')) {
        this.stats.xattrsSkipped++;
        continue;
      }
      try {
        lsetxattr(abs, Buffer.from(name, 'latin1'), value);
      } catch {
        this.stats.xattrsSkipped++; // fs without xattrs, or not permitted: not fatal
      }
    }
  }

  finish(): void {
    this.layerName = '(all)';
    this.entryName = '(directory times)';
    const byDepth = [...this.dirTimes.entries()].sort((a, b) => b[0].split('/').length - a[0].split('/').length);
    for (const [rel, t] of byDepth) {
      // Re-walk: the path must still be a real directory reached without symlinks.
      const d = this.walkDir(rel === '' ? [] : rel.split('/'), false);
      if (d === null) continue;
      const st = lstatOrNull(this.abs(rel));
      if (st?.isDirectory()) fs.lutimesSync(this.abs(rel), t, t);
    }
    if (!this.rootModeSet) fs.chmodSync(this.root, 0o755); // mkdtemp made it 0700
  }
}

function writeAll(fd: number, chunk: Buffer, position: number | null): void {
  let off = 0;
  while (off < chunk.length) {
    const n = fs.writeSync(fd, chunk, off, chunk.length - off, position === null ? null : position + off);
    off += n;
  }
}

/** Write the concatenated segment data of a sparse file at its offsets; holes stay unwritten. */
async function writeSparse(fd: number, body: AsyncIterable<Buffer>, map: ReadonlyArray<{ offset: number; size: number }>, realSize: number): Promise<void> {
  let seg = 0;
  let inSeg = 0;
  for await (let chunk of body) {
    while (chunk.length > 0) {
      while (seg < map.length && inSeg >= map[seg].size) {
        seg++;
        inSeg = 0;
      }
      if (seg >= map.length) throw new TarFormatError('sparse data longer than its map');
      const n = Math.min(chunk.length, map[seg].size - inSeg);
      writeAll(fd, chunk.subarray(0, n), map[seg].offset + inSeg);
      inSeg += n;
      chunk = chunk.subarray(n);
    }
  }
  fs.ftruncateSync(fd, realSize);
}

function tapHash(hash: Hash, count: (n: number) => void) {
  return async function* (src: AsyncIterable<Buffer>) {
    for await (const c of src) {
      hash.update(c);
      count(c.length);
      yield c;
    }
  };
}

/** gzip and zstd are detected by their magic bytes (media types lie often enough); anything else is read as a plain tar. */
function decompress(layer: string) {
  return async function* (src: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    const it = src[Symbol.asyncIterator]();
    let head = Buffer.alloc(0);
    while (head.length < 4) {
      const r = await it.next();
      if (r.done) break;
      head = Buffer.concat([head, r.value]);
    }
    const whole = async function* () {
      if (head.length > 0) yield head;
      for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
    };
    if (head[0] === 0x1f && head[1] === 0x8b) {
      const gz = createGunzip({ chunkSize: 1 << 18 });
      const p = pipeline(Readable.from(whole()), gz).catch((err: unknown) => gz.destroy(err as Error));
      yield* gz as AsyncIterable<Buffer>;
      await p;
      return;
    }
    if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) {
      try {
        yield* zstdDecompress(whole());
      } catch (err) {
        throw new ImageRejectedError(layer, '(layer blob)', `corrupt zstd stream (${(err as Error).message})`, { cause: err });
      }
      return;
    }
    yield* whole();
  };
}

/** The --image-limits keys and the ExtractLimits field each sets. */
export const IMAGE_LIMIT_KEYS = { bytes: 'maxBytes', entries: 'maxEntries', path: 'maxPathBytes', 'entry-bytes': 'maxEntryBytes' } as const;

/**
 * Parse `--image-limits bytes=100g,entries=5000000,path=8192,entry-bytes=50g` (any subset; sizes
 * take k/m/g/t suffixes). Throws UsageError on an unknown key or a bad value.
 */
export function parseImageLimits(s: string): Partial<ExtractLimits> {
  const out: Partial<Record<keyof ExtractLimits, number>> = {};
  for (const part of s.split(',').map((p) => p.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    const field = (IMAGE_LIMIT_KEYS as Record<string, keyof ExtractLimits>)[key];
    if (field === undefined || eq < 0) {
      throw new UsageError(`--image-limits: ${JSON.stringify(part)} is not KEY=VALUE with KEY one of ${Object.keys(IMAGE_LIMIT_KEYS).join(', ')}`);
    }
    const v = part.slice(eq + 1);
    out[field] = key === 'entries' || key === 'path' ? parseCount(v, `--image-limits ${key}`) : parseByteSize(v, `--image-limits ${key}`);
  }
  return out;
}
