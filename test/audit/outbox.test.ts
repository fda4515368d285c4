import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtemp, rm, readdir, readFile, appendFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Outbox, OutboxFullError, OutboxLockedError, decodeLine, encodeLine } from '../../src/audit/outbox.js';
import { auditSchemaProblems } from '../support/audit-schema.js';
import type { AuditEventDraft } from '../../src/audit/events.js';

const quiet = pino({ level: 'silent' });
const draft = (i: number): AuditEventDraft => ({ type: 'sandbox.started', sandboxId: `sb${i}`, agentId: 'a1', namespace: 'ns' });

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ltaudit-unit-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function segFiles(): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.startsWith('seg-')).sort();
}

/** Read every entry and mark it acknowledged, as the publisher does after the server's ack. */
async function ackAll(ob: Outbox): Promise<number> {
  const entries = await ob.readFrom(ob.ackedThrough + 1, 1_000_000);
  if (entries.length) ob.markAcked(entries[entries.length - 1].seq, entries.reduce((a, e) => a + e.bytes, 0));
  await ob.flushAcks();
  return entries.length;
}

describe('outbox line format', () => {
  it('round-trips and rejects a flipped byte', () => {
    const line = encodeLine(7, 'id-1', 'lattice.audit.ns.a.tool.span', '{"x":1}');
    expect(line.toString()).toMatch(/^[0-9a-f]{8} 7 id-1 lattice\.audit\.ns\.a\.tool\.span \{"x":1\}\n$/);
    const d = decodeLine(line.subarray(0, line.length - 1));
    expect(d && { seq: d.seq, id: d.id, subject: d.subject, payload: d.payload.toString() }).toEqual({ seq: 7, id: 'id-1', subject: 'lattice.audit.ns.a.tool.span', payload: '{"x":1}' });
    const bad = Buffer.from(line);
    bad[bad.length - 3] ^= 1;
    expect(decodeLine(bad.subarray(0, bad.length - 1))).toBeNull();
    expect(decodeLine(Buffer.from('garbage'))).toBeNull();
  });
});

