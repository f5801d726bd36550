// The built package (issue 2): the package root resolves to built JavaScript that CommonJS
// (`require('fastify-taskqueue')` gives the plugin itself) and ESM (`import taskqueue, { ... }`)
// both load, and that runs a task end to end. Each check runs in a child process of its own, on
// dist/ as `npm run build` makes it.
import { execFile, execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { test } from 'tap'

const root = resolve(__dirname, '..')
const run = promisify(execFile)

/** Runs `node ...args` in the package root; resolves to what it printed last, as JSON. */
async function node (args: string[]): Promise<Record<string, unknown>> {
  const { stdout } = await run(process.execPath, args, { cwd: root, timeout: 30_000 })
  const lines = stdout.trim().split('\n')
  return JSON.parse(lines[lines.length - 1])
}

test('build', async (t) => {
  if (!existsSync(join(root, 'dist', 'plugin.js'))) {
    execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'ignore', timeout: 120_000 })
  }
  t.ok(existsSync(join(root, 'dist', 'plugin.js')), 'dist/plugin.js exists')
  t.ok(existsSync(join(root, 'dist', 'plugin.d.ts')), 'with its type declarations')
})

const cjsShape = `
const taskqueue = require(process.argv[1])
const meta = taskqueue[Symbol.for('plugin-meta')] || {}
console.log(JSON.stringify({
  type: typeof taskqueue,
  defaultIsPlugin: taskqueue.default === taskqueue,
  namedIsPlugin: taskqueue.fastifyTaskqueue === taskqueue,
  conflict: typeof taskqueue.TaskConflictError,
  conflictCode: new taskqueue.TaskConflictError().code,
  conflictStatus: new taskqueue.TaskConflictError().statusCode,
  closedCode: new taskqueue.ClosedError().code,
  schema: typeof taskqueue.TaskQueuePluginOptionsSchema,
  pluginName: meta.name,
  pluginFastify: meta.fastify,
  dashboard: typeof taskqueue.taskqueueDashboard,
  dashboardName: (taskqueue.taskqueueDashboard[Symbol.for('plugin-meta')] || {}).name,
  dashboardEncapsulated: taskqueue.taskqueueDashboard[Symbol.for('skip-override')] === false
}))
`

test('CommonJS: require() of the package root gives the plugin, with the named exports on it', async (t) => {
  for (const specifier of [root, 'fastify-taskqueue']) {
    const shape = await node(['-e', cjsShape, specifier])
    t.same(shape, {
      type: 'function',
      defaultIsPlugin: true,
      namedIsPlugin: true,
      conflict: 'function',
      conflictCode: 'FST_TASKQUEUE_CONFLICT',
      conflictStatus: 409,
      closedCode: 'FST_TASKQUEUE_CLOSED',
      schema: 'object',
      pluginName: 'fastify-taskqueue',
      pluginFastify: '5.x',
      dashboard: 'function',
      dashboardName: 'fastify-taskqueue-dashboard',
      dashboardEncapsulated: true
    }, `require(${JSON.stringify(specifier === root ? '<package root>' : specifier)})`)
  }
})

// issue 11, "Packaging and types": with `export =`, Node's ESM loader must still find every named
// export of the CommonJS build by reading it, or `import { ClosedError }` fails to link.
test('ESM: every value that require() hangs from the plugin is a named export of the same value', async (t) => {
  const shape = await node(['--input-type=module', '-e', `
import { createRequire } from 'node:module'
import * as esm from 'fastify-taskqueue'
const cjs = createRequire(process.cwd() + '/')('fastify-taskqueue')
const names = Object.keys(cjs).sort()
console.log(JSON.stringify({
  names,
  missing: names.filter((name) => !(name in esm)),
  different: names.filter((name) => esm[name] !== cjs[name]),
  defaultIsPlugin: esm.default === cjs
}))
`])
  t.same(shape.names, ['ClosedError', 'CrossSiteError', 'EnqueueFailedError', 'InvalidArgumentError', 'InvalidMethodError', 'InvalidOptionError', 'InvalidRequestError', 'InvalidUrlError', 'MetricsConflictError', 'NotRegisteredError', 'QueueFailedError', 'RedisUnavailableError', 'ScheduleFailedError', 'TaskConflictError', 'TaskQueuePluginOptionsSchema', 'UnknownQueueError', 'UnknownTaskError', 'UnsupportedError', 'UnsupportedMediaTypeError', 'default', 'fastifyTaskqueue', 'taskqueueChannels', 'taskqueueDashboard'], 'the values of the public API, as the namespace in plugin.ts declares them')
  t.same(shape.missing, [], 'each one an ESM named export')
  t.same(shape.different, [], 'of the same value')
  t.equal(shape.defaultIsPlugin, true, 'the default export is the plugin')
})

/** Registers the plugin on an app, queues a task from a request, and reports what ran. */
const endToEnd = (imports: string): string => `
${imports}
const app = Fastify()
await app.register(taskqueue, { consumers: [{ queue: 'default', retryDelay: { min: 1, max: 5 } }] })
const seen = []
let tries = 0
app.post('/tasks/welcome', { config: { taskOnly: true } }, async (request) => {
  tries++
  if (tries === 1) throw new TaskConflictError()
  seen.push({ task: request.taskqueue.task, body: request.body, lang: request.headers['x-lang'] })
  return { ok: true }
})
app.post('/signup', async (request) => ({ id: request.taskqueue.add('/tasks/welcome', { method: 'POST', headers: { 'x-lang': 'fi' } }) }))
const response = await app.inject({ method: 'POST', url: '/signup', payload: { user: 42 } })
await app.taskqueue.drain()
const outside = await app.inject({ method: 'POST', url: '/tasks/welcome' })
await app.close()
let closedCode
try { app.taskqueue.add('/tasks/welcome') } catch (error) { closedCode = error.code }
console.log(JSON.stringify({ id: response.json().id, tries, seen, outside: outside.statusCode, closedCode }))
`

function checkEndToEnd (t: Parameters<Parameters<typeof test>[0]>[0], result: Record<string, unknown>): void {
  const id = result.id as string
  t.match(id, /^[0-9a-f-]{36}$/, 'add() returned a UUID')
  t.equal(result.tries, 2, 'the TaskConflictError of the first try was retried')
  t.equal((result.seen as unknown[]).length, 1, 'the task ran once to the end')
  t.match(result.seen, [{ task: { id, queue: 'default', retries: 1, eta: String }, body: { user: 42 }, lang: 'fi' }], 'with its task mark, body and headers')
  t.equal(result.outside, 404, 'the task-only route is hidden from outside requests')
  t.equal(result.closedCode, 'FST_TASKQUEUE_CLOSED')
}

test('ESM: import taskqueue, { TaskConflictError } from "fastify-taskqueue" runs a task end to end', async (t) => {
  const result = await node(['--input-type=module', '-e', endToEnd(`
import taskqueue, { TaskConflictError, fastifyTaskqueue } from 'fastify-taskqueue'
import Fastify from 'fastify'
if (fastifyTaskqueue !== taskqueue) throw new Error('fastifyTaskqueue is not the default export')
`)])
  checkEndToEnd(t, result)
})

test('CommonJS: require("fastify-taskqueue") runs a task end to end', async (t) => {
  // An async function, for the awaits of the shared script.
  const script = `(async () => {${endToEnd(`
const taskqueue = require('fastify-taskqueue')
const { TaskConflictError } = require('fastify-taskqueue')
const Fastify = require('fastify')
`)}})().catch((error) => { console.error(error); process.exit(1) })`
  checkEndToEnd(t, await node(['-e', script]))
})
