import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { mkdir, readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type NatsConnection } from 'nats';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { API_BASE } from '../../src/controlplane/index.js';
import { AUDIT_EVENT_VERSION, auditSubject, newEventId } from '../../src/audit/events.js';
import { enroll } from '../../src/enroll/index.js';
import { freePort, startNatsServer, type StartedNatsServer } from '../../src/natsserver/server.js';
import { CLI, REPO, requireBinary, tempDir } from '../support/env.js';

/**
 * The web console in a real browser: Debian's chromium, headless, driven by puppeteer-core, against
 * `lattice control-plane start` (the built CLI) on a real nats-server. Screenshots go to
 * .test-results/console/ (gitignored).
 */
// Globals of the page, for the callbacks puppeteer runs there (the root tsconfig has no DOM lib on purpose).
/* eslint-disable @typescript-eslint/no-explicit-any */
declare const document: any, window: any, localStorage: any, sessionStorage: any, location: any;
type HTMLTextAreaElement = { value: string; dispatchEvent(e: unknown): boolean };
type HTMLButtonElement = { disabled: boolean; click(): void };
/* eslint-enable @typescript-eslint/no-explicit-any */

const ARTEFACTS = join(REPO, '.test-results', 'console');
const XSS_NAME = '<script>window.__xss=1</script>"><img src=x onerror="window.__xss=2">';
const XSS_DNS = '"><img src=x onerror=window.__xss=3>.<script>window.__xss=4</script>.example';

let dir: { path: string; remove: () => Promise<void> };
let nats: StartedNatsServer;
let cp: ChildProcess;
let api: string;
let consoleUrl: string;
let adminToken: string;
/** Admin users: carol (admin) works in the console and proposes; alice (approver) approves. */
const users: Record<string, string> = {};
let nc: NatsConnection;
let browser: Browser;
let page: Page;
let evil: Server;
const dialogs: string[] = [];
const agents: Record<string, { agentId: string; ipv4: string }> = {};

const basePolicy = {
  version: 1,
  egress: [
    { id: 'no-metadata', action: 'deny', cidrs: ['169.254.0.0/16'] },
    { id: 'web', action: 'allow', cidrs: ['203.0.113.0/24'], ports: [443], protocol: 'tcp' },
  ],
};

