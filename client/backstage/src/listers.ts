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
  /**
   * After list(): the refs whose entries may differ from the previous
   * listing, when the lister knows them and nothing was deleted since;
   * undefined when everything must be compared.
   */
  readonly lastChanged?: readonly string[];
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

/** A query on one table, as knex builds it (the part the database lister uses). */
export interface TableQuery extends PromiseLike<Record<string, unknown>[]> {
  select(...columns: unknown[]): TableQuery;
  limit(n: number): TableQuery;
  whereNotNull(column: string): TableQuery;
  where(column: string, operator: string, value: unknown): TableQuery;
  count(spec: Record<string, string>): TableQuery;
}

/** The part of a knex client the database lister uses. */
export interface CatalogDatabase {
  schema: {
    hasTable(table: string): Promise<boolean>;
    hasColumn(table: string, column: string): Promise<boolean>;
  };
  (table: string): TableQuery;
  raw(sql: string): unknown;
}

/** The columns of the catalog's `final_entities` table the database lister reads. */
export const FINAL_ENTITIES_COLUMNS = ['entity_id', 'entity_ref', 'hash', 'final_entity'];

/** Tuning of the database lister's incremental listing. */
export interface DatabaseListerOptions {
  /**
   * How far before the database's clock at the previous listing an
   * incremental listing starts, to cover stitching that committed after
   * that listing with an earlier timestamp, and a clock step (default 1
   * minute; stitching writes one row per statement).
   */
  marginMs?: number;
  /** How often a full listing is made anyway (default 1 hour). */
  fullEveryMs?: number;
  /** The clock, for tests. */
  now?: () => number;
}

/**
 * Lists from the catalog's own `final_entities` table (an internal schema of
 * @backstage/plugin-catalog-backend): `entity_id` is the uid, `hash` the
 * etag, `entity_ref` the lower-case ref, and rows whose `final_entity` is
 * still NULL are not stitched yet, so not visible in the API either.
 *
 * Incremental: stitching sets `last_updated_at` to the database's clock
 * whenever an entity's output changes, so after one full listing a poll
 * reads only the rows updated since the database's clock at the previous
 * listing (minus a margin), merges them into the last listing, and compares
 * the table's row count with the merged view: every current row is then in
 * the view, so equal counts mean nothing was deleted; a difference
 * (deletions) or a clock value it cannot shift falls back to a full
 * listing, as does the first poll after fullEveryMs. A full listing reads
 * every row (about 5 ms of CPU per 1,000 rows with SQLite); an incremental
 * one scans the table in the database and returns only what changed. The
 * schema is checked on
 * the first poll; if it is not what this lister expects, or a query fails,
 * it logs once and lists through the API instead from then on.
 */
export class DatabaseLister implements CatalogLister {
  #name = 'catalog database (final_entities)';
  #usable?: boolean;
  #incremental = false;
  #view?: CatalogView;
  /** The database's clock when the previous listing began. */
  #listedAt?: unknown;
  #lastFull = 0;
  readonly #marginMs: number;
  readonly #fullEveryMs: number;
  readonly #now: () => number;
  /** How the last list() read the table: 'full' or 'incremental' (for tests and logs). */
  lastMode?: 'full' | 'incremental';
  /** After an incremental list(): the refs of the rows it read (see CatalogLister). */
  lastChanged?: string[];

  constructor(
    private readonly getDb: () => Promise<CatalogDatabase>,
    private readonly fallback: CatalogLister,
    private readonly warn: (message: string) => void,
    options: DatabaseListerOptions = {},
  ) {
    this.#marginMs = options.marginMs ?? 60_000;
    this.#fullEveryMs = options.fullEveryMs ?? 60 * 60_000;
    this.#now = options.now ?? Date.now;
  }

  get name(): string {
    return this.#usable === false ? this.fallback.name : this.#name;
  }

