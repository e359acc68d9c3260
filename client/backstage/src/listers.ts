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
