import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../clock.js';
import { KvConflictError, casUpdate, decodeJson, encodeJson, getJson, type KvBucket } from './kv.js';
import { CpErrorCode, ControlPlaneError, badRequest, isLabel, type ControlPlaneEvent } from './types.js';
import type { HttpApi } from './http.js';
import { API_BASE } from './api.js';

/**
 * Admin identities: who is calling the control plane's admin API, and what they may do.
 *
 *   lattice_admins   u.<name>   AdminUserRecord {name, role, tokenHash, createdAt, createdBy}
 *
 * Users
 *   root       the bootstrap identity: the cluster's admin token (admin-token.ts, the `admin-token` file in the
 *              state dir), role admin. It cannot be removed; it is the way in before any user exists.
 *   <name>     added by an admin with `lattice admin user add NAME --role R`, which prints the user's token
 *              once. Only its SHA-256 is stored (the token carries 256 random bits, so a fast hash is
 *              enough: there is nothing to brute-force). The bucket is shared by every control-plane
 *              instance of the cluster, and every request reads the user's record (no cache), so
 *              `admin user rm` is a 401 on every instance from the next request on.
 *
 * Token format: `ltu1.<name>.<43 base64url characters>`; the name is in the token so a request costs one
 * KV get, and the digest comparison is constant time (timingSafeEqual over SHA-256 digests).
 *
 * Roles (a user has one; each includes the ones below it):
 *   viewer     reads (GET), explain and the policy check, and proposing changes to the approvals queue
 *              (a proposal applies nothing; this is the role to give `lattice mcp`)
 *   approver   + approve / reject pending changes (never their own: approvals.ts, four-eyes)
 *   admin      + every direct write (policy set, agent revoke, tokens, routes) and the admin users
 */
export const AdminRole = { Viewer: 'viewer', Approver: 'approver', Admin: 'admin' } as const;
export type AdminRole = (typeof AdminRole)[keyof typeof AdminRole];

export const ADMIN_ROLES: readonly AdminRole[] = [AdminRole.Viewer, AdminRole.Approver, AdminRole.Admin];
const RANK: Record<AdminRole, number> = { viewer: 0, approver: 1, admin: 2 };

export const ADMINS_BUCKET = 'lattice_admins';
export const ROOT_USER = 'root';
const TOKEN_PREFIX = 'ltu1';

/** The verified caller of an admin request. */
export interface AdminIdentity {
  readonly name: string;
  readonly role: AdminRole;
}

export interface AdminUserRecord {
  name: string;
  role: AdminRole;
  /** SHA-256 of the token, hex. */
  tokenHash: string;
  /** Epoch ms. */
  createdAt: number;
  createdBy: string;
}

/** What `admin user ls` shows: the record without its hash. */
export interface AdminUserView {
  name: string;
  role: AdminRole;
  createdAt: string;
  createdBy: string;
}

export function isAdminRole(s: unknown): s is AdminRole {
  return typeof s === 'string' && (ADMIN_ROLES as readonly string[]).includes(s);
}

/** True when `role` includes `needed`. */
export function roleAllows(role: AdminRole, needed: AdminRole): boolean {
  return RANK[role] >= RANK[needed];
}

/** The role a route needs when it does not name one: reads (GET, HEAD) are for viewers, every other method for admins. */
export function defaultRole(method: string): AdminRole {
  const m = method.toUpperCase();
  return m === 'GET' || m === 'HEAD' ? AdminRole.Viewer : AdminRole.Admin;
}

/** The one-line 403 reason for `who` calling `method path` that needs `needed`. */
export function forbiddenReason(who: AdminIdentity, needed: AdminRole, method: string, path: string): string {
  return `user ${who.name} has role ${who.role}; ${method} ${path} needs role ${needed} (an admin can add a user with it: lattice admin user add NAME --role ${needed})`;
}

/** SHA-256 of a token, hex. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** Constant-time equality of two strings (compares their SHA-256 digests, so lengths never leak or throw). */
export function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

