// Issue 12: no import cycle among the shipped sources (plugin.ts, lib/, types/), type-only imports
// included. A cycle makes the order of loading decide what a module sees of another, and ties
// files together that a newcomer should be able to read one at a time. The imports are read with
// the TypeScript compiler's own pre-processor: import, import type, export ... from, import(),
// require().
import { readdirSync, readFileSync, statSync } from 'node:fs'
import path from 'node:path'
import { test } from 'tap'
import ts from 'typescript'

const root = path.join(__dirname, '..')

/** The shipped sources, as paths relative to the repository. */
function shippedSources (): string[] {
  const files = ['plugin.ts']
  const walk = (folder: string): void => {
    for (const name of readdirSync(path.join(root, folder)).sort()) {
      const relative = path.posix.join(folder, name)
      if (statSync(path.join(root, relative)).isDirectory()) walk(relative)
      else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) files.push(relative)
    }
  }
  walk('lib')
  walk('types')
  return files
}

/** The source file a relative specifier names: `x.ts` or `x/index.ts`; undefined for a package. */
function resolve (from: string, specifier: string, known: ReadonlySet<string>): string | undefined {
  if (!specifier.startsWith('.')) return undefined
  const base = path.posix.normalize(path.posix.join(path.posix.dirname(from), specifier)).replace(/\.js$/, '')
  return [`${base}.ts`, `${base}/index.ts`].find((candidate) => known.has(candidate))
}

/** Each file with the shipped files it imports. */
export function importGraph (sources: Record<string, string>): Map<string, string[]> {
  const known = new Set(Object.keys(sources))
  const graph = new Map<string, string[]>()
  for (const [file, text] of Object.entries(sources)) {
    const { importedFiles } = ts.preProcessFile(text, true, true)
    const targets = importedFiles.map(({ fileName }) => resolve(file, fileName, known)).filter((target) => target !== undefined)
    graph.set(file, [...new Set(targets)])
  }
  return graph
}

/** Every distinct cycle, each as the files along it, back to its first. */
export function findCycles (graph: Map<string, string[]>): string[][] {
  const cycles = new Map<string, string[]>()
  const done = new Set<string>()
  const visit = (file: string, trail: string[]): void => {
    const at = trail.indexOf(file)
    if (at !== -1) {
      const loop = trail.slice(at)
      // The same cycle is met from each of its files: it is known by its smallest rotation.
      const start = loop.indexOf([...loop].sort()[0])
      const rotated = [...loop.slice(start), ...loop.slice(0, start)]
      cycles.set(rotated.join(' -> '), [...rotated, rotated[0]])
      return
    }
    if (done.has(file)) return
    for (const target of graph.get(file) ?? []) visit(target, [...trail, file])
    done.add(file)
  }
  for (const file of graph.keys()) visit(file, [])
  return [...cycles.values()]
}

test('the cycle finder names a cycle, type-only imports and re-exports included', async (t) => {
  const graph = importGraph({
    'plugin.ts': "import { a } from './lib/a'\nimport fp from 'fastify-plugin'",
    'lib/a.ts': "import type { B } from './b/index.js'",
    'lib/b/index.ts': "export { c } from '../c'",
    'lib/c.ts': "type A = import('./a').A",
    'types/index.ts': "import type { FastifyInstance } from 'fastify'"
  })
  t.same(graph.get('plugin.ts'), ['lib/a.ts'], 'a package is not a file of ours')
  t.same(findCycles(graph), [['lib/a.ts', 'lib/b/index.ts', 'lib/c.ts', 'lib/a.ts']])
  t.same(findCycles(importGraph({ 'lib/a.ts': "import './b'", 'lib/b.ts': "import type { C } from './c'", 'lib/c.ts': '' })), [], 'a chain is no cycle')
})

test('issue 12: no import cycle among plugin.ts, lib/ and types/', async (t) => {
  const files = shippedSources()
  t.ok(files.includes('types/index.ts') && files.includes('lib/taskqueue.ts'), 'the shipped sources are found')
  const graph = importGraph(Object.fromEntries(files.map((file) => [file, readFileSync(path.join(root, file), 'utf8')])))
  t.ok((graph.get('plugin.ts') ?? []).includes('lib/taskqueue.ts'), 'the imports are read')
  const cycles = findCycles(graph)
  t.same(cycles.map((cycle) => cycle.join(' -> ')), [], 'import cycles')
})

test('issue 12: types/ imports nothing from lib/', async (t) => {
  const files = shippedSources()
  const graph = importGraph(Object.fromEntries(files.map((file) => [file, readFileSync(path.join(root, file), 'utf8')])))
  const fromLib = files.filter((file) => file.startsWith('types/'))
    .flatMap((file) => (graph.get(file) ?? []).filter((target) => !target.startsWith('types/')).map((target) => `${file} -> ${target}`))
  t.same(fromLib, [], 'the public types stand alone: the classes in lib/ implement them')
})

test('issue 12: no shipped source is over 400 lines', async (t) => {
  const files = shippedSources()
  const long = files
    .map((file) => [file, readFileSync(path.join(root, file), 'utf8').split('\n').length - 1] as const)
    .filter(([, lines]) => lines > 400)
    .map(([file, lines]) => `${file}: ${lines} lines`)
  t.same(long, [], 'a file past 400 lines holds more than one concept: split it')
})
