// DatabaseLister against the real Backstage harness (test/backstage: the
// real catalog backend, knex and better-sqlite3, installed by `make
// test-module` and `.ci/run`): its listing of a real catalog database
// equals the catalog API's, incremental polls find updates and deletions,
// and schemas it does not know make it fall back to the API. Never skipped:
// without the harness the tests fail and say how to install it.
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CatalogClient } from '@backstage/catalog-client';
import { ApiLister, CatalogDatabase, DatabaseLister, shiftBack } from '../src/listers';
import { Poller } from '../src/poller';
import { SidecarClient } from '../src/sidecar';
import { CatalogView } from '../src/view';
import { component, RecordingLogger, SidecarDouble, TestCatalog, testAuth } from './helpers';

const harness = path.resolve(__dirname, '../../../../test/backstage');
const harnessModules = path.join(harness, 'node_modules');

function requireHarness(name: string): any {
  const dir = path.join(harnessModules, name);
  if (!fs.existsSync(dir)) {
    throw new Error(
      `the real Backstage harness is not installed (${dir} is missing): run \`make test-module\` ` +
        `(or test/backstage/install.sh) to install it with npm ci`,
    );
  }
  return require(dir);
}

type Knex = CatalogDatabase & { destroy(): Promise<void>; schema: any; raw: any };

function sqlite(filename = ':memory:'): Knex {
  const knex = requireHarness('knex');
  return knex({ client: 'better-sqlite3', connection: { filename }, useNullAsDefault: true });
}

const creds = () => testAuth.getOwnServiceCredentials();
const signal = new AbortController().signal;
const sorted = (v: CatalogView) => [...v.entries()].sort(([a], [b]) => a.localeCompare(b));

