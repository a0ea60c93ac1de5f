#!/usr/bin/env node
'use strict';
// Writes test/fixtures/fashion-mnist/: the first 500 images and labels of the
// Fashion-MNIST test set (Debian's dataset-fashion-mnist), uncompressed IDX.
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');

const SRC = '/usr/share/datasets/fashion-mnist';
const OUT = path.join(__dirname, '..', '..', 'test', 'fixtures', 'fashion-mnist');
const N = 500;

const x = zlib.gunzipSync(fs.readFileSync(path.join(SRC, 't10k-images-idx3-ubyte.gz')));
const y = zlib.gunzipSync(fs.readFileSync(path.join(SRC, 't10k-labels-idx1-ubyte.gz')));
const hx = Buffer.from(x.subarray(0, 16));
hx.writeUInt32BE(N, 4);
const hy = Buffer.from(y.subarray(0, 8));
hy.writeUInt32BE(N, 4);
fs.mkdirSync(OUT, { recursive: true });
fs.writeFileSync(path.join(OUT, `t10k-${N}-images-idx3-ubyte`), Buffer.concat([hx, x.subarray(16, 16 + N * 28 * 28)]));
fs.writeFileSync(path.join(OUT, `t10k-${N}-labels-idx1-ubyte`), Buffer.concat([hy, y.subarray(8, 8 + N)]));
console.log(`wrote ${N} images to ${path.relative(process.cwd(), OUT)}`);
