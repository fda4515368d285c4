/**
 * A streaming tar reader that keeps every byte of what a header says: the formats GNU tar and Docker
 * read (POSIX ustar, pax, GNU and old-GNU, v7), and nothing it does not understand passes silently.
 *
 *   raw bytes (any chunking) -> 512-byte blocks -> header + meta entries folded in -> TarEntry + body
 *
 * Followed: POSIX.1-2008 `pax` (ustar header, typeflags, 'x'/'g' extended headers and their keywords),
 * GNU tar's tar.h and sparse.c (the 'L'/'K' long names, base-256 numbers, old-GNU 'S' sparse headers
 * with extension blocks, pax sparse formats 0.0, 0.1 and 1.0), libarchive's LIBARCHIVE.xattr keys.
 *
 * Names, link targets and xattr names are "byte strings": each char is one byte (latin1), so a name
 * that is not UTF-8 survives exactly; turn them into host paths with Buffer.from(s, 'latin1').
 * Typeflags this reader does not fold in ('V' volume labels, 'D' dump directories, 'M' continuations,
 * 'N' old long names, any other letter) come out as type 'unsupported' for the caller to refuse.
 * Corrupt input (bad checksum, non-numeric number fields, a sparse map that does not add up, oversized
 * meta entries) throws TarFormatError; the reader never allocates more than `limits.maxMeta` for a header.
 */

export const TarType = {
  File: 'file',
  Link: 'link',
  Symlink: 'symlink',
  CharDevice: 'character-device',
  BlockDevice: 'block-device',
  Directory: 'directory',
  Fifo: 'fifo',
  Unsupported: 'unsupported',
} as const;
export type TarType = (typeof TarType)[keyof typeof TarType];

/** One data segment of a sparse file: `size` bytes at byte `offset` of the restored file. */
export interface SparseSegment {
  readonly offset: number;
  readonly size: number;
}

export interface TarHeader {
  /** Entry name as a byte string (latin1), after prefix / long-name / pax path are applied. */
  name: string;
  /** Link target (hardlink or symlink) as a byte string; '' when none. */
  linkname: string;
  type: TarType;
  /** The raw typeflag character, for messages ('0', 'S', 'V', ...). */
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of data in the archive for this entry (for sparse files: the stored segments only). */
  size: number;
  /** Seconds since the epoch; fractional when a pax header gave sub-second precision. */
  mtime: number;
  devmajor: number;
  devminor: number;
  /** Extended attributes from SCHILY.xattr.* (raw bytes) and LIBARCHIVE.xattr.* (base64) pax keys. */
  xattrs: Array<[name: string, value: Buffer]>;
  /** Present for sparse files: the file's full length and where its stored data goes. */
  sparse?: { realSize: number; map: SparseSegment[] };
  /** Header format of the last (real) header block. */
  format: 'ustar' | 'gnu' | 'v7';
}

export interface TarEntry {
  readonly header: TarHeader;
  /** Byte offset of the entry's data (after any sparse map) in the uncompressed stream. */
  readonly offset: number;
  /** The entry's data (for sparse files: the segments, concatenated). Read it or not: the reader skips the rest. */
  readonly body: AsyncIterable<Buffer>;
}

export interface TarReaderLimits {
  /** Largest pax / GNU long-name / sparse-map meta data accepted, in bytes. */
  readonly maxMeta: number;
  /** Most sparse segments in one file. */
  readonly maxSparseSegments: number;
}

export const DEFAULT_TAR_READER_LIMITS: TarReaderLimits = { maxMeta: 1 << 20, maxSparseSegments: 1 << 16 };

export class TarFormatError extends Error {
  override readonly name = 'TarFormatError';
}

const BLOCK = 512;

