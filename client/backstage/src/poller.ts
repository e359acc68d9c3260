// One poll of the catalog: list (ref, uid, etag), diff against the view the
// sidecar acknowledged, fetch the bodies of what was added or changed, and
// publish the changes to the sidecar in bounded batches.

import { setTimeout as sleep } from 'node:timers/promises';
import type { AuthService, BackstageCredentials, LoggerService } from '@backstage/backend-plugin-api';
import type { CatalogService } from '@backstage/plugin-catalog-node';
import type { CatalogLister } from './listers';
import { PublishResult, SidecarError } from './sidecar';
import { CatalogView, diffRefs, diffViews, refOf, ViewEntry } from './view';

/** The calls the poller makes to the sidecar. */
export interface Sidecar {
  readonly baseUrl: string;
  publishChanges(body: string, signal?: AbortSignal): Promise<PublishResult>;
  triggerResync(reason: string, signal?: AbortSignal): Promise<string>;
}

/** Tuning of a Poller. */
export interface PollerOptions {
  /** Most changes per PublishChanges request and per getEntitiesByRefs call. */
  batchSize: number;
  /** Most bytes of serialized changes per request; one larger change goes alone. */
  maxBatchBytes: number;
  /** First wait after a failed call to the sidecar; doubles up to maxBackoffMs. */
  initialBackoffMs: number;
  maxBackoffMs: number;
  /** Sent as PublishChangesRequest.source. */
  source: string;
}

/** What the poller needs from Backstage and the sidecar. */
export interface PollerDeps {
  catalog: Pick<CatalogService, 'getEntitiesByRefs'>;
  lister: CatalogLister;
  auth: Pick<AuthService, 'getOwnServiceCredentials'>;
  sidecar: Sidecar;
  logger: LoggerService;
  options: PollerOptions;
}

/** What one poll did. */
export interface PollStats {
  /** Entities in the catalog listing. */
  listed: number;
  /** Entries compared with the acknowledged view (all, or what the lister says changed). */
  compared: number;
  /** Upserts and deletes found by the diff. */
  upserts: number;
  deletes: number;
  /** Entities listed but gone by the time their body was fetched. */
  vanished: number;
  /** Changes the sidecar accepted, and changes it rejected for good (dropped). */
  accepted: number;
  dropped: number;
  /** PublishChanges requests that succeeded. */
  requests: number;
  /** Whether this poll completed the full snapshot. */
  snapshot: boolean;
  /** Milliseconds spent listing, and in the whole poll. */
  listMs: number;
  totalMs: number;
}

interface PendingChange {
  /** The ref, uid and etag sent. */
  ref: string;
  uid: string;
  etag: string;
  deleted: boolean;
  json: string;
  bytes: number;
  /**
   * What enters the view once acknowledged: the entry as listed (not as
   * fetched), so a listing source whose etag differs from the body's can
   * never make the same entity look changed on every poll.
   */
  key: string;
  listed?: ViewEntry;
}

interface Outage {
  since: number;
  failures: number;
}

/**
 * Polls the catalog and publishes changes. Keeps, in memory, the view of the
 * catalog that the sidecar has acknowledged: a change enters the view only
 * after the request carrying it was answered 200 (or after the sidecar
 * rejected it for good, see below). Until the first full snapshot is
 * acknowledged, the last request of a poll carries `fullSnapshot: true`.
 *
 * Failure handling:
 * - sidecar unreachable or failing (any code but invalid_argument): the same
 *   request is retried with jittered exponential backoff until it succeeds or
 *   the poll is aborted (task timeout, shutdown); one warning per outage and
 *   one info line when it recovers;
 * - invalid_argument (the batch is rejected whole and never accepted as is):
 *   the batch is split in halves and each half sent again, down to single
 *   changes; a single rejected change is dropped: logged as an error with
 *   its ref and the sidecar's message, and recorded in the view so it is not
 *   sent again until the entity changes;
 * - resource_exhausted for a lone change larger than maxBatchBytes: dropped
 *   the same way (the sidecar's request limit must be at least maxBatchBytes);
 * - catalog failures end the poll without changing the view; the next poll
 *   starts over. One warning per outage.
 * runOnce never throws.
 */
