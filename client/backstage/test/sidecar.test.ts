import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ApiLister } from '../src/listers';
import { Poller } from '../src/poller';
import { codeFromHttpStatus, SidecarClient, SidecarError } from '../src/sidecar';
import { component, RecordingLogger, SidecarDouble, TestCatalog, testAuth } from './helpers';

describe('SidecarClient', () => {
  let sidecar: SidecarDouble;
  before(async () => {
    sidecar = new SidecarDouble();
    await sidecar.start();
  });
  after(async () => {
    await sidecar.stop();
  });

  test('parses the answer; uint64 queueDepth arrives as a string', async () => {
    sidecar.answer = () => ({ status: 200, body: { accepted: 2, queueDepth: '18446744073' } });
    const client = new SidecarClient({ baseUrl: `${sidecar.url}/`, requestTimeoutMs: 5000 });
    const res = await client.publishChanges('{"changes":[]}');
    assert.deepEqual(res, { accepted: 2, queueDepth: 18446744073 });
    const req = sidecar.received.at(-1)!;
    assert.equal(req.path, '/portbridge.v1.BridgeService/PublishChanges');
    assert.equal(req.headers.authorization, undefined, 'no token configured, no header');
  });

  const errors: [string, { status: number; body: unknown }, string][] = [
    ['Connect error body', { status: 400, body: { code: 'invalid_argument', message: 'changes[0]: no ref' } }, 'invalid_argument'],
    ['Connect unauthenticated', { status: 401, body: { code: 'unauthenticated', message: 'no' } }, 'unauthenticated'],
    ['plain 503 from a proxy', { status: 503, body: 'Service Unavailable' }, 'unavailable'],
    ['plain 404', { status: 404, body: 'not found' }, 'unimplemented'],
    ['plain 400', { status: 400, body: '' }, 'internal'],
    ['unknown code in body', { status: 500, body: { code: 'teapot', message: 'x' } }, 'unknown'],
    ['200 without JSON object', { status: 200, body: 'ok' }, 'internal'],
  ];
  for (const [name, answer, code] of errors) {
    test(`maps ${name} to ${code}`, async () => {
      sidecar.answer = () => answer;
      const client = new SidecarClient({ baseUrl: sidecar.url, token: 'abcdefgh', requestTimeoutMs: 5000 });
      await assert.rejects(client.publishChanges('{}'), (e: unknown) => {
        assert.ok(e instanceof SidecarError);
        assert.equal(e.code, code);
        assert.ok(!e.message.includes('abcdefgh'));
        return true;
      });
    });
  }

  test('a closed connection is unavailable; an abort is canceled', async () => {
    sidecar.answer = () => 'drop';
    const client = new SidecarClient({ baseUrl: sidecar.url, requestTimeoutMs: 5000 });
    await assert.rejects(client.publishChanges('{}'), (e: any) => e.code === 'unavailable');
    const ctrl = new AbortController();
    ctrl.abort();
    await assert.rejects(client.publishChanges('{}', ctrl.signal), (e: any) => e.code === 'canceled');
  });

  test('codeFromHttpStatus follows the Connect protocol table', () => {
    assert.deepEqual(
      [400, 401, 403, 404, 429, 502, 503, 504, 500].map(codeFromHttpStatus),
      ['internal', 'unauthenticated', 'permission_denied', 'unimplemented', 'unavailable', 'unavailable', 'unavailable', 'unavailable', 'unknown'],
    );
  });
});

