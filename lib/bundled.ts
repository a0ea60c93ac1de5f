/**
 * The model shipped in the package: a ViT trained with EViT on Fashion-MNIST
 * (models/fashion-mnist: weights and the config.json model card). loadModel()
 * and `evit classify` use it when no weights are named.
 */
import * as path from 'node:path';

export const BUNDLED_MODEL = path.join(__dirname, '..', 'models', 'fashion-mnist', 'model.safetensors');
