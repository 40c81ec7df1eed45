/**
 * Which kernel module files a guest must load, and in what order, read from the kernel's own
 * `modules.dep` (the file depmod writes: one line per module, "path: dep dep ...", paths
 * relative to /lib/modules/VERSION). Loading with plain `insmod` needs every module after all
 * of its dependencies, which is a depth-first order over that graph.
 */

/** Parses modules.dep into module name → { path, deps (paths) }. */
export function parseModulesDep(text: string): Map<string, { path: string; deps: string[] }> {
  const byName = new Map<string, { path: string; deps: string[] }>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon < 0) throw new Error(`modules.dep: no ":" in line ${JSON.stringify(line)}`);
    const path = line.slice(0, colon);
    const deps = line.slice(colon + 1).trim().split(/\s+/).filter((d) => d !== '');
    byName.set(moduleName(path), { path, deps });
  }
  return byName;
}

/** "kernel/fs/ext4/ext4.ko.xz" → "ext4"; modprobe treats "-" and "_" alike, so do we. */
export function moduleName(path: string): string {
  const file = path.slice(path.lastIndexOf('/') + 1);
  return file.replace(/\.ko(\.(xz|gz|zst))?$/, '').replace(/-/g, '_');
}

/**
 * The paths to insmod, in a working order, for the `wanted` modules and everything they depend
 * on. A wanted module missing from modules.dep is an error (the kernel may have it built in;
 * the caller checks the kernel config first and asks only for modules).
 */
export function moduleLoadOrder(modulesDep: string, wanted: readonly string[]): string[] {
  const graph = parseModulesDep(modulesDep);
  const pathToName = new Map<string, string>();
  for (const [name, entry] of graph) pathToName.set(entry.path, name);
  const order: string[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  const visit = (name: string, neededBy: string | null): void => {
    if (done.has(name)) return;
    const entry = graph.get(name);
    if (!entry) throw new Error(`kernel module ${name}${neededBy ? ` (needed by ${neededBy})` : ''} is not in modules.dep`);
    if (visiting.has(name)) throw new Error(`modules.dep has a dependency cycle through ${name}`);
    visiting.add(name);
    for (const dep of entry.deps) visit(pathToName.get(dep) ?? moduleName(dep), name);
    visiting.delete(name);
    done.add(name);
    order.push(entry.path);
  };
  for (const name of wanted) visit(name.replace(/-/g, '_'), null);
  return order;
}
