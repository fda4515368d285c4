import { writeFileAtomic } from '../fsutil.js';
import type { Logger } from '../log.js';
import { encodeJson, getJson, KvConflictError, type KvBucket } from './kv.js';
import { adminTokenPath } from './secrets.js';

/**
 * One admin token per cluster, so that every control-plane instance on the same NATS (e.g. two behind one
 * load balancer) accepts the same bearer token. It is kept where the JWT secret is: the `cluster` record of
 * the `lattice_config` bucket, which only the control plane's NATS user may read (launchers and bootstrap
 * users get "Permissions Violation"; README "Control-plane security").
 *
 * The first instance to start (or, on a cluster from before this, the first upgraded one) contributes its
 * local token (`<state>/control-plane/admin-token`) with a create-or-compare-and-set; every other instance
 * adopts the cluster's and rewrites its local file (0600, atomically), logging that it did, so the CLI on
 * each host keeps reading the token from its own state dir.
 */
interface ClusterRecordWithAdmin {
  adminToken?: string;
  [k: string]: unknown;
}

/** The cluster's admin token (contributing `local` when it has none); the local file is made to match. */
export async function ensureClusterAdminToken(config: KvBucket, controlPlaneDir: string, local: string, log?: Logger): Promise<string> {
  let token: string | undefined;
  while (token === undefined) {
    const cur = await getJson<ClusterRecordWithAdmin>(config, 'cluster');
    if (cur?.value.adminToken) {
      token = cur.value.adminToken;
      break;
    }
    try {
      // ensureCluster (service.ts) has created the record already; an absent one is created here all the same.
      if (cur) await config.update('cluster', encodeJson({ ...cur.value, adminToken: local }), cur.revision);
      else await config.create('cluster', encodeJson({ adminToken: local }));
      token = local;
    } catch (err) {
      if (!(err instanceof KvConflictError)) throw err; // another instance wrote first: read theirs
    }
  }
  if (token !== local) {
    await writeFileAtomic(adminTokenPath(controlPlaneDir), `${token}\n`, 0o600);
    log?.warn({ file: adminTokenPath(controlPlaneDir) }, 'admin token: this control plane joined a cluster that has one; the local admin-token file now holds the cluster\'s');
  }
  return token;
}