describe('outbox', () => {
  it('records events on disk with consecutive seq, resolving with the full event', async () => {
    const ob = await Outbox.open({ dir, launcherId: 'l1', logger: quiet });
    const evs = await Promise.all([0, 1, 2].map((i) => ob.append(draft(i))));
    expect(evs.map((e) => e.seq)).toEqual([1, 2, 3]);
    expect(evs[0]).toMatchObject({ v: 1, launcherId: 'l1', type: 'sandbox.started', sandboxId: 'sb0' });
    const lines = (await readFile(join(dir, (await segFiles())[0]), 'utf8')).trim().split('\n');
    expect(lines).toHaveLength(3);
    expect(JSON.parse(lines[2].split(' ').slice(4).join(' '))).toEqual(evs[2]);
    const entries = await ob.readFrom(2, 10);
    expect(entries.map((e) => [e.seq, e.id, e.subject])).toEqual([[2, evs[1].id, 'lattice.audit.ns.a1.sandbox.started'], [3, evs[2].id, 'lattice.audit.ns.a1.sandbox.started']]);
    // What the publisher sends is the stream's contract (schema/audit-event.schema.json).
    for (const e of entries) expect(auditSchemaProblems(JSON.parse(Buffer.from(e.payload).toString('utf8')))).toEqual([]);
    await ob.close();
  });

  it('rejects an invalid event without consuming a seq', async () => {
    const ob = await Outbox.open({ dir, logger: quiet });
    await expect(ob.append({ type: 'sandbox.started', sandboxId: 'x', namespace: 'a.b' })).rejects.toMatchObject({ code: 'EAUDIT_INVALID' });
    expect((await ob.append(draft(1))).seq).toBe(1);
    await ob.close();
  });

  it('group commit batches concurrent appends into few fsyncs; per-event mode does one each', async () => {
    const a = await Outbox.open({ dir: join(dir, 'a'), logger: quiet });
    await Promise.all(Array.from({ length: 200 }, (_, i) => a.append(draft(i))));
    expect(a.stats().appended).toBe(200);
    expect(a.stats().fsyncs).toBeLessThan(20);
    await a.close();
    const b = await Outbox.open({ dir: join(dir, 'b'), groupCommit: false, logger: quiet });
    await Promise.all(Array.from({ length: 50 }, (_, i) => b.append(draft(i))));
    expect(b.stats().fsyncs).toBe(50);
    await b.close();
  });

  it('keeps seq and launcherId across restarts, also after every segment was acknowledged and deleted', async () => {
    let ob = await Outbox.open({ dir, logger: quiet });
    const id = ob.launcherId;
    for (let i = 0; i < 5; i++) await ob.append(draft(i));
    await ob.close();
    ob = await Outbox.open({ dir, logger: quiet });
    expect(ob.launcherId).toBe(id);
    expect((await ob.append(draft(5))).seq).toBe(6);
    expect(await ackAll(ob)).toBe(6);
    await ob.close();
    ob = await Outbox.open({ dir, logger: quiet });
    expect(await segFiles()).toEqual([]); // fully acknowledged segments are gone
    expect(ob.stats()).toMatchObject({ ackedSeq: 6, pendingBytes: 0 });
    expect((await ob.append(draft(6))).seq).toBe(7);
    expect(await ob.readFrom(1, 100)).toHaveLength(1); // only the unacknowledged one is replayed
    await ob.close();
  });

  it('replays only what was not acknowledged after a restart', async () => {
    let ob = await Outbox.open({ dir, logger: quiet });
    for (let i = 0; i < 10; i++) await ob.append(draft(i));
    const first = await ob.readFrom(1, 4);
    ob.markAcked(4, first.reduce((a, e) => a + e.bytes, 0));
    await ob.close();
    ob = await Outbox.open({ dir, logger: quiet });
    expect(ob.ackedThrough).toBe(4);
    expect((await ob.readFrom(ob.ackedThrough + 1, 100)).map((e) => e.seq)).toEqual([5, 6, 7, 8, 9, 10]);
    await ob.close();
  });

  it('truncates a torn last line left by a crash and continues the seq', async () => {
    let ob = await Outbox.open({ dir, logger: quiet });
    for (let i = 0; i < 3; i++) await ob.append(draft(i));
    await ob.close();
    const seg = join(dir, (await segFiles())[0]);
    const before = (await readFile(seg)).length;
    await appendFile(seg, encodeLine(4, 'x', 'lattice.audit._._.sandbox.started', '{"half":').subarray(0, 30));
    ob = await Outbox.open({ dir, logger: quiet });
    expect(ob.stats().tornBytes).toBe(30);
    expect((await readFile(seg)).length).toBe(before);
    expect((await ob.readFrom(1, 100)).map((e) => e.seq)).toEqual([1, 2, 3]);
    expect((await ob.append(draft(3))).seq).toBe(4);
    await ob.close();
  });

  it('skips and counts a corrupt line in the middle instead of failing', async () => {
    let ob = await Outbox.open({ dir, logger: quiet });
    for (let i = 0; i < 3; i++) await ob.append(draft(i));
    await ob.close();
    const seg = join(dir, (await segFiles())[0]);
    const buf = await readFile(seg);
    const secondLine = buf.indexOf('\n') + 1;
    buf[secondLine + 20] ^= 0x01;
    await writeFile(seg, buf);
    ob = await Outbox.open({ dir, logger: quiet });
    expect(ob.stats().corruptLines).toBe(1);
    expect((await ob.readFrom(1, 100)).map((e) => e.seq)).toEqual([1, 3]);
    expect((await ob.append(draft(3))).seq).toBe(4);
    await ob.close();
  });

  it('when full: refuses with OutboxFullError, counts, reports isFull, and recovers once acknowledged', async () => {
    const ob = await Outbox.open({ dir, maxBytes: 4096, logger: quiet });
    let accepted = 0;
    let refused = 0;
    for (let i = 0; i < 100; i++) {
      try {
        await ob.append(draft(i));
        accepted++;
      } catch (err) {
        expect(err).toBeInstanceOf(OutboxFullError);
        expect((err as OutboxFullError).code).toBe('EOUTBOX_FULL');
        refused++;
      }
    }
    expect(accepted).toBeGreaterThan(5);
    expect(refused).toBe(100 - accepted);
    expect(ob.stats()).toMatchObject({ refused, full: true, nextSeq: accepted + 1 });
    expect(ob.stats().pendingBytes).toBeLessThanOrEqual(4096);
    expect(ob.isFull()).toBe(true);
    // Refused events did not consume a seq: the accepted ones are 1..accepted with no gap.
    expect((await ob.readFrom(1, 1000)).map((e) => e.seq)).toEqual(Array.from({ length: accepted }, (_, i) => i + 1));
    await ackAll(ob);
    expect(ob.isFull()).toBe(false);
    expect((await ob.append(draft(0))).seq).toBe(accepted + 1);
    await ob.close();
  });

  it('rotates segments and deletes acknowledged ones', async () => {
    const ob = await Outbox.open({ dir, segmentBytes: 4096, maxBytes: 1 << 20, logger: quiet });
    for (let i = 0; i < 100; i++) await ob.append(draft(i));
    expect((await segFiles()).length).toBeGreaterThan(3);
    const some = await ob.readFrom(1, 60);
    ob.markAcked(60, some.reduce((a, e) => a + e.bytes, 0));
    await ob.flushAcks();
    const left = await segFiles();
    expect(left.length).toBeGreaterThan(0);
    expect(Number(left[0].slice(4, 24))).toBeLessThanOrEqual(61);
    expect((await ob.readFrom(61, 1000)).map((e) => e.seq)).toEqual(Array.from({ length: 40 }, (_, i) => i + 61));
    await ob.close();
  });

  it('lets one owner use the directory at a time', async () => {
    const ob = await Outbox.open({ dir, logger: quiet });
    await expect(Outbox.open({ dir, logger: quiet })).rejects.toBeInstanceOf(OutboxLockedError);
    await ob.close();
    await writeFile(join(dir, 'lock'), '999999999'); // a dead owner (kill -9) is taken over
    const again = await Outbox.open({ dir, logger: quiet });
    await again.close();
    await writeFile(join(dir, 'lock'), `${process.pid} 1`); // a process that died with our pid (a container's pid 1)
    const third = await Outbox.open({ dir, logger: quiet });
    await expect(Outbox.open({ dir, logger: quiet })).rejects.toBeInstanceOf(OutboxLockedError);
    await third.close();
  });
});
