'use strict';
// Measures the port-bridge module's cost on a real Backstage catalog backend
// with N synthetic entities:
//   1. "measure": the module's Poller on a timer inside the backend; per
//      poll, CPU time (user+system) of the whole backend process, which
//      includes the catalog serving the listing, and event-loop delay;
//   2. "module" and "none": the real module installed with backend.add()
//      versus no module; the backend's CPU share of one core over a window,
//      read from /proc, and a check that the module delivered every entity
//      to a sidecar double.
// Usage: npm run bench -- [entities=10000] [windowSeconds=60] [intervalMs=5000]
// Needs `npm_config_nodedir=/usr npm ci` in bench/ first (real Backstage).
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

const N = Number(process.argv[2] || 10000);
const WINDOW_S = Number(process.argv[3] || 60);
const INTERVAL_MS = Number(process.argv[4] || 5000);
const TOKEN = 'bench-catalog-token-1234';
const SIDECAR_TOKEN = 'bench-sidecar-token-1234';
const work = path.join(__dirname, 'work');
const CLK_TCK = 100;
// Ingesting is slow (about 3 minutes for 10k on 2 cores); allow 15 minutes, or a minute per 2,000 entities.
const INGEST_TIMEOUT_MS = Math.max(15, N / 2000) * 60_000;
const SETTLE_MS = Number(process.env.BENCH_SETTLE_MS ?? 70_000);

function entities(n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    out.push({
      apiVersion: 'backstage.io/v1alpha1',
      kind: 'Component',
      metadata: {
        name: `svc-${i}`,
        namespace: 'default',
        description: `Synthetic service number ${i}, generated for the port-bridge poll cost benchmark`,
        tags: ['bench', `team-${i % 50}`, i % 2 ? 'go' : 'java'],
        annotations: { 'backstage.io/techdocs-ref': 'dir:.', 'example.com/build': `https://ci.example.com/svc-${i}` },
        links: [{ url: `https://example.com/svc-${i}`, title: 'Dashboard' }],
      },
      spec: {
        type: 'service',
        lifecycle: i % 3 ? 'production' : 'experimental',
        owner: `group:default/team-${i % 50}`,
        system: `system-${i % 100}`,
        dependsOn: [`component:default/svc-${(i + 1) % n}`],
      },
    });
  }
  return out;
}

function startSidecar() {
  const state = { changes: 0, requests: 0, refs: new Set() };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', c => chunks.push(c));
    req.on('end', () => {
      state.requests++;
      if (req.headers.authorization !== `Bearer ${SIDECAR_TOKEN}`) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ code: 'unauthenticated', message: 'bad token' }));
        return;
      }
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      const changes = body.changes || [];
      state.changes += changes.length;
      for (const c of changes) state.refs.add(c.entityRef);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ accepted: changes.length, queueDepth: '0' }));
    });
  });
  return new Promise(resolve =>
    server.listen(0, '127.0.0.1', () => resolve({ server, state, url: `http://127.0.0.1:${server.address().port}` })),
  );
}

