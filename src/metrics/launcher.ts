import type { Outbox } from '../audit/outbox.js';
import type { OutboxPublisher } from '../audit/publisher.js';
import type { Pump } from '../dataplane/pump.js';
import type { Device } from '../wg/device.js';
import { launcherMetrics, newRegistry, serveMetrics } from './index.js';

/** The live parts of a launcher the metrics read; each appears when the launcher has opened it. */
export interface LauncherParts {
  outbox?: Pick<Outbox, 'stats'>;
  publisher?: Pick<OutboxPublisher, 'stats'>;
  network?: { device: Pick<Device, 'peerStatus' | 'stats'>; pump: Pick<Pump, 'stats'> };
}

export interface StartedLauncherMetrics {
  /** http://host:port/metrics */
  readonly url: string;
  /** Make a part visible to scrapes once it is open (the outbox first, the network last). */
  attach(parts: LauncherParts): void;
  /** Milliseconds from an audit publish to its acknowledgement (OutboxPublisher's onAck). */
  observePublishLag(ms: number): void;
  close(): Promise<void>;
}

/**
 * `sandbox start --metrics HOST:PORT`: GET /metrics on a small HTTP server of the launcher, Prometheus text.
 * Errors: MetricsListenError when the address cannot be bound (before anything else is opened).
 */
export async function startLauncherMetrics(listen: { host: string; port: number }, now: () => number = Date.now): Promise<StartedLauncherMetrics> {
  const parts: LauncherParts = {};
  const reg = newRegistry();
  const m = launcherMetrics(reg, {
    now,
    device: () => parts.network && { peers: parts.network.device.peerStatus(), ...parts.network.device.stats },
    pump: () => parts.network?.pump.stats,
    outbox: () => parts.outbox?.stats(),
    publisher: () => parts.publisher?.stats(),
  });
  const server = await serveMetrics(reg, listen.host, listen.port);
  return {
    url: server.url,
    attach: (p) => Object.assign(parts, p),
    observePublishLag: (ms) => m.observePublishLag(ms),
    close: () => server.close(),
  };
}
