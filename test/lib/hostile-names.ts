/**
 * Names that every layer must refuse (or, where a layer maps names, turn into safe ones):
 * traversal, separators, NUL and other control characters, terminal escapes, bidirectional
 * overrides, non-ASCII, upper case, a leading dot or dash, and lengths past 128. Shared by the
 * unit tests of engine/names.ts and csi/engine-name.ts and the end-to-end test of the daemon.
 */
export const HOSTILE_NAMES: readonly string[] = [
  '',
  '.',
  '..',
  '../etc/passwd',
  '../../x',
  'a/b',
  '/abs',
  'a\\b',
  'nul\0byte',
  'new\nline',
  'cr\rx',
  'tab\tx',
  'esc\u001b[31mred',
  'del\u007f',
  'bidi\u202eexe.txt',
  'zero\u200bwidth',
  'ünïcödé',
  '日本',
  'ＡＢＣ',
  'UPPER',
  '-rf',
  '.hidden',
  'space name',
  'quote"name',
  'a'.repeat(129),
  'x'.repeat(5000),
];