export class Poller {
  readonly #deps: PollerDeps;
  readonly #view: CatalogView = new Map();
  #snapshotAcked = false;
  /** The acknowledged view matches the last listing (the last poll sent everything). */
  #inSync = false;
  #running = false;
  #sidecarOutage?: Outage;
  #catalogOutage?: Outage;

  constructor(deps: PollerDeps) {
    this.#deps = deps;
  }

  /** A copy of the acknowledged view, for tests and diagnostics. */
  view(): CatalogView {
    return new Map(this.#view);
  }

  /** Whether a full snapshot has been acknowledged since start. */
  snapshotAcknowledged(): boolean {
    return this.#snapshotAcked;
  }

  /** Runs one poll. Never throws; returns undefined when the poll did not complete. */
  async runOnce(signal: AbortSignal): Promise<PollStats | undefined> {
    const { logger } = this.#deps;
    if (this.#running) {
      logger.debug('port-bridge: a poll is already running; skipped this one');
      return undefined;
    }
    this.#running = true;
    try {
      return await this.#poll(signal);
    } catch (e) {
      if (signal.aborted) {
        logger.info('port-bridge: poll aborted (task timeout or shutdown); the next poll sends what is left');
      } else {
        this.#catalogFailed(e);
      }
      return undefined;
    } finally {
      this.#running = false;
    }
  }

  async #poll(signal: AbortSignal): Promise<PollStats> {
    const { auth, lister, logger, options } = this.#deps;
    const started = performance.now();
    const credentials = await auth.getOwnServiceCredentials();
    const listedAt = new Date().toISOString();
    const current = await lister.list(credentials, signal);
    const listMs = performance.now() - started;
    this.#catalogRecovered();

    // When the acknowledged view matched the previous listing and the lister
    // knows what it changed since, only that is compared.
    const changed = this.#inSync ? lister.lastChanged : undefined;
    const diff = changed ? diffRefs(this.#view, current, changed) : diffViews(this.#view, current);
    this.#inSync = false;
    const stats: PollStats = {
      compared: changed ? changed.length : current.size,
      listed: current.size,
      upserts: diff.upserts.length,
      deletes: diff.deletes.length,
      vanished: 0,
      accepted: 0,
      dropped: 0,
      requests: 0,
      snapshot: false,
      listMs,
      totalMs: 0,
    };
    const batch = new Batch(options.batchSize, options.maxBatchBytes, (changes, last) =>
      this.#deliver(changes, last && !this.#snapshotAcked, stats, signal),
    );
    const snapshotBefore = this.#snapshotAcked;

    for (let i = 0; i < diff.upserts.length; i += options.batchSize) {
      const refs = diff.upserts.slice(i, i + options.batchSize);
      const bodies = await this.#fetchBodies(refs, credentials);
      const fetchedAt = new Date().toISOString();
      for (let j = 0; j < refs.length; j++) {
        const entity = bodies[j];
        if (!entity) {
          // Gone since the listing: the next poll sees it absent.
          stats.vanished++;
          continue;
        }
        const ref = refOf(entity) ?? refs[j];
        const listed = current.get(refs[j]);
        const uid = entity.metadata?.uid ?? listed?.uid ?? '';
        const etag = entity.metadata?.etag ?? listed?.etag ?? '';
        const json = JSON.stringify({
          entityRef: ref,
          uid,
          etag,
          observedAt: fetchedAt,
          upserted: { entity },
        });
        await batch.add({ ref, uid, etag, deleted: false, json, bytes: Buffer.byteLength(json), key: refs[j], listed });
      }
    }
    for (const { ref, uid } of diff.deletes) {
      const json = JSON.stringify({ entityRef: ref, uid, observedAt: listedAt, deleted: {} });
      await batch.add({ ref, uid, etag: '', deleted: true, json, bytes: Buffer.byteLength(json), key: ref });
    }
    await batch.finish();

    if (!this.#snapshotAcked) {
      // Nothing carried the flag (empty catalog, or its carrier was dropped):
      // ask for the reconciliation directly.
      await this.#withRetry('TriggerResync', signal, async () => {
        const id = await this.#deps.sidecar.triggerResync('backstage module full snapshot', signal);
        logger.info(`port-bridge: asked the sidecar for a full resync (${id || 'no id'}) in place of a snapshot batch`);
      });
      this.#snapshotAcked = true;
    }
    this.#inSync = stats.vanished === 0;
    stats.snapshot = !snapshotBefore && this.#snapshotAcked;
    stats.totalMs = performance.now() - started;
    if (stats.upserts + stats.deletes > 0 || stats.snapshot) {
      logger.info(
        `port-bridge: published ${stats.accepted} changes (${stats.upserts} upserts, ${stats.deletes} deletes` +
          `${stats.dropped ? `, ${stats.dropped} dropped` : ''}${stats.vanished ? `, ${stats.vanished} vanished` : ''})` +
          ` in ${stats.requests} requests${stats.snapshot ? ' as the full snapshot' : ''};` +
          ` ${stats.listed} entities listed in ${Math.round(stats.listMs)} ms, poll took ${Math.round(stats.totalMs)} ms`,
      );
    } else {
      logger.debug(`port-bridge: no changes among ${stats.listed} entities (${Math.round(stats.totalMs)} ms)`);
    }
    return stats;
  }

  async #fetchBodies(refs: string[], credentials: BackstageCredentials) {
    const res = await this.#deps.catalog.getEntitiesByRefs({ entityRefs: refs }, { credentials });
    if (res.items.length !== refs.length) {
      throw new Error(`getEntitiesByRefs returned ${res.items.length} items for ${refs.length} refs`);
    }
    return res.items;
  }

  /** Sends one batch until the sidecar takes it, splitting it on invalid_argument. */
  async #deliver(changes: PendingChange[], fullSnapshot: boolean, stats: PollStats, signal: AbortSignal): Promise<void> {
    const { options, sidecar, logger } = this.#deps;
    const body =
      `{"changes":[${changes.map(c => c.json).join(',')}],` +
      `"fullSnapshot":${fullSnapshot},"source":${JSON.stringify(options.source)}}`;
    let rejected: SidecarError | undefined;
    await this.#withRetry('PublishChanges', signal, async () => {
      try {
        await sidecar.publishChanges(body, signal);
      } catch (e) {
        if (e instanceof SidecarError && isPermanent(e, changes, options.maxBatchBytes)) {
          rejected = e;
          return;
        }
        throw e;
      }
    });
    if (!rejected) {
      this.#commit(changes);
      stats.accepted += changes.length;
      stats.requests++;
      if (fullSnapshot) {
        this.#snapshotAcked = true;
      }
      return;
    }
    if (changes.length > 1) {
      const half = Math.ceil(changes.length / 2);
      await this.#deliver(changes.slice(0, half), false, stats, signal);
      await this.#deliver(changes.slice(half), fullSnapshot, stats, signal);
      return;
    }
    const [change] = changes;
    logger.error(
      `port-bridge: the sidecar rejected the ${change.deleted ? 'delete' : 'upsert'} of ${change.ref}` +
        ` (uid ${change.uid || '-'}, etag ${change.etag || '-'}, ${change.bytes} bytes) for good: ${rejected.message};` +
        ' dropped it; it is sent again when the entity changes',
    );
    this.#commit(changes);
    stats.dropped++;
  }

  /** Runs call until it resolves; retries every failure with backoff until the signal aborts. */
  async #withRetry(what: string, signal: AbortSignal, call: () => Promise<void>): Promise<void> {
    const { options } = this.#deps;
    let delay = options.initialBackoffMs;
    for (;;) {
      try {
        await call();
        this.#sidecarRecovered();
        return;
      } catch (e) {
        if (signal.aborted) {
          throw e;
        }
        this.#sidecarFailed(what, e);
        const jittered = delay / 2 + (Math.random() * delay) / 2;
        await sleep(jittered, undefined, { signal });
        delay = Math.min(delay * 2, options.maxBackoffMs);
      }
    }
  }

  #commit(changes: PendingChange[]): void {
    for (const c of changes) {
      if (c.deleted) {
        this.#view.delete(c.key);
      } else {
        this.#view.set(c.key, c.listed ?? { uid: c.uid, etag: c.etag });
      }
    }
  }

  #sidecarFailed(what: string, e: unknown): void {
    if (this.#sidecarOutage) {
      this.#sidecarOutage.failures++;
      this.#deps.logger.debug(`port-bridge: ${what} failed again: ${describe(e)}`);
      return;
    }
    this.#sidecarOutage = { since: Date.now(), failures: 1 };
    const code = e instanceof SidecarError ? e.code : 'unknown';
    const hint =
      code === 'unauthenticated' || code === 'permission_denied'
        ? ' (check portBridge.token against the sidecar\'s token)'
        : '';
    const log = hint ? this.#deps.logger.error : this.#deps.logger.warn;
    log.call(
      this.#deps.logger,
      `port-bridge: the sidecar at ${this.#deps.sidecar.baseUrl} is not taking changes: ${describe(e)}${hint};` +
        ` retrying with backoff (up to ${this.#deps.options.maxBackoffMs} ms); logged once until it recovers`,
    );
  }

  #sidecarRecovered(): void {
    const outage = this.#sidecarOutage;
    if (!outage) {
      return;
    }
    this.#sidecarOutage = undefined;
    this.#deps.logger.info(
      `port-bridge: the sidecar takes changes again after ${((Date.now() - outage.since) / 1000).toFixed(1)} s` +
        ` and ${outage.failures} failed attempts`,
    );
  }

  #catalogFailed(e: unknown): void {
    if (this.#catalogOutage) {
      this.#catalogOutage.failures++;
      this.#deps.logger.debug(`port-bridge: reading the catalog failed again: ${describe(e)}`);
      return;
    }
    this.#catalogOutage = { since: Date.now(), failures: 1 };
    this.#deps.logger.warn(
      `port-bridge: reading the catalog through the ${this.#deps.lister.name} failed: ${describe(e)};` +
        ' the next poll tries again; logged once until it recovers',
    );
  }

  #catalogRecovered(): void {
    const outage = this.#catalogOutage;
    if (!outage) {
      return;
    }
    this.#catalogOutage = undefined;
    this.#deps.logger.info(
      `port-bridge: reading the catalog works again after ${outage.failures} failed polls`,
    );
  }
}

