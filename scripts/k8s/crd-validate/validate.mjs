// Validates the custom resources in rendered manifests against schemas generated from their CRDs
// (prometheus-operator, KEDA). Core kinds are left to kubernetes-validate.
// Usage: node validate.mjs FILE.yaml...   Exit 1 on any invalid or unknown custom resource.
import { readFileSync } from "node:fs";
import yaml from "js-yaml";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";

const models = {
  "monitoring.coreos.com/v1": monitoring,
  "keda.sh/v1alpha1": keda,
};

let failures = 0;
const counts = {};
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(readFileSync(file, "utf8"))) {
    if (!doc || !models[doc.apiVersion]) continue;
    const id = `${file}: ${doc.kind}/${doc.metadata?.name}`;
    const Model = models[doc.apiVersion][doc.kind];
    if (typeof Model !== "function") {
      console.error(`FAIL ${id}: no schema for ${doc.apiVersion} ${doc.kind}`);
      failures++;
      continue;
    }
    try {
      new Model(doc).validate();
      counts[doc.kind] = (counts[doc.kind] ?? 0) + 1;
    } catch (err) {
      console.error(`FAIL ${id}: ${err.message}`);
      failures++;
    }
  }
}
const summary = Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", ") || "none";
console.log(`custom resources valid: ${summary}; invalid: ${failures}`);
process.exit(failures ? 1 : 0);
