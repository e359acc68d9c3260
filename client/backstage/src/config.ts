// Reading and checking the module's configuration (the `portBridge` key of
// Backstage's app-config). Bad values fail Backstage's start with the key and
// the reason, as every other Backstage setting does.

import { Config, readDurationFromConfig } from '@backstage/config';
import { durationToMilliseconds } from '@backstage/types';

/** The configuration key the module reads. */
export const CONFIG_KEY = 'portBridge';

/** Where the module lists the catalog from on every poll. */
export type ListSource = 'api' | 'database';

/** The module's settings after defaults are applied. */
export interface PortBridgeConfig {
  /** Whether the module polls at all. */
  enabled: boolean;
  /** The sidecar's base URL, without a trailing slash. */
  sidecarUrl: string;
  /** The sidecar's bearer token; undefined sends no Authorization header. */
  token?: string;
  /** Time between the starts of two polls. */
  pollIntervalMs: number;
  /** How long one poll (including its retries) may run before Backstage aborts it. */
  taskTimeoutMs: number;
  /** Most changes in one PublishChanges request; also the getEntitiesByRefs chunk. */
  batchSize: number;
  /** Most bytes of serialized changes in one request (one larger change goes alone). */
  maxBatchBytes: number;
  /** Entities per page when listing the catalog through its API. */
  listPageSize: number;
  /** Timeout of one request to the sidecar. */
  requestTimeoutMs: number;
  /** Longest wait between two retries while the sidecar is unavailable. */
  maxBackoffMs: number;
  /** Names this Backstage in the sidecar's logs. */
  source: string;
  /** How the catalog is listed on each poll. */
  listSource: ListSource;
}

/** Defaults for every optional setting. */
export const DEFAULTS = {
  pollIntervalMs: 5_000,
  taskTimeoutMs: 10 * 60_000,
  batchSize: 200,
  maxBatchBytes: 1024 * 1024,
  listPageSize: 1000,
  requestTimeoutMs: 30_000,
  maxBackoffMs: 5_000,
  source: 'backstage',
  listSource: 'database' as ListSource,
};

/**
 * Reads the `portBridge` block. Returns undefined when the block is absent
 * (the module then stays idle), and throws an Error naming the key when a
 * value is invalid.
 */
export function readPortBridgeConfig(root: Config): PortBridgeConfig | undefined {
  const config = root.getOptionalConfig(CONFIG_KEY);
  if (!config) {
    return undefined;
  }
  const enabled = config.getOptionalBoolean('enabled') ?? true;
  const sidecarUrl = config.getString('sidecarUrl').trim().replace(/\/+$/, '');
  let parsed: URL;
  try {
    parsed = new URL(sidecarUrl);
  } catch (e) {
    throw new Error(`Invalid ${CONFIG_KEY}.sidecarUrl '${sidecarUrl}': ${String(e)}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new Error(
      `Invalid ${CONFIG_KEY}.sidecarUrl '${sidecarUrl}': the scheme must be http or https`,
    );
  }
  const token = config.getOptionalString('token');
  if (token !== undefined && !/^\S+$/.test(token)) {
    throw new Error(`Invalid ${CONFIG_KEY}.token: it must be non-empty and contain no whitespace`);
  }
  const listSource = config.getOptionalString('listSource') ?? DEFAULTS.listSource;
  if (listSource !== 'api' && listSource !== 'database') {
    throw new Error(
      `Invalid ${CONFIG_KEY}.listSource '${listSource}': must be 'api' or 'database'`,
    );
  }
  return {
    enabled,
    sidecarUrl,
    token,
    pollIntervalMs: readDurationMs(config, 'pollInterval', DEFAULTS.pollIntervalMs, 100),
    taskTimeoutMs: readDurationMs(config, 'taskTimeout', DEFAULTS.taskTimeoutMs, 1000),
    batchSize: readPositiveInt(config, 'batchSize', DEFAULTS.batchSize),
    maxBatchBytes: readPositiveInt(config, 'maxBatchBytes', DEFAULTS.maxBatchBytes, 1024),
    listPageSize: readPositiveInt(config, 'listPageSize', DEFAULTS.listPageSize),
    requestTimeoutMs: readDurationMs(config, 'requestTimeout', DEFAULTS.requestTimeoutMs, 100),
    maxBackoffMs: readDurationMs(config, 'maxBackoff', DEFAULTS.maxBackoffMs, 100),
    source: config.getOptionalString('source') ?? DEFAULTS.source,
    listSource,
  };
}

function readDurationMs(config: Config, key: string, fallback: number, min: number): number {
  if (!config.has(key)) {
    return fallback;
  }
  let ms: number;
  try {
    ms = durationToMilliseconds(readDurationFromConfig(config, { key }));
  } catch (e) {
    throw new Error(`Invalid ${CONFIG_KEY}.${key}: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!Number.isFinite(ms) || ms < min) {
    throw new Error(`Invalid ${CONFIG_KEY}.${key}: ${ms} ms is below the minimum of ${min} ms`);
  }
  return ms;
}

function readPositiveInt(config: Config, key: string, fallback: number, min = 1): number {
  const value = config.getOptionalNumber(key);
  if (value === undefined) {
    return fallback;
  }
  if (!Number.isInteger(value) || value < min) {
    throw new Error(`Invalid ${CONFIG_KEY}.${key}: ${value} is not an integer of at least ${min}`);
  }
  return value;
}
