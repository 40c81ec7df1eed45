/**
 * Requests are logged, and some of their fields must never be: `secrets` (the spec's
 * csi_secret fields, in every RPC that has them) and `mountFlags` (the spec says they may be
 * sensitive). We strip by field name because our csi.proto does not declare the csi_secret
 * option (see its header); a new secret field in a later spec version must be added here.
 */

/** Field names (camelCase, as decoded) whose values never reach a log line. */
export const REDACTED_FIELDS: ReadonlySet<string> = new Set(['secrets', 'mountFlags']);

export const REDACTED = '[redacted]';

/** Deep nesting in a request is a malformed or hostile message; we stop copying there. */
const MAX_DEPTH = 16;

/** A copy of `value` safe to log: redacted fields keep their key, lose their content. */
export function redact(value: unknown, depth = 0): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (depth >= MAX_DEPTH) return '[too deep]';
  if (Array.isArray(value)) return value.map((item) => redact(item, depth + 1));
  const copy: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(value)) {
    copy[key] = REDACTED_FIELDS.has(key) ? redactedField(field) : redact(field, depth + 1);
  }
  return copy;
}

/** Empty fields stay visibly empty: "no secrets were passed" is useful when debugging. */
function redactedField(field: unknown): unknown {
  if (field === null || field === undefined) return field;
  if (Array.isArray(field)) return field.length === 0 ? [] : REDACTED;
  if (typeof field === 'object') return Object.keys(field).length === 0 ? {} : REDACTED;
  return REDACTED;
}
