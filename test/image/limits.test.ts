import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_EXTRACT_LIMITS, extractLayers, parseImageLimits, type ExtractLimits } from '../../src/image/extract.js';
import { ImageLimitError } from '../../src/image/errors.js';
import { layer, padded, paxHeader, rawHeader, tarEnd } from './helpers.js';

// Every extraction limit stops the unpack with an error that names the limit and the flag that
// raises it, and leaves nothing behind.

let tmp: string;
let target: string;
beforeEach(async () => {
  tmp = await fsp.mkdtemp(join(tmpdir(), 'ltimage-limits-'));
  target = join(tmp, 'images', 'rootfs');
});
afterEach(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

async function limited(tar: Buffer, limits: Partial<ExtractLimits>, gzip = false): Promise<ImageLimitError> {
  const err = await extractLayers([layer('L', tar, { gzip })], target, { limits }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ImageLimitError);
  expect(await fsp.readdir(join(tmp, 'images'))).toEqual([]);
  return err as ImageLimitError;
}

const file = (name: string, size: number, fill = 0) => Buffer.concat([rawHeader({ name, typeflag: '0', size }), padded(Buffer.alloc(size, fill))]);

describe('extraction limits', () => {
  it('a gzip bomb (a small .tar.gz that inflates far beyond the byte limit) is stopped by bytes=', async () => {
    const tar = Buffer.concat([file('a', 24 << 20), file('b', 24 << 20), tarEnd()]);
    const gz = gzipSync(tar);
    expect(gz.length).toBeLessThan(1 << 20);
    const err = await limited(tar, { maxBytes: 32 << 20 }, true);
    expect(err.code).toBe('EIMAGE_LIMIT');
    expect(err.limit).toBe('maxBytes');
    expect(err.entry).toBe('b');
    expect(err.message).toContain('--image-limits bytes=N');
  });

  it('entries= stops an archive with too many entries', async () => {
    const parts: Buffer[] = [];
    for (let i = 0; i < 1001; i++) parts.push(file(`f${i}`, 0));
    const err = await limited(Buffer.concat([...parts, tarEnd()]), { maxEntries: 1000 });
    expect(err.limit).toBe('maxEntries');
    expect(err.entry).toBe('f1000');
    expect(err.message).toContain('--image-limits entries=N');
  });

  it('path= stops a name (pax path) or link target longer than the limit', async () => {
    const long = `${'d/'.repeat(2100)}f`;
    let err = await limited(Buffer.concat([paxHeader([['path', long]]), file('short', 1), tarEnd()]), {});
    expect(err.limit).toBe('maxPathBytes');
    expect(err.value).toBe(DEFAULT_EXTRACT_LIMITS.maxPathBytes);
    err = await limited(Buffer.concat([paxHeader([['linkpath', 'x'.repeat(300)]]), rawHeader({ name: 'l', typeflag: '2' }), tarEnd()]), { maxPathBytes: 200 });
    expect(err.limit).toBe('maxPathBytes');
    expect(err.message).toContain('link target is 300 bytes');
  });

  it('entry-bytes= stops one file larger than the limit', async () => {
    const err = await limited(Buffer.concat([file('small', 10), file('big', 2 << 20), tarEnd()]), { maxEntryBytes: 1 << 20 });
    expect(err.limit).toBe('maxEntryBytes');
    expect(err.entry).toBe('big');
    expect(err.message).toContain('--image-limits entry-bytes=N');
  });

  it('an archive just within every limit unpacks', async () => {
    const r = await extractLayers([layer('L', Buffer.concat([file('a', 1000), file('b', 1000), tarEnd()]))], target, {
      limits: { maxBytes: 2000, maxEntries: 2, maxPathBytes: 1, maxEntryBytes: 1000 },
    });
    expect(r.dataBytes).toBe(2000);
    expect((await fsp.stat(join(target, 'b'))).size).toBe(1000);
  });
});

describe('--image-limits', () => {
  it('parses sizes and counts', () => {
    expect(parseImageLimits('bytes=100g,entries=5000000,path=8192,entry-bytes=512m')).toEqual({
      maxBytes: 100 * 2 ** 30,
      maxEntries: 5_000_000,
      maxPathBytes: 8192,
      maxEntryBytes: 512 * 2 ** 20,
    });
  });
  for (const bad of ['size=1g', 'bytes', 'bytes=lots', 'entries=1.5', 'entries=0']) {
    it(`refuses ${bad}`, () => {
      expect(() => parseImageLimits(bad)).toThrow(expect.objectContaining({ code: 'EUSAGE' }) as unknown as Error);
    });
  }
});
