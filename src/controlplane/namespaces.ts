/**
 * A namespace's default exit node (#17 item 4), set by an operator: `lattice namespace set NS --exit-node
 * NAME [--allow-opt-out]` or PUT /api/v1/agent-isolation/namespaces/:namespace/exit-node (admin role).
 *
 *   lattice_config  ns-exit.<namespace>  {namespace, exitNode, allowOptOut, updatedAt, by}
 *
 * Launchers learn it from the directory reply (lattice.cp.directory, `exitNode`) when `sandbox start`
 * begins: a sandbox started without `--exit-node` uses the default; `--exit-node NAME` names another exit
 * node (its routes are approved by an operator as well); `--exit-node none` runs without one, which the
 * launcher refuses unless the operator set `allowOptOut`. Like the policy, this is enforced by the
 * launcher; a change reaches sandboxes at their next start. Every change is audited as
 * `namespace.exit-node` in the verified operator's name. Errors: ControlPlaneError EBADREQ.
 */
import type { Clock } from '../clock.js';
import { casUpdate, getJson, type KvBucket } from './kv.js';
import { isPeerRef } from './routes.js';
import { badRequest, isLabel, type ControlPlaneEvent } from './types.js';

/** What a namespace's launchers are told (the directory reply's `exitNode`). */
export interface NamespaceExitDefault {
  /** "name" or "namespace.name" (as `sandbox start --exit-node`). */
  exitNode: string;
  /** Whether `sandbox start --exit-node none` may run without an exit node. */
  allowOptOut: boolean;
}

interface NamespaceExitRecord extends NamespaceExitDefault {
  namespace: string;
  updatedAt: number;
  by: string;
}

const key = (namespace: string) => `ns-exit.${namespace}`;

/** The default exit nodes of namespaces, over the control plane's config bucket. */
export class NamespaceExitDefaults {
  constructor(private readonly o: { config: KvBucket; clock: Clock; audit: (e: Extract<ControlPlaneEvent, { type: 'namespace.exit-node' }>) => void }) {}

  /** The default of `namespace`, or undefined when none is set. */
  async get(namespace: string): Promise<NamespaceExitDefault | undefined> {
    if (!isLabel(namespace)) throw badRequest('namespace must be a DNS label');
    const r = await getJson<NamespaceExitRecord>(this.o.config, key(namespace));
    return r ? { exitNode: r.value.exitNode, allowOptOut: r.value.allowOptOut } : undefined;
  }

  /**
   * Set (body {exitNode: "NAME" | "NS.NAME", allowOptOut?: boolean}) or clear (body {exitNode: null})
   * the default, in `by`'s name; audited when it changes. Returns what is now in force.
   */
  async set(namespace: string, body: unknown, by: string): Promise<NamespaceExitDefault | undefined> {
    if (!isLabel(namespace)) throw badRequest('namespace must be a DNS label');
    const b = (typeof body === 'object' && body !== null && !Array.isArray(body) ? body : {}) as Record<string, unknown>;
    const usage = 'body must be {"exitNode": "NAME" | "NAMESPACE.NAME" | null, "allowOptOut"?: true|false}';
    if (!('exitNode' in b)) throw badRequest(usage);
    if (b.exitNode !== null && !isPeerRef(b.exitNode)) throw badRequest(`exitNode ${JSON.stringify(b.exitNode)} is not a peer name; ${usage}`);
    if (b.allowOptOut !== undefined && typeof b.allowOptOut !== 'boolean') throw badRequest(usage);
    const next: NamespaceExitDefault | undefined = b.exitNode === null ? undefined : { exitNode: b.exitNode, allowOptOut: b.allowOptOut === true };
    let changed = false;
    if (next === undefined) {
      const cur = await this.get(namespace);
      if (cur) {
        await this.o.config.delete(key(namespace));
        changed = true;
      }
    } else {
      await casUpdate<NamespaceExitRecord>(this.o.config, key(namespace), (cur) => {
        changed = !cur || cur.exitNode !== next.exitNode || cur.allowOptOut !== next.allowOptOut;
        return changed ? { namespace, ...next, updatedAt: this.o.clock.now(), by } : undefined;
      });
    }
    if (changed) this.o.audit({ type: 'namespace.exit-node', namespace, exitNode: next?.exitNode ?? '', allowOptOut: next?.allowOptOut ?? false, by });
    return next;
  }
}
