// Backstage catalog backend module for portbridge: publishes catalog entity
// changes to the portbridge sidecar, which keeps Port's catalog in sync.
//
//   backend.add(import('@portbridge/backstage-plugin-catalog-backend-module-port-bridge'));

import { catalogModulePortBridge } from './module';

export default catalogModulePortBridge;
export { catalogModulePortBridge, TASK_ID } from './module';
export { readPortBridgeConfig, CONFIG_KEY, DEFAULTS } from './config';
export type { PortBridgeConfig, ListSource } from './config';
export { Poller } from './poller';
export type { PollStats, PollerOptions, PollerDeps, Sidecar } from './poller';
export { ApiLister, DatabaseLister, LIST_FIELDS, FINAL_ENTITIES_COLUMNS } from './listers';
export type { CatalogLister, CatalogDatabase } from './listers';
export { SidecarClient, SidecarError } from './sidecar';
export type { ConnectCode, PublishResult, SidecarClientOptions } from './sidecar';
export { diffViews, refOf } from './view';
export type { CatalogView, ViewEntry, ViewDiff } from './view';
