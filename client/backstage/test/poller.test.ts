import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ApiLister } from '../src/listers';
import { Poller, PollerOptions } from '../src/poller';
import { SidecarClient } from '../src/sidecar';
import { component, RecordingLogger, SidecarDouble, TestCatalog, testAuth } from './helpers';

const TOKEN = 'sidecar-token-123456';

function setup(sidecar: SidecarDouble, catalog: TestCatalog, opts: Partial<PollerOptions> = {}, url?: string) {
  const logger = new RecordingLogger();
  const poller = new Poller({
    catalog,
    auth: testAuth,
    logger,
    lister: new ApiLister(catalog, 3),
    sidecar: new SidecarClient({ baseUrl: url ?? sidecar.url, token: TOKEN, requestTimeoutMs: 5000 }),
    options: {
      batchSize: 2,
      maxBatchBytes: 1024 * 1024,
      initialBackoffMs: 5,
      maxBackoffMs: 20,
      source: 'unit-test',
      ...opts,
    },
  });
  return { poller, logger };
}

function publishes(sidecar: SidecarDouble): any[] {
  return sidecar.received.filter(r => r.path.endsWith('/PublishChanges')).map(r => r.body);
}

function changes(bodies: any[]): any[] {
  return bodies.flatMap(b => b.changes);
}

const never = () => new AbortController().signal;

