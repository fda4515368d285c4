import { createHash, randomBytes } from 'node:crypto';
import {
  CpErrorCode,
  ControlPlaneError,
  DEFAULT_MODES,
  EnforcementMode,
  SandboxMode,
  badRequest,
  isLabel,
  toolList,
  type Modes,
  type PolicyRef,
  type TokenRecord,
} from './types.js';
import { labelsProblems } from '../policy/labels.js';

/**
 * Enrollment-token rules, pure: what a valid token request is, when a token may be used, and what a
 * use does to it. The secret handed to the user never reaches the KV store; only its SHA-256 does,
 * and that hash is the key the token is found by.
 */

export const TOKEN_BYTES = 32;
export const MAX_TOKEN_LIMIT = 100_000;
export const MAX_TOKEN_TTL_MS = 10 * 365 * 24 * 3600_000;

/** A fresh enrollment token secret: 32 random bytes, base64url (43 characters). Only its hash is stored. */
export function generateTokenSecret(): string {
  return randomBytes(TOKEN_BYTES).toString('base64url');
}

/** True for a string shaped like `generateTokenSecret()`'s output (43 base64url characters). */
export function isWellFormedToken(s: unknown): s is string {
  return typeof s === 'string' && /^[A-Za-z0-9_-]{43}$/.test(s);
}

/** The KV key of a token: SHA-256 of the secret (UTF-8), lowercase hex. */
export function hashToken(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 };

/** "90s", "15m", "1h", "365d" -> milliseconds. */
export function parseDuration(s: string): number {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(s.trim());
  if (!m) throw badRequest(`bad duration ${JSON.stringify(s)} (use e.g. 30m, 1h, 365d)`);
  const ms = Number(m[1]) * UNITS[m[2]];
  if (!Number.isSafeInteger(ms) || ms <= 0) throw badRequest(`duration ${s} out of range`);
  return ms;
}

/** The body of POST .../enrollment-tokens. */
export interface TokenRequest {
  namespace: string;
  allowedTools?: string[];
  /** Namespaces whose peers the agent may see and reach; its own is always included. */
  allowedNamespaces?: string[];
  limit?: number;
  /** A duration ("1h") or seconds. */
  ttl?: string | number;
  /** Absolute expiry (ISO 8601 or epoch ms); wins over ttl. */
  expiresAt?: string | number;
  /** A preset name or an inline policy document. */
  policy?: string | Record<string, unknown>;
  modes?: Partial<Modes>;
  /** Labels every agent enrolled with this token starts with (policy rules select peers by them). */
  labels?: Record<string, string>;
}

const DEFAULT_TTL_MS = 3600_000;

function stringList(v: unknown, what: string, check: (s: unknown) => boolean): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > 256 || !v.every(check)) throw badRequest(`${what} must be a list of names`);
  return [...new Set(v as string[])];
}