async function admin<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(`${api}${path}`, {
    method,
    headers: { authorization: `Bearer ${adminToken}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
}

/** Publish an event on the audit stream the way a launcher's publisher does. */
async function publish(agent: string, fields: Record<string, unknown>): Promise<void> {
  const ev = { v: AUDIT_EVENT_VERSION, id: newEventId(), seq: 1, launcherId: 'launcher-e2e', agentId: agents[agent].agentId, namespace: 'shop', ts: new Date().toISOString(), ...fields };
  await nc.jetstream().publish(auditSubject(ev as never), JSON.stringify(ev), { msgID: ev.id as string });
}

async function startControlPlane(stateDir: string, natsUrl: string): Promise<{ proc: ChildProcess; info: { http: string; console: string; nats: string } }> {
  const proc = spawn(process.execPath, [CLI, '--state-dir', stateDir, 'control-plane', 'start', '--json', '--nats', natsUrl, '--http', `127.0.0.1:${await freePort()}`], {
    env: { ...process.env, LATTICE_LOG_LEVEL: 'error' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).once('line', resolve);
    proc.once('exit', (c) => reject(new Error(`control plane exited ${c}: ${stderr}`)));
  });
  return { proc, info: JSON.parse(line) as { http: string; console: string; nats: string } };
}

const shot = (name: string) => page.screenshot({ path: join(ARTEFACTS, `${name}.png`), fullPage: true });
const nav = async (view: string) => page.click(`nav button[data-view="${view}"]`);
/** Elements the page has that markup injected through data would create. */
const injected = () => page.evaluate(() => ({ imgs: document.querySelectorAll('img').length, scripts: document.querySelectorAll('body script').length, xss: (window as unknown as { __xss?: number }).__xss ?? null }));

beforeAll(async () => {
  const chromium = await requireBinary('chromium');
  await requireBinary('nats-server');
  await mkdir(ARTEFACTS, { recursive: true });
  dir = await tempDir('lattice-console');
  nats = await startNatsServer({ storeDir: join(dir.path, 'nats'), port: 0 });
  const started = await startControlPlane(dir.path, nats.url);
  cp = started.proc;
  api = started.info.http;
  consoleUrl = started.info.console;
  adminToken = (await readFile(join(dir.path, 'control-plane', 'admin-token'), 'utf8')).trim();

  const tok = await admin<{ token: string }>('POST', `${API_BASE}/enrollment-tokens`, { namespace: 'shop', limit: 2, ttl: '1h' });
  expect(tok.status).toBe(201);
  for (const name of ['payment-service', 'postgres']) {
    const e = await enroll({ controlPlaneUrl: started.info.nats, token: tok.body.token, name, publicKey: randomBytes(32).toString('base64') });
    agents[name] = { agentId: e.agentId, ipv4: e.address.ipv4 };
  }
  expect((await admin('PUT', `${API_BASE}/policies/shop`, basePolicy)).status).toBe(200);
  for (const [name, role] of [['carol', 'admin'], ['alice', 'approver']]) {
    const u = await admin<{ token: string }>('POST', `${API_BASE}/admin-users`, { name, role });
    expect(u.status).toBe(201);
    users[name] = u.body.token;
  }

  nc = await connect({ servers: nats.url });
  // An agent record whose name holds markup, written straight into the store (enrollment refuses such
  // names; a corrupt or hostile store must still render as text).
  const kv = await nc.jetstream().views.kv('lattice_agents');
  const now = Date.now();
  await kv.put('a.shop.evil', JSON.stringify({
    agentId: 'evil-agent', name: XSS_NAME, namespace: 'shop', publicKey: randomBytes(32).toString('base64'), status: 'active',
    endpoint: '"><img src=x onerror=window.__xss=5>:51820', allowedTools: [], allowedNamespaces: [], modes: {}, tokenId: 't', createdAt: now, updatedAt: now,
  }));

  browser = await puppeteer.launch({ executablePath: chromium, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  page = await browser.newPage();
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    void d.dismiss();
  });

  // A page on another site (localhost vs 127.0.0.1) that posts a form to the console's API.
  evil = createServer((req, res) => {
    const target = new URL(req.url ?? '/', 'http://x').searchParams.get('target') ?? '';
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<!doctype html><form id="f" method="POST" action="${target.replace(/"/g, '&quot;')}"><input name="by" value="attacker"></form><script>document.getElementById('f').submit()</script>`);
  });
  await new Promise<void>((r) => evil.listen(0, '127.0.0.1', () => r()));
}, 120_000);

afterAll(async () => {
  await browser?.close();
  evil?.close();
  await nc?.close();
  if (cp && cp.exitCode === null) {
    const exited = new Promise((r) => cp.once('exit', r));
    cp.kill('SIGTERM');
    await exited;
  }
  await nats?.stop();
  await dir?.remove();
});

