// Test peers: a local HTTP server speaking the sidecar's Connect-JSON wire
// format, Backstage's own in-memory catalog client, and a logger that
// records what was logged.

import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { BackstageCredentials, LoggerService } from '@backstage/backend-plugin-api';
import type { Entity } from '@backstage/catalog-model';
import { InMemoryCatalogClient } from '@backstage/catalog-client/testUtils';
import type { JsonObject } from '@backstage/types';

/** One request the sidecar double received. */
export interface Received {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: any;
}

/** How the double answers one request: status and JSON body. */
export type Answer = { status: number; body: unknown } | 'drop';

/**
 * A sidecar double on 127.0.0.1. By default it answers every PublishChanges
 * with 200 {accepted, queueDepth}; `answer` can override per request.
 */
export class SidecarDouble {
  readonly received: Received[] = [];
  answer?: (req: Received) => Answer | undefined;
  #server = http.createServer((req, res) => this.#handle(req, res));
  #queue = 0;

  async start(port = 0): Promise<string> {
    this.#server.listen(port, '127.0.0.1');
    await once(this.#server, 'listening');
    return this.url;
  }

  get url(): string {
    const addr = this.#server.address() as AddressInfo;
    return `http://127.0.0.1:${addr.port}`;
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>(resolve => this.#server.close(() => resolve()));
  }

  /** The PublishChanges requests that were answered 200. */
  accepted(): any[] {
    return this.received.filter(r => r.path.endsWith('/PublishChanges') && (r as any).status === 200).map(r => r.body);
  }

  #handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', c => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
      const r: Received = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body };
      this.received.push(r);
      const answer = this.answer?.(r) ?? this.#defaultAnswer(r);
      if (answer === 'drop') {
        req.socket.destroy();
        return;
      }
      (r as any).status = answer.status;
      res.writeHead(answer.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(answer.body));
    });
  }

  #defaultAnswer(r: Received): Answer {
    if (r.path === '/portbridge.v1.BridgeService/PublishChanges') {
      const n = r.body.changes.length;
      this.#queue += n;
      return { status: 200, body: { accepted: n, queueDepth: String(this.#queue) } };
    }
    if (r.path === '/portbridge.v1.BridgeService/TriggerResync') {
      return { status: 200, body: { resyncId: 'r1' } };
    }
    return { status: 404, body: { code: 'unimplemented', message: `no ${r.path}` } };
  }
}

/** A catalog whose content tests can replace between polls. */
export class TestCatalog {
  #client: InMemoryCatalogClient;
  failWith?: Error;
  calls = { queryEntities: 0, getEntitiesByRefs: 0 };

  constructor(entities: Entity[] = []) {
    this.#client = new InMemoryCatalogClient({ entities });
  }

  set(entities: Entity[]): void {
    this.#client = new InMemoryCatalogClient({ entities });
  }

  queryEntities: InMemoryCatalogClient['queryEntities'] = async req => {
    this.calls.queryEntities++;
    if (this.failWith) {
      throw this.failWith;
    }
    return this.#client.queryEntities(req);
  };

  getEntitiesByRefs: InMemoryCatalogClient['getEntitiesByRefs'] = async req => {
    this.calls.getEntitiesByRefs++;
    return this.#client.getEntitiesByRefs(req);
  };
}

/** A component entity with the fields the catalog adds (uid, etag). */
export function component(name: string, opts: { uid?: string; etag?: string; description?: string; big?: number } = {}): Entity {
  return {
    apiVersion: 'backstage.io/v1alpha1',
    kind: 'Component',
    metadata: {
      name,
      namespace: 'default',
      uid: opts.uid ?? `uid-${name}`,
      etag: opts.etag ?? `etag-${name}-1`,
      description: opts.description ?? `the ${name} service`,
      ...(opts.big ? { annotations: { 'example.com/blob': 'x'.repeat(opts.big) } } : {}),
    },
    spec: { type: 'service', lifecycle: 'production', owner: 'group:default/team-a' },
  };
}

/** The credentials the auth service would hand out. */
export const testAuth = {
  async getOwnServiceCredentials() {
    return {
      $$type: '@backstage/BackstageCredentials',
      principal: { type: 'service', subject: 'plugin:catalog' },
    } as BackstageCredentials<any>;
  },
};

/** A LoggerService that keeps every line. */
export class RecordingLogger implements LoggerService {
  constructor(readonly lines: { level: string; message: string }[] = []) {}
  error(message: string, _meta?: Error | JsonObject) {
    this.lines.push({ level: 'error', message });
  }
  warn(message: string, _meta?: Error | JsonObject) {
    this.lines.push({ level: 'warn', message });
  }
  info(message: string, _meta?: Error | JsonObject) {
    this.lines.push({ level: 'info', message });
  }
  debug(message: string, _meta?: Error | JsonObject) {
    this.lines.push({ level: 'debug', message });
  }
  child(_meta: JsonObject): LoggerService {
    return new RecordingLogger(this.lines);
  }
  at(level: string): string[] {
    return this.lines.filter(l => l.level === level).map(l => l.message);
  }
}
