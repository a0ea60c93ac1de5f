'use strict';
// docs/DEPLOY.md without a cluster: every YAML block parses and has what Kubernetes and KEDA need, the
// containers name only flags the CLI has and probe routes the server answers on the port it listens on,
// the KEDA triggers name the Redis lists BullMQ really keeps a queue's jobs in (checked against a real
// redis-server), and the Dockerfile installs the prebuilt package with no compiler and runs files the
// package ships.
const test = require('tape');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const YAML = require('yaml');
const IORedis = require('ioredis');
const { Queue } = require('bullmq');
const evit = require('../dist');
const { startRedis } = require('./helpers/redis');
const { noisePng, until } = require('./helpers/serve');

const root = path.join(__dirname, '..');
const doc = fs.readFileSync(path.join(root, 'docs', 'DEPLOY.md'), 'utf8');
const pkg = require('../package.json');

/** The fenced blocks of a markdown text with the given info string. */
const blocks = (lang) => [...doc.matchAll(new RegExp('^```' + lang + '\\n([\\s\\S]*?)^```$', 'gm'))].map((m) => m[1]);

const manifests = [];
test('every YAML block parses, each document with apiVersion, kind and metadata.name', (t) => {
  const yamlBlocks = blocks('yaml');
  t.ok(yamlBlocks.length >= 3, `${yamlBlocks.length} YAML blocks`);
  for (const [i, text] of yamlBlocks.entries()) {
    for (const d of YAML.parseAllDocuments(text)) {
      t.deepEqual(d.errors.map((e) => e.message), [], `block ${i + 1}: no YAML errors`);
      const m = d.toJS();
      t.ok(typeof m.apiVersion === 'string' && typeof m.kind === 'string' && typeof m.metadata?.name === 'string', `block ${i + 1}: ${m.kind} ${m.metadata?.name}`);
      manifests.push(m);
    }
  }
  const kinds = manifests.map((m) => m.kind).sort();
  t.deepEqual(kinds, ['Deployment', 'Deployment', 'Deployment', 'ScaledObject', 'Service'], 'three Deployments (serve, worker, GPU serve), a Service, a ScaledObject');
  t.end();
});

/** The options a command's help lists (`evit --help`), e.g. serve: --host, --port, ... plus the model options. */
function helpFlags() {
  const r = spawnSync(process.execPath, [path.join(root, 'dist', 'cli.js'), '--help'], { encoding: 'utf8' });
  const sections = {};
  for (const part of r.stdout.split(/\n\n(?=\w+ options|bench:)/)) {
    const name = /^(\w+) options\b/.exec(part)?.[1];
    if (name) sections[name] = new Set(part.match(/--[a-z][a-z-]*/g));
  }
  return sections;
}

const argValue = (args, flag) => args[args.indexOf(flag) + 1];