describe('web console in chromium against a real control plane', () => {
  it('refuses requests without a session: 401', async () => {
    for (const path of [`${API_BASE}/agents`, `${API_BASE}/audit/live`, '/console/session', `${API_BASE}/approvals`]) {
      const res = await fetch(`${api}${path}`);
      expect(res.status, path).toBe(401);
      await res.body?.cancel();
    }
    const forged = await fetch(`${api}${API_BASE}/agents`, { headers: { cookie: 'lattice_console=forged' } });
    expect(forged.status).toBe(401);
    const wrong = await fetch(`${api}/console/session`, { method: 'POST', headers: { 'content-type': 'application/json', origin: new URL(api).origin }, body: JSON.stringify({ token: 'not-the-token' }) });
    expect(wrong.status).toBe(401);
  });

  it("signs in with an admin user's token into an HttpOnly SameSite=Strict cookie, shows who is signed in, the agents and their peers", async () => {
    expect(consoleUrl).toBe(`${api}/console/`);
    await page.goto(consoleUrl);
    await page.waitForSelector('#token');
    await page.type('#token', users.carol);
    await page.click('#signin button[type=submit]');
    await page.waitForSelector('#agents tbody tr');
    expect(await page.$eval('#signed-in-as', (el) => el.textContent)).toBe('signed in as carol (admin)');
    const names = await page.$$eval('#agents td.agent-name', (tds) => tds.map((td) => td.textContent));
    expect(names).toEqual(expect.arrayContaining(['payment-service', 'postgres']));
    const cookies = await browser.cookies();
    const session = cookies.find((c) => c.name === 'lattice_console');
    expect(session).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/' });
    expect(session!.value).not.toContain(users.carol);
    // No token anywhere the page's script or a URL can leak it.
    const storage = await page.evaluate(() => ({ local: JSON.stringify({ ...localStorage }), session: JSON.stringify({ ...sessionStorage }), cookie: document.cookie, url: location.href }));
    expect(storage).toEqual({ local: '{}', session: '{}', cookie: '', url: consoleUrl });
    // The graph: one edge per pair of peers (three agents in one namespace: three edges).
    expect(await page.$$eval('#agent-graph line', (l) => l.length)).toBe(3);
    await shot('agents');
  });

  it('renders an agent name and endpoint holding markup as inert text', async () => {
    const cell = await page.$$eval('#agents td.agent-name', (tds) => tds.map((td) => td.textContent));
    expect(cell).toContain(XSS_NAME);
    expect(await page.$$eval('#agent-graph text', (ts) => ts.map((t) => t.textContent))).toContain(`shop/${XSS_NAME}`);
    expect(await injected()).toEqual({ imgs: 0, scripts: 0, xss: null });
    expect(dialogs).toEqual([]);
  });

  it('shows a denied flow and a refused DNS name (with markup, as text) live from the audit stream', async () => {
    await nav('Live');
    await page.waitForSelector('#live-status[data-state="open"]');
    const t0 = performance.now();
    await publish('payment-service', {
      type: 'flow.opened', flowId: 'f1', direction: 'egress', verdict: 'denied', ruleId: 'default-deny', proto: 'tcp',
      srcIp: agents['payment-service'].ipv4, srcPort: 40000, dstIp: agents.postgres.ipv4, dstPort: 5432,
    });
    const li = await page.waitForSelector('#live-list li[data-type="flow.opened"][data-verdict="denied"]');
    console.log(`denied flow on screen ${(performance.now() - t0).toFixed(0)} ms after it was published (informational)`);
    const text = await li!.evaluate((el) => el.textContent ?? '');
    expect(text).toContain('shop/payment-service');
    expect(text).toContain(`${agents.postgres.ipv4}:5432`);
    expect(text).toContain('ruleId=default-deny');

    await publish('payment-service', { type: 'dns.refused', name: XSS_DNS, qtype: 'A', reason: 'no rule allows this name' });
    const dns = await page.waitForSelector('#live-list li[data-type="dns.refused"]');
    expect(await dns!.evaluate((el) => el.querySelector('.details')?.textContent)).toContain(`name=${XSS_DNS}`);
    expect(await injected()).toEqual({ imgs: 0, scripts: 0, xss: null });
    expect(dialogs).toEqual([]);
    await shot('live');
  });

  it('serves the live stream to API clients too (bearer token), resuming after Last-Event-ID', async () => {
    const { body } = await admin<{ events: { type: string; streamSeq: number }[] }>('GET', `${API_BASE}/audit/events?type=flow&since=1h`);
    const denied = body.events.find((e) => e.type === 'flow.opened')!;
    const ctl = new AbortController();
    const safety = setTimeout(() => ctl.abort(), 60_000); // against a hang only
    const res = await fetch(`${api}${API_BASE}/audit/live?type=flow`, { headers: { authorization: `Bearer ${adminToken}`, 'last-event-id': String(denied.streamSeq - 1) }, signal: ctl.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    let text = '';
    const reader = res.body!.getReader();
    while (!/\n\n/.test(text.slice(text.indexOf('event: audit')))) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    clearTimeout(safety);
    ctl.abort();
    const block = text.slice(text.indexOf('id: '));
    expect(block.split('\n')[0]).toBe(`id: ${denied.streamSeq}`);
    expect(JSON.parse(/^data: (.*)$/m.exec(block)![1])).toMatchObject({ type: 'flow.opened', verdict: 'denied', streamSeq: denied.streamSeq });
  });

  it('finds the denied flow in audit search', async () => {
    await nav('Audit');
    await page.waitForSelector('#audit-form');
    await page.select('#audit-form select[name="type"]', 'flow');
    await page.click('#audit-form button[type=submit]');
    const row = await page.waitForSelector('#audit-results tr[data-verdict="denied"]');
    expect(await row!.evaluate((el) => el.textContent)).toContain('default-deny');
  });

  it('shows the validator message for an invalid policy inline, then proposes a valid one with its diff', async () => {
    await nav('Policy');
    await page.waitForFunction(() => (document.getElementById('policy-text') as HTMLTextAreaElement | null)?.value.includes('no-metadata'));
    const edit = (doc: unknown) =>
      page.evaluate((text: string) => {
        const ta = document.getElementById('policy-text') as HTMLTextAreaElement;
        ta.value = text;
        ta.dispatchEvent(new Event('input'));
      }, JSON.stringify(doc, null, 2));
    await edit({ ...basePolicy, egress: [...basePolicy.egress, { id: 'db', action: 'allow', cidrs: ['300.0.0.0/8'], ports: [5432], protocol: 'tcp' }] });
    const problem = await page.waitForSelector('#policy-problems li');
    expect(await problem!.evaluate((el) => el.getAttribute('data-path'))).toMatch(/^egress\[2\]\.cidrs/);
    expect(await page.$eval('#policy-propose', (b) => (b as HTMLButtonElement).disabled)).toBe(true);
    await shot('policy-invalid');

    await edit({ ...basePolicy, egress: [...basePolicy.egress, { id: 'db', action: 'allow', cidrs: [`${agents.postgres.ipv4}/32`], ports: [5432], protocol: 'tcp' }] });
    await page.waitForFunction(() => document.getElementById('policy-status')?.textContent === 'valid');
    expect(await page.$eval('#policy-diff', (el) => el.textContent)).toContain('"id": "db"');
    expect(await page.$$eval('#policy-diff .add', (els) => els.length)).toBeGreaterThan(0);
    await page.click('#policy-propose');
    await page.waitForFunction(() => document.getElementById('policy-result')?.textContent?.startsWith('Proposed'));
    // Proposed only: nothing applied yet.
    const live = await admin<{ policy: typeof basePolicy }>('GET', `${API_BASE}/policies/shop`);
    expect(live.body.policy.egress.map((r) => r.id)).toEqual(['no-metadata', 'web']);
  });

  it('approves the pending change from the queue as another user (never the proposer), and the policy is live', async () => {
    // carol proposed it: the console refuses her approval (four-eyes); alice signs in and approves.
    const pending = (await admin<{ approvals: { id: string; proposer: string }[] }>('GET', `${API_BASE}/approvals?status=pending`)).body.approvals;
    expect(pending.map((a) => a.proposer)).toEqual(['carol']);
    await nav('Approvals');
    const mine = await page.waitForSelector('#approvals .card[data-status="pending"]');
    await mine!.$eval('button.approve', (b) => (b as HTMLButtonElement).click());
    await page.waitForFunction(() => /may not approve it too/.test(document.getElementById('approvals-message')?.textContent ?? ''));
    await page.click('#signout');
    await page.waitForSelector('#token');
    await page.type('#token', users.alice);
    await page.click('#signin button[type=submit]');
    await page.waitForFunction(() => document.getElementById('signed-in-as')?.textContent === 'signed in as alice (approver)');
    await nav('Approvals');
    const card = await page.waitForSelector('#approvals .card[data-status="pending"]');
    expect(await card!.evaluate((el) => el.textContent)).toContain('set the network policy of namespace shop');
    await shot('approvals');
    await card!.$eval('button.approve', (b) => (b as HTMLButtonElement).click());
    await page.waitForFunction(() => document.getElementById('approvals-message')?.textContent?.includes('approved'));
    const live = await admin<{ policy: typeof basePolicy }>('GET', `${API_BASE}/policies/shop`);
    expect(live.body.policy.egress.map((r) => r.id)).toEqual(['no-metadata', 'web', 'db']);
    const done = await admin<{ proposer: string; decidedBy: string; status: string }>('GET', `${API_BASE}/approvals/${pending[0].id}`);
    expect(done.body).toMatchObject({ proposer: 'carol', decidedBy: 'alice', status: 'approved' });
  });

  it('refuses a cross-site form post, and a forged request with the cookie from another origin', async () => {
    const p = await admin<{ id: string }>('POST', `${API_BASE}/approvals`, { kind: 'revoke-agent', namespace: 'shop', name: 'postgres' });
    expect(p.status).toBe(201);
    const target = `${api}${API_BASE}/approvals/${p.body.id}/approve`;
    // The attacker's page lives on http://localhost:PORT: another site than http://127.0.0.1:PORT.
    const attacker = await browser.newPage();
    const port = (evil.address() as AddressInfo).port;
    const answered = attacker.waitForResponse((r) => r.url() === target && r.request().method() === 'POST');
    await attacker.goto(`http://localhost:${port}/?target=${encodeURIComponent(target)}`);
    const res = await answered;
    // SameSite=Strict kept the cookie home, so the post arrives without a session.
    expect(res.status()).toBe(401);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('EUNAUTHORIZED');
    await attacker.close();
    expect((await admin<{ status: string }>('GET', `${API_BASE}/approvals/${p.body.id}`)).body.status).toBe('pending');

    // Without SameSite's help: the real session cookie sent by hand from another origin, or without the CSRF token.
    const cookie = (await browser.cookies()).find((c) => c.name === 'lattice_console')!;
    const { csrf } = await page.evaluate(() => fetch('/console/session').then((r) => r.json() as Promise<{ csrf: string }>));
    const forge = (headers: Record<string, string>) =>
      fetch(target, { method: 'POST', headers: { cookie: `lattice_console=${cookie.value}`, 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: 'by=attacker' });
    expect((await forge({ origin: `http://localhost:${port}`, 'sec-fetch-site': 'cross-site', 'x-lattice-csrf': csrf })).status).toBe(403);
    expect((await forge({ origin: `http://localhost:${port}`, 'x-lattice-csrf': csrf })).status).toBe(403);
    expect((await forge({ origin: new URL(api).origin })).status).toBe(403);
    expect((await admin<{ status: string }>('GET', `${API_BASE}/approvals/${p.body.id}`)).body.status).toBe('pending');
  });

  it('signs out: the cookie no longer opens the API', async () => {
    const cookie = (await browser.cookies()).find((c) => c.name === 'lattice_console')!;
    await page.click('#signout');
    await page.waitForSelector('#token');
    const res = await fetch(`${api}${API_BASE}/agents`, { headers: { cookie: `lattice_console=${cookie.value}` } });
    expect(res.status).toBe(401);
    expect(dialogs).toEqual([]);
  });
});
