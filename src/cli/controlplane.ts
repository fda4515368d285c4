import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UsageError } from '../errors.js';
import { createLogger } from '../log.js';
import { resolveStateDir, statePaths } from '../state.js';
import { DEFAULT_HTTP, DEFAULT_NATS_PORT, adminTokenPath, parseDuration, startControlPlane } from '../controlplane/index.js';
import { AuditStore, mountAuditRoutes } from '../audit/store.js';
import { ensureAuditStream } from '../audit/stream.js';
import { parseReplicas } from '../natsserver/replicas.js';
import { parseScrapeToken } from '../metrics/index.js';
import { globalOpts } from './run.js';
import { CONSOLE_PATH, mountConsole } from '../console/server.js';
import { systemClock } from '../clock.js';
import { stopSignal } from './stop-signal.js';

/** `lattice control-plane start`: embedded NATS (or --nats), enrollment over NATS, admin HTTP API. */
export function registerControlPlane(program: Command): void {
  const cp = program.command('control-plane').description('run the control plane (enrollment, directory, admin API)');
  cp.command('start')
    .description('start the control plane in the foreground (embedded nats-server unless --nats)')
    .option('--nats <url>', 'use an existing NATS server or cluster instead of starting one')
    .option('--listen <addr:port>', 'where the embedded nats-server listens; beyond loopback (e.g. 0.0.0.0:4222) it speaks TLS only', `127.0.0.1:${DEFAULT_NATS_PORT}`)
    .option('--nats-port <port>', 'port of the embedded nats-server on loopback (short for --listen 127.0.0.1:PORT)')
    .option('--http <host:port>', 'where the admin HTTP API listens ("off" for none); beyond loopback it is HTTPS', `${DEFAULT_HTTP.host}:${DEFAULT_HTTP.port}`)
    .option('--tls', 'TLS on NATS and the HTTP API on loopback too')
    .option('--jwt-ttl <duration>', 'lifetime of agent JWTs', '365d')
    .option('--replicas <n>', 'replicas of every KV bucket and the audit stream (default: 1 on a single server, 3 in a cluster)')
    .option('--metrics-token-file <path>', 'a token (first line, 16+ characters) that may read GET /metrics; without it only the admin token may')
    .option('--json', 'print the endpoints as JSON')
    .action(async (o: { nats?: string; listen: string; natsPort?: string; http: string; tls?: boolean; jwtTtl: string; replicas?: string; metricsTokenFile?: string; json?: boolean }, cmd: Command) => {
      const g = globalOpts(cmd);
      const stateDir = resolveStateDir(g.stateDir);
      const listen = o.natsPort !== undefined ? { host: '127.0.0.1', port: Number(o.natsPort) } : parseHostPort(o.listen, '--listen');
      if (!listen || !Number.isInteger(listen.port) || listen.port < 0 || listen.port > 65535) throw new UsageError(`--nats-port ${String(o.natsPort)} is not a port`);
      if (o.nats && cmd.getOptionValueSource('listen') === 'cli') throw new UsageError('--listen is for the embedded nats-server; with --nats the server listens where its operator configured it');
      const http = parseHostPort(o.http, '--http');
      let jwtTtlMs: number;
      try {
        jwtTtlMs = parseDuration(o.jwtTtl);
      } catch {
        throw new UsageError(`--jwt-ttl ${o.jwtTtl} is not a duration (e.g. 30d, 12h)`);
      }
      const replicas = o.replicas === undefined ? undefined : parseReplicas(o.replicas);
      let metricsToken: string | undefined;
      if (o.metricsTokenFile !== undefined) {
        let text: string;
        try {
          text = await readFile(o.metricsTokenFile, 'utf8');
        } catch (err) {
          throw new UsageError(`--metrics-token-file ${o.metricsTokenFile}: ${(err as Error).message}`);
        }
        metricsToken = parseScrapeToken(text, o.metricsTokenFile);
      }
      const log = createLogger({ name: 'control-plane', level: g.debug ? 'debug' : undefined });
      const cpl = await startControlPlane({
        stateDir,
        natsUrl: o.nats,
        natsHost: listen.host,
        natsPort: listen.port,
        tls: o.tls,
        http,
        jwtTtlMs,
        replicas,
        metricsToken,
        log,
        // Enrollments (with proof of key possession), revocations, routes and operators' changes in the control plane's log.
        onEvent: ({ type, ...fields }) => log.info({ event: type, ...fields }, type),
        // The audit trail's query API lives on the same server (GET .../audit/traces, .../audit/events).
        mount: async (api, { nc, service, replicas: r, adminUsers }) => {
          await ensureAuditStream(await nc.jetstreamManager(), { replicas: r, log });
          mountAuditRoutes(api, await AuditStore.create({ nc }));
          // The web console (src/console/) on the same server: sign-in, live audit, policy editor, approvals.
          mountConsole(api, { nc, getPolicy: async (ns) => (await service.getPolicy(ns)) ?? undefined, currentUser: (name) => adminUsers.current(name), clock: systemClock, log });
        },
      });
      const info = {
        nats: cpl.natsUrl,
        natsUrls: cpl.natsUrls,
        http: cpl.httpUrl ?? null,
        console: cpl.httpUrl ? `${cpl.httpUrl}${CONSOLE_PATH}` : null,
        caHash: cpl.tls?.caHash ?? null,
        caFile: cpl.tls ? join(statePaths(stateDir).controlPlane, 'tls', 'ca.pem') : null,
        clusterId: cpl.service.info.clusterId,
        replicas: cpl.replicas,
        adminTokenFile: adminTokenPath(statePaths(stateDir).controlPlane),
      };
      if (o.json) console.log(JSON.stringify(info));
      else {
        console.log(`control plane ready (cluster ${info.clusterId})`);
        console.log(`  nats:        ${info.natsUrls.join(',')}    (enroll with: lattice sandbox start --token T ...; the join token carries the URLs)`);
        if (info.caHash) console.log(`  tls:         CA ${info.caHash} (${info.caFile}); join tokens pin it`);
        if (info.http) console.log(`  admin api:   ${info.http}${info.http.startsWith('https:') ? `    (admin commands on other hosts: --ca ${info.caFile})` : ''}`);
        if (info.console) console.log(`  console:     ${info.console}    (sign in with the admin token)`);
        console.log(`  admin token: ${info.adminTokenFile}`);
      }
      await stopSignal();
      await cpl.stop();
    });
}

function parseHostPort(s: string, flag: string): { host: string; port: number } | false {
  if (flag === '--http' && (s === 'off' || s === 'none')) return false;
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:]+)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new UsageError(`${flag} ${s} is not host:port (e.g. ${flag === '--http' ? '127.0.0.1:8470' : '0.0.0.0:4222'})`);
  return { host: m[1] ?? m[2], port };
}
