import { LatticeError } from '../errors.js';
import { TLS_TRUST, httpExchange } from '../httpclient.js';

/**
 * The MCP server's only way to the overlay: the control plane's documented admin HTTP API, with an admin
 * user's bearer token (every proposal is recorded as that user). No NATS, no KV. HTTPS with an explicit CA
 * (`lattice mcp --ca`) goes through the same exchange as the admin commands (src/httpclient.ts). Every failure becomes an ApiError with a one-line message that
 * the assistant can show to its user as is.
 */
export class ApiError extends LatticeError {
  override readonly name = 'ApiError';
  constructor(
    code: string,
    message: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

export interface AdminApiOptions {
  /** Base URL, e.g. http://127.0.0.1:8470 */
  url: string;
  token: string;
  /** PEM of the CA that signed an https:// API's certificate (default: Node's trust store). */
  ca?: string;
  timeoutMs?: number;
}

/** HTTP client of the control plane's admin API (base URL from the options, trailing slashes dropped). */
export class AdminApiClient {
  private readonly base: string;
  constructor(private readonly o: AdminApiOptions) {
    this.base = o.url.replace(/\/+$/, '');
  }

  get<T>(path: string, query?: Record<string, string | number | undefined>): Promise<T> {
    return this.call<T>('GET', path, undefined, query);
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.call<T>('POST', path, body);
  }

  async call<T>(method: string, path: string, body?: unknown, query?: Record<string, string | number | undefined>): Promise<T> {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== '') qs.set(k, String(v));
    const url = `${this.base}${path}${qs.size > 0 ? `?${qs}` : ''}`;
    let res: { status: number; text: string };
    try {
      res = await httpExchange(url, {
        method,
        headers: { authorization: `Bearer ${this.o.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
        ...(this.o.ca !== undefined ? { ca: this.o.ca } : {}),
        timeoutMs: this.o.timeoutMs ?? 15_000,
      });
    } catch (err) {
      const cause = (err as { code?: string }).code ?? (err as Error).message;
      if (TLS_TRUST.test(cause)) {
        throw new ApiError('EAPI_TLS', `the control-plane API at ${this.base} presented a certificate this host does not trust (${cause}); start lattice mcp with --ca <its control-plane/tls/ca.pem> or LATTICE_CA`, undefined, { cause: err });
      }
      throw new ApiError('EAPI_UNREACHABLE', `cannot reach the control-plane API at ${this.base} (${cause}); is \`lattice control-plane start\` running?`, undefined, { cause: err });
    }
    const text = res.text;
    const ok = res.status >= 200 && res.status < 300;
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      throw new ApiError('EAPI_REPLY', `the control-plane API answered ${res.status} with something that is not JSON`, res.status);
    }
    if (!ok) {
      const e = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
      const hint = res.status === 401 ? ' (the MCP server\'s admin token is wrong or its user was removed)' : '';
      throw new ApiError(e?.code ?? 'EAPI', `control plane refused (${res.status}): ${e?.message ?? 'no message'}${hint}`, res.status);
    }
    return parsed as T;
  }
}