function freePort() {
  return new Promise(resolve => {
    const s = http.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function cpuTicks(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

async function startBackend(mode, sidecarUrl, onLine, extraEnv = {}) {
  const port = await freePort();
  const env = {
    ...process.env,
    ...extraEnv,
    BENCH_MODE: mode,
    BENCH_ENTITIES_FILE: path.join(work, 'entities.json'),
    BENCH_SIDECAR_URL: sidecarUrl,
    BENCH_SIDECAR_TOKEN: SIDECAR_TOKEN,
    BENCH_INTERVAL_MS: String(INTERVAL_MS),
    BENCH_START_FILE: path.join(work, `start-${mode}`),
    APP_CONFIG_backend_listen_port: String(port),
    APP_CONFIG_backend_baseUrl: `http://127.0.0.1:${port}`,
  };
  const child = spawn(process.execPath, [path.join(__dirname, 'backend.js'), '--config', path.join(work, 'app-config.yaml')], {
    env,
    cwd: work,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = fs.createWriteStream(path.join(work, `backend-${mode}.log`));
  let buf = '';
  child.stdout.on('data', d => {
    log.write(d);
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  child.stderr.on('data', d => log.write(d));
  return { child, port };
}

async function waitIngested(port) {
  const t0 = Date.now();
  for (;;) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/api/catalog/entities/by-query?limit=1&filter=kind=component`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      if (res.status === 200 && (await res.json()).totalItems >= N) return (Date.now() - t0) / 1000;
    } catch {
      // not up yet
    }
    if (Date.now() - t0 > INGEST_TIMEOUT_MS) throw new Error(`catalog did not ingest the entities within ${INGEST_TIMEOUT_MS / 60_000} minutes`);
    await sleep(500);
  }
}

async function stop(child) {
  child.kill('SIGTERM');
  await new Promise(r => child.once('exit', r));
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const f1 = x => x.toFixed(1);

async function measureMode(sidecarUrl) {
  const polls = [];
  const { child, port } = await startBackend('measure', sidecarUrl, line => {
    if (line.startsWith('BENCH_POLL ')) polls.push(JSON.parse(line.slice(11)));
  });
  const ingestS = await waitIngested(port);
  fs.writeFileSync(path.join(work, 'start-measure'), '');
  // Wait for a poll that saw the whole catalog, then until the catalog has
  // been quiet for longer than the database lister's margin (1 minute: an
  // incremental listing re-reads the rows stitched within it), then for a
  // full window of steady polls.
  while (!polls.some(p => p.stats && p.stats.listed >= N)) await sleep(200);
  await sleep(SETTLE_MS);
  const settled = polls.length;
  const want = Math.max(10, Math.floor((WINDOW_S * 1000) / INTERVAL_MS));
  while (polls.filter((p, i) => i > settled && p.stats && p.stats.upserts === 0).length < want) await sleep(500);
  await stop(child);
  const snapshot = {};
  for (const p of polls) {
    if (p.stats && p.stats.listed >= N && p.stats.upserts >= N && !snapshot[p.source]) snapshot[p.source] = p;
  }
  const steady = polls.filter((p, i) => i > settled && p.stats && p.stats.upserts === 0 && p.stats.deletes === 0);
  return { ingestS, snapshot, steady };
}

async function windowMode(mode, sidecar) {
  const { child, port } = await startBackend(mode, sidecar.url, () => {});
  const ingestS = await waitIngested(port);
  if (mode === 'module') {
    const t0 = Date.now();
    while (sidecar.state.refs.size < N) {
      if (Date.now() - t0 > 5 * 60_000) throw new Error(`the module delivered ${sidecar.state.refs.size} of ${N} entities`);
      await sleep(500);
    }
  }
  await sleep(2 * INTERVAL_MS);
  const requestsBefore = sidecar.state.requests;
  const c0 = cpuTicks(child.pid);
  const t0 = Date.now();
  await sleep(WINDOW_S * 1000);
  const cpuS = (cpuTicks(child.pid) - c0) / CLK_TCK;
  const wallS = (Date.now() - t0) / 1000;
  const requests = sidecar.state.requests - requestsBefore;
  await stop(child);
  return { ingestS, corePct: (100 * cpuS) / wallS, requests, delivered: sidecar.state.refs.size };
}

async function main() {
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  fs.writeFileSync(path.join(work, 'entities.json'), JSON.stringify(entities(N)));
  const sidecar = await startSidecar();
  fs.writeFileSync(
    path.join(work, 'app-config.yaml'),
    `app:
  baseUrl: http://127.0.0.1:3000
backend:
  database:
    client: better-sqlite3
    connection: ':memory:'
  auth:
    externalAccess:
      - type: static
        options:
          token: ${TOKEN}
          subject: bench
catalog:
  rules:
    - allow: [Component, System, API, Resource, Location, Domain, Group, User]
portBridge:
  sidecarUrl: ${sidecar.url}
  token: ${SIDECAR_TOKEN}
  pollInterval: { milliseconds: ${INTERVAL_MS} }
`,
  );
  console.log(`port-bridge poll cost: ${N} entities, poll every ${INTERVAL_MS} ms, window ${WINDOW_S} s, ${os.cpus().length} cores, node ${process.version}`);

  const polls = await measureMode(sidecar.url);
  for (const listSource of (process.env.BENCH_LIST_SOURCES || 'api,database').split(',')) {
    report(polls, listSource);
  }
  if (process.env.BENCH_SKIP_WINDOW) return;
  const none = await windowMode('none', sidecar);
  sidecar.state.refs.clear();
  const mod = await windowMode('module', sidecar);
  console.log(`real module via backend.add(require(<package dir>)): delivered ${mod.delivered}/${N} entities to the sidecar double`);
  console.log(`backend CPU share over ${WINDOW_S} s, steady: without module ${f1(none.corePct)} % of a core, with module (listSource api) ${f1(mod.corePct)} % (difference ${f1(mod.corePct - none.corePct)} %), ${mod.requests} sidecar requests in the window`);
}

function report(all, listSource) {
  const m = { ingestS: all.ingestS, snapshot: all.snapshot[listSource], steady: all.steady.filter(p => p.source === listSource) };
  console.log(`\n## listSource ${listSource}`);
  const cpu = m.steady.map(p => p.cpuMs);
  const wall = m.steady.map(p => p.wallMs);
  const eldMax = m.steady.map(p => p.eldDuring.max);
  const eldP99 = m.steady.map(p => p.eldDuring.p99);
  const idleMax = m.steady.map(p => p.eldIdle.max);
  console.log(`catalog ingest of ${N} entities: ${f1(m.ingestS)} s`);
  if (m.snapshot) {
    console.log(
      `first full poll (snapshot, ${m.snapshot.stats.upserts} upserts in ${m.snapshot.stats.requests} requests): ` +
        `CPU ${f1(m.snapshot.cpuMs)} ms, wall ${f1(m.snapshot.wallMs)} ms, event-loop delay max ${f1(m.snapshot.eldDuring.max)} ms`,
    );
  }
  console.log(`steady polls (no changes), n=${m.steady.length}:`);
  console.log('| metric | p50 | max |');
  console.log('|---|---|---|');
  console.log(`| CPU time per poll (ms, whole backend) | ${f1(pct(cpu, 50))} | ${f1(Math.max(...cpu))} |`);
  console.log(`| wall time per poll (ms) | ${f1(pct(wall, 50))} | ${f1(Math.max(...wall))} |`);
  console.log(`| listing part of the poll (ms) | ${f1(pct(m.steady.map(p => p.stats.listMs), 50))} | ${f1(Math.max(...m.steady.map(p => p.stats.listMs)))} |`);
  console.log(`| event-loop delay p99 during poll (ms) | ${f1(pct(eldP99, 50))} | ${f1(Math.max(...eldP99))} |`);
  console.log(`| event-loop delay max during poll (ms) | ${f1(pct(eldMax, 50))} | ${f1(Math.max(...eldMax))} |`);
  console.log(`| event-loop delay max between polls (ms) | ${f1(pct(idleMax, 50))} | ${f1(Math.max(...idleMax))} |`);
  console.log(`=> ${f1((100 * pct(cpu, 50)) / INTERVAL_MS)} % of one core at one poll per ${INTERVAL_MS} ms (p50 CPU / interval)`);
}

main().then(
  () => process.exit(0),
  e => {
    console.error(e);
    process.exit(1);
  },
);
