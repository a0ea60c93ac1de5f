'use strict';
const path = require('node:path');

const dir = path.join(__dirname, '..', 'fixtures');
const fixture = (name) => path.join(dir, name);
const golden = require('../fixtures/golden.json');
const tinyModel = fixture('tiny-evit.safetensors');
/** Options that load the tiny test checkpoint as the goldens describe it. */
const tinyOptions = { numHeads: golden.model.numHeads };

module.exports = { fixture, golden, tinyModel, tinyOptions };
