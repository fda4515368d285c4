/**
 * Safe application of image layers (tar, optionally gzip) onto a fresh rootfs directory.
 *
 * An image is hostile input. The rules, checked for every entry:
 *  - Names are split on '/'; empty and '.' components are dropped. Absolute names and any '..'
 *    component are rejected outright, in entry names, hardlink targets and whiteouts alike. (Docker
 *    strips a leading '/', which would also be safe; we refuse instead because layers written by
 *    docker, buildkit or GNU tar never hold one, so its presence marks a hand-crafted, hostile tar.)
 *  - Every parent component is checked with lstat from the rootfs root down: it must be a real
 *    directory. A parent that is a symlink (pointing in or out) is rejected: nothing is ever written,
 *    removed or linked THROUGH a symlink. Missing parents are created (0755, like docker).
 *  - The final component is never followed either: an existing entry is removed (lstat/unlink/rm,
 *    which do not follow links) and the new one created with O_CREAT|O_EXCL|O_NOFOLLOW, so a write
 *    never lands in a pre-existing inode.
 *  - Symlinks are created verbatim whatever they point at: they are only resolved later, inside the
 *    sandbox, never by us.
 *  - Hardlink targets are resolved by the same walk (inside the rootfs, no symlink parents) and must
 *    exist and not be a directory. link(2) on Linux does not follow a symlink target, so a hardlink to
 *    a symlink is just a second name for that symlink.
 *  - Whiteouts (.wh.<name>, .wh..wh..opq) resolve their directory by the same walk; they only hide
 *    lower layers' content (OCI image spec), never what the same layer wrote.
 *  - Device nodes and fifos are refused unless allowDevices is set.
 *  - setuid/setgid bits are kept: the rootfs only ever runs inside gVisor, whose Sentry contains them.
 *  - Only `user.*` and `security.capability` xattrs are applied (others, e.g. trusted.overlay.* that
 *    could steer an overlay mount, are skipped and counted); failures to set them are counted, not fatal.
 *
 * We are the only writer of the partial directory (mkdtemp, 0700, under a root-owned state dir), so
 * checking each component with lstat before use is not racy in this threat model: the attacker
 * controls the tar bytes, not a concurrent process. Everything happens in <target>.partial-XXXXXX,
 * renamed into place on success and removed on any failure.
 */
import { createHash, type Hash } from 'node:crypto';
import { constants as C, type Stats } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { extract as tarExtract, type Header as TarHeader } from 'tar-stream';
import { LatticeError } from '../errors.js';
import { ImageRejectedError } from './errors.js';
import { lsetxattr } from './xattr.js';

const execFileP = promisify(execFile);

export interface LayerInput {
  /** Shown in errors and progress: a digest or a file name. */
  readonly name: string;
  /** Opens the raw layer blob (tar, or gzip'd tar). Called once, when the layer's turn comes. */
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

export interface ExtractOptions {
  /** Create character/block devices and fifos instead of rejecting the image. */
  readonly allowDevices?: boolean;
  readonly onProgress?: (p: ExtractProgress) => void;
  /** Apply tar ownership (default: when running as root). */
  readonly chown?: boolean;
}

export interface ExtractStats {
  entries: number;
  /** Uncompressed tar bytes applied. */
  bytes: number;
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

async function lstatOrNull(p: string): Promise<Stats | null> {
  try {
    return await fsp.lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

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
    await x.finish();
  } catch (err) {
    await fsp.rm(partial, { recursive: true, force: true });
    throw err;
  }
  try {
    await fsp.rename(partial, target);
  } catch (err) {
    await fsp.rm(partial, { recursive: true, force: true });
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') return { ...x.stats, raced: true };
    throw err;
  }
  return x.stats;
}

type Header = TarHeader;

class Extractor {
  readonly stats: ExtractStats = { entries: 0, bytes: 0, xattrsSkipped: 0, raced: false };
  /** Relative paths known to be real directories (created or lstat-verified by us). */
  private readonly dirs = new Set<string>(['']);
  /** Directory mtimes, applied at the very end (writing children changes them). */
  private readonly dirTimes = new Map<string, Date>();
  /** Directories we created empty, and every path we created: a path never created under a fresh
   * directory cannot exist, which saves an lstat per entry (O_EXCL backs this up). */
  private readonly fresh = new Set<string>(['']);
  private readonly seen = new Set<string>();
  private readonly chown: boolean;
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
  }

