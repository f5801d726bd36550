// The package as an app installs it (issue 11, "Packaging and types"): `npm pack` makes the tarball
// from dist/ as `npm run build` left it, and the tests read what it holds. No network.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import tap, { test } from 'tap'

const root = resolve(__dirname, '..')
const repoModules = join(root, 'node_modules')
// Typed here: semver ships no types of its own.
const semver = require('semver') as { satisfies (version: string, range: string): boolean }

interface Manifest {
  name: string
  version: string
  license?: string
  scripts?: Record<string, string>
  dependencies?: Record<string, string>
  peerDependencies?: Record<string, string>
  optionalDependencies?: Record<string, string>
  repository?: unknown
  homepage?: string
  bugs?: unknown
  files?: string[]
}

function readManifest (dir: string): Manifest {
  return JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
}

/** Every file under `dir`, as paths relative to it. */
function listFiles (dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)))
    .sort()
}

const work = mkdtempSync(join(tmpdir(), 'taskqueue-tarball-'))
tap.teardown(() => rmSync(work, { recursive: true, force: true }))

/** Packs the package once (scripts skipped: `npm test` built dist/ already) and extracts it. */
function packed (): string {
  const extracted = join(work, 'package')
  if (existsSync(extracted)) return extracted
  if (!existsSync(join(root, 'dist', 'plugin.js'))) {
    execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'ignore', timeout: 120_000 })
  }
  const out = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: root, encoding: 'utf8', timeout: 120_000 })
  const [{ filename }] = JSON.parse(out) as Array<{ filename: string }>
  execFileSync('tar', ['-xzf', join(work, filename), '-C', work], { timeout: 60_000 })
  return extracted
}

test('the tarball ships a LICENSE, its links, and no source map without its source', async (t) => {
  const pkg = packed()
  const files = listFiles(pkg)
  const license = files.includes('LICENSE') ? readFileSync(join(pkg, 'LICENSE'), 'utf8') : ''
  t.match(license, /^MIT License\n[\s\S]*Permission is hereby granted/, 'LICENSE holds the MIT license text')
  const manifest = readManifest(pkg)
  t.equal(manifest.license, 'MIT')
  t.match(manifest.repository, { type: 'git', url: /fastify-taskqueue/ }, 'repository')
  t.match(manifest.homepage, /fastify-taskqueue/, 'homepage')
  t.match(manifest.bugs, { url: /fastify-taskqueue/ }, 'bugs')
  t.ok(files.includes(join('dist', 'plugin.d.ts')), 'the type declarations')

  // A map whose sources are not in the tarball sends debuggers and stack-trace tools to files
  // that do not exist: every source a shipped map names must be shipped too.
  const maps = files.filter((file) => file.endsWith('.map'))
  const missing = maps.flatMap((map) => {
    const { sources } = JSON.parse(readFileSync(join(pkg, map), 'utf8')) as { sources: string[] }
    return sources.map((source) => join(dirname(map), source)).filter((source) => !files.includes(source))
  })
  t.same(missing, [], 'no map names a source that is not shipped')
  t.same(files.filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts')), [], 'no TypeScript source is shipped')
})

test('installing the package runs no script of its own', async (t) => {
  // npm runs these when an app installs the package (and npm 11 warns of each one, `prepare`
  // included, at every install): building happens in `prepack`, before the tarball is made.
  const { scripts = {} } = readManifest(packed())
  for (const name of ['preinstall', 'install', 'postinstall', 'prepare']) {
    t.notOk(name in scripts, `no "${name}" script`)
  }
  t.equal(scripts.prepack, 'npm run build', 'the tarball is built when it is packed')
})

/** The packages a dependency closure reaches, read from this repo's installed copies. */
function closure (dependencies: Record<string, string>): Set<string> {
  const seen = new Set<string>()
  const pending = Object.keys(dependencies)
  while (pending.length > 0) {
    const name = pending.pop() as string
    if (seen.has(name)) continue
    seen.add(name)
    const manifest = readManifest(join(repoModules, name))
    pending.push(...Object.keys({ ...manifest.dependencies, ...manifest.optionalDependencies }))
  }
  return seen
}

test('fastify is a peer of the app: the package brings no Fastify of its own', async (t) => {
  // issue 11: an app on an older Fastify 5 minor got a second Fastify, nested under the package.
  const manifest = readManifest(packed())
  t.equal(manifest.peerDependencies?.fastify, '^5.0.0', 'fastify is a peer dependency')
  t.ok(semver.satisfies(readManifest(join(repoModules, 'fastify-oldest')).version, '^5.0.0'), 'which the oldest Fastify 5 meets')
  const reached = closure({ ...manifest.dependencies, ...manifest.optionalDependencies })
  t.notOk(reached.has('fastify'), 'no dependency, direct or not, is fastify')
})
