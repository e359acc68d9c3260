// Listing the whole catalog cheaply: only the fields needed to detect changes.

import type { BackstageCredentials } from '@backstage/backend-plugin-api';
import type { CatalogService } from '@backstage/plugin-catalog-node';
import { CatalogView, refOf } from './view';

/** The fields the module reads when it lists the catalog. */
export const LIST_FIELDS = [
  'kind',
  'metadata.namespace',
  'metadata.name',
  'metadata.uid',
  'metadata.etag',
];

/** Lists every entity of the catalog with its uid and etag. */
export interface CatalogLister {
  /** A short name for logs. */
  readonly name: string;
  list(credentials: BackstageCredentials, signal: AbortSignal): Promise<CatalogView>;
}

/** Lists through the catalog's public API (`queryEntities`, cursor paging). */
export class ApiLister implements CatalogLister {
  readonly name = 'catalog API';

  constructor(
    private readonly catalog: Pick<CatalogService, 'queryEntities'>,
    private readonly pageSize: number,
  ) {}

  async list(credentials: BackstageCredentials, signal: AbortSignal): Promise<CatalogView> {
    const view: CatalogView = new Map();
    let cursor: string | undefined;
    let pages = 0;
    do {
      if (signal.aborted) {
        throw new Error('listing the catalog was aborted');
      }
      const res = await this.catalog.queryEntities(
        cursor
          ? { cursor, fields: LIST_FIELDS, limit: this.pageSize }
          : { fields: LIST_FIELDS, limit: this.pageSize, totalItems: 'exclude' },
        { credentials },
      );
      for (const item of res.items) {
        const ref = refOf(item);
        const uid = item.metadata?.uid;
        if (!ref || !uid) {
          continue;
        }
        view.set(ref, { uid, etag: item.metadata.etag ?? '' });
      }
      cursor = res.pageInfo?.nextCursor;
      pages++;
      if (pages > 1_000_000) {
        throw new Error('listing the catalog did not end after 1,000,000 pages');
      }
    } while (cursor);
    return view;
  }
}

/** The part of a knex client the database lister uses. */
export interface CatalogDatabase {
  schema: {
    hasTable(table: string): Promise<boolean>;
    hasColumn(table: string, column: string): Promise<boolean>;
  };
  (table: string): {
    select(...columns: string[]): { whereNotNull(column: string): PromiseLike<Record<string, unknown>[]> };
  };
}

/** The columns of the catalog's `final_entities` table the database lister reads. */
export const FINAL_ENTITIES_COLUMNS = ['entity_id', 'entity_ref', 'hash', 'final_entity'];

/**
 * Lists from the catalog's own `final_entities` table (an internal schema of
 * @backstage/plugin-catalog-backend): `entity_id` is the uid, `hash` the
 * etag, `entity_ref` the lower-case ref, and rows whose `final_entity` is
 * still NULL are not stitched yet, so not visible in the API either. The
 * schema is checked on the first poll; if it is not what this lister
 * expects, or a query fails, it logs once and lists through the API instead
 * from then on.
 */
export class DatabaseLister implements CatalogLister {
  #name = 'catalog database (final_entities)';
  #usable?: boolean;

  constructor(
    private readonly getDb: () => Promise<CatalogDatabase>,
    private readonly fallback: CatalogLister,
    private readonly warn: (message: string) => void,
  ) {}

  get name(): string {
    return this.#usable === false ? this.fallback.name : this.#name;
  }

  async list(credentials: BackstageCredentials, signal: AbortSignal): Promise<CatalogView> {
    if (this.#usable === false) {
      return this.fallback.list(credentials, signal);
    }
    let db: CatalogDatabase;
    try {
      db = await this.getDb();
      if (this.#usable === undefined) {
        const problem = await schemaProblem(db);
        if (problem) {
          return this.#giveUp(problem, credentials, signal);
        }
        this.#usable = true;
      }
    } catch (e) {
      return this.#giveUp(`reading its schema failed: ${e instanceof Error ? e.message : String(e)}`, credentials, signal);
    }
    let rows: Record<string, unknown>[];
    try {
      rows = await db('final_entities').select('entity_id', 'entity_ref', 'hash').whereNotNull('final_entity');
    } catch (e) {
      return this.#giveUp(`the query failed: ${e instanceof Error ? e.message : String(e)}`, credentials, signal);
    }
    const view: CatalogView = new Map();
    for (const row of rows) {
      const { entity_id: uid, entity_ref: ref, hash } = row;
      if (typeof uid !== 'string' || typeof ref !== 'string' || !ref.includes(':')) {
        return this.#giveUp(`a row has an unexpected shape (${JSON.stringify(row).slice(0, 200)})`, credentials, signal);
      }
      view.set(ref.toLocaleLowerCase('en-US'), { uid, etag: typeof hash === 'string' ? hash : '' });
    }
    return view;
  }

  #giveUp(reason: string, credentials: BackstageCredentials, signal: AbortSignal): Promise<CatalogView> {
    this.#usable = false;
    this.warn(
      `port-bridge: not listing from the catalog database: ${reason}; listing through the catalog API from now on`,
    );
    return this.fallback.list(credentials, signal);
  }
}

async function schemaProblem(db: CatalogDatabase): Promise<string | undefined> {
  if (!(await db.schema.hasTable('final_entities'))) {
    return 'it has no final_entities table';
  }
  for (const column of FINAL_ENTITIES_COLUMNS) {
    if (!(await db.schema.hasColumn('final_entities', column))) {
      return `final_entities has no ${column} column`;
    }
  }
  return undefined;
}