describe('DatabaseLister on a hand-made table', () => {
  const table = async (db: Knex, withUpdatedAt = true) =>
    db.schema.createTable('final_entities', (t: any) => {
      t.string('entity_id').primary();
      t.string('hash');
      t.string('stitch_ticket');
      t.text('final_entity').nullable();
      t.string('entity_ref');
      if (withUpdatedAt) t.dateTime('last_updated_at').nullable();
    });

  test('reads uid, ref and hash of stitched rows only', async () => {
    const db = sqlite();
    try {
      await table(db, false);
      await (db as any)('final_entities').insert([
        { entity_id: 'u1', hash: 'h1', stitch_ticket: 't', final_entity: '{}', entity_ref: 'component:default/a' },
        { entity_id: 'u2', hash: 'h2', stitch_ticket: 't', final_entity: null, entity_ref: 'component:default/b' },
        { entity_id: 'u3', hash: 'h3', stitch_ticket: 't', final_entity: '{}', entity_ref: 'Group:default/Team-A' },
      ]);
      const warnings: string[] = [];
      const lister = new DatabaseLister(async () => db, new ApiLister(new TestCatalog(), 10), m => warnings.push(m));
      for (let i = 0; i < 2; i++) {
        const view = await lister.list(await creds(), signal);
        assert.deepEqual(sorted(view), [
          ['component:default/a', { uid: 'u1', etag: 'h1' }],
          ['group:default/team-a', { uid: 'u3', etag: 'h3' }],
        ]);
        assert.equal(lister.lastMode, 'full', 'without last_updated_at every listing is full');
      }
      assert.deepEqual(warnings, []);
      assert.match(lister.name, /final_entities/);
    } finally {
      await db.destroy();
    }
  });

  test('incremental: reads only rows updated since the previous listing, falls back to a full listing on deletions and on schedule', async () => {
    const db = sqlite();
    let now = 1_000_000;
    try {
      await table(db);
      const put = (id: string, hash: string, at: unknown) =>
        (db as any)('final_entities')
          .insert({ entity_id: id, hash, stitch_ticket: 't', final_entity: '{}', entity_ref: `component:default/${id}`, last_updated_at: at })
          .onConflict('entity_id')
          .merge();
      await put('a', 'h1', '2020-01-01 10:00:00');
      await put('b', 'h1', '2020-01-01 10:00:05');
      const lister = new DatabaseLister(async () => db, new ApiLister(new TestCatalog(), 10), () => assert.fail('no fallback'), {
        marginMs: 60_000,
        fullEveryMs: 60_000 * 60,
        now: () => now,
      });
      let view = await lister.list(await creds(), signal);
      assert.equal(lister.lastMode, 'full');
      assert.equal(view.size, 2);

      // nothing changed: incremental, nothing read
      now += 5_000;
      view = await lister.list(await creds(), signal);
      assert.equal(lister.lastMode, 'incremental');
      assert.deepEqual(lister.lastChanged, []);

      // an update stitched now, and an addition stitched 30 s before the
      // previous listing but committed after it (within the margin)
      await put('a', 'h2', db.raw('CURRENT_TIMESTAMP'));
      await put('c', 'h1', db.raw(`datetime('now', '-30 seconds')`));
      now += 5_000;
      view = await lister.list(await creds(), signal);
      assert.equal(lister.lastMode, 'incremental');
      assert.deepEqual([...(lister.lastChanged ?? [])].sort(), ['component:default/a', 'component:default/c']);
      assert.deepEqual(sorted(view), [
        ['component:default/a', { uid: 'a', etag: 'h2' }],
        ['component:default/b', { uid: 'b', etag: 'h1' }],
        ['component:default/c', { uid: 'c', etag: 'h1' }],
      ]);

      // a deletion: the count differs, so a full listing
      await (db as any)('final_entities').where('entity_id', 'b').delete();
      now += 5_000;
      view = await lister.list(await creds(), signal);
      assert.equal(lister.lastMode, 'full');
      assert.equal(lister.lastChanged, undefined);
      assert.deepEqual([...view.keys()].sort(), ['component:default/a', 'component:default/c']);

      // after fullEveryMs: full again
      now += 60_000 * 60;
      await lister.list(await creds(), signal);
      assert.equal(lister.lastMode, 'full');
    } finally {
      await db.destroy();
    }
  });

  test('a poll without changes compares only what the incremental listing read', async () => {
    const db = sqlite();
    const sidecar = new SidecarDouble();
    await sidecar.start();
    try {
      await table(db);
      const names = Array.from({ length: 50 }, (_, i) => `c${i}`);
      const catalog = new TestCatalog(names.map(n => component(n, { etag: `h-${n}` })));
      await (db as any)('final_entities').insert(
        names.map(n => ({
          entity_id: `uid-${n}`, hash: `h-${n}`, stitch_ticket: 't', final_entity: '{}', entity_ref: `component:default/${n}`,
          last_updated_at: '2020-01-01 10:00:00',
        })),
      );
      const lister = new DatabaseLister(async () => db, new ApiLister(catalog, 10), () => assert.fail('no fallback'), { marginMs: 0 });
      const poller = new Poller({
        catalog, auth: testAuth, logger: new RecordingLogger(), lister,
        sidecar: new SidecarClient({ baseUrl: sidecar.url, requestTimeoutMs: 5000 }),
        options: { batchSize: 20, maxBatchBytes: 1 << 20, initialBackoffMs: 5, maxBackoffMs: 20, source: 'unit-test' },
      });
      const first = await poller.runOnce(signal);
      assert.equal(first?.compared, 50);
      assert.equal(first?.upserts, 50);
      const idle = await poller.runOnce(signal);
      assert.equal(lister.lastMode, 'incremental');
      assert.equal(idle?.compared, 0, 'nothing was stitched since the previous listing');
      assert.equal(idle?.upserts, 0);

      // a change stitched now: compared and published alone
      catalog.set(names.map(n => component(n, { etag: n === 'c7' ? 'h-c7-2' : `h-${n}` })));
      await (db as any)('final_entities').where('entity_id', 'uid-c7').update({ hash: 'h-c7-2', last_updated_at: db.raw('CURRENT_TIMESTAMP') });
      const one = await poller.runOnce(signal);
      assert.deepEqual([one?.compared, one?.upserts, one?.deletes], [1, 1, 0]);

      // a deletion: a full listing, everything compared, the delete published
      await (db as any)('final_entities').where('entity_id', 'uid-c3').delete();
      const del = await poller.runOnce(signal);
      assert.equal(lister.lastMode, 'full');
      assert.deepEqual([del?.compared, del?.upserts, del?.deletes], [49, 0, 1]);
    } finally {
      await sidecar.stop();
      await db.destroy();
    }
  });

  test('shiftBack keeps the database form of a timestamp', () => {
    assert.equal(shiftBack('2026-01-01 00:00:03', 5_000), '2025-12-31 23:59:58');
    const d = new Date('2026-01-01T00:00:03.250Z');
    assert.deepEqual(shiftBack(d, 250), new Date('2026-01-01T00:00:03.000Z'));
    assert.equal(shiftBack('2026-01-01T00:00:03Z', 1), undefined);
    assert.equal(shiftBack(1234, 1), undefined);
  });

  const broken: [string, (db: any) => Promise<void>, RegExp][] = [
    ['no table', async () => {}, /no final_entities table/],
    [
      'a column renamed',
      async db =>
        db.schema.createTable('final_entities', (t: any) => {
          t.string('entity_id');
          t.string('etag');
          t.text('final_entity');
          t.string('entity_ref');
        }),
      /no hash column/,
    ],
    [
      'a uid that is not a string',
      async db => {
        await db.schema.createTable('final_entities', (t: any) => {
          t.integer('entity_id');
          t.string('hash');
          t.text('final_entity');
          t.string('entity_ref');
        });
        await db('final_entities').insert({ entity_id: 7, hash: 'h', final_entity: '{}', entity_ref: 'component:default/x' });
      },
      /unexpected shape/,
    ],
  ];
  for (const [name, prepare, want] of broken) {
    test(`falls back to the API for good when the schema differs: ${name}`, async () => {
      const db = sqlite();
      try {
        await prepare(db);
        const warnings: string[] = [];
        const catalog = new TestCatalog([component('x')]);
        const lister = new DatabaseLister(async () => db, new ApiLister(catalog, 10), m => warnings.push(m));
        for (let i = 0; i < 2; i++) {
          const view = await lister.list(await creds(), signal);
          assert.deepEqual([...view.keys()], ['component:default/x']);
        }
        assert.equal(warnings.length, 1);
        assert.match(warnings[0], want);
        assert.equal(lister.name, 'catalog API');
      } finally {
        await db.destroy();
      }
    });
  }

  test('falls back when the database cannot be reached', async () => {
    const warnings: string[] = [];
    const lister = new DatabaseLister(
      async () => {
        throw new Error('no database');
      },
      new ApiLister(new TestCatalog([component('x')]), 10),
      m => warnings.push(m),
    );
    const view = await lister.list(await creds(), signal);
    assert.equal(view.size, 1);
    assert.match(warnings[0], /no database/);
  });
});