/** Pulls exact byte counts out of an async iterable of chunks, without copying when a read fits in one chunk. */
class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;
  private eof = false;
  /** Bytes handed out or skipped so far. */
  private base = 0;
  constructor(private readonly it: AsyncIterator<Buffer>) {}

  /** Offset in the stream of the next byte to be read. */
  get position(): number {
    return this.base + this.pos;
  }

  private get avail(): number {
    return this.buf.length - this.pos;
  }

  private async more(): Promise<boolean> {
    if (this.eof) return false;
    for (;;) {
      const r = await this.it.next();
      if (r.done) {
        this.eof = true;
        return false;
      }
      const c = r.value;
      if (c.length === 0) continue;
      this.base += this.pos;
      this.buf = this.avail === 0 ? c : Buffer.concat([this.buf.subarray(this.pos), c]);
      this.pos = 0;
      return true;
    }
  }

  /** Exactly n bytes, or null at a clean end of input (no byte of the n available); throws on a short read. */
  async read(n: number): Promise<Buffer | null> {
    while (this.avail < n) {
      if (!(await this.more())) {
        if (this.avail === 0) return null;
        throw new TarFormatError(`unexpected end of archive (needed ${n} bytes, had ${this.avail})`);
      }
    }
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** Up to n bytes as they arrive (at least one), for streaming bodies. */
  async chunk(n: number): Promise<Buffer> {
    if (this.avail === 0 && !(await this.more())) throw new TarFormatError('unexpected end of archive inside an entry');
    const k = Math.min(n, this.avail);
    const out = this.buf.subarray(this.pos, this.pos + k);
    this.pos += k;
    return out;
  }

  async skip(n: number): Promise<void> {
    while (n > 0) n -= (await this.chunk(n)).length;
  }

  /** Consume everything left (trailing zero blocks and padding still count for the layer digest). */
  async drain(): Promise<void> {
    this.pos = this.buf.length;
    while (await this.more()) this.pos = this.buf.length;
    this.base += this.pos;
    this.pos = 0;
    this.buf = Buffer.alloc(0);
  }
}

const isZeroBlock = (b: Buffer) => {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
};

/** NUL-terminated field as a byte string. */
function str(b: Buffer, off: number, len: number): string {
  let end = off;
  while (end < off + len && b[end] !== 0) end++;
  return b.toString('latin1', off, end);
}

/** A numeric header field: octal (leading spaces/NULs allowed, ended by space or NUL) or GNU base-256. */
function num(b: Buffer, off: number, len: number, field: string, allowNegative = false): number {
  const first = b[off];
  if (first === 0x80 || first === 0xff) {
    if (first === 0xff && !allowNegative) throw new TarFormatError(`negative ${field} in header`);
    let v = 0;
    for (let i = off + 1; i < off + len; i++) {
      v = v * 256 + (first === 0xff ? 0xff - b[i] : b[i]);
      if (v > Number.MAX_SAFE_INTEGER) throw new TarFormatError(`${field} in header is too large`);
    }
    return first === 0xff ? -(v + 1) : v;
  }
  let i = off;
  const end = off + len;
  while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
  let v = 0;
  let digits = 0;
  for (; i < end; i++) {
    const c = b[i];
    if (c === 0x20 || c === 0) break;
    if (c < 0x30 || c > 0x37) throw new TarFormatError(`${field} field is not an octal number`);
    v = v * 8 + (c - 0x30);
    digits++;
  }
  for (; i < end; i++) if (b[i] !== 0x20 && b[i] !== 0) throw new TarFormatError(`${field} field is not an octal number`);
  return digits === 0 ? 0 : v;
}

function checksumOk(b: Buffer): boolean {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : b[i];
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  let want: number;
  try {
    want = num(b, 148, 8, 'checksum');
  } catch {
    return false;
  }
  return want === unsigned || want === signed;
}