/** A fresh token for user `name` (256 random bits). */
export function newUserToken(name: string, random: (n: number) => Buffer = randomBytes): string {
  return `${TOKEN_PREFIX}.${name}.${random(32).toString('base64url')}`;
}

/** The user a token names, or undefined when it is not a user token. */
export function userOfToken(token: string): string | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== TOKEN_PREFIX || !isLabel(parts[1]) || !/^[A-Za-z0-9_-]{43}$/.test(parts[2])) return undefined;
  return parts[1];
}

const userKey = (name: string) => `u.${name}`;

/**
 * The admin users of a cluster (KV `lattice_admins`) and the root token: authenticate a bearer token to an
 * identity, add, list and remove users. Holds no state of its own.
 */
export class AdminUsers {
  constructor(
    private readonly o: {
      bucket: KvBucket;
      /** The cluster's admin token: the root identity. */
      rootToken: string;
      clock: Clock;
      random?: (n: number) => Buffer;
      /** Audits `user.changed` (added, removed); must not throw. */
      audit?: (e: Extract<ControlPlaneEvent, { type: 'user.changed' }>) => void;
    },
  ) {}

  /** The identity a bearer token proves, or undefined (unknown user, removed user, wrong secret). */
  async authenticate(token: string): Promise<AdminIdentity | undefined> {
    if (sameSecret(token, this.o.rootToken)) return { name: ROOT_USER, role: AdminRole.Admin };
    const name = userOfToken(token);
    if (name === undefined) return undefined;
    const rec = await getJson<AdminUserRecord>(this.o.bucket, userKey(name));
    if (!rec) return undefined;
    const a = Buffer.from(hashToken(token), 'hex');
    const b = Buffer.from(rec.value.tokenHash, 'hex');
    return a.length === b.length && timingSafeEqual(a, b) ? { name, role: rec.value.role } : undefined;
  }

  /** The current identity of user `name` (root always exists), or undefined once removed. */
  async current(name: string): Promise<AdminIdentity | undefined> {
    if (name === ROOT_USER) return { name: ROOT_USER, role: AdminRole.Admin };
    const rec = await getJson<AdminUserRecord>(this.o.bucket, userKey(name));
    return rec ? { name, role: rec.value.role } : undefined;
  }

  /**
   * Add a user; returns its view and its token (shown once, never stored).
   * @throws ControlPlaneError EBADREQ for a bad name or role, ENAME_TAKEN when the user exists.
   */
  async add(body: unknown, by: AdminIdentity): Promise<{ user: AdminUserView; token: string }> {
    const b = (body ?? {}) as Record<string, unknown>;
    if (typeof b !== 'object' || Array.isArray(b)) throw badRequest('body must be {"name": "alice", "role": "viewer"}');
    if (!isLabel(b.name)) throw badRequest('user name must be a DNS label (lowercase letters, digits, inner -; 1-63 characters)');
    if (b.name === ROOT_USER) throw badRequest('user name root is the bootstrap identity (the admin-token file); pick another name');
    if (!isAdminRole(b.role)) throw badRequest(`role must be one of ${ADMIN_ROLES.join(', ')}`);
    const token = newUserToken(b.name, this.o.random);
    const rec: AdminUserRecord = { name: b.name, role: b.role, tokenHash: hashToken(token), createdAt: this.o.clock.now(), createdBy: by.name };
    try {
      await this.o.bucket.create(userKey(b.name), encodeJson(rec));
    } catch (err) {
      if (err instanceof KvConflictError) throw new ControlPlaneError(CpErrorCode.NameTaken, `admin user ${b.name} exists; remove it first (lattice admin user rm ${b.name}) to issue a new token`);
      throw err;
    }
    this.o.audit?.({ type: 'user.changed', user: b.name, change: 'added', role: b.role, by: by.name });
    return { user: view(rec), token };
  }

