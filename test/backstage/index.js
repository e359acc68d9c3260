'use strict';
// A real, minimal Backstage backend (catalog plugin only) used as a test peer
// by portbridge's Go tests. Started by the Go package in this directory; see
// backstagetest.go for the environment it expects.
//
// Extras over a plain catalog backend:
//   - a full-mutation entity provider ("portbridge-harness") that reads the
//     file named by config harness.providerFile (a JSON array of entities, or
//     multi-document YAML) every 200 ms and applies it as a full mutation, so
//     tests add, update and delete entities in 1-2 s;
//   - PORTBRIDGE_EXTRA_MODULES: comma-separated paths of extra backend
//     features (plugins or modules) to backend.add(), e.g. the product's
//     Backstage module under client/backstage.
const fs = require('node:fs');
const path = require('node:path');
const YAML = require('yaml');
const { createBackend } = require('@backstage/backend-defaults');
const { createBackendModule, coreServices } = require('@backstage/backend-plugin-api');
const { catalogProcessingExtensionPoint } = require('@backstage/plugin-catalog-node');

class FileFullMutationProvider {
  constructor(file, logger) {
    this.file = file;
    this.logger = logger;
    this.last = undefined;
  }

  getProviderName() {
    return 'portbridge-harness';
  }

  parse(text) {
    const trimmed = text.trim();
    if (trimmed === '') return [];
    if (trimmed.startsWith('[')) return JSON.parse(trimmed);
    return YAML.parseAllDocuments(text).map(d => d.toJSON()).filter(Boolean);
  }

  async tick(connection) {
    let text;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (e) {
      if (e.code === 'ENOENT') text = '';
      else throw e;
    }
    if (text === this.last) return;
    const loc = `file:${this.file}`;
    const entities = this.parse(text).map(e => ({
      entity: {
        ...e,
        metadata: {
          namespace: 'default',
          ...e.metadata,
          annotations: {
            'backstage.io/managed-by-location': loc,
            'backstage.io/managed-by-origin-location': loc,
            ...(e.metadata && e.metadata.annotations),
          },
        },
      },
      locationKey: 'portbridge-harness',
    }));
    await connection.applyMutation({ type: 'full', entities });
    this.last = text;
    this.logger.info(`portbridge-harness applied full mutation with ${entities.length} entities`);
  }

  async connect(connection) {
    const run = async () => {
      try {
        await this.tick(connection);
      } catch (e) {
        this.logger.warn(`portbridge-harness provider failed: ${e}`);
      }
    };
    await run();
    this.timer = setInterval(run, 200);
    this.timer.unref();
  }
}

const harnessModule = createBackendModule({
  pluginId: 'catalog',
  moduleId: 'portbridge-harness',
  register(env) {
    env.registerInit({
      deps: {
        processing: catalogProcessingExtensionPoint,
        logger: coreServices.logger,
        config: coreServices.rootConfig,
      },
      async init({ processing, logger, config }) {
        const file = config.getOptionalString('harness.providerFile');
        if (file) processing.addEntityProvider(new FileFullMutationProvider(path.resolve(file), logger));
      },
    });
  },
});

const backend = createBackend();
backend.add(require('@backstage/plugin-catalog-backend'));
backend.add(harnessModule);
for (const p of (process.env.PORTBRIDGE_EXTRA_MODULES || '').split(',')) {
  if (p.trim() !== '') backend.add(require(path.resolve(p.trim())));
}
backend.start();
