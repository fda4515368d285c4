import koffi from 'koffi';

/**
 * Node has no xattr API; lsetxattr/lgetxattr come from libc through koffi. `l` variants: never
 * follow a symlink (the extractor only calls these on paths it has just created inside the rootfs).
 */
type SetFn = (path: Buffer, name: Buffer, value: Buffer, size: number, flags: number) => number;
type GetFn = (path: Buffer, name: Buffer, value: Buffer | null, size: number) => number;

let fns: { set: SetFn; get: GetFn } | null | undefined;

function load(): { set: SetFn; get: GetFn } | null {
  if (fns !== undefined) return fns;
  try {
    const libc = koffi.load('libc.so.6');
    fns = {
      set: libc.func('int lsetxattr(const uint8_t *path, const uint8_t *name, const void *value, size_t size, int flags)') as SetFn,
      get: libc.func('long lgetxattr(const uint8_t *path, const uint8_t *name, void *value, size_t size)') as GetFn,
    };
  } catch {
    fns = null;
  }
  return fns;
}

export class XattrError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

const cstr = (s: string | Buffer) => Buffer.concat([typeof s === 'string' ? Buffer.from(s, 'utf8') : s, Buffer.alloc(1)]);

/**
 * Set one xattr on path without following a symlink. Path and name are strings (UTF-8) or raw bytes
 * (names that are not UTF-8 pass through exactly). Throws XattrError with the errno on failure.
 */
export function lsetxattr(path: string | Buffer, name: string | Buffer, value: Buffer): void {
  const f = load();
  if (!f) throw new XattrError(-1, 'xattrs unavailable (libc not loadable)');
  if (f.set(cstr(path), cstr(name), value, value.length, 0) !== 0) {
    const e = koffi.errno();
    throw new XattrError(e, `lsetxattr ${name}: errno ${e}`);
  }
}

/** Read one xattr; undefined when absent or unsupported. */
export function lgetxattr(path: string | Buffer, name: string | Buffer): Buffer | undefined {
  const f = load();
  if (!f) return undefined;
  const p = cstr(path);
  const k = cstr(name);
  const n = f.get(p, k, null, 0);
  if (n < 0) return undefined;
  const buf = Buffer.alloc(n);
  const m = f.get(p, k, buf, n);
  return m < 0 ? undefined : buf.subarray(0, m);
}