/** Validate a token request into the record to store (uses = 0). */
export function buildTokenRecord(body: unknown, now: number, id: string, validatePolicy?: (p: unknown) => void): TokenRecord {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('body must be a JSON object');
  const b = body as Record<string, unknown>;
  const known = new Set(['namespace', 'allowedTools', 'allowedNamespaces', 'limit', 'ttl', 'expiresAt', 'policy', 'modes', 'labels']);
  for (const k of Object.keys(b)) if (!known.has(k)) throw badRequest(`unknown field ${JSON.stringify(k)}`);
  if (!isLabel(b.namespace)) throw badRequest('namespace must be a DNS label (a-z, 0-9, -; at most 63)');
  const namespace = b.namespace;
  const allowedTools: string[] = b.allowedTools === undefined ? [] : toolList(b.allowedTools, 'allowedTools');
  const allowedNamespaces = stringList(b.allowedNamespaces, 'allowedNamespaces', isLabel).filter((n) => n !== namespace);
  const limit = b.limit === undefined ? 1 : b.limit;
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_TOKEN_LIMIT) {
    throw badRequest(`limit must be an integer from 1 to ${MAX_TOKEN_LIMIT}`);
  }
  let expiresAt: number;
  if (b.expiresAt !== undefined) {
    expiresAt = typeof b.expiresAt === 'number' ? b.expiresAt : typeof b.expiresAt === 'string' ? Date.parse(b.expiresAt) : NaN;
    if (!Number.isFinite(expiresAt)) throw badRequest('expiresAt must be an ISO 8601 time or epoch milliseconds');
  } else if (b.ttl !== undefined) {
    const ttl = typeof b.ttl === 'number' ? b.ttl * 1000 : typeof b.ttl === 'string' ? parseDuration(b.ttl) : NaN;
    if (!Number.isFinite(ttl) || ttl <= 0) throw badRequest('ttl must be a positive duration (e.g. "1h") or seconds');
    expiresAt = now + ttl;
  } else {
    expiresAt = now + DEFAULT_TTL_MS;
  }
  if (expiresAt <= now) throw badRequest('the token would already be expired');
  if (expiresAt - now > MAX_TOKEN_TTL_MS) throw badRequest('token lifetime is limited to 10 years');
  let policy: PolicyRef | undefined;
  if (typeof b.policy === 'string') {
    if (!isLabel(b.policy)) throw badRequest('policy preset must be a name');
    policy = { preset: b.policy };
  } else if (typeof b.policy === 'object' && b.policy !== null && !Array.isArray(b.policy)) {
    validatePolicy?.(b.policy);
    policy = { inline: b.policy };
  } else if (b.policy !== undefined) {
    throw badRequest('policy must be a preset name or a policy object');
  }
  if (b.labels !== undefined) {
    const problems = labelsProblems(b.labels);
    if (problems.length) throw badRequest(problems.join('\n'));
  }
  const labels = b.labels !== undefined && Object.keys(b.labels as object).length > 0 ? (b.labels as Record<string, string>) : undefined;
  return { id, namespace, allowedTools, allowedNamespaces, limit, uses: 0, expiresAt, createdAt: now, policy, modes: parseModes(b.modes), ...(labels ? { labels } : {}) };
}

/** `{sandbox, enforcement}` from a request body (defaults when undefined). @throws ControlPlaneError EBADREQUEST on anything else. */
export function parseModes(v: unknown): Modes {
  if (v === undefined) return { ...DEFAULT_MODES };
  if (typeof v !== 'object' || v === null) throw badRequest('modes must be an object {sandbox, enforcement}');
  const m = v as Record<string, unknown>;
  const sandbox = m.sandbox ?? DEFAULT_MODES.sandbox;
  const enforcement = m.enforcement ?? DEFAULT_MODES.enforcement;
  if (!Object.values(SandboxMode).includes(sandbox as SandboxMode)) {
    throw badRequest(`modes.sandbox must be one of ${Object.values(SandboxMode).join(', ')}`);
  }
  if (!Object.values(EnforcementMode).includes(enforcement as EnforcementMode)) {
    throw badRequest(`modes.enforcement must be one of ${Object.values(EnforcementMode).join(', ')}`);
  }
  return { sandbox: sandbox as SandboxMode, enforcement: enforcement as EnforcementMode };
}

/** Throws unless the token may be used once more at `now`. */
export function checkUsable(t: TokenRecord, now: number): void {
  if (now >= t.expiresAt) throw new ControlPlaneError(CpErrorCode.TokenExpired, 'enrollment token has expired; ask for a new one');
  if (t.uses >= t.limit) {
    throw new ControlPlaneError(CpErrorCode.TokenExhausted, `enrollment token already used ${t.uses} of ${t.limit} times; ask for a new one`);
  }
}

/** One use of the token (for a compare-and-set); throws when it is expired or used up. */
export function consumeToken(t: TokenRecord, now: number): TokenRecord {
  checkUsable(t, now);
  return { ...t, uses: t.uses + 1 };
}

/** Give back a use taken by an enrollment that then failed. */
export function refundToken(t: TokenRecord): TokenRecord {
  return { ...t, uses: Math.max(0, t.uses - 1) };
}
