// Configuration schema of the port-bridge catalog module; Backstage validates
// app-config against it at start.
import { HumanDuration } from '@backstage/types';

export interface Config {
  /** The portbridge sidecar that keeps Port's catalog in sync with this catalog. */
  portBridge?: {
    /** Set to false to keep the module installed but idle. Default true. */
    enabled?: boolean;
    /** Base URL of the sidecar's Connect API, e.g. http://127.0.0.1:8080 */
    sidecarUrl: string;
    /**
     * Bearer token the sidecar expects.
     * @visibility secret
     */
    token?: string;
    /** Time between two polls of the catalog. Default 5 seconds. */
    pollInterval?: HumanDuration | string;
    /** How long one poll, retries included, may run. Default 10 minutes. */
    taskTimeout?: HumanDuration | string;
    /** Most changes per request to the sidecar. Default 200. */
    batchSize?: number;
    /** Most bytes of changes per request; one larger entity is sent alone. Default 1048576. */
    maxBatchBytes?: number;
    /** Entities per page when listing the catalog. Default 1000. */
    listPageSize?: number;
    /** Timeout of one request to the sidecar. Default 30 seconds. */
    requestTimeout?: HumanDuration | string;
    /** Longest wait between retries while the sidecar is unavailable. Default 5 seconds. */
    maxBackoff?: HumanDuration | string;
    /**
     * How each poll lists the catalog: 'database' (the default: the catalog's
     * own final_entities table, read incrementally by last_updated_at; an
     * internal schema, so the module falls back to 'api' for good when it is
     * not as expected) or 'api' (queryEntities with kind, namespace, name,
     * uid and etag only and totalItems excluded; public, but the catalog reads
     * every entity on every poll).
     */
    listSource?: 'api' | 'database';
    /** Names this Backstage in the sidecar's logs. Default "backstage". */
    source?: string;
  };
}