  private reject(reason: string): never {
    throw new ImageRejectedError(this.layerName, this.entryName, reason);
  }

  private abs(rel: string): string {
    return rel === '' ? this.root : join(this.root, rel);
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
    const ex = tarExtract();
    const done = pipeline(
      raw,
      async function* (src: AsyncIterable<Buffer>) {
        for await (const c of src) {
          rawHash.update(c);
          rawBytes += c.length;
          if (rawBytes - lastReport >= 1 << 20) {
            lastReport = rawBytes;
            report(false);
          }
          yield c;
        }
      },
      decompress(layer.name),
      tapHash(tarHash, (n) => (this.stats.bytes += n)),
      ex as unknown as NodeJS.WritableStream,
    );
    try {
      for await (const entry of ex) {
        this.entryName = entry.header.name;
        try {
          await this.applyEntry(entry.header, entry as unknown as AsyncIterable<Buffer>);
        } catch (err) {
          if (err instanceof LatticeError) throw err;
          throw new ImageExtractError(this.layerName, this.entryName, { cause: err });
        }
        entry.resume();
        this.stats.entries++;
      }
      await done;
    } catch (err) {
      raw.destroy();
      ex.destroy();
      await done.catch(() => undefined);
      if (err instanceof LatticeError) throw err;
      throw new ImageRejectedError(layer.name, this.entryName, `unreadable layer (${(err as Error).message})`, { cause: err });
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
      if ((await this.walkDir(d === '' ? [] : d.split('/'), false)) !== null) await this.pruneUnwritten(d);
    }
    report(true);
  }

  /** Walk `comps` from the root; each must be a real directory. Returns the relative path or null if missing. */
  private async walkDir(comps: readonly string[], create: boolean): Promise<string | null> {
    let rel = '';
    for (const c of comps) {
      rel = rel === '' ? c : `${rel}/${c}`;
      if (this.dirs.has(rel)) continue;
      const abs = this.abs(rel);
      const st = await lstatOrNull(abs);
      if (st === null) {
        if (!create) return null;
        await fsp.mkdir(abs, 0o755);
        await fsp.chmod(abs, 0o755);
        this.dirs.add(rel);
        this.fresh.add(rel);
        this.seen.add(rel);
        this.written.add(rel);
        continue;
      }
      if (st.isSymbolicLink()) this.reject(`parent ${JSON.stringify(rel)} is a symlink; nothing may be written through a symlink`);
      if (!st.isDirectory()) this.reject(`parent ${JSON.stringify(rel)} is not a directory`);
      this.dirs.add(rel);
    }
    return rel;
  }

  /** Forget cached facts about rel and everything below it. */
  private invalidate(rel: string): void {
    const prefix = rel === '' ? '' : `${rel}/`;
    for (const d of this.dirs) if (d === rel || d.startsWith(prefix)) this.dirs.delete(d);
    for (const d of this.dirTimes.keys()) if (d === rel || d.startsWith(prefix)) this.dirTimes.delete(d);
    for (const d of this.fresh) if (d === rel || d.startsWith(prefix)) this.fresh.delete(d);
    this.dirs.add('');
  }

  /** lstat rel, skipping the call when it cannot exist (never created under a fresh parent). */
  private async existing(rel: string): Promise<Stats | null> {
    if (!this.seen.has(rel)) {
      const slash = rel.lastIndexOf('/');
      if (this.fresh.has(slash < 0 ? '' : rel.slice(0, slash))) return null;
    }
    return lstatOrNull(this.abs(rel));
  }

  /** Remove whatever is at rel (never following a link). Its parent has been verified. */
  private async removeExisting(rel: string): Promise<Stats | null> {
    const abs = this.abs(rel);
    const st = await this.existing(rel);
    if (st === null) return null;
    if (st.isDirectory()) {
      this.invalidate(rel);
      await fsp.rm(abs, { recursive: true, force: true });
    } else {
      await fsp.unlink(abs);
    }
    return st;
  }