  /** Every user, root first, then by name. */
  async list(): Promise<AdminUserView[]> {
    const keys = await this.o.bucket.keys('u.*');
    const recs = await Promise.all(keys.map((k) => this.o.bucket.get(k)));
    const users = recs.flatMap((e) => (e ? [view(decodeJson<AdminUserRecord>(e.value))] : [])).sort((a, b) => a.name.localeCompare(b.name));
    return [{ name: ROOT_USER, role: AdminRole.Admin, createdAt: '-', createdBy: '(the admin-token file)' }, ...users];
  }

  /**
   * Change a user's role in place (its token stays valid; the new role applies from the next request on,
   * on every instance). Compare-and-set on its record. @throws EBADREQ (bad role, root), ENOTFOUND.
   */
  async setRole(name: string, body: unknown, by: AdminIdentity): Promise<AdminUserView> {
    if (name === ROOT_USER) throw badRequest('root is the bootstrap identity and is always admin');
    if (!isLabel(name)) throw badRequest('user name must be a DNS label');
    const role = (body ?? {}) as Record<string, unknown>;
    if (typeof role !== 'object' || Array.isArray(role) || !isAdminRole(role.role)) throw badRequest(`body must be {"role": ...}, one of ${ADMIN_ROLES.join(', ')}`);
    const next = role.role;
    const r = await casUpdate<AdminUserRecord>(this.o.bucket, userKey(name), (cur) => {
      if (!cur) throw new ControlPlaneError(CpErrorCode.NotFound, `no admin user ${name} (lattice admin user ls lists them)`);
      return cur.role !== next ? { ...cur, role: next } : undefined;
    });
    if (r.changed) this.o.audit?.({ type: 'user.changed', user: name, change: 'role', role: next, by: by.name });
    return view(r.value!);
  }

  /** Remove a user: its token is refused from the next request on. @throws ENOTFOUND, EBADREQ for root. */
  async remove(name: string, by: AdminIdentity): Promise<void> {
    if (name === ROOT_USER) throw badRequest('root is the bootstrap identity and cannot be removed');
    if (!isLabel(name)) throw badRequest('user name must be a DNS label');
    const cur = await this.o.bucket.get(userKey(name));
    if (!cur) throw new ControlPlaneError(CpErrorCode.NotFound, `no admin user ${name} (lattice admin user ls lists them)`);
    await this.o.bucket.delete(userKey(name));
    this.o.audit?.({ type: 'user.changed', user: name, change: 'removed', by: by.name });
  }
}

function view(r: AdminUserRecord): AdminUserView {
  return { name: r.name, role: r.role, createdAt: new Date(r.createdAt).toISOString(), createdBy: r.createdBy };
}

/**
 * The admin-user routes (admin role unless said):
 *   GET    .../whoami               {name, role} of the caller (any role)
 *   GET    .../admin-users          {users: AdminUserView[]}
 *   POST   .../admin-users          {name, role} -> 201 {user, token} (the token is shown this once)
 *   PATCH  .../admin-users/:name    {role} -> {user}; the same token, the new role from the next request on
 *   DELETE .../admin-users/:name    204; the user's token is refused from the next request on
 */
export function mountAdminUserRoutes(api: HttpApi, users: AdminUsers): void {
  api.route('GET', `${API_BASE}/whoami`, (ctx) => ({ name: ctx.user!.name, role: ctx.user!.role }));
  api.route('GET', `${API_BASE}/admin-users`, async () => ({ users: await users.list() }), { role: AdminRole.Admin });
  api.route('POST', `${API_BASE}/admin-users`, async (ctx) => ({ status: 201, body: await users.add(await ctx.json(), ctx.user!) }));
  api.route('PATCH', `${API_BASE}/admin-users/:name`, async (ctx) => ({ user: await users.setRole(ctx.params.name, await ctx.json(), ctx.user!) }));
  api.route('DELETE', `${API_BASE}/admin-users/:name`, async (ctx) => {
    await users.remove(ctx.params.name, ctx.user!);
    return { status: 204 };
  });
}