  async list(credentials: BackstageCredentials, signal: AbortSignal): Promise<CatalogView> {
    this.lastChanged = undefined;
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
        this.#incremental = await db.schema.hasColumn('final_entities', 'last_updated_at');
        this.#usable = true;
      }
    } catch (e) {
      return this.#giveUp(`reading its schema failed: ${e instanceof Error ? e.message : String(e)}`, credentials, signal);
    }
    try {
      const since = this.#since();
      // the clock first: whatever commits after it is at or after it
      const now = this.#incremental ? await this.#dbNow(db) : undefined;
      let view = since === undefined ? undefined : await this.#delta(db, since);
      this.lastMode = view ? 'incremental' : 'full';
      view ??= await this.#full(db);
      this.#listedAt = now;
      return view;
    } catch (e) {
      if (e instanceof RowShapeError) {
        return this.#giveUp(e.message, credentials, signal);
      }
      return this.#giveUp(`the query failed: ${e instanceof Error ? e.message : String(e)}`, credentials, signal);
    }
  }

  /** Where an incremental listing starts, or undefined for a full one. */
  #since(): unknown {
    if (!this.#incremental || !this.#view || this.#now() - this.#lastFull >= this.#fullEveryMs) {
      return undefined;
    }
    return this.#listedAt === undefined ? undefined : shiftBack(this.#listedAt, this.#marginMs);
  }

  /** The database's clock, in the form last_updated_at has (undefined for an empty table). */
  async #dbNow(db: CatalogDatabase): Promise<unknown> {
    const rows = await db('final_entities').select(db.raw('CURRENT_TIMESTAMP as now')).limit(1);
    return rows[0]?.now ?? undefined;
  }

  async #full(db: CatalogDatabase): Promise<CatalogView> {
    const rows = await db('final_entities').select('entity_id', 'entity_ref', 'hash').whereNotNull('final_entity');
    const view: CatalogView = new Map();
    for (const row of rows) {
      this.#take(view, row);
    }
    this.#view = view;
    this.#lastFull = this.#now();
    return view;
  }

  /** Merges the rows updated since into the last view; undefined when a full listing is needed. */
  async #delta(db: CatalogDatabase, since: unknown): Promise<CatalogView | undefined> {
    const view = this.#view!;
    // Neither query tests final_entity: reading that column makes the
    // database touch every row's body (SQLite: 40 ms per 100k rows). Rows
    // get last_updated_at when they are stitched, and the catalog backend
    // (4.0.0) inserts only stitched rows, so both count stitched rows; where
    // unstitched rows exist the counts differ and the listing is full.
    const [rows, counted] = await Promise.all([
      db('final_entities').select('entity_id', 'entity_ref', 'hash').where('last_updated_at', '>=', since),
      db('final_entities').count({ n: '*' }),
    ]);
    const changed: string[] = [];
    for (const row of rows) {
      changed.push(this.#take(view, row));
    }
    const total = Number(counted[0]?.n);
    if (!Number.isFinite(total) || total !== view.size) {
      return undefined;
    }
    this.lastChanged = changed;
    return view;
  }

  /** Puts one row into the view and returns its ref. */
  #take(view: CatalogView, row: Record<string, unknown>): string {
    const { entity_id: uid, entity_ref: ref, hash } = row;
    if (typeof uid !== 'string' || typeof ref !== 'string' || !ref.includes(':')) {
      throw new RowShapeError(`a row has an unexpected shape (${JSON.stringify(row).slice(0, 200)})`);
    }
    const key = ref.toLocaleLowerCase('en-US');
    const etag = typeof hash === 'string' ? hash : '';
    const old = view.get(key);
    if (!old || old.uid !== uid || old.etag !== etag) {
      view.set(key, { uid, etag });
    }
    return key;
  }

  #giveUp(reason: string, credentials: BackstageCredentials, signal: AbortSignal): Promise<CatalogView> {
    this.#usable = false;
    this.#view = undefined;
    this.warn(
      `port-bridge: not listing from the catalog database: ${reason}; listing through the catalog API from now on`,
    );
    return this.fallback.list(credentials, signal);
  }
}

class RowShapeError extends Error {}

const SQLITE_TIME = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})$/;

/**
 * A database timestamp moved back by ms, in the form the database gave it:
 * a Date (PostgreSQL, MySQL) or SQLite's 'YYYY-MM-DD HH:MM:SS' (UTC, compared
 * as text, as CURRENT_TIMESTAMP and stitching write it). Undefined for any
 * other form: then every listing is full.
 */
export function shiftBack(value: unknown, ms: number): unknown {
  if (value instanceof Date) {
    return new Date(value.getTime() - ms);
  }
  if (typeof value === 'string') {
    const m = SQLITE_TIME.exec(value);
    if (!m) {
      return undefined;
    }
    const t = Date.parse(`${m[1]}T${m[2]}Z`);
    if (Number.isNaN(t)) {
      return undefined;
    }
    const iso = new Date(t - ms).toISOString();
    return `${iso.slice(0, 10)} ${iso.slice(11, 19)}`;
  }
  return undefined;
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