/** pax extended header records "<len> <key>=<value>\n"; keys in order (sparse 0.0 repeats keys). */
export function parsePax(data: Buffer): Array<[string, Buffer]> {
  const out: Array<[string, Buffer]> = [];
  let p = 0;
  while (p < data.length) {
    if (data[p] === 0) break; // NUL padding after the last record
    let sp = p;
    while (sp < data.length && data[sp] >= 0x30 && data[sp] <= 0x39) sp++;
    if (sp === p || data[sp] !== 0x20) throw new TarFormatError('malformed pax record length');
    const len = Number(data.toString('latin1', p, sp));
    if (len <= sp - p + 1 || p + len > data.length || data[p + len - 1] !== 0x0a) throw new TarFormatError('malformed pax record');
    const rec = data.subarray(sp + 1, p + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw new TarFormatError('pax record without a key');
    out.push([rec.toString('latin1', 0, eq), rec.subarray(eq + 1)]);
    p += len;
  }
  return out;
}

function paxNumber(v: Buffer, key: string, allowFraction = false): number {
  const s = v.toString('latin1', 0, v.length);
  const re = allowFraction ? /^-?\d+(\.\d+)?$/ : /^\d+$/;
  if (!re.test(s)) throw new TarFormatError(`pax ${key} is not a number`);
  const n = Number(s);
  if (!Number.isFinite(n) || Math.abs(n) > Number.MAX_SAFE_INTEGER) throw new TarFormatError(`pax ${key} is out of range`);
  return n;
}

function typeOf(flag: number): TarType {
  switch (flag) {
    case 0:
    case 0x30: // '0'
    case 0x37: // '7' contiguous file: a regular file everywhere we run
      return TarType.File;
    case 0x31:
      return TarType.Link;
    case 0x32:
      return TarType.Symlink;
    case 0x33:
      return TarType.CharDevice;
    case 0x34:
      return TarType.BlockDevice;
    case 0x35:
      return TarType.Directory;
    case 0x36:
      return TarType.Fifo;
    default:
      return TarType.Unsupported;
  }
}

function checkSparseMap(map: SparseSegment[], realSize: number, dataSize: number, limits: TarReaderLimits): void {
  if (map.length > limits.maxSparseSegments) throw new TarFormatError(`sparse map has ${map.length} segments (limit ${limits.maxSparseSegments})`);
  let end = 0;
  let total = 0;
  for (const s of map) {
    if (!Number.isSafeInteger(s.offset) || !Number.isSafeInteger(s.size) || s.offset < end || s.size < 0) {
      throw new TarFormatError('sparse map segments overlap or are out of order');
    }
    end = s.offset + s.size;
    total += s.size;
  }
  if (end > realSize) throw new TarFormatError('sparse map reaches past the file size');
  if (total !== dataSize) throw new TarFormatError(`sparse map holds ${total} bytes but the entry stores ${dataSize}`);
}

/** Parse "n\noff\nsize\n..." (pax sparse 1.0 map, stored at the start of the data). Returns map and bytes used (block-rounded). */
async function readSparse10Map(r: ByteReader, size: number, limits: TarReaderLimits): Promise<{ map: SparseSegment[]; used: number }> {
  const nums: number[] = [];
  let used = 0;
  let cur = '';
  let want = -1;
  while (want < 0 || nums.length < 1 + 2 * want) {
    if (used + BLOCK > size || used + BLOCK > limits.maxMeta) throw new TarFormatError('sparse 1.0 map runs past its entry');
    const b = await r.read(BLOCK);
    if (b === null) throw new TarFormatError('unexpected end of archive in a sparse map');
    used += BLOCK;
    for (let i = 0; i < BLOCK && (want < 0 || nums.length < 1 + 2 * want); i++) {
      const c = b[i];
      if (c === 0x0a) {
        if (!/^\d+$/.test(cur)) throw new TarFormatError('malformed sparse 1.0 map');
        nums.push(Number(cur));
        cur = '';
        if (nums.length === 1) {
          want = nums[0];
          if (want > limits.maxSparseSegments) throw new TarFormatError(`sparse map has ${want} segments (limit ${limits.maxSparseSegments})`);
        }
      } else {
        cur += String.fromCharCode(c);
        if (cur.length > 20) throw new TarFormatError('malformed sparse 1.0 map');
      }
    }
  }
  const map: SparseSegment[] = [];
  for (let i = 0; i < want; i++) map.push({ offset: nums[1 + 2 * i], size: nums[2 + 2 * i] });
  return { map, used };
}

function oldGnuSparse(b: Buffer, off: number, count: number, into: SparseSegment[]): void {
  for (let i = 0; i < count; i++) {
    const o = off + i * 24;
    if (b[o] === 0 && b[o + 12] === 0) return;
    into.push({ offset: num(b, o, 12, 'sparse offset'), size: num(b, o + 12, 12, 'sparse numbytes') });
  }
}

/**
 * Read entries from a tar stream. Each entry's body must be finished (or abandoned) before asking
 * for the next entry; whatever was not read is skipped. All input is consumed, also after the
 * end-of-archive blocks, so a digest computed on the stream covers every byte.
 */
export async function* readTar(src: AsyncIterable<Buffer>, limits: TarReaderLimits = DEFAULT_TAR_READER_LIMITS): AsyncGenerator<TarEntry> {
  const r = new ByteReader(src[Symbol.asyncIterator]());
  let global: Array<[string, Buffer]> = [];
  let pax: Array<[string, Buffer]> | null = null;
  let longName: string | null = null;
  let longLink: string | null = null;

  const metaData = async (size: number, what: string): Promise<Buffer> => {
    if (size > limits.maxMeta) throw new TarFormatError(`${what} of ${size} bytes exceeds the ${limits.maxMeta}-byte limit`);
    const d = await r.read(size);
    if (d === null) throw new TarFormatError(`unexpected end of archive in ${what}`);
    const copy = Buffer.from(d);
    await r.skip((BLOCK - (size % BLOCK)) % BLOCK);
    return copy;
  };

  for (;;) {
    const h = await r.read(BLOCK);
    if (h === null || isZeroBlock(h)) {
      await r.drain();
      if (pax !== null || longName !== null || longLink !== null) throw new TarFormatError('archive ends after an extended header');
      return;
    }
    if (!checksumOk(h)) throw new TarFormatError('header checksum mismatch: not a tar archive, or corrupt');
    const flag = h[156];
    const magic = h.toString('latin1', 257, 263);
    const version = h.toString('latin1', 263, 265);
    const format: TarHeader['format'] = magic === 'ustar\0' ? 'ustar' : magic === 'ustar ' && version === ' \0' ? 'gnu' : 'v7';
    let size = num(h, 124, 12, 'size');

    // Meta entries: fold into the next real header.
    if (flag === 0x78 /* x */ || flag === 0x67 /* g */) {
      const recs = parsePax(await metaData(size, 'pax header'));
      if (flag === 0x67) global = [...global.filter(([k]) => !recs.some(([k2]) => k2 === k)), ...recs];
      else pax = [...(pax ?? []), ...recs];
      continue;
    }
    if (flag === 0x4c /* L */ || flag === 0x4b /* K */) {
      const d = await metaData(size, 'GNU long name');
      const nul = d.indexOf(0);
      const s = d.toString('latin1', 0, nul < 0 ? d.length : nul);
      if (flag === 0x4c) longName = s;
      else longLink = s;
      continue;
    }

    let name = str(h, 0, 100);
    if (format === 'ustar' && h[345] !== 0) name = `${str(h, 345, 155)}/${name}`;
    let type = typeOf(flag);
    if (flag === 0 || flag === 0x30) {
      if (name.endsWith('/') && format !== 'ustar') type = TarType.Directory; // v7 / old GNU directory
    }
    const hdr: TarHeader = {
      name,
      linkname: str(h, 157, 100),
      type,
      typeflag: flag === 0 ? '\\0' : String.fromCharCode(flag),
      mode: num(h, 100, 8, 'mode'),
      uid: num(h, 108, 8, 'uid'),
      gid: num(h, 116, 8, 'gid'),
      size,
      mtime: num(h, 136, 12, 'mtime', true),
      devmajor: format === 'v7' ? 0 : num(h, 329, 8, 'devmajor'),
      devminor: format === 'v7' ? 0 : num(h, 337, 8, 'devminor'),
      xattrs: [],
      format,
    };
    if (longName !== null) hdr.name = longName;
    if (longLink !== null) hdr.linkname = longLink;
    longName = longLink = null;

    // Old GNU sparse ('S'): map in the header and in extension blocks that precede the data.
    if (flag === 0x53 /* S */ && format === 'gnu') {
      const map: SparseSegment[] = [];
      oldGnuSparse(h, 386, 4, map);
      let ext = h[482] !== 0;
      const realSize = num(h, 483, 12, 'sparse realsize');
      while (ext) {
        const e = await r.read(BLOCK);
        if (e === null) throw new TarFormatError('unexpected end of archive in a sparse header');
        if (map.length > limits.maxSparseSegments) throw new TarFormatError(`sparse map has more than ${limits.maxSparseSegments} segments`);
        oldGnuSparse(e, 0, 21, map);
        ext = e[504] !== 0;
      }
      hdr.type = TarType.File;
      hdr.sparse = { realSize, map };
    }

    // pax keywords (global first, then this entry's) override the header.
    let sparseName: string | null = null;
    let sparseReal: number | null = null;
    let sparseMajor: number | null = null;
    let sparseMinor: number | null = null;
    let sparse00: SparseSegment[] | null = null;
    let sparse01: SparseSegment[] | null = null;
    let pendingOffset: number | null = null;
    for (const [k, v] of [...global, ...(pax ?? [])]) {
      switch (k) {
        case 'path':
          hdr.name = v.toString('latin1', 0, v.length);
          break;
        case 'linkpath':
          hdr.linkname = v.toString('latin1', 0, v.length);
          break;
        case 'size':
          hdr.size = size = paxNumber(v, k);
          break;
        case 'uid':
          hdr.uid = paxNumber(v, k);
          break;
        case 'gid':
          hdr.gid = paxNumber(v, k);
          break;
        case 'mtime':
          hdr.mtime = paxNumber(v, k, true);
          break;
        case 'GNU.sparse.name':
          sparseName = v.toString('latin1', 0, v.length);
          break;
        case 'GNU.sparse.size':
        case 'GNU.sparse.realsize':
          sparseReal = paxNumber(v, k);
          break;
        case 'GNU.sparse.major':
          sparseMajor = paxNumber(v, k);
          break;
        case 'GNU.sparse.minor':
          sparseMinor = paxNumber(v, k);
          break;
        case 'GNU.sparse.numblocks':
          sparse00 = [];
          break;
        case 'GNU.sparse.offset':
          pendingOffset = paxNumber(v, k);
          break;
        case 'GNU.sparse.numbytes':
          if (pendingOffset === null || sparse00 === null) throw new TarFormatError('pax sparse 0.0 numbytes without an offset');
          if (sparse00.length >= limits.maxSparseSegments) throw new TarFormatError(`sparse map has more than ${limits.maxSparseSegments} segments`);
          sparse00.push({ offset: pendingOffset, size: paxNumber(v, k) });
          pendingOffset = null;
          break;
        case 'GNU.sparse.map': {
          const parts = v.length === 0 ? [] : v.toString('latin1', 0, v.length).split(',');
          if (parts.length % 2 !== 0 || !parts.every((p) => /^\d+$/.test(p))) throw new TarFormatError('malformed GNU.sparse.map');
          if (parts.length / 2 > limits.maxSparseSegments) throw new TarFormatError(`sparse map has more than ${limits.maxSparseSegments} segments`);
          sparse01 = [];
          for (let i = 0; i < parts.length; i += 2) sparse01.push({ offset: Number(parts[i]), size: Number(parts[i + 1]) });
          break;
        }
        default:
          if (k.startsWith('SCHILY.xattr.')) hdr.xattrs.push([k.slice('SCHILY.xattr.'.length), Buffer.from(v)]);
          else if (k.startsWith('LIBARCHIVE.xattr.')) {
            let xname: string;
            try {
              xname = Buffer.from(decodeURIComponent(k.slice('LIBARCHIVE.xattr.'.length)), 'utf8').toString('latin1');
            } catch {
              throw new TarFormatError(`malformed xattr key ${k}`);
            }
            hdr.xattrs.push([xname, Buffer.from(v.toString('latin1', 0, v.length), 'base64')]);
          }
      }
    }
    pax = null;

    const paxSparse = sparseMajor !== null || sparse00 !== null || sparse01 !== null;
    if (paxSparse) {
      if (sparseReal === null) throw new TarFormatError('pax sparse file without GNU.sparse.realsize');
      if (sparseName !== null) hdr.name = sparseName;
      if (hdr.type !== TarType.File) throw new TarFormatError('pax sparse data on a non-file entry');
      if (sparseMajor === 1 && sparseMinor === 0) {
        const { map, used } = await readSparse10Map(r, size, limits);
        size -= used;
        hdr.sparse = { realSize: sparseReal, map };
      } else if (sparseMajor !== null && !(sparseMajor === 0 && (sparseMinor === 0 || sparseMinor === 1))) {
        throw new TarFormatError(`unknown GNU sparse format ${sparseMajor}.${sparseMinor ?? '?'}`);
      } else {
        hdr.sparse = { realSize: sparseReal, map: sparse01 ?? sparse00 ?? [] };
      }
      hdr.size = size;
    }
    if (hdr.sparse) checkSparseMap(hdr.sparse.map, hdr.sparse.realSize, size, limits);

    // Entries that carry no data in the archive whatever their size field says (hardlinks, symlinks,
    // directories, devices) still occupy size bytes when size is set; GNU tar skips them the same way.
    let left = size;
    const body: AsyncIterable<Buffer> = {
      [Symbol.asyncIterator]: () => ({
        next: async (): Promise<IteratorResult<Buffer>> => {
          if (left <= 0) return { done: true, value: undefined };
          const c = await r.chunk(left);
          left -= c.length;
          return { done: false, value: c };
        },
      }),
    };
    yield { header: hdr, offset: r.position, body };
    await r.skip(left + ((BLOCK - (size % BLOCK)) % BLOCK));
  }
}
