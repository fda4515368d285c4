/**
 * Per-source token bucket for handshake initiations under load (wireguard-go ratelimiter/):
 * 20 packets per second, bursts of 5. Pure: `now` in. Entries idle for a second are swept by gc().
 */
export const PacketsPerSecond = 20;
export const PacketsBurstable = 5;
const packetCost = 1_000 / PacketsPerSecond; // ms of tokens per packet
const maxTokens = packetCost * PacketsBurstable;

interface Entry {
  lastTime: number;
  tokens: number;
}

export class RateLimiter {
  private readonly table = new Map<string, Entry>();

  allow(source: string, now: number): boolean {
    let e = this.table.get(source);
    if (!e) {
      e = { lastTime: now, tokens: maxTokens - packetCost };
      this.table.set(source, e);
      return true;
    }
    e.tokens = Math.min(maxTokens, e.tokens + (now - e.lastTime));
    e.lastTime = now;
    if (e.tokens >= packetCost) {
      e.tokens -= packetCost;
      return true;
    }
    return false;
  }

  gc(now: number): void {
    for (const [k, e] of this.table) if (now - e.lastTime > 1_000) this.table.delete(k);
  }

  get size(): number {
    return this.table.size;
  }
}
