#!/usr/bin/env node
// Offline validation of rendered Gateway API manifests against the official schema.
//
// The schema comes from the npm package @kubernetes-models/gateway-api (pinned in
// package-lock.json; its 0.5.x line carries the Gateway API v1.0 standard CRDs), so a
// fresh machine gets it with `npm ci --ignore-scripts` in this folder. Usage:
//
//   node tools/k8s-validate/validate.mjs manifests/prod/*.yaml      # one line per document
//   node tools/k8s-validate/validate.mjs --json - < docs.json        # a JSON array in, JSON out
//
// Two checks per document, as an API server with strict field validation would make:
//   1. the package's own validation (types, required fields, enums, bounds, patterns);
//   2. no field the schema does not know (a typo such as `weigth` is pruned by a cluster
//      and would silently route with the default weight 1).
// CEL rules (x-kubernetes-validations) are not JSON Schema and are not checked here.
// Exit code: 0 every document valid, 1 some document invalid, 2 bad input.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import vm from "node:vm";

const require = createRequire(import.meta.url);
const YAML = require("yaml");
const gateway = require("@kubernetes-models/gateway-api");

const API_VERSIONS = new Set(["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"]);

function modelFor(doc) {
  if (!doc || typeof doc !== "object" || !API_VERSIONS.has(doc.apiVersion)) return null;
  const version = doc.apiVersion.split("/")[1];
  const group = gateway.gatewayNetworkingK8sIo?.[version] ?? null;
  return group && typeof group[doc.kind] === "function" ? { Model: group[doc.kind], version } : null;
}

// The package keeps each kind's schema in a module-level literal; read it from the
// installed file (pinned by the lockfile) to walk the fields it declares.
const schemaCache = new Map();
function schemaFor(version, kind) {
  const key = `${version}/${kind}`;
  if (!schemaCache.has(key)) {
    const pkg = dirname(require.resolve("@kubernetes-models/gateway-api/package.json"));
    const text = readFileSync(join(pkg, "gateway.networking.k8s.io", version, `${kind}.js`), "utf8");
    const start = text.indexOf("const schema = {");
    const end = text.indexOf("\n};\n", start);
    if (start < 0 || end < 0) throw new Error(`${key}: schema literal not found in the installed package`);
    schemaCache.set(key, vm.runInNewContext("(" + text.slice(start + "const schema = ".length, end + 2) + ")"));
  }
  return schemaCache.get(key);
}

function unknownFields(value, schema, path, out) {
  if (!schema || typeof schema !== "object") return;
  if (Array.isArray(value)) {
    if (schema.items) value.forEach((v, i) => unknownFields(v, schema.items, `${path}[${i}]`, out));
    return;
  }
  if (!value || typeof value !== "object" || !schema.properties) return;
  if (schema.additionalProperties || schema["x-kubernetes-preserve-unknown-fields"]) return;
  for (const [k, v] of Object.entries(value)) {
    const sub = schema.properties[k];
    const at = path ? `${path}.${k}` : k;
    if (sub === undefined) out.push(`${at}: unknown field (not in the Gateway API schema)`);
    else if (k !== "metadata") unknownFields(v, sub, at, out);
  }
}

function ajvErrors(err) {
  const errors = Array.isArray(err?.errors) ? err.errors : [];
  if (!errors.length) return [String(err?.message ?? err)];
  return errors.map((e) => {
    const at = (e.instancePath || "").replace(/^\//, "").replace(/\/(\d+)(?=\/|$)/g, "[$1]").replace(/\//g, ".");
    return `${at || "(document)"}: ${e.message}`;
  });
}

export function check(doc) {
  const found = modelFor(doc);
  const name = doc?.metadata?.name ?? "?";
  const result = { kind: doc?.kind ?? "?", name, errors: [] };
  if (!found) {
    result.errors.push(`apiVersion ${JSON.stringify(doc?.apiVersion)} kind ${JSON.stringify(doc?.kind)}: not a Gateway API kind this package knows`);
    return result;
  }
  try {
    new found.Model(doc).validate();
  } catch (err) {
    result.errors.push(...ajvErrors(err));
  }
  const extra = [];
  unknownFields(doc, schemaFor(found.version, doc.kind), "", extra);
  result.errors.push(...extra);
  return result;
}

function readDocuments(file) {
  const text = readFileSync(file === "-" ? 0 : file, "utf8");
  if (json) {
    const data = JSON.parse(text);
    return Array.isArray(data) ? data : [data];
  }
  return YAML.parseAllDocuments(text).map((d) => {
    if (d.errors.length) throw new Error(d.errors[0].message);
    return d.toJS();
  }).filter((d) => d !== null);
}

const args = process.argv.slice(2);
const json = args.includes("--json");
const files = args.filter((a) => a !== "--json");
if (!files.length) {
  process.stderr.write("usage: validate.mjs [--json] FILE... (- for stdin)\n");
  process.exit(2);
}
const results = [];
for (const file of files) {
  let docs;
  try {
    docs = readDocuments(file);
  } catch (err) {
    process.stderr.write(`${file}: cannot read: ${String(err.message).split("\n")[0]}\n`);
    process.exit(2);
  }
  docs.forEach((doc, index) => results.push({ file, index, ...check(doc) }));
}
if (json) {
  process.stdout.write(JSON.stringify(results) + "\n");
} else {
  for (const r of results) {
    const where = `${r.file}#${r.index} ${r.kind}/${r.name}`;
    if (!r.errors.length) process.stdout.write(`ok      ${where}\n`);
    for (const e of r.errors) process.stdout.write(`invalid ${where}: ${e}\n`);
  }
}
process.exit(results.some((r) => r.errors.length) ? 1 : 0);
