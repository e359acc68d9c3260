// DatabaseLister against a real SQLite database through knex, both taken from
// the bench's install of the real Backstage (bench/node_modules); skipped
// when that install is absent.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { ApiLister, CatalogDatabase, DatabaseLister } from '../src/listers';
import { component, TestCatalog, testAuth } from './helpers';

const benchModules = path.resolve(__dirname, '../../bench/node_modules');
const available = fs.existsSync(path.join(benchModules, 'knex')) && fs.existsSync(path.join(benchModules, 'better-sqlite3'));

async function sqlite(): Promise<CatalogDatabase & { destroy(): Promise<void>; schema: any; raw: any }> {
  const knex = require(path.join(benchModules, 'knex'));
  return knex({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true });
}

describe('DatabaseLister', { skip: !available && 'bench/node_modules not installed (npm ci in bench/)' }, () => {
  const creds = () => testAuth.getOwnServiceCredentials();
  const signal = new AbortController().signal;

  test('reads uid, ref and hash of stitched rows only', async () => {
    const db = await sqlite();
    try {
      await db.schema.createTable('final_entities', (t: any) => {
        t.string('entity_id').primary();
        t.string('hash');
        t.string('stitch_ticket');
        t.text('final_entity').nullable();
        t.string('entity_ref');
      });
      await (db as any)('final_entities').insert([
        { entity_id: 'u1', hash: 'h1', stitch_ticket: 't', final_entity: '{}', entity_ref: 'component:default/a' },
        { entity_id: 'u2', hash: 'h2', stitch_ticket: 't', final_entity: null, entity_ref: 'component:default/b' },
        { entity_id: 'u3', hash: 'h3', stitch_ticket: 't', final_entity: '{}', entity_ref: 'Group:default/Team-A' },
      ]);
      const warnings: string[] = [];
      const lister = new DatabaseLister(async () => db, new ApiLister(new TestCatalog(), 10), m => warnings.push(m));
      const view = await lister.list(await creds(), signal);
      assert.deepEqual([...view.entries()].sort(), [
        ['component:default/a', { uid: 'u1', etag: 'h1' }],
        ['group:default/team-a', { uid: 'u3', etag: 'h3' }],
      ]);
      assert.deepEqual(warnings, []);
      assert.match(lister.name, /final_entities/);
    } finally {
      await db.destroy();
    }
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
  ];
  for (const [name, prepare, want] of broken) {
    test(`falls back to the API for good when the schema differs: ${name}`, async () => {
      const db = await sqlite();
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