  private async applyEntry(h: Header, body: AsyncIterable<Buffer>): Promise<void> {
    const comps = safeComponents(h.name);
    if (!Array.isArray(comps)) this.reject(comps.reason);
    const base = comps.length > 0 ? comps[comps.length - 1] : '';
    const parent = comps.slice(0, -1);

    if (base.startsWith(WH_PREFIX)) return this.whiteout(parent, base);
    if (comps.length === 0) {
      // "./" itself: only metadata of the root directory.
      if (h.type !== 'directory') this.reject('entry would replace the rootfs directory');
      this.rootModeSet = true;
      return this.meta('', h, 'dir');
    }
    const rel = comps.join('/');
    const type = h.type ?? 'file';
    const isDevice = type === 'character-device' || type === 'block-device' || type === 'fifo';
    if (isDevice && !this.opts.allowDevices) this.reject(`${type} entries are refused (allowDevices is off)`);
    if (!['file', 'contiguous-file', 'directory', 'symlink', 'link'].includes(type) && !isDevice) {
      this.reject(`unsupported entry type ${type}`);
    }

    await this.walkDir(parent, true);
    const abs = this.abs(rel);
    this.written.add(rel);
    try {
      await this.create(rel, abs, type, h, body);
    } finally {
      this.seen.add(rel);
    }
  }

