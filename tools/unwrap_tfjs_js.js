#!/usr/bin/env node
// nsfwjs ships each TF.js layers model as JS modules instead of model.json + .bin shards:
// model.min.js exports {modelTopology, weightsManifest}; each group1-shardNofM.min.js exports
// a base64 string. This writes the standard TF.js layout (model.json, *.bin) so that the
// Python importer only has to understand the documented format.
//   node unwrap_tfjs_js.js SRC_DIR DEST_DIR
"use strict";
const fs = require("fs");
const path = require("path");

const [src, dest] = process.argv.slice(2);
if (!src || !dest) {
  console.error("usage: unwrap_tfjs_js.js SRC_DIR DEST_DIR");
  process.exit(2);
}
const model = require(path.resolve(src, "model.min.js"));
if (!model.modelTopology || !model.weightsManifest) {
  console.error(`${src}/model.min.js does not export {modelTopology, weightsManifest}`);
  process.exit(1);
}
fs.mkdirSync(dest, { recursive: true });
const manifest = model.weightsManifest.map((group) => ({
  ...group,
  paths: group.paths.map((p) => {
    const encoded = require(path.resolve(src, `${p}.min.js`));
    if (typeof encoded !== "string") throw new Error(`${p}.min.js does not export a string`);
    const file = `${p}.bin`;
    fs.writeFileSync(path.join(dest, file), Buffer.from(encoded, "base64"));
    return file;
  }),
}));
fs.writeFileSync(
  path.join(dest, "model.json"),
  JSON.stringify({ format: "layers-model", modelTopology: model.modelTopology, weightsManifest: manifest })
);
console.log(`wrote ${dest}/model.json and ${manifest.reduce((n, g) => n + g.paths.length, 0)} weight shard(s)`);