test('the Deployments: selectors, flags the CLI has, probes on the v2 health routes of the port it listens on', (t) => {
  const flags = helpFlags();
  const model = [...flags.classify];
  for (const d of manifests.filter((m) => m.kind === 'Deployment')) {
    const name = d.metadata.name;
    t.equal(d.apiVersion, 'apps/v1', `${name}: apps/v1`);
    const labels = d.spec.template.metadata.labels;
    t.ok(Object.entries(d.spec.selector.matchLabels).every(([k, v]) => labels[k] === v), `${name}: the selector matches the pod labels`);
    const [c] = d.spec.template.spec.containers;
    t.ok(typeof c.image === 'string' && Array.isArray(c.args), `${name}: an image and args`);
    const command = c.args[0];
    t.ok(command === 'serve' || command === 'worker', `${name}: runs evit ${command}`);
    const known = new Set([...flags[command], ...model]);
    const unknown = c.args.filter((a) => a.startsWith('--') && !known.has(a));
    t.deepEqual(unknown, [], `${name}: every flag is one evit ${command} has`);
    const portFlag = command === 'serve' ? '--port' : '--metrics-port';
    const hostFlag = command === 'serve' ? '--host' : '--metrics-host';
    t.equal(argValue(c.args, hostFlag), '0.0.0.0', `${name}: ${hostFlag} 0.0.0.0, so the kubelet's probes reach it`);
    const listen = Number(argValue(c.args, portFlag));
    const ports = Object.fromEntries(c.ports.map((p) => [p.name, p.containerPort]));
    t.ok(Object.values(ports).includes(listen), `${name}: containerPort ${listen} is the ${portFlag}`);
    for (const [probe, route] of [['livenessProbe', '/v2/health/live'], ['readinessProbe', '/v2/health/ready']]) {
      const p = c[probe]?.httpGet;
      const port = typeof p?.port === 'string' ? ports[p.port] : p?.port;
      t.ok(p?.path === route && port === listen, `${name}: ${probe} GET ${route} on ${listen}`);
    }
    t.ok(d.spec.template.spec.terminationGracePeriodSeconds >= 30, `${name}: time to drain on SIGTERM`);
    for (const mount of c.volumeMounts ?? []) {
      const used = c.args.filter((a) => a.startsWith(mount.mountPath));
      t.ok(d.spec.template.spec.volumes.some((v) => v.name === mount.name), `${name}: volume ${mount.name} is declared (${used.join(', ') || 'mounted'})`);
    }
  }
  const gpu = manifests.find((m) => m.kind === 'Deployment' && m.spec.template.spec.containers[0].resources?.limits?.['nvidia.com/gpu']);
  t.ok(gpu, 'a GPU Deployment');
  const [gc] = gpu.spec.template.spec.containers;
  t.equal(gc.resources.limits['nvidia.com/gpu'], 1, 'one GPU per pod: one model per GPU');
  t.equal(gc.env.find((e) => e.name === 'EVIT_DEVICE')?.value, 'cuda', 'EVIT_DEVICE=cuda: no silent CPU fallback');
  const svc = manifests.find((m) => m.kind === 'Service');
  const serve = manifests.find((m) => m.kind === 'Deployment' && m.metadata.name === svc.metadata.name);
  t.ok(Object.entries(svc.spec.selector).every(([k, v]) => serve.spec.template.metadata.labels[k] === v), 'the Service selects the serve pods');
  t.ok(serve.spec.template.spec.containers[0].ports.some((p) => p.name === svc.spec.ports[0].targetPort), 'and targets their named port');
  t.match(doc, /CUDA_VISIBLE_DEVICES=\d+ /, 'a process per GPU, pinned with CUDA_VISIBLE_DEVICES');
  t.end();
});

test('the KEDA ScaledObject scales the worker Deployment on the Redis lists BullMQ keeps the queue in', async (t) => {
  const so = manifests.find((m) => m.kind === 'ScaledObject');
  t.equal(so.apiVersion, 'keda.sh/v1alpha1', 'keda.sh/v1alpha1');
  const worker = manifests.find((m) => m.kind === 'Deployment' && m.spec.template.spec.containers[0].args[0] === 'worker');
  t.equal(so.spec.scaleTargetRef.name, worker.metadata.name, `it targets the worker Deployment (${worker.metadata.name})`);
  const args = worker.spec.template.spec.containers[0].args;
  const queue = argValue(args, '--queue');
  const redisHost = new URL(argValue(args, '--redis')).host;
  const lists = {};
  for (const tr of so.spec.triggers) {
    t.equal(tr.type, 'redis', 'a redis trigger');
    t.equal(tr.metadata.address, redisHost, `on the worker's Redis (${redisHost})`);
    t.ok(/^\d+$/.test(tr.metadata.listLength), `listLength is a count in a string ("${tr.metadata.listLength}")`);
    lists[tr.metadata.listName.split(':').pop()] = tr.metadata.listName;
  }
  t.deepEqual(Object.values(lists).sort(), [`bull:${queue}:active`, `bull:${queue}:wait`], `the wait and active lists of queue ${queue}`);

  // The lists are where BullMQ keeps jobs: waiting ones in :wait, held ones in :active.
  const redis = await startRedis();
  const connection = { url: redis.url, maxRetriesPerRequest: null };
  const client = new IORedis(redis.url);
  const q = new Queue(queue, { connection });
  const pngs = await Promise.all([1, 2, 3, 4, 5].map((s) => noisePng(s, 28, 28)));
  for (const png of pngs) await evit.enqueue(q, png);
  t.equal(await client.llen(lists.wait), 5, `5 jobs enqueued: LLEN ${lists.wait} = 5`);
  const model = await evit.loadModel(undefined, { threads: 1 });
  const w = evit.createWorker(model, { connection: redis.url, queue, concurrency: 2, batch: { maxBatchSize: 100, maxWaitMs: 60_000 } });
  await until('two held jobs', () => w.batcher.queued === 2);
  t.deepEqual([await client.llen(lists.active), await client.llen(lists.wait)], [2, 3], `a worker holding 2: LLEN ${lists.active} = 2, ${lists.wait} = 3`);
  await w.close();
  model.dispose();
  await q.close();
  client.disconnect();
  await redis.stop();
});

