import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_API_MOUNT, AGENT_API_SOCKET } from '../../src/agentapi/index.js';
import type { AuditEventDraft } from '../../src/audit/events.js';
import { buildSpec } from '../../src/oci/spec.js';
import { startAgentSandbox, type AgentSandbox } from '../support/agent-sandbox.js';

const spans: AuditEventDraft[] = [];
let box: AgentSandbox;

beforeAll(async () => {
  box = await startAgentSandbox({ tag: 'sbx', namespace: 'ltaa-box', allowedTools: ['get_policy'], mountPoint: true, recordSpan: (d) => spans.push(d) });
}, 120_000);

afterAll(async () => {
  await box?.close();
});

function runInSandbox(script: string, user = { uid: 0, gid: 0 }) {
  const spec = buildSpec({
    args: ['sh', '-c', script],
    rootfs: box.rootfs,
    user,
    mounts: [{ destination: AGENT_API_MOUNT, type: 'bind', source: box.sockDir, options: ['rbind', 'rw'] }],
  });
  return box.run('ltaa', spec);
}

describe('agent API socket inside a real runsc sandbox (--host-uds=open)', () => {
  it('an agent in gVisor reaches the bind-mounted socket: identity, an allowed tool, a refused one', async () => {
    const s = AGENT_API_SOCKET;
    const r = await runInSandbox(
      `agentcall ${s} GET /v1/identity; echo; echo ---; agentcall ${s} POST /v1/tools/get_policy '{}'; echo; echo ---; agentcall ${s} POST /v1/tools/request_egress '{"host":"example.org","port":443}'`,
      { uid: 1000, gid: 1000 },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const [identity, policy, refused] = r.stdout.split('\n---\n');
    expect(identity).toMatch(/^HTTP\/1\.[01] 200/);
    expect(identity).toContain('"agentId":"5d0f6f8e-2b1c-4f7a-9e3d-1a2b3c4d5e6f"');
    expect(identity).not.toContain('not-shown-to-the-agent');
    expect(policy).toMatch(/^HTTP\/1\.[01] 200/);
    expect(policy).toContain('"policy":{"version":1');
    expect(refused).toMatch(/^HTTP\/1\.[01] 403/);
    expect(spans.map((x) => [(x as { tool: string }).tool, (x as { decision: string }).decision])).toEqual([
      ['get_policy', 'allow'],
      ['request_egress', 'deny'],
    ]);
  });
});
