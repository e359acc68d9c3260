import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigReader } from '@backstage/config';
import { DEFAULTS, readPortBridgeConfig } from '../src/config';

const read = (portBridge: unknown) => readPortBridgeConfig(new ConfigReader({ portBridge } as any));

describe('readPortBridgeConfig', () => {
  test('absent block: undefined (module idle)', () => {
    assert.equal(readPortBridgeConfig(new ConfigReader({})), undefined);
  });

  test('defaults', () => {
    const c = read({ sidecarUrl: 'http://127.0.0.1:8080/', token: 'abcdefgh' });
    assert.deepEqual(c, {
      enabled: true,
      sidecarUrl: 'http://127.0.0.1:8080',
      token: 'abcdefgh',
      pollIntervalMs: 5000,
      taskTimeoutMs: DEFAULTS.taskTimeoutMs,
      batchSize: DEFAULTS.batchSize,
      maxBatchBytes: DEFAULTS.maxBatchBytes,
      listPageSize: DEFAULTS.listPageSize,
      requestTimeoutMs: DEFAULTS.requestTimeoutMs,
      maxBackoffMs: DEFAULTS.maxBackoffMs,
      source: 'backstage',
      listSource: 'database',
    });
  });

  const good: [string, unknown, Partial<ReturnType<typeof read>>][] = [
    ['duration as object', { pollInterval: { seconds: 2 } }, { pollIntervalMs: 2000 }],
    ['duration as ms string', { pollInterval: '1500ms' }, { pollIntervalMs: 1500 }],
    ['duration as ISO string', { pollInterval: 'PT1M' }, { pollIntervalMs: 60000 }],
    ['disabled', { enabled: false }, { enabled: false }],
    ['no token', { token: undefined }, { token: undefined }],
    ['batch limits', { batchSize: 50, maxBatchBytes: 65536 }, { batchSize: 50, maxBatchBytes: 65536 }],
    ['https', { sidecarUrl: 'https://bridge.example.com' }, { sidecarUrl: 'https://bridge.example.com' }],
  ];
  for (const [name, extra, want] of good) {
    test(`accepts ${name}`, () => {
      const c = read({ sidecarUrl: 'http://127.0.0.1:8080', token: 'abcdefgh', ...(extra as object) });
      for (const [k, v] of Object.entries(want as object)) {
        assert.deepEqual((c as any)[k], v, k);
      }
    });
  }

  const bad: [string, unknown, RegExp][] = [
    ['missing sidecarUrl', { token: 'abcdefgh' }, /sidecarUrl/],
    ['not a URL', { sidecarUrl: 'not a url' }, /portBridge\.sidecarUrl/],
    ['wrong scheme', { sidecarUrl: 'ftp://x' }, /http or https/],
    ['token with whitespace', { sidecarUrl: 'http://x', token: 'a b' }, /portBridge\.token/],
    ['zero batchSize', { sidecarUrl: 'http://x', batchSize: 0 }, /portBridge\.batchSize/],
    ['fractional batchSize', { sidecarUrl: 'http://x', batchSize: 1.5 }, /portBridge\.batchSize/],
    ['tiny maxBatchBytes', { sidecarUrl: 'http://x', maxBatchBytes: 10 }, /portBridge\.maxBatchBytes/],
    ['bad duration', { sidecarUrl: 'http://x', pollInterval: 'soon' }, /portBridge\.pollInterval/],
    ['too short interval', { sidecarUrl: 'http://x', pollInterval: '5ms' }, /portBridge\.pollInterval.*minimum/],
    ['unknown duration key', { sidecarUrl: 'http://x', pollInterval: { secs: 5 } }, /portBridge\.pollInterval/],
    ['unknown list source', { sidecarUrl: 'http://x', listSource: 'kafka' }, /portBridge\.listSource/],
  ];
  for (const [name, block, want] of bad) {
    test(`rejects ${name}`, () => {
      assert.throws(() => read(block), want);
    });
  }
});
