'use strict';
/**
 * Fashion-MNIST in its original IDX format: the full test set from Debian's
 * dataset-fashion-mnist package (gzip), or the 500-image slice committed under
 * test/fixtures/fashion-mnist (raw). Images are 28×28 uint8, white on black.
 */
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');

const DEBIAN_DIR = '/usr/share/datasets/fashion-mnist';
const SLICE_DIR = path.join(__dirname, '..', '..', 'test', 'fixtures', 'fashion-mnist');

function parseIdx(buf, file) {
  if (buf.length < 4 || buf[0] !== 0 || buf[1] !== 0 || buf[2] !== 0x08) throw new Error(`${file}: not an IDX file of uint8`);
  const ndim = buf[3];
  const dims = [];
  for (let i = 0; i < ndim; i++) dims.push(buf.readUInt32BE(4 + 4 * i));
  const offset = 4 + 4 * ndim;
  const count = dims.reduce((a, b) => a * b, 1);
  if (buf.length !== offset + count) throw new Error(`${file}: ${buf.length - offset} data bytes, header says ${count}`);
  return { dims, data: new Uint8Array(buf.buffer, buf.byteOffset + offset, count) };
}

function readIdx(file) {
  let buf = fs.readFileSync(file);
  if (file.endsWith('.gz')) buf = zlib.gunzipSync(buf);
  return parseIdx(buf, file);
}

function load(images, labels) {
  const x = readIdx(images);
  const y = readIdx(labels);
  if (x.dims.length !== 3 || y.dims.length !== 1 || x.dims[0] !== y.dims[0])
    throw new Error(`${images} / ${labels}: shapes ${x.dims} and ${y.dims} do not match`);
  return { count: x.dims[0], height: x.dims[1], width: x.dims[2], images: x.data, labels: y.data };
}

/** The 10,000-image test set from Debian's package; throws with the install command when absent. */
function loadDebianTestSet(dir = DEBIAN_DIR) {
  const images = path.join(dir, 't10k-images-idx3-ubyte.gz');
  if (!fs.existsSync(images))
    throw new Error(`the Fashion-MNIST test set is not at ${dir}: install it with \`sudo apt-get install dataset-fashion-mnist\``);
  return load(images, path.join(dir, 't10k-labels-idx1-ubyte.gz'));
}

/** The committed slice: the first 500 images of the test set. */
function loadTestSlice() {
  return load(path.join(SLICE_DIR, 't10k-500-images-idx3-ubyte'), path.join(SLICE_DIR, 't10k-500-labels-idx1-ubyte'));
}

/** Images [from, to) as a normalised float32 batch [n, 1, H, W] (ToTensor + Normalize, as the card says). */
function normalisedBatch(set, from, to, mean, std) {
  const px = set.height * set.width;
  const out = new Float32Array((to - from) * px);
  for (let i = 0; i < out.length; i++) out[i] = (set.images[from * px + i] / 255 - mean) / std;
  return { data: out, shape: [to - from, 1, set.height, set.width] };
}

module.exports = { loadDebianTestSet, loadTestSlice, normalisedBatch, parseIdx, DEBIAN_DIR, SLICE_DIR };