describe('Poller', () => {
  let sidecar: SidecarDouble;
  before(async () => {
    sidecar = new SidecarDouble();
    await sidecar.start();
  });
  after(async () => {
    await sidecar.stop();
  });
  const reset = () => {
    sidecar.received.length = 0;
    sidecar.answer = undefined;
  };

  test('first poll publishes every entity in bounded batches, the last one flagged fullSnapshot', async () => {
    reset();
    const catalog = new TestCatalog(['a', 'b', 'c', 'd', 'e'].map(n => component(n)));
    const { poller } = setup(sidecar, catalog);
    const stats = await poller.runOnce(never());
    assert.ok(stats);
    assert.equal(stats.listed, 5);
    assert.equal(stats.accepted, 5);
    assert.equal(stats.snapshot, true);
    const bodies = publishes(sidecar);
    assert.deepEqual(bodies.map(b => b.changes.length), [2, 2, 1]);
    assert.deepEqual(bodies.map(b => b.fullSnapshot), [false, false, true]);
    assert.ok(bodies.every(b => b.source === 'unit-test'));
    const first = bodies[0].changes[0];
    assert.equal(first.entityRef, 'component:default/a');
    assert.equal(first.uid, 'uid-a');
    assert.equal(first.etag, 'etag-a-1');
    assert.ok(!Number.isNaN(Date.parse(first.observedAt)));
    assert.equal(first.upserted.entity.spec.owner, 'group:default/team-a');
    assert.equal(first.upserted.entity.metadata.description, 'the a service');
    const req = sidecar.received[0];
    assert.equal(req.method, 'POST');
    assert.equal(req.headers.authorization, `Bearer ${TOKEN}`);
    assert.equal(req.headers['content-type'], 'application/json');
    assert.equal(req.headers['connect-protocol-version'], '1');
    assert.equal(poller.snapshotAcknowledged(), true);
    assert.equal(poller.view().size, 5);
  });

  test('an unchanged catalog publishes nothing; changes publish only what changed', async () => {
    reset();
    const catalog = new TestCatalog(['a', 'b', 'c'].map(n => component(n)));
    const { poller } = setup(sidecar, catalog);
    await poller.runOnce(never());
    reset();

    const stats = await poller.runOnce(never());
    assert.equal(stats?.upserts, 0);
    assert.equal(stats?.deletes, 0);
    assert.equal(sidecar.received.length, 0);

    // b updated, c deleted, d added, a deleted and re-added under a new uid
    catalog.set([
      component('a', { uid: 'uid-a-2' }),
      component('b', { etag: 'etag-b-2', description: 'changed' }),
      component('d'),
    ]);
    const stats2 = await poller.runOnce(never());
    assert.equal(stats2?.upserts, 3);
    assert.equal(stats2?.deletes, 1);
    const all = changes(publishes(sidecar));
    const byRef = new Map(all.map(c => [c.entityRef, c]));
    assert.equal(all.length, 4);
    assert.equal(byRef.get('component:default/a').uid, 'uid-a-2');
    assert.ok(byRef.get('component:default/a').upserted, 're-added entity is an upsert, not a delete');
    assert.equal(byRef.get('component:default/b').upserted.entity.metadata.description, 'changed');
    assert.ok(byRef.get('component:default/d').upserted);
    assert.deepEqual(byRef.get('component:default/c').deleted, {});
    assert.equal(byRef.get('component:default/c').uid, 'uid-c');
    assert.equal(byRef.get('component:default/c').upserted, undefined);
    assert.ok(publishes(sidecar).every(b => b.fullSnapshot === false), 'only the first poll is a snapshot');

    reset();
    await poller.runOnce(never());
    assert.equal(sidecar.received.length, 0, 'the view follows what was acknowledged');
  });

  test('sidecar unavailable: retries with backoff, logs once, keeps the view until acknowledged', async () => {
    reset();
    let failures = 0;
    sidecar.answer = r => {
      if (r.path.endsWith('/PublishChanges') && failures < 4) {
        failures++;
        return failures % 2 ? { status: 503, body: { code: 'unavailable', message: 'queue closed' } } : 'drop';
      }
      return undefined;
    };
    const catalog = new TestCatalog([component('a')]);
    const { poller, logger } = setup(sidecar, catalog);
    const stats = await poller.runOnce(never());
    assert.equal(stats?.accepted, 1);
    assert.equal(publishes(sidecar).length, 5);
    assert.equal(logger.at('warn').length, 1, logger.at('warn').join('\n'));
    assert.match(logger.at('warn')[0], /not taking changes/);
    assert.ok(logger.at('info').some(m => /takes changes again .* 4 failed attempts/.test(m)));
  });

  test('sidecar down until the poll is aborted: nothing enters the view, next poll resends', async () => {
    reset();
    const down = new SidecarDouble();
    await down.start();
    const url = down.url;
    await down.stop(); // nothing listens on url now
    const catalog = new TestCatalog([component('a'), component('b')]);
    const { poller, logger } = setup(sidecar, catalog, {}, url);
    const ctrl = new AbortController();
    let retries = 0;
    logger.debug = () => {
      // called for every failure after the first (which is the one warning)
      if (++retries >= 2) ctrl.abort();
    };
    const stats = await poller.runOnce(ctrl.signal);
    assert.equal(stats, undefined);
    assert.equal(poller.view().size, 0);
    assert.equal(poller.snapshotAcknowledged(), false);
    assert.equal(logger.at('warn').length, 1);
    assert.match(logger.at('warn')[0], /ECONNREFUSED|fetch failed/);

    const again = new SidecarDouble();
    await again.start(Number(new URL(url).port));
    try {
      const stats2 = await poller.runOnce(never());
      assert.equal(stats2?.accepted, 2);
      assert.equal(stats2?.snapshot, true);
      assert.equal(publishes(again).at(-1).fullSnapshot, true);
      assert.ok(logger.at('info').some(m => /takes changes again/.test(m)));
    } finally {
      await again.stop();
    }
  });

  test('invalid_argument isolates the bad change, drops it, keeps the rest, and does not resend it', async () => {
    reset();
    sidecar.answer = r => {
      if (r.path.endsWith('/PublishChanges') && r.body.changes.some((c: any) => c.entityRef === 'component:default/bad')) {
        return { status: 400, body: { code: 'invalid_argument', message: 'changes[1].upserted.entity: bad' } };
      }
      return undefined;
    };
    const catalog = new TestCatalog(['a', 'bad', 'c', 'd', 'e'].map(n => component(n)));
    const { poller, logger } = setup(sidecar, catalog, { batchSize: 4 });
    const stats = await poller.runOnce(never());
    assert.equal(stats?.accepted, 4);
    assert.equal(stats?.dropped, 1);
    const acceptedRefs = sidecar.accepted().flatMap(b => b.changes.map((c: any) => c.entityRef)).sort();
    assert.deepEqual(acceptedRefs, ['component:default/a', 'component:default/c', 'component:default/d', 'component:default/e']);
    assert.equal(stats?.snapshot, true);
    assert.equal(sidecar.accepted().filter(b => b.fullSnapshot).length, 1);
    const errors = logger.at('error');
    assert.equal(errors.length, 1);
    assert.match(errors[0], /component:default\/bad .*changes\[1\]\.upserted\.entity: bad/);
    assert.equal(logger.at('warn').length, 0, 'a rejection is not an outage');

    reset();
    await poller.runOnce(never());
    assert.equal(sidecar.received.length, 0, 'a dropped change is not sent again while unchanged');
  });

  test('batches are bounded by bytes; a lone oversized change goes alone', async () => {
    reset();
    const catalog = new TestCatalog([
      component('a', { big: 3000 }),
      component('b', { big: 3000 }),
      component('c', { big: 9000 }),
      component('d', { big: 100 }),
    ]);
    const { poller } = setup(sidecar, catalog, { batchSize: 10, maxBatchBytes: 7000 });
    await poller.runOnce(never());
    const sizes = sidecar.received.map(r => Buffer.byteLength(JSON.stringify(r.body)));
    const counts = publishes(sidecar).map(b => b.changes.length);
    assert.deepEqual(counts, [2, 1, 1]);
    assert.ok(sizes[0] < 7000 + 200, `first batch ${sizes[0]} bytes`);
    assert.ok(sizes[1] > 9000, 'the oversized change is sent alone');
  });

  test('resource_exhausted for a lone oversized change drops it; for a normal batch it is retried', async () => {
    reset();
    let exhausted = 0;
    sidecar.answer = r => {
      if (!r.path.endsWith('/PublishChanges')) return undefined;
      if (r.body.changes.some((c: any) => c.entityRef === 'component:default/huge')) {
        return { status: 429, body: { code: 'resource_exhausted', message: 'request too large' } };
      }
      if (exhausted++ < 2) {
        return { status: 429, body: { code: 'resource_exhausted', message: 'queue full' } };
      }
      return undefined;
    };
    const catalog = new TestCatalog([component('a'), component('huge', { big: 5000 })]);
    const { poller, logger } = setup(sidecar, catalog, { batchSize: 10, maxBatchBytes: 2048 });
    const stats = await poller.runOnce(never());
    assert.equal(stats?.accepted, 1);
    assert.equal(stats?.dropped, 1);
    assert.match(logger.at('error')[0], /component:default\/huge/);
    assert.equal(poller.snapshotAcknowledged(), true);
  });

  test('an empty catalog on the first poll asks for a resync instead', async () => {
    reset();
    const { poller } = setup(sidecar, new TestCatalog([]));
    const stats = await poller.runOnce(never());
    assert.equal(stats?.snapshot, true);
    assert.deepEqual(sidecar.received.map(r => r.path), ['/portbridge.v1.BridgeService/TriggerResync']);
    assert.equal(typeof sidecar.received[0].body.reason, 'string');
    reset();
    await poller.runOnce(never());
    assert.equal(sidecar.received.length, 0);
  });

  test('a wrong token is logged as an error once, with a hint, and retried', async () => {
    reset();
    let n = 0;
    sidecar.answer = r =>
      r.path.endsWith('/PublishChanges') && n++ < 3
        ? { status: 401, body: { code: 'unauthenticated', message: 'bad token' } }
        : undefined;
    const { poller, logger } = setup(sidecar, new TestCatalog([component('a')]));
    const stats = await poller.runOnce(never());
    assert.equal(stats?.accepted, 1);
    assert.equal(logger.at('error').length, 1);
    assert.match(logger.at('error')[0], /unauthenticated: bad token .*portBridge\.token/);
    assert.ok(!logger.lines.some(l => l.message.includes(TOKEN)), 'the token is never logged');
  });

  test('catalog failures end the poll without touching the view and are logged once', async () => {
    reset();
    const catalog = new TestCatalog([component('a')]);
    const { poller, logger } = setup(sidecar, catalog);
    await poller.runOnce(never());
    catalog.set([]);
    catalog.failWith = new Error('catalog is down');
    assert.equal(await poller.runOnce(never()), undefined);
    assert.equal(await poller.runOnce(never()), undefined);
    assert.equal(poller.view().size, 1, 'a failed listing does not look like deletions');
    assert.equal(logger.at('warn').length, 1);
    assert.match(logger.at('warn')[0], /catalog is down/);
    catalog.failWith = undefined;
    reset();
    const stats = await poller.runOnce(never());
    assert.equal(stats?.deletes, 1);
    assert.ok(logger.at('info').some(m => /works again after 2 failed polls/.test(m)));
  });

  test('an entity gone between listing and fetch is skipped and deleted by a later poll', async () => {
    reset();
    const catalog = new TestCatalog([component('a'), component('b')]);
    const { poller } = setup(sidecar, catalog);
    await poller.runOnce(never());
    reset();
    catalog.set([component('a', { etag: 'etag-a-2' }), component('b', { etag: 'etag-b-2' })]);
    const orig = catalog.getEntitiesByRefs;
    catalog.getEntitiesByRefs = async req => {
      catalog.set([component('a', { etag: 'etag-a-2' })]);
      return orig(req);
    };
    const stats = await poller.runOnce(never());
    assert.equal(stats?.vanished, 1);
    assert.deepEqual(changes(publishes(sidecar)).map(c => c.entityRef), ['component:default/a']);
    catalog.getEntitiesByRefs = orig;
    reset();
    await poller.runOnce(never());
    assert.deepEqual(changes(publishes(sidecar)).map(c => [c.entityRef, Object.keys(c).includes('deleted')]), [
      ['component:default/b', true],
    ]);
  });

  test('a second runOnce while one is running is skipped', async () => {
    reset();
    const catalog = new TestCatalog([component('a')]);
    const { poller } = setup(sidecar, catalog);
    const [one, two] = await Promise.all([poller.runOnce(never()), poller.runOnce(never())]);
    assert.ok(one);
    assert.equal(two, undefined);
    assert.equal(publishes(sidecar).length, 1);
  });
});
