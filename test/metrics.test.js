'use strict';
// Metrics on prom-client: label values come from fixed sets, so client input (keep rates, error
// codes) cannot add series without bound; the metrics can live in the host application's registry.
const test = require('tape');
const Fastify = require('fastify');
const { Registry } = require('prom-client');
const evit = require('../dist');
const { keepRateLabel, codeLabel, statusLabel } = require('../dist/serve/metrics');
const { tinyModel, tinyOptions } = require('./helpers/fixtures');
const { noisePng, request, post, metric, badPrometheusLines } = require('./helpers/serve');

let model;
test('setup', async (t) => {
  model = await evit.loadModel(tinyModel, tinyOptions);
  t.ok(model, 'tiny fixture loaded');
});

test('keep-rate, status and code labels take their values from fixed sets', (t) => {
  t.deepEqual([0.7, 0.5, 0.05, 1, 0.35].map((r) => keepRateLabel(r)), ['0.7', '0.5', '0.05', '1', '0.35'], 'multiples of 0.05 are labelled as they are');
  t.deepEqual([0.73, 0.123456, 0.70001, 1e-9].map((r) => keepRateLabel(r)), ['other', 'other', 'other', 'other'], 'any other rate is "other"');
  t.equal(keepRateLabel(0.66, new Set([0.66])), '0.66', 'a configured rate keeps its own label');
  t.equal(keepRateLabel(null), 'counts', 'explicit keep counts');
  const rates = new Set();
  for (let i = 0; i < 10_000; i++) rates.add(keepRateLabel((i + 1) / 10_000));
  t.equal(rates.size, 21, '10,000 distinct keep rates make 21 labels (20 on the grid and "other")');
  t.deepEqual([statusLabel(200), statusLabel(413), statusLabel(418)], ['200', '413', 'other'], 'statuses outside the known set are "other"');
  t.deepEqual([codeLabel('EVIT_BAD_INPUT'), codeLabel('EVIT_MADE_UP'), codeLabel(undefined)], ['EVIT_BAD_INPUT', 'EVIT_OTHER', 'EVIT_OTHER'], 'unknown codes are EVIT_OTHER');
  t.end();
});

test('a server under client-chosen keep rates keeps a bounded set of series', async (t) => {
  const app = evit.createServer({ model, batch: { maxWaitMs: 0 } });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  const png = await noisePng(3);
  const json = (keepRate) => Buffer.from(JSON.stringify({ image: png.toString('base64'), keepRate }));
  const rates = [0.61, 0.62, 0.63, 0.64, 0.66, 0.67, 0.68, 0.69, 0.5, 0.5, 0.7];
  for (const r of rates) t.equal((await post(base, 'application/json', json(r))).status, 200, `keepRate ${r}: 200`);
  const m = (await request(base, { method: 'GET', path: '/metrics' })).text;
  const series = m.split('\n').filter((l) => l.startsWith('evit_batches_total{'));
  t.deepEqual(series.map((l) => l.split(' ')[0]).sort(), ['evit_batches_total{keep_rate="0.5"}', 'evit_batches_total{keep_rate="0.7"}', 'evit_batches_total{keep_rate="other"}'],
    'three series for eleven requests at ten rates');
  t.equal(metric(m, 'evit_batches_total{keep_rate="other"}'), 8, 'the eight off-grid rates share "other"');
  t.equal(metric(m, 'evit_batches_total{keep_rate="0.5"}'), 2, 'rate 0.5 counted as itself');
  t.deepEqual(badPrometheusLines(m), [], 'every line is Prometheus text format');
  t.ok(metric(m, 'process_resident_memory_bytes') > 0 && m.includes('nodejs_eventloop_lag_p99_seconds'), 'prom-client\'s process and Node.js metrics are there');
  for (const name of ['evit_http_request_duration_seconds', 'evit_batch_size', 'evit_queue_delay_seconds', 'evit_batch_duration_seconds', 'evit_event_loop_delay_seconds'])
    t.ok(m.includes(`# TYPE ${name} histogram`), `${name} is a histogram`);
  for (const name of ['evit_keep_rate', 'evit_queue_depth', 'evit_batches_in_flight', 'evit_ready'])
    t.ok(m.includes(`# TYPE ${name} gauge`), `${name} is a gauge`);
  await app.close();
});

test('the plugin registers its metrics in the host application\'s registry', async (t) => {
  const registry = new Registry();
  const host = Fastify();
  await host.register(evit.evitPlugin, { model, prefix: '/vision', metrics: { registry } });
  const base = await host.listen({ host: '127.0.0.1', port: 0 });
  const png = await noisePng(5);
  t.equal((await post(base, 'image/png', png, '/vision/v1/classify')).status, 200, 'a request');
  t.equal((await post(base, 'text/plain', Buffer.from('x'), '/vision/v1/classify')).status, 415, 'a rejected one');
  const text = await registry.metrics();
  t.equal(metric(text, 'evit_http_requests_total{route="classify",code="200"}'), 1, 'the host\'s registry counts the request');
  t.equal(metric(text, 'evit_rejected_requests_total{route="classify",code="EVIT_UNSUPPORTED_MEDIA_TYPE"}'), 1, 'and the rejection, by code');
  t.equal(metric(text, 'evit_images_total'), 1, 'and the image');
  t.equal(metric(text, 'evit_ready'), 1, 'evit_ready 1');
  t.notOk(text.includes('process_resident_memory_bytes'), 'no process metrics forced into the host\'s registry');
  await host.close();
});

test('teardown', (t) => {
  model.dispose();
  t.end();
});
