// The Backstage backend module: wires the poller into the catalog plugin as a
// globally scheduled task (one replica polls at a time).

import { coreServices, createBackendModule } from '@backstage/backend-plugin-api';
import { catalogServiceRef } from '@backstage/plugin-catalog-node';
import { readPortBridgeConfig } from './config';
import { ApiLister, CatalogDatabase, CatalogLister, DatabaseLister } from './listers';
import { Poller } from './poller';
import { SidecarClient } from './sidecar';

/** The id of the scheduled task, as it appears in Backstage's scheduler. */
export const TASK_ID = 'port-bridge-publish-changes';

/** The first wait after a failed call to the sidecar. */
const INITIAL_BACKOFF_MS = 500;

/**
 * A catalog module that polls the catalog and publishes entity changes to the
 * portbridge sidecar. Configured under `portBridge` in app-config; idle when
 * that key is absent or `portBridge.enabled` is false.
 */
export const catalogModulePortBridge = createBackendModule({
  pluginId: 'catalog',
  moduleId: 'port-bridge',
  register(reg) {
    reg.registerInit({
      deps: {
        catalog: catalogServiceRef,
        auth: coreServices.auth,
        scheduler: coreServices.scheduler,
        config: coreServices.rootConfig,
        logger: coreServices.logger,
        database: coreServices.database,
      },
      async init({ catalog, auth, scheduler, config, logger, database }) {
        const settings = readPortBridgeConfig(config);
        if (!settings) {
          logger.info('port-bridge: no portBridge configuration; the module is idle');
          return;
        }
        if (!settings.enabled) {
          logger.info('port-bridge: portBridge.enabled is false; the module is idle');
          return;
        }
        const api = new ApiLister(catalog, settings.listPageSize);
        const lister: CatalogLister =
          settings.listSource === 'database'
            ? new DatabaseLister(
                async () => (await database.getClient()) as unknown as CatalogDatabase,
                api,
                message => logger.warn(message),
              )
            : api;
        const poller = new Poller({
          catalog,
          auth,
          logger,
          lister,
          sidecar: new SidecarClient({
            baseUrl: settings.sidecarUrl,
            token: settings.token,
            requestTimeoutMs: settings.requestTimeoutMs,
          }),
          options: {
            batchSize: settings.batchSize,
            maxBatchBytes: settings.maxBatchBytes,
            initialBackoffMs: INITIAL_BACKOFF_MS,
            maxBackoffMs: settings.maxBackoffMs,
            source: settings.source,
          },
        });
        await scheduler.scheduleTask({
          id: TASK_ID,
          scope: 'global',
          frequency: { milliseconds: settings.pollIntervalMs },
          timeout: { milliseconds: settings.taskTimeoutMs },
          fn: async signal => {
            await poller.runOnce(signal);
          },
        });
        logger.info(
          `port-bridge: publishing catalog changes to ${settings.sidecarUrl} every ${settings.pollIntervalMs} ms,` +
            ` listing through the ${lister.name}`,
        );
      },
    });
  },
});