test('the Dockerfile: Debian slim, the prebuilt package, no compiler, files the package ships', (t) => {
  const [dockerfile] = blocks('dockerfile');
  t.ok(dockerfile, 'a Dockerfile block');
  const lines = dockerfile.split('\n').filter((l) => l.trim() && !l.trimStart().startsWith('#'));
  const from = lines.find((l) => l.startsWith('FROM '));
  t.match(from, /^FROM node:(\d+)-(bookworm|trixie)-slim$/, `${from}: Debian slim`);
  t.ok(Number(/node:(\d+)/.exec(from)[1]) >= Number(pkg.engines.node.replace(/\D/g, '')), `Node ${/node:(\d+)/.exec(from)[1]} meets engines.node ${pkg.engines.node}`);
  const runs = lines.filter((l) => l.startsWith('RUN ')).join('\n');
  t.doesNotMatch(runs, /apt-get|build-essential|g\+\+|gcc|cmake|make |python|build-from-source/, 'no compiler, build tools or source build');
  t.match(runs, new RegExp(`npm install --omit=dev[^\\n]* evit@${pkg.version.replace(/\./g, '\\.')}`), `installs evit@${pkg.version} without dev dependencies`);
  // Paths inside the installed package must be files the package ships (package.json "files").
  const shipped = (rel) => pkg.files.some((f) => rel === f || rel.startsWith(f.endsWith('/') ? f : `${f}/`)) && fs.existsSync(path.join(root, rel));
  const refs = [...dockerfile.matchAll(/node_modules\/evit\/([\w./-]+)/g)].map((m) => m[1].replace(/\)$/, ''));
  t.ok(refs.length >= 2, `references into the package: ${refs.join(', ')}`);
  for (const rel of refs) t.ok(shipped(rel), `${rel} is in the package`);
  const entry = JSON.parse(lines.find((l) => l.startsWith('ENTRYPOINT ')).slice('ENTRYPOINT '.length));
  t.equal(entry[1], '/app/node_modules/evit/dist/cli.js', 'the entrypoint is the CLI the package installs');
  t.equal(path.posix.relative('/app/node_modules/evit', entry[1]), pkg.bin.evit.replace(/^\.\//, ''), 'the package\'s own bin entry');
  const cmd = JSON.parse(lines.find((l) => l.startsWith('CMD ')).slice('CMD '.length));
  const r = spawnSync(process.execPath, [path.join(root, pkg.bin.evit), ...cmd, '--port', 'not-a-port'], { encoding: 'utf8' });
  t.match(r.stderr, /--port must be a number/, `CMD ${cmd.join(' ')} parses (a bad --port after it is what fails)`);
  const exposed = lines.find((l) => l.startsWith('EXPOSE ')).split(/\s+/).slice(1).map(Number);
  const containerPorts = manifests.filter((m) => m.kind === 'Deployment').flatMap((d) => d.spec.template.spec.containers[0].ports.map((p) => p.containerPort));
  t.ok(containerPorts.every((p) => exposed.includes(p)), `EXPOSE ${exposed.join(' ')} covers the containerPorts`);
  t.end();
});