/** Accumulates changes and hands them on in batches bounded by count and bytes. */
class Batch {
  #pending: PendingChange[] = [];
  #bytes = 0;

  constructor(
    private readonly maxCount: number,
    private readonly maxBytes: number,
    private readonly send: (changes: PendingChange[], last: boolean) => Promise<void>,
  ) {}

  async add(change: PendingChange): Promise<void> {
    if (
      this.#pending.length > 0 &&
      (this.#pending.length >= this.maxCount || this.#bytes + 1 + change.bytes > this.maxBytes)
    ) {
      await this.#flush(false);
    }
    this.#pending.push(change);
    this.#bytes += change.bytes + 1;
  }

  /** Sends what is left as the last batch of the poll. */
  async finish(): Promise<void> {
    if (this.#pending.length > 0) {
      await this.#flush(true);
    }
  }

  async #flush(last: boolean): Promise<void> {
    const changes = this.#pending;
    this.#pending = [];
    this.#bytes = 0;
    await this.send(changes, last);
  }
}

function isPermanent(e: SidecarError, changes: PendingChange[], maxBatchBytes: number): boolean {
  if (e.code === 'invalid_argument') {
    return true;
  }
  return e.code === 'resource_exhausted' && changes.length === 1 && changes[0].bytes > maxBatchBytes;
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