  private async create(rel: string, abs: string, type: string, h: Header, body: AsyncIterable<Buffer>): Promise<void> {
    switch (type) {
      case 'directory': {
        const st = await this.existing(rel);
        if (st === null || !st.isDirectory()) {
          if (st !== null) await this.removeExisting(rel);
          await fsp.mkdir(abs, 0o700);
          this.fresh.add(rel);
        }
        this.dirs.add(rel);
        return this.meta(rel, h, 'dir');
      }
      case 'file':
      case 'contiguous-file': {
        await this.removeExisting(rel);
        const fh = await fsp.open(abs, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
        try {
          for await (const chunk of body as AsyncIterable<Buffer>) {
            let off = 0;
            while (off < chunk.length) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
          }
        } finally {
          await fh.close();
        }
        return this.meta(rel, h, 'file');
      }
      case 'symlink': {
        if (!h.linkname) this.reject('symlink with an empty target');
        await this.removeExisting(rel);
        await fsp.symlink(h.linkname, abs);
        return this.meta(rel, h, 'symlink');
      }
      case 'link': {
        const t = safeComponents(h.linkname ?? '');
        if (!Array.isArray(t)) this.reject(`hardlink target: ${t.reason}`);
        if (t.length === 0) this.reject('hardlink to the rootfs directory');
        const tdir = await this.walkDir(t.slice(0, -1), false);
        const trel = t.join('/');
        const tst = tdir === null ? null : await lstatOrNull(this.abs(trel));
        if (tst === null) this.reject(`hardlink target ${JSON.stringify(h.linkname)} does not exist in the rootfs`);
        if (tst.isDirectory()) this.reject('hardlink to a directory');
        if (trel === rel) return;
        await this.removeExisting(rel);
        await fsp.link(this.abs(trel), abs); // link(2) does not follow a symlink target on Linux
        return;
      }
      default: {
        // Devices and fifos, only with allowDevices. Node has no mknod(2); use the mknod tool.
        await this.removeExisting(rel);
        const args = type === 'fifo' ? [abs, 'p'] : [abs, type === 'block-device' ? 'b' : 'c', String(h.devmajor ?? 0), String(h.devminor ?? 0)];
        await execFileP('mknod', ['--', ...args]);
        return this.meta(rel, h, 'file');
      }
    }
  }

  private async whiteout(parent: string[], base: string): Promise<void> {
    if (base === WH_OPAQUE) {
      const d = await this.walkDir(parent, false);
      if (d !== null) this.opaque.push(d);
      return;
    }
    if (base.startsWith(WH_META_PREFIX)) return; // aufs bookkeeping (.wh..wh.plnk etc.): not content
    const name = base.slice(WH_PREFIX.length);
    if (name === '' || name === '.' || name === '..') this.reject('whiteout of an invalid name');
    const d = await this.walkDir(parent, false);
    if (d === null) return; // nothing below to hide
    const rel = d === '' ? name : `${d}/${name}`;
    if (this.written.has(rel)) return; // a whiteout only hides lower layers
    await this.removeExisting(rel);
  }

  /** Opaque directory: drop everything below `rel` that this layer did not write. */
  private async pruneUnwritten(rel: string): Promise<void> {
    for (const name of await fsp.readdir(this.abs(rel))) {
      const child = rel === '' ? name : `${rel}/${name}`;
      if (!this.written.has(child)) {
        await this.removeExisting(child);
        continue;
      }
      const st = await fsp.lstat(this.abs(child));
      if (st.isDirectory()) await this.pruneUnwritten(child);
    }
  }

  private async meta(rel: string, h: Header, kind: 'file' | 'dir' | 'symlink'): Promise<void> {
    const abs = this.abs(rel);
    if (this.chown) await fsp.lchown(abs, h.uid ?? 0, h.gid ?? 0);
    // chmod after chown: chown clears setuid/setgid.
    if (kind !== 'symlink') await fsp.chmod(abs, (h.mode ?? (kind === 'dir' ? 0o755 : 0o644)) & 0o7777);
    if (h.pax) this.xattrs(abs, h.pax as Record<string, string>);
    const mtime = h.mtime ?? new Date(0);
    if (kind === 'dir') this.dirTimes.set(rel, mtime);
    else await fsp.lutimes(abs, mtime, mtime);
  }

  private xattrs(abs: string, pax: Record<string, string>): void {
    for (const [key, val] of Object.entries(pax)) {
      let name: string;
      let value: Buffer;
      if (key.startsWith('SCHILY.xattr.')) {
        name = key.slice('SCHILY.xattr.'.length);
        // tar-stream decodes pax values as UTF-8: binary values come back lossy; skip those.
        if (val.includes('\uFFFD')) {
          this.stats.xattrsSkipped++;
          continue;
        }
        value = Buffer.from(val, 'utf8');
      } else if (key.startsWith('LIBARCHIVE.xattr.')) {
        try {
          name = decodeURIComponent(key.slice('LIBARCHIVE.xattr.'.length));
        } catch {
          this.stats.xattrsSkipped++;
          continue;
        }
        value = Buffer.from(val, 'base64');
      } else continue;
      if (!(name.startsWith('user.') || name === 'security.capability')) {
        this.stats.xattrsSkipped++;
        continue;
      }
      try {
        lsetxattr(abs, name, value);
      } catch {
        this.stats.xattrsSkipped++; // fs without xattrs, or not permitted: not fatal
      }
    }
  }

  async finish(): Promise<void> {
    this.layerName = '(all)';
    this.entryName = '(directory times)';
    const byDepth = [...this.dirTimes.entries()].sort((a, b) => b[0].split('/').length - a[0].split('/').length);
    for (const [rel, t] of byDepth) {
      // Re-walk: the path must still be a real directory reached without symlinks.
      const d = await this.walkDir(rel === '' ? [] : rel.split('/'), false);
      if (d === null) continue;
      const st = await lstatOrNull(this.abs(rel));
      if (st?.isDirectory()) await fsp.lutimes(this.abs(rel), t, t);
    }
    if (!this.rootModeSet) await fsp.chmod(this.root, 0o755); // mkdtemp made it 0700
  }
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

/** gzip is detected by its magic bytes (media types lie often enough); zstd is refused with a clear message. */
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
      const gz = createGunzip();
      const p = pipeline(Readable.from(whole()), gz).catch((err: unknown) => gz.destroy(err as Error));
      yield* gz as AsyncIterable<Buffer>;
      await p;
      return;
    }
    if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) {
      throw new ImageRejectedError(layer, '(layer blob)', 'zstd-compressed layers are not supported; save the image with gzip or uncompressed layers');
    }
    yield* whole();
  };
}
