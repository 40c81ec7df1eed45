/**
 * Topology: a Braid volume lives in one node's engine, so its only topological domain is the
 * node, under the key `topology.braid.dev/node`. The node plugin reports the same key in
 * NodeGetInfo, which is how Kubernetes schedules a pod next to its volume.
 */
import type { Topology, TopologyRequirement } from './messages.ts';

export const TOPOLOGY_KEY = 'topology.braid.dev/node';

export function nodeTopology(nodeId: string): Topology {
  return { segments: { [TOPOLOGY_KEY]: nodeId } };
}

/**
 * True when `topology` satisfies the requirement. Only `requisite` binds: the spec lets the
 * plugin fall back from `preferred` to any requisite topology, or to any topology at all when no
 * requisite is given. A topology that says nothing about our key does not constrain the node.
 */
export function requirementAllows(requirement: TopologyRequirement | null, topology: Topology): boolean {
  if (requirement === null || requirement.requisite.length === 0) return true;
  return requirement.requisite.some((candidate) => segmentsMatch(candidate, topology));
}

/** True when every key the two topologies share has the same value. */
export function segmentsMatch(a: Topology, b: Topology): boolean {
  return Object.entries(a.segments).every(([key, value]) => b.segments[key] === undefined || b.segments[key] === value);
}
