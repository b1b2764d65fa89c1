#!/usr/bin/env node
// Run a TF.js layers model (model.json + *.bin) on a float32 input batch with TF.js itself,
// as the reference for checking pgvision's Keras conversion.
//   NODE_PATH=<dir with @tensorflow/tfjs> node tfjs_predict.js MODEL_DIR INPUT.f32 N H W OUT.json
"use strict";
const fs = require("fs");
const path = require("path");
const tf = require("@tensorflow/tfjs");

async function main() {
  const [dir, input, n, h, w, out] = process.argv.slice(2);
  const artifact = JSON.parse(fs.readFileSync(path.join(dir, "model.json"), "utf8"));
  const specs = artifact.weightsManifest.flatMap((g) => g.weights);
  const shards = artifact.weightsManifest.flatMap((g) => g.paths).map((p) => fs.readFileSync(path.join(dir, p)));
  const data = Buffer.concat(shards);
  const weightData = data.buffer.slice(data.byteOffset, data.byteOffset + data.length);
  const model = await tf.loadLayersModel(tf.io.fromMemory({
    modelTopology: artifact.modelTopology, weightSpecs: specs, weightData }));
  const raw = fs.readFileSync(input);
  const x = tf.tensor4d(new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4), [+n, +h, +w, 3]);
  const y = model.predict(x);
  fs.writeFileSync(out, JSON.stringify(await y.array()));
}
main().catch((err) => { console.error(err); process.exit(1); });