// The real catalog backend of the harness, its catalog database in a file
// the test opens too.
describe('DatabaseLister on a real Backstage catalog', () => {
  const TOKEN = 'portbridge-test-token-0123456789';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'portbridge-dblister-'));
  const providerFile = path.join(dir, 'entities.json');
  let backend: ChildProcess | undefined;
  let baseUrl = '';
  let db: Knex;
  let api: ApiLister;
  let logTail = '';

  const entities = (n: number, changed = '', skip = '') =>
    Array.from({ length: n }, (_, i) => `svc-${i}`)
      .filter(name => name !== skip)
      .map(name => ({
        apiVersion: 'backstage.io/v1alpha1',
        kind: 'Component',
        metadata: { name, description: name === changed ? 'changed' : `service ${name}` },
        spec: { type: 'service', lifecycle: 'production', owner: `group:default/team-${name.length % 3}` },
      }));

  const query = async (q: string) => {
    const res = await fetch(`${baseUrl}/api/catalog/entities/by-query?${q}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    return res.status === 200 ? ((await res.json()) as any) : undefined;
  };

  const eventually = async (what: string, cond: () => Promise<boolean>) => {
    const deadline = Date.now() + 120_000;
    while (!(await cond().catch(() => false))) {
      if (Date.now() > deadline) {
        throw new Error(`${what}: never happened\nbackend log tail:\n${logTail}`);
      }
      await new Promise(r => setTimeout(r, 200));
    }
  };

  before(async () => {
    requireHarness('knex');
    const port = await new Promise<number>(resolve => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    baseUrl = `http://127.0.0.1:${port}`;
    fs.writeFileSync(providerFile, JSON.stringify(entities(30)));
    backend = spawn(process.execPath, ['index.js', '--config', 'app-config.yaml'], {
      cwd: harness,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        APP_CONFIG_backend_listen_port: String(port),
        APP_CONFIG_backend_baseUrl: baseUrl,
        APP_CONFIG_harness_providerFile: providerFile,
        APP_CONFIG_backend_database_connection: JSON.stringify({ directory: dir }),
      },
    });
    const keep = (d: Buffer) => {
      logTail = (logTail + d.toString()).slice(-4000);
    };
    backend.stdout!.on('data', keep);
    backend.stderr!.on('data', keep);
    await eventually('30 entities in the real catalog', async () => (await query('limit=0'))?.totalItems === 30);
    db = sqlite(path.join(dir, 'catalog.sqlite'));
    const client = new CatalogClient({ discoveryApi: { getBaseUrl: async () => `${baseUrl}/api/catalog` } });
    api = new ApiLister({ queryEntities: (req: any) => client.queryEntities(req, { token: TOKEN }) } as any, 7);
  });

  after(async () => {
    await db?.destroy();
    if (backend?.pid) {
      try {
        process.kill(-backend.pid, 'SIGTERM');
      } catch {
        // already gone
      }
      await new Promise(r => (backend!.exitCode !== null ? r(undefined) : backend!.once('exit', r)));
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('lists what the catalog API lists, then follows updates and deletions', async () => {
    const warnings: string[] = [];
    const lister = new DatabaseLister(async () => db, api, m => warnings.push(m), { marginMs: 0 });
    const same = async (mode: string) => {
      const fromDb = await lister.list(await creds(), signal);
      assert.deepEqual(warnings, [], 'the real schema is recognised');
      assert.equal(lister.lastMode, mode);
      assert.deepEqual(sorted(fromDb), sorted(await api.list(await creds(), signal)));
      return fromDb;
    };
    const first = await same('full');
    assert.equal(first.size, 30);
    assert.match(lister.name, /final_entities/);

    // one changed: the next poll is incremental and sees its new etag
    const before = first.get('component:default/svc-3')!.etag;
    fs.writeFileSync(providerFile, JSON.stringify(entities(30, 'svc-3')));
    await eventually('svc-3 changed', async () => (await query('filter=metadata.name=svc-3'))?.items?.[0]?.metadata?.description === 'changed');
    const second = await same('incremental');
    assert.notEqual(second.get('component:default/svc-3')!.etag, before);

    // one deleted: the count differs, so a full listing without it
    fs.writeFileSync(providerFile, JSON.stringify(entities(30, 'svc-3', 'svc-7')));
    await eventually('svc-7 deleted', async () => (await query('limit=0'))?.totalItems === 29);
    const third = await same('full');
    assert.equal(third.has('component:default/svc-7'), false);
    assert.equal(third.size, 29);
  });
});
