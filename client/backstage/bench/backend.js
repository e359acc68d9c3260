'use strict';
// A real, minimal Backstage backend (catalog only) for measuring the
// port-bridge module. Entities come from a JSON file (BENCH_ENTITIES_FILE)
// through a provider that applies full mutations, so changes show at once.
//
// BENCH_MODE:
//   module   the real module, installed as a user would: backend.add(require(<package dir>))
//   measure  the module's Poller driven on a timer, measuring CPU time and
//            event-loop delay of each poll from inside the process
//   none     no module (baseline)
const fs = require('node:fs');
const path = require('node:path');
const { monitorEventLoopDelay } = require('node:perf_hooks');
const { createBackend } = require('@backstage/backend-defaults');
const { createBackendModule, coreServices } = require('@backstage/backend-plugin-api');
const { catalogProcessingExtensionPoint, catalogServiceRef } = require('@backstage/plugin-catalog-node');

const pkgDir = path.resolve(__dirname, '..');
const mode = process.env.BENCH_MODE || 'module';

class JsonFileProvider {
  constructor(file, logger) {
    this.file = file;
    this.logger = logger;
    this.mtime = 0;
  }
  getProviderName() {
    return 'port-bridge-bench-provider';
  }
  async connect(connection) {
    const tick = async () => {
      try {
        const mtime = fs.statSync(this.file).mtimeMs;
        if (mtime === this.mtime) return;
        this.mtime = mtime;
        const loc = `file:${this.file}`;
        const entities = JSON.parse(fs.readFileSync(this.file, 'utf8')).map(e => ({
          entity: {
            ...e,
            metadata: {
              ...e.metadata,
              annotations: {
                ...e.metadata.annotations,
                'backstage.io/managed-by-location': loc,
                'backstage.io/managed-by-origin-location': loc,
              },
            },
          },
          locationKey: 'port-bridge-bench-provider',
        }));
        await connection.applyMutation({ type: 'full', entities });
        this.logger.info(`bench provider applied ${entities.length} entities`);
      } catch (e) {
        this.logger.warn(`bench provider failed: ${e}`);
      }
    };
    await tick();
    setInterval(tick, 500).unref();
  }
}

const providerModule = createBackendModule({
  pluginId: 'catalog',
  moduleId: 'port-bridge-bench-provider',
  register(env) {
    env.registerInit({
      deps: { processing: catalogProcessingExtensionPoint, logger: coreServices.logger },
      async init({ processing, logger }) {
        processing.addEntityProvider(new JsonFileProvider(process.env.BENCH_ENTITIES_FILE, logger));
      },
    });
  },
});

// Drives the module's own Poller (the code the scheduled task runs) and
// prints one JSON line per poll: CPU time (user+system) of the whole process
// during the poll, which includes the catalog serving the module's requests,
// wall time, and the event-loop delay seen during the poll.
const measureModule = createBackendModule({
  pluginId: 'catalog',
  moduleId: 'port-bridge-bench-measure',
  register(env) {
    env.registerInit({
      deps: {
        catalog: catalogServiceRef,
        auth: coreServices.auth,
        logger: coreServices.logger,
        lifecycle: coreServices.rootLifecycle,
        database: coreServices.database,
      },
      async init({ catalog, auth, logger, lifecycle, database }) {
        const { Poller, ApiLister, DatabaseLister, SidecarClient } = require(pkgDir);
        const api = new ApiLister(catalog, Number(process.env.BENCH_PAGE_SIZE || 1000));
        const listers = {
          api,
          database: new DatabaseLister(() => database.getClient(), api, m => logger.warn(m)),
        };
        // One poller per listing source (each with its own view); they take turns.
        const pollers = (process.env.BENCH_LIST_SOURCES || 'api,database').split(',').map(name => ({
          name,
          poller: new Poller({
            catalog,
            auth,
            logger,
            lister: listers[name],
            sidecar: new SidecarClient({ baseUrl: process.env.BENCH_SIDECAR_URL, token: process.env.BENCH_SIDECAR_TOKEN, requestTimeoutMs: 30000 }),
            options: { batchSize: 200, maxBatchBytes: 1 << 20, initialBackoffMs: 500, maxBackoffMs: 30000, source: `bench-${name}` },
          }),
        }));
        let turn = 0;
        const interval = Number(process.env.BENCH_INTERVAL_MS || 5000);
        const eld = monitorEventLoopDelay({ resolution: 5 });
        eld.enable();
        let stopped = false;
        const loop = async () => {
          // Start once the bench says the catalog is fully ingested.
          while (!stopped && !fs.existsSync(process.env.BENCH_START_FILE)) {
            await new Promise(r => setTimeout(r, 200));
          }
          while (!stopped) {
            const { name, poller } = pollers[turn++ % pollers.length];
            eld.reset();
            const cpu0 = process.cpuUsage();
            const t0 = performance.now();
            const stats = await poller.runOnce(new AbortController().signal);
            const cpu = process.cpuUsage(cpu0);
            const wallMs = performance.now() - t0;
            const during = { p50: eld.percentile(50) / 1e6, p99: eld.percentile(99) / 1e6, max: eld.max / 1e6 };
            eld.reset();
            await new Promise(r => setTimeout(r, Math.max(0, interval - wallMs)));
            const idle = { p50: eld.percentile(50) / 1e6, p99: eld.percentile(99) / 1e6, max: eld.max / 1e6 };
            process.stdout.write(
              `BENCH_POLL ${JSON.stringify({ source: name, cpuMs: (cpu.user + cpu.system) / 1000, wallMs, eldDuring: during, eldIdle: idle, stats })}\n`,
            );
          }
        };
        lifecycle.addStartupHook(() => {
          setTimeout(loop, 1000);
        });
        lifecycle.addShutdownHook(() => {
          stopped = true;
        });
      },
    });
  },
});

const backend = createBackend();
backend.add(require('@backstage/plugin-catalog-backend'));
backend.add(providerModule);
if (mode === 'module') backend.add(require(pkgDir));
if (mode === 'measure') backend.add(measureModule);
backend.start();
