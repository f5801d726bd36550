// The package as an app installs it (issue 11, "Packaging and types"): `npm pack` makes the tarball
// from dist/ as `npm run build` left it, and little app projects (test/packaging/) are compiled
// against it with the repo's TypeScript. No network: each app's node_modules gets the extracted
// tarball, and every other package is linked from this repo's node_modules, placed as npm places
// it (deduplicated when the app's copy fits the range, nested under the package otherwise).
import { execFile, execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { promisify } from 'node:util'
import tap, { test } from 'tap'
import { testRedis, uniquePrefix } from './helpers/redis'

const root = resolve(__dirname, '..')
const repoModules = join(root, 'node_modules')
const run = promisify(execFile)
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

// Packing and four TypeScript compilations take a minute or two on a busy machine.
tap.setTimeout(300_000)

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

test('the tarball ships every Lua script of the Redis queue next to the code that loads it', async (t) => {
  // tsc copies no .lua file: the build does, and the Redis queue reads them when it loads.
  const scripts = join('lib', 'queues', 'redis', 'scripts')
  const sources = listFiles(join(root, scripts)).filter((file) => file.endsWith('.lua'))
  t.ok(sources.includes('add.lua') && sources.includes(join('lib', 'now-ms.lua')), 'the scripts and their snippets are found')
  const shipped = listFiles(packed()).filter((file) => file.endsWith('.lua'))
  t.same(shipped, sources.map((file) => join('dist', scripts, file)).sort(), 'each one, under dist/')
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

/**
 * Lays out an app project: its files, the extracted tarball, the app's own packages, and the
 * package's dependencies where npm would put them. Returns the app folder.
 */
function layOut (project: string, ownPackages: Record<string, string>): string {
  const app = join(work, 'apps', `${project}-${Object.values(ownPackages).join('-')}`)
  cpSync(join(__dirname, 'packaging', project), app, { recursive: true })
  const modules = join(app, 'node_modules')
  const installed = join(modules, 'fastify-taskqueue')
  cpSync(packed(), installed, { recursive: true })
  const link = (target: string, path: string): void => {
    mkdirSync(dirname(path), { recursive: true })
    symlinkSync(realpathSync(target), path, 'dir')
  }
  for (const [name, repoName] of Object.entries(ownPackages)) link(join(repoModules, repoName), join(modules, name))

  const manifest = readManifest(installed)
  for (const [name, range] of Object.entries(manifest.peerDependencies ?? {})) {
    if (!(name in ownPackages)) throw new Error(`the app has no ${name}, a peer dependency`)
    const { version } = readManifest(join(modules, name))
    if (!semver.satisfies(version, range)) throw new Error(`the app's ${name}@${version} does not meet the peer range ${range}`)
  }
  for (const [name, range] of Object.entries(manifest.dependencies ?? {})) {
    if (!semver.satisfies(readManifest(join(repoModules, name)).version, range)) throw new Error(`this repo's ${name} does not meet ${range}`)
    const appHasIt = existsSync(join(modules, name))
    if (appHasIt && semver.satisfies(readManifest(join(modules, name)).version, range)) continue
    link(join(repoModules, name), appHasIt ? join(installed, 'node_modules', name) : join(modules, name))
  }
  return app
}

test('require("fastify-taskqueue") from the tarball runs tasks on a Redis queue', async (t) => {
  // The installed package runs the Lua scripts it ships: a plain task, a named delayed one, and a
  // retry, which go through the add, ack-and-reserve, promote and retry scripts and their snippets.
  const redis = await testRedis()
  t.teardown(() => redis.close())
  // Its own set of packages, so its own folder: the type-checking tests lay out the same project.
  const app = layOut('cjs-app', { fastify: 'fastify', ioredis: 'ioredis' })
  const script = `
const Fastify = require('fastify')
const taskqueue = require('fastify-taskqueue')
const { TaskConflictError } = taskqueue
const [connection, prefix] = [JSON.parse(process.argv[1]), process.argv[2]]
const app = Fastify()
const ran = []
let tries = 0
app.register(taskqueue, { queues: [{ queue: 'packed', type: 'redis', prefix, ...connection }], consumers: [{ queue: 'packed', retryDelay: { min: 1, max: 5 } }] })
app.after(() => {
  app.post('/tasks/run', { config: { taskOnly: true } }, async (request) => {
    if (request.body.flaky && tries++ === 0) throw new TaskConflictError()
    ran.push({ name: request.body.name, retries: request.taskqueue.task.retries })
    return { ok: true }
  })
  app.post('/go', async (request) => {
    request.taskqueue.add('/tasks/run', { method: 'POST', payload: { name: 'plain' } })
    request.taskqueue.add('/tasks/run', { method: 'POST', payload: { name: 'named' }, id: 'named-1', delay: 50 })
    request.taskqueue.add('/tasks/run', { method: 'POST', payload: { name: 'flaky', flaky: true } })
    return { ok: true }
  })
})
;(async () => {
  await app.ready()
  await app.inject({ method: 'POST', url: '/go' })
  const deadline = Date.now() + 20000
  while (ran.length < 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  await app.close()
  console.log(JSON.stringify(ran.sort((a, b) => a.name.localeCompare(b.name))))
})().catch((error) => { console.error(error); process.exit(1) })
`
  const { stdout } = await run(process.execPath, ['-e', script, JSON.stringify(redis.connection), uniquePrefix()], { cwd: app, timeout: 60_000 })
  t.same(JSON.parse(stdout.trim()), [{ name: 'flaky', retries: 1 }, { name: 'named', retries: 0 }, { name: 'plain', retries: 0 }], 'each task ran once to the end, the flaky one after a retry')
})

test('the tarball ships the dashboard page, which the installed package serves', async (t) => {
  // tsc copies no .html, .css or .js of lib/dashboard/static: the build does, and the dashboard
  // reads them when it registers.
  const statics = join('lib', 'dashboard', 'static')
  const sources = listFiles(join(root, statics))
  t.same(sources, ['dashboard.css', 'dashboard.js', 'favicon.svg', 'index.html'], 'the page files are found')
  t.same(listFiles(packed()).filter((file) => file.startsWith(join('dist', statics))), sources.map((file) => join('dist', statics, file)), 'each one, under dist/')

  // Its own set of packages (no ioredis of the app's), so a folder of its own.
  const app = layOut('cjs-app', { fastify: 'fastify' })
  const script = `
const Fastify = require('fastify')
const { fastifyTaskqueue, taskqueueDashboard } = require('fastify-taskqueue')
const app = Fastify()
app.register(fastifyTaskqueue, { queues: [{ queue: 'packed' }], consumers: [] })
app.register(async (admin) => {
  admin.addHook('onRequest', async (request, reply) => { if (request.headers.authorization !== 'admin') await reply.code(401).send() })
  await admin.register(taskqueueDashboard)
}, { prefix: '/admin/taskqueue' })
;(async () => {
  const answers = {}
  for (const path of ['', '/dashboard.css', '/dashboard.js', '/favicon.svg', '/api/queues']) {
    const response = await app.inject({ url: '/admin/taskqueue' + path, headers: { authorization: 'admin' } })
    answers[path] = [response.statusCode, response.headers['content-type'], response.body.length > 0]
  }
  answers.queues = (await app.inject({ url: '/admin/taskqueue/api/queues', headers: { authorization: 'admin' } })).json()
  answers.outsider = (await app.inject('/admin/taskqueue')).statusCode
  await app.close()
  console.log(JSON.stringify(answers))
})().catch((error) => { console.error(error); process.exit(1) })
`
  const { stdout } = await run(process.execPath, ['-e', script], { cwd: app, timeout: 60_000 })
  t.same(JSON.parse(stdout.trim()), {
    '': [200, 'text/html; charset=utf-8', true],
    '/dashboard.css': [200, 'text/css; charset=utf-8', true],
    '/dashboard.js': [200, 'text/javascript; charset=utf-8', true],
    '/favicon.svg': [200, 'image/svg+xml', true],
    '/api/queues': [200, 'application/json; charset=utf-8', true],
    queues: [{ queue: 'packed', type: 'local', waiting: 0, delayed: 0, inFlight: 0, dead: 0, paused: false, oldestWaitingAge: null }],
    outsider: 401
  }, 'the page, its files and the API answer from the installed package, behind the app\'s hook')
})

const layouts = [
  { project: 'esm-app', what: 'an ESM app (type module, NodeNext): import taskqueue from' },
  { project: 'cjs-app', what: 'a CommonJS app (NodeNext): import = require, default import and require() in checkJs' }
]
const fastifies = [
  { repoName: 'fastify', what: 'the current Fastify 5' },
  { repoName: 'fastify-oldest', what: 'Fastify 5.0.0, the oldest 5.x' }
]

for (const { project, what } of layouts) {
  for (const { repoName, what: fastifyWhat } of fastifies) {
    // issue 11: TS2769 for the README's default import in an ESM NodeNext app; with an older
    // Fastify, `register` without a matching overload and no `request.taskqueue`; an ioredis 5 client refused.
    test(`${what}, on ${fastifyWhat}, type-checks against the tarball`, async (t) => {
      const app = layOut(project, { fastify: repoName, ioredis: 'ioredis', ioredis5: 'ioredis5', '@types/node': '@types/node' })
      const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
      const result = await run(process.execPath, [tsc, '-p', app, '--listFiles'], { cwd: app, timeout: 120_000 })
        .then(({ stdout }) => ({ code: 0, stdout }), (error: { code: number, stdout: string }) => ({ code: error.code, stdout: error.stdout }))
      const lines = result.stdout.split('\n')
      t.same(lines.filter((line) => /error TS\d+/.test(line)), [], 'no type error')
      t.equal(result.code, 0, 'tsc succeeded')
      const fastifyTypes = lines.filter((line) => line.endsWith('/fastify.d.ts'))
      t.same(fastifyTypes, [join(realpathSync(join(repoModules, repoName)), 'fastify.d.ts')], "one Fastify, the app's")
      t.ok(lines.some((line) => line.startsWith(join(app, 'node_modules', 'fastify-taskqueue', 'dist'))), 'the types come from the tarball')
    })
  }
}