/** Fields of each message in bridge.proto, by their proto3 JSON names. */
function protoJsonNames(file: string): Map<string, Set<string>> {
  const text = fs.readFileSync(file, 'utf8').replace(/\/\/.*$/gm, '');
  const messages = new Map<string, Set<string>>();
  const re = /message\s+(\w+)\s*\{/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text))) {
    let depth = 1;
    let i = re.lastIndex;
    while (depth > 0 && i < text.length) {
      if (text[i] === '{') depth++;
      if (text[i] === '}') depth--;
      i++;
    }
    const body = text.slice(re.lastIndex, i - 1);
    const fields = new Set<string>();
    for (const f of body.matchAll(/(?:repeated\s+)?(?:map<[^>]+>|[\w.]+)\s+(\w+)\s*=\s*\d+\s*;/g)) {
      fields.add(f[1].replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase()));
    }
    messages.set(m[1], fields);
  }
  return messages;
}

describe('wire format matches proto/portbridge/v1/bridge.proto', () => {
  const protoFile = path.resolve(__dirname, '../../../../proto/portbridge/v1/bridge.proto');
  const present = fs.existsSync(protoFile);

  test('every JSON key the module sends and reads is a field of the proto message', { skip: !present && 'proto not beside the package' }, async () => {
    const msgs = protoJsonNames(protoFile);
    const fields = (name: string) => {
      const f = msgs.get(name);
      assert.ok(f, `message ${name} in the proto`);
      return f;
    };
    const sidecar = new SidecarDouble();
    await sidecar.start();
    try {
      const catalog = new TestCatalog([component('a'), component('b')]);
      const poller = new Poller({
        catalog,
        auth: testAuth,
        logger: new RecordingLogger(),
        lister: new ApiLister(catalog, 10),
        sidecar: new SidecarClient({ baseUrl: sidecar.url, requestTimeoutMs: 5000 }),
        options: { batchSize: 10, maxBatchBytes: 1 << 20, initialBackoffMs: 5, maxBackoffMs: 10, source: 's' },
      });
      await poller.runOnce(new AbortController().signal);
      catalog.set([component('a')]);
      await poller.runOnce(new AbortController().signal);
      catalog.set([]);
      const empty = new Poller({
        catalog,
        auth: testAuth,
        logger: new RecordingLogger(),
        lister: new ApiLister(catalog, 10),
        sidecar: new SidecarClient({ baseUrl: sidecar.url, requestTimeoutMs: 5000 }),
        options: { batchSize: 10, maxBatchBytes: 1 << 20, initialBackoffMs: 5, maxBackoffMs: 10, source: 's' },
      });
      await empty.runOnce(new AbortController().signal);

      const publish = sidecar.received.filter(r => r.path.endsWith('/PublishChanges'));
      assert.equal(publish.length, 2);
      const seen = new Set<string>();
      for (const r of publish) {
        for (const k of Object.keys(r.body)) assert.ok(fields('PublishChangesRequest').has(k), `PublishChangesRequest.${k}`);
        for (const c of r.body.changes) {
          for (const k of Object.keys(c)) {
            assert.ok(fields('Change').has(k), `Change.${k}`);
            seen.add(k);
          }
          if (c.upserted) for (const k of Object.keys(c.upserted)) assert.ok(fields('Upserted').has(k), `Upserted.${k}`);
          if (c.deleted) assert.deepEqual(Object.keys(c.deleted).filter(k => !fields('Deleted').has(k)), []);
        }
      }
      assert.deepEqual([...seen].sort(), ['deleted', 'entityRef', 'etag', 'observedAt', 'uid', 'upserted']);
      const resync = sidecar.received.filter(r => r.path.endsWith('/TriggerResync'));
      assert.equal(resync.length, 1);
      for (const k of Object.keys(resync[0].body)) assert.ok(fields('TriggerResyncRequest').has(k), `TriggerResyncRequest.${k}`);
      // What the client reads from answers.
      for (const k of ['accepted', 'queueDepth']) assert.ok(fields('PublishChangesResponse').has(k), k);
      assert.ok(fields('TriggerResyncResponse').has('resyncId'));
      assert.match(fs.readFileSync(protoFile, 'utf8'), /package portbridge\.v1;[\s\S]*service BridgeService/);
    } finally {
      await sidecar.stop();
    }
  });
});
