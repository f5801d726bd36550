// The benchmark of fastify-taskqueue: every figure of one table measured in one run, each
// scenario in a fresh process (bench/scenarios.mjs), the request-path ones with autocannon against
// an app listening in a process of its own (bench/http-server.mjs). See bench/README.md.
//
//   npm run build && npm run bench            short run (about 6 minutes on 2 cores)
//   npm run bench -- --full                   bigger N, longer HTTP runs
//   npm run bench -- --only=dispatch,deep     some sections only: dispatch (1-3), enqueue (3), http (4), deep (5-6), steering (7), consumers (11)
//   npm run bench -- --only=scale             scale-out (10): 1, 2 and 4 consumer processes, one Redis queue and a Redis Cluster
//   npm run bench -- --no-redis               the local queue only
//
// Progress goes to stderr; the table (markdown) to stdout and, with every raw figure and the
// machine, to bench/results/latest.json.
import { fork, execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { randomBytes } from 'node:crypto'
import os from 'node:os'
import autocannon from 'autocannon'
import { startRedis } from './redis-server.mjs'
import { scaleCluster, scaleOneQueue } from './scale.mjs'
import { clientBody, clientHeaders, deletePrefix, median, redisClient, slimHeaders } from './common.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const args = process.argv.slice(2)
const full = args.includes('--full')
const only = args.find((arg) => arg.startsWith('--only='))?.slice('--only='.length).split(',')
const wanted = (section) => only === undefined || only.includes(section)
const sections = ['dispatch', 'enqueue', 'http', 'deep', 'steering', 'observed', 'flow', 'scale', 'consumers']
const unknown = only?.filter((section) => !sections.includes(section)) ?? []
if (unknown.length > 0) throw new Error(`--only: unknown section ${unknown.join(', ')}; sections are ${sections.join(', ')}`)

const config = full
  ? {
      dispatch: { n: 50_000, n1: 25_000, redisN: 50_000, redisN1: 25_000, reps: 5, warmup: 10_000 },
      redisEnqueue: { n: 20_000, batch: 100, warmup: 5_000 },
      requestEnqueue: { n: 20_000, reps: 3, warmup: 5_000, concurrency: 8 },
      deep: { small: 1_000, large: 100_000, window: 1_000, skip: 100, reps: 21 },
      steering: { n: 100_000, calls: 5_000, concurrency: 32 },
      http: { duration: 5, rounds: 5, warmup: 3, connections: 100 },
      observed: { n: 50_000, redisN: 50_000, concurrency: 8, reps: 5, warmup: 10_000 },
      flow: { n: 30_000, redisN: 30_000, concurrency: 8, reps: 5 },
      scale: { n: 4_000, reps: 5, processes: [1, 2, 4], concurrentLimit: 8, taskMs: 20, warmup: 3_000 },
      consumers: { n: 2_000, many: 32 }
    }
  : {
      dispatch: { n: 8_000, n1: 4_000, redisN: 8_000, redisN1: 4_000, reps: 3, warmup: 2_000 },
      redisEnqueue: { n: 5_000, batch: 100, warmup: 2_000 },
      requestEnqueue: { n: 5_000, reps: 2, warmup: 2_000, concurrency: 8 },
      deep: { small: 1_000, large: 100_000, window: 1_000, skip: 100, reps: 8 },
      steering: { n: 20_000, calls: 2_000, concurrency: 32 },
      http: { duration: 2, rounds: 2, warmup: 1, connections: 100 },
      observed: { n: 8_000, redisN: 8_000, concurrency: 8, reps: 3, warmup: 2_000 },
      flow: { n: 6_000, redisN: 6_000, concurrency: 8, reps: 3 },
      // n: tasks per queue; one process (8 slots of 20 ms: at most 400 tasks/s) takes about 6 s.
      scale: { n: 2_000, reps: 3, processes: [1, 2, 4], concurrentLimit: 8, taskMs: 20, warmup: 1_000 },
      consumers: { n: 500, many: 32 }
    }

const runId = randomBytes(4).toString('hex')
const prefixOf = (name) => `tq-bench-${runId}-${name}`

function progress (message) {
  process.stderr.write(`[bench ${((performance.now() - startedAt) / 1000).toFixed(1)}s] ${message}\n`)
}

/** Runs one scenario in a fresh process and resolves with its result. */
function scenario (name, params, execArgv = []) {
  return new Promise((resolve, reject) => {
    const child = fork(join(here, 'scenarios.mjs'), [name, JSON.stringify(params)], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    let answer
    child.on('message', (message) => { answer = message })
    child.on('error', reject)
    child.on('exit', (code) => {
      if (answer?.result !== undefined) resolve(answer.result)
      else reject(new Error(`scenario ${name} failed (exit code ${code}): ${answer?.error ?? 'no result'}`))
    })
  })
}

/** Starts bench/http-server.mjs and resolves with `{ port, request(cmd), close() }`. */
function httpServer (options) {
  return new Promise((resolve, reject) => {
    const child = fork(join(here, 'http-server.mjs'), [JSON.stringify(options)], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    const replies = []
    const request = (cmd) => new Promise((resolve) => {
      replies.push(resolve)
      child.send({ cmd })
    })
    child.once('error', reject)
    child.once('exit', (code) => reject(new Error(`http server exited with code ${code}`)))
    child.once('message', ({ port }) => {
      child.on('message', (message) => replies.shift()?.(message))
      resolve({
        port,
        request,
        close: async () => {
          child.removeAllListeners('exit')
          const exited = new Promise((resolve) => child.once('exit', resolve))
          await request('close')
          await exited
        }
      })
    })
  })
}

function cannon (port, route, duration) {
  return autocannon({
    url: `http://127.0.0.1:${port}${route}`,
    method: 'POST',
    headers: clientHeaders(),
    body: clientBody,
    connections: config.http.connections,
    pipelining: 1,
    duration
  })
}

/**
 * Runs autocannon against each of `variants` ({ name, server, route }: the options of
 * bench/http-server.mjs and the route to load), each on a server of its own, warmed up on its
 * route only (a server that has just queued and dispatched thousands of tasks answers more slowly
 * for a while, which would count against another route). Then `rounds` rounds of one run of each,
 * the order turning by one each round, so that no variant always runs first after a pause. Each
 * run is followed by a settle (the queue emptied), so nothing carries over into the next.
 */
async function httpRounds (variants) {
  const servers = {}
  const runs = Object.fromEntries(variants.map(({ name }) => [name, []]))
  try {
    for (const { name, server } of variants) servers[name] = await httpServer(server)
    for (const { name, route } of variants) {
      await cannon(servers[name].port, route, config.http.warmup)
      await servers[name].request('settle')
    }
    for (let round = 0; round < config.http.rounds; round++) {
      const turn = variants.map((_, i) => variants[(i + round) % variants.length])
      for (const { name, route } of turn) {
        const result = await cannon(servers[name].port, route, config.http.duration)
        const { waiting, cpu, cpuSystem, heapUsed } = await servers[name].request('settle')
        const failed = result.errors + result.timeouts + result.non2xx
        if (failed > 0) throw new Error(`${name} ${route}: ${failed} requests failed`)
        runs[name].push({
          rps: result.requests.average,
          p50: result.latency.p50,
          p99: result.latency.p99,
          requests: result.requests.total,
          // The server's CPU time per request (µs): much less moved than requests/s by other
          // processes taking the cores.
          cpu: cpu / result.requests.total,
          // Of which the kernel's (system time): the sockets' reads and writes, mostly.
          cpuSystem: cpuSystem / result.requests.total,
          // Tasks still waiting when the run ended: the backlog a running consumer did not keep up with.
          waitingAfter: waiting,
          // The server's heap once its queue was emptied: what a run left behind.
          heapAfter: heapUsed
        })
      }
    }
  } finally {
    for (const server of Object.values(servers)) await server.close()
  }
  return runs
}

/** Medians of the runs of one variant, and the median of the per-round ratios of `runs` to `base`. */
const summary = (runs) => Object.fromEntries(['rps', 'p50', 'p99', 'cpu', 'cpuSystem', 'waitingAfter', 'heapAfter'].map((key) => [key, median(runs.map((run) => run[key]))]))
const roundRatios = (runs, base) => ({
  rpsRatio: median(runs.map((run, round) => run.rps / base[round].rps)),
  p99Ratio: median(runs.map((run, round) => run.p99 / base[round].p99)),
  // As for the dispatch rows: base CPU per request / this one's, what the requests/s ratio would be
  // if nothing else used the cores.
  cpuRatio: median(runs.map((run, round) => base[round].cpu / run.cpu))
})

/**
 * 4. Real HTTP requests to the route that queues one task and to the same route queuing none,
 * each on a server of its own with the same `options`; the ratios (one / none) are the medians of
 * the ratios of each round's pair of runs.
 */
async function requestPath (options) {
  const runs = await httpRounds([
    { name: 'none', server: options, route: '/enqueue/none' },
    { name: 'one', server: options, route: '/enqueue/one' }
  ])
  return { none: summary(runs.none), one: summary(runs.one), ...roundRatios(runs.one, runs.none), runs }
}

/**
 * 4. The plugin's tax on a route that queues nothing: POST /enqueue/none over HTTP in an app
 * without the plugin, in one with it (a local queue, its consumer running and idle), and in one
 * with metrics and tracing on too; ratios to the app without it, per round.
 */
async function pluginTax () {
  const route = '/enqueue/none'
  const runs = await httpRounds([
    { name: 'bare', server: { plugin: false }, route },
    { name: 'plugin', server: { type: 'local', consumer: true }, route },
    { name: 'observed', server: { type: 'local', consumer: true, observed: true }, route }
  ])
  return {
    bare: summary(runs.bare),
    plugin: { ...summary(runs.plugin), ...roundRatios(runs.plugin, runs.bare) },
    observed: { ...summary(runs.observed), ...roundRatios(runs.observed, runs.bare) },
    runs
  }
}

function gitVersion () {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: here, encoding: 'utf8' }).trim()
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'lib', 'plugin.ts', 'types'], { cwd: join(here, '..'), encoding: 'utf8' }).trim() !== ''
    return dirty ? `${commit} (lib modified)` : commit
  } catch {
    return 'unknown'
  }
}

const startedAt = performance.now()
const loadBefore = os.loadavg()
const results = {}
const notes = []
let redis = { skipped: 'not needed' }
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    progress(`${signal}: stopping`)
    Promise.resolve(redis.stop?.()).finally(() => process.exit(130))
  })
}

try {
  if (args.includes('--no-redis')) redis = { skipped: '--no-redis' }
  else {
    redis = await startRedis()
    if (redis.skipped !== undefined) notes.push(`Redis rows skipped: ${redis.skipped}`)
    else progress(`redis ${redis.version} ${redis.own ? 'started on a unix socket' : 'at REDIS_URL'}`)
  }
  const withRedis = redis.skipped === undefined
  const connection = redis.connection

  if (wanted('dispatch')) {
    for (const concurrency of [1, 8]) {
      progress(`ceiling, local${withRedis ? ' and redis' : ''} dispatch, concurrency ${concurrency}, runs interleaved`)
      const n = concurrency === 1 ? config.dispatch.n1 : config.dispatch.n
      const redisN = concurrency === 1 ? config.dispatch.redisN1 : config.dispatch.redisN
      const { reps, warmup } = config.dispatch
      const redisOptions = withRedis ? { redis: connection, prefix: prefixOf(`dispatch${concurrency}`) } : {}
      results[`dispatch${concurrency}`] = await scenario('dispatch', { n, redisN, concurrency, reps, warmup, ...redisOptions }, ['--expose-gc'])
    }
  }
  if (wanted('enqueue') && withRedis) {
    progress('redis enqueue through app.taskqueue.add')
    results.redisEnqueue = await scenario('redisEnqueue', { ...config.redisEnqueue, redis: connection, prefix: prefixOf('enqueue') })
  }
  if (wanted('enqueue')) {
    for (const type of withRedis ? ['local', 'redis'] : ['local']) {
      progress(`${type} enqueue through requests (inject)`)
      results[`${type}RequestEnqueue`] = await scenario('requestEnqueue', { ...config.requestEnqueue, type, redis: connection, prefix: prefixOf('requests') })
    }
  }
  if (wanted('http')) {
    progress('route queuing nothing over HTTP: without the plugin, with it, with metrics and tracing; runs interleaved')
    results.httpTax = await pluginTax()
    progress('request path over HTTP, local queue, its consumer running')
    results.httpLocal = await requestPath({ type: 'local', consumer: true })
    progress('request path over HTTP, local queue, no consumer (emptied every 50 ms)')
    results.httpLocalNoConsumer = await requestPath({ type: 'local', consumer: false, emptyEvery: 50 })
    if (withRedis) {
      progress('request path over HTTP, redis queue (producer only)')
      results.httpRedis = await requestPath({ type: 'redis', consumer: false, redis: connection, prefix: prefixOf('http') })
      progress('request path over HTTP, redis queue (producer only), tasks inheriting 3 headers')
      results.httpRedisSlim = await requestPath({ type: 'redis', consumer: false, redis: connection, prefix: prefixOf('http-slim'), headerPolicy: { allow: slimHeaders } })
    }
  }
  if (wanted('deep')) {
    progress('memory and depth, local queue')
    results.localDeep = await scenario('deep', { ...config.deep, type: 'local' }, ['--expose-gc'])
    if (withRedis) {
      progress('memory and depth, redis queue')
      results.redisDeep = await scenario('deep', { ...config.deep, type: 'redis', redis: connection, prefix: prefixOf('deep') }, ['--expose-gc'])
    }
  }
  if (wanted('steering') && withRedis) {
    progress('redis calls by task id: get, cancel, stats, waiting')
    results.redisSteering = await scenario('steering', { ...config.steering, redis: connection, prefix: prefixOf('steering') })
  }
  if (wanted('observed')) {
    progress(`local${withRedis ? ' and redis' : ''} dispatch with metrics and tracing on and off, runs interleaved`)
    results.observed = await scenario('observed', { ...config.observed, ...(withRedis ? { redis: connection, prefix: prefixOf('observed') } : {}) }, ['--expose-gc'])
  }
  if (wanted('flow')) {
    progress(`local${withRedis ? ' and redis' : ''} dispatch with a rate limit, groups and a schedule, runs interleaved`)
    results.flow = await scenario('flow', { ...config.flow, ...(withRedis ? { redis: connection, prefix: prefixOf('flow') } : {}) }, ['--expose-gc'])
  }
  if (wanted('scale') && withRedis) {
    progress(`scale-out: I/O-bound tasks (${config.scale.taskMs} ms) of one redis queue by ${config.scale.processes.join(', ')} consumer processes, runs interleaved`)
    results.scale = await scaleOneQueue({ ...config.scale, redis: connection, prefix: prefixOf('scale') }, progress)
    progress('scale-out: the same with three queues on a throwaway 3-master redis cluster')
    const cluster = await scaleCluster({ ...config.scale, prefix: prefixOf('scale-cluster') }, progress)
    if (cluster.skipped !== undefined) notes.push(`Redis Cluster rows skipped: ${cluster.skipped}`)
    else results.scaleCluster = cluster
  }
  if (wanted('consumers') && withRedis) {
    progress(`redis commands per task, tasks one at a time, with 1 and ${config.consumers.many} idle consumers`)
    results.idleConsumers = await scenario('idleConsumers', { ...config.consumers, redis: connection, prefix: prefixOf('consumers') })
  }
} finally {
  if (redis.skipped === undefined) {
    // Whatever a failed scenario left behind under this run's prefixes.
    const client = redisClient(redis.connection)
    await deletePrefix(client, `tq-bench-${runId}-*`).catch(() => {})
    client.disconnect()
    await redis.stop()
  }
}

// The table.
const int = (value) => Math.round(value).toLocaleString('en-US')
const ratio = (value) => value.toFixed(2)
const rows = []
const targets = []
function row (section, what, setting, value, against = '', measuredRatio = '', target = '') {
  rows.push({ section, what, setting, value, against, ratio: measuredRatio, target })
}
function check (name, met, detail) {
  targets.push({ name, met, detail })
  return `${met ? 'met' : 'MISSED'} (${detail})`
}

for (const c of [1, 8]) {
  const ceiling = results[`dispatch${c}`]?.ceiling
  if (ceiling !== undefined) row('1', 'ceiling: `inject()` POST /tasks/noop', `concurrency ${c}, N ${int(c === 1 ? config.dispatch.n1 : config.dispatch.n)}`, `${int(ceiling.rate)} req/s; CPU ${int(ceiling.cpu)} µs each`)
}
for (const c of [1, 8]) {
  const measured = results[`dispatch${c}`]?.ceilingTaskHeaders
  if (measured === undefined) continue
  row('1', 'a dispatched task\'s request: the same with the headers a consumer adds (`x-task-*`, user-agent, dispatch key), into an app with the plugin', `concurrency ${c}`,
    `${int(measured.rate)} req/s; CPU ${int(measured.cpu)} µs each`, `ceiling, concurrency ${c}`,
    `${ratio(measured.ratio)} (CPU: ${ratio(measured.cpuRatio)})`, '(reference: the least a dispatched task costs)')
}
for (const c of [1, 8]) {
  const measured = results[`dispatch${c}`]?.redisLoop
  if (measured === undefined) continue
  row('3', 'minimal Redis loop: LMOVE, JSON.parse, `inject()` with those headers, LREM', `${c} at a time, N ${int(c === 1 ? config.dispatch.redisN1 : config.dispatch.redisN)}`,
    `${int(measured.rate)} tasks/s; CPU ${int(measured.cpu)} µs each (app ${int(measured.cpu - measured.serverCpu)} + redis-server ${int(measured.serverCpu)})`, `ceiling, concurrency ${c}`,
    `${ratio(measured.ratio)} (CPU: ${ratio(measured.cpuRatio)})`, '(reference: no checks, batching, retries or recovery)')
}
const cpuSplit = (measured) => `(app ${int(measured.cpu - measured.serverCpu)} + redis-server ${int(measured.serverCpu)})${redisCommands(measured)}`
const cpuEach = (type, measured) => `CPU ${int(measured.cpu)} µs each${type === 'redis' ? ` ${cpuSplit(measured)}` : ''}`
/** What Redis ran per task, where the run counted it: how many tasks a round trip (a script call) carries. */
function redisCommands (measured) {
  const commands = measured.commands
  if (commands === undefined) return ''
  return `; Redis ran ${commands.perTask.toFixed(1)} commands and ${commands.scriptsPerTask.toFixed(2)} script calls per task`
}
// The targets of issue 15 use the CPU-based ratios (ceiling's CPU per request / the queue's, app
// plus redis-server): other work on a shared machine moves tasks per second far more than CPU time.
for (const [type, minimum] of [['local', 0.9], ['redis', 0.7]]) {
  for (const c of [1, 8]) {
    const measured = results[`dispatch${c}`]?.[type]
    if (measured === undefined) continue
    const n = type === 'local' ? (c === 1 ? config.dispatch.n1 : config.dispatch.n) : (c === 1 ? config.dispatch.redisN1 : config.dispatch.redisN)
    const floor = type === 'local' ? 'a dispatched task\'s request' : 'the minimal Redis loop'
    // Only the redis rows have it, when BullMQ ran beside them.
    const againstBullmq = measured.bullmqRatio !== undefined
    const goals = c === 8
      ? [check(`${type} dispatch >= ${minimum} of the ceiling, CPU-based (concurrency 8)`, measured.cpuRatio >= minimum, `CPU >= ${minimum.toFixed(2)}`)]
      : []
    if (againstBullmq && c === 8) {
      goals.push(check('redis dispatch >= 2.0x the tasks/s of BullMQ (concurrency 8)', measured.bullmqRatio >= 2, 'BullMQ: >= 2.00x'))
    }
    row(type === 'local' ? '2' : '3', `${type} queue: N waiting, then dispatched`, `concurrentLimit ${c}, N ${int(n)}`,
      `${int(measured.rate)} tasks/s; ${cpuEach(type, measured)}`,
      `ceiling, concurrency ${c} (${floor}: ${ratio(measured.floorRatio)}, CPU ${ratio(measured.floorCpuRatio)})${againstBullmq ? `; BullMQ 6, concurrency ${c}` : ''}`,
      `${ratio(measured.ratio)} (CPU: ${ratio(measured.cpuRatio)})${againstBullmq ? `; BullMQ: ${ratio(measured.bullmqRatio)}x its tasks/s (CPU: ${ratio(measured.bullmqCpuRatio)}x less per task)` : ''}`,
      goals.join('; '))
  }
}
for (const c of [1, 8]) {
  const measured = results[`dispatch${c}`]?.bullmq
  if (measured === undefined) continue
  row('3', 'BullMQ 6 worker: N waiting, then dispatched (same route, same tasks)', `concurrency ${c}, N ${int(c === 1 ? config.dispatch.redisN1 : config.dispatch.redisN)}`,
    `${int(measured.rate)} tasks/s; CPU ${int(measured.cpu)} µs each ${cpuSplit(measured)}`, `ceiling, concurrency ${c}`,
    `${ratio(measured.ratio)} (CPU: ${ratio(measured.cpuRatio)})`, '(reference: a Redis queue apps use, jobs removed on completion)')
}
{
  const measured = results.dispatch8?.redisSlim
  if (measured !== undefined) {
    row('3', `redis queue, the same tasks with 3 of their 18 headers (${slimHeaders.join(', ')}: what \`headerPolicy: { allow }\` could keep)`,
      `concurrentLimit 8, N ${int(config.dispatch.redisN)}`, `${int(measured.rate)} tasks/s; CPU ${int(measured.cpu)} µs each ${cpuSplit(measured)}`,
      `redis queue, concurrentLimit 8 (the ceiling: ${ratio(measured.ratio)}, CPU ${ratio(measured.cpuRatio)})`, `${ratio(measured.floorRatio)} (CPU: ${ratio(measured.floorCpuRatio)})`,
      '(what a smaller message gives)')
  }
  const wide = results.dispatch8?.redisWide
  if (wide !== undefined) {
    row('3', 'redis queue, concurrentLimit 32: more tasks per round trip', `concurrentLimit 32, N ${int(config.dispatch.redisN)}`,
      `${int(wide.rate)} tasks/s; CPU ${int(wide.cpu)} µs each ${cpuSplit(wide)}`,
      `redis queue, concurrentLimit 8 (the ceiling at concurrency 8: ${ratio(wide.ratio)}, CPU ${ratio(wide.cpuRatio)})`, `${ratio(wide.floorRatio)} (CPU: ${ratio(wide.floorCpuRatio)})`,
      '(what a wider consumer gives)')
  }
}
if (results.redisEnqueue !== undefined) {
  row('3', 'redis enqueue: `await app.taskqueue.add()` one after another', 'sequential', `${int(results.redisEnqueue.sequential)} tasks/s`)
  row('3', 'redis enqueue: `app.taskqueue.add()`, batches awaited together', `${config.redisEnqueue.batch} at a time`, `${int(results.redisEnqueue.batched)} tasks/s`)
}
for (const type of ['local', 'redis']) {
  const enqueue = results[`${type}RequestEnqueue`]
  if (enqueue === undefined) continue
  row('3', `${type} enqueue through requests: \`inject()\` of a route that queues one task`, `concurrency ${config.requestEnqueue.concurrency}`,
    `${int(enqueue.one)} tasks/s`, `same route queuing none: ${int(enqueue.none)} req/s`, ratio(enqueue.one / enqueue.none))
}
{
  // The plugin's tax on a route that queues nothing: the same route, with and without the plugin.
  const tax = results.httpTax
  if (tax !== undefined) {
    const setting = `${config.http.connections} connections, ${config.http.rounds} x ${config.http.duration} s, interleaved`
    const what = 'HTTP, route queuing nothing (POST /enqueue/none)'
    row('4', `${what}: app without the plugin`, setting, `${int(tax.bare.rps)} req/s, p99 ${tax.bare.p99} ms; CPU ${int(tax.bare.cpu)} µs each`)
    for (const [key, label] of [
      ['plugin', 'app with the plugin (local queue, its consumer running, idle)'],
      ['observed', 'app with the plugin, metrics (prom-client registry) and tracing (OpenTelemetry SDK, spans dropped) on']
    ]) {
      const measured = tax[key]
      row('4', `${what}: ${label}`, setting, `${int(measured.rps)} req/s, p99 ${measured.p99} ms; CPU ${int(measured.cpu)} µs each`, 'app without the plugin',
        `${ratio(measured.rpsRatio)} req/s (CPU: ${ratio(measured.cpuRatio)}), ${ratio(measured.p99Ratio)}x p99`,
        check(`the plugin's tax on a route queuing nothing${key === 'observed' ? ', metrics and tracing on' : ''}: >= 0.97 req/s`, measured.rpsRatio >= 0.97, '>= 0.97 req/s'))
    }
  }
}
// The cost of queuing one task: the rows that are no target say what they are for instead (`target` holds that).
for (const [key, label, minimum, target] of [
  ['httpLocal', 'local, its consumer running (concurrentLimit 8)', 0.9, 'includes running the tasks in the same process'],
  ['httpLocalNoConsumer', 'local, no consumer (waiting tasks dropped every 50 ms, as a consumer that keeps up would take them)', 0.9, true],
  ['httpRedis', 'redis, producer only (no consumer; keys deleted after each run)', 0.8, true],
  ['httpRedisSlim', `redis, producer only, tasks inheriting 3 of the request's headers (headerPolicy: { allow: [${slimHeaders.join(', ')}] })`, 0.8,
    'what copying fewer headers gives']
]) {
  const http = results[key]
  if (http === undefined) continue
  row('4', `HTTP, route queuing none: ${label}`, `${config.http.connections} connections, ${config.http.rounds} x ${config.http.duration} s`,
    `${int(http.none.rps)} req/s, p99 ${http.none.p99} ms; CPU ${int(http.none.cpu)} µs each`)
  const met = http.rpsRatio >= minimum && http.p99Ratio <= 1.2
  row('4', `HTTP, same route queuing one task: ${label}`, `${config.http.connections} connections, ${config.http.rounds} x ${config.http.duration} s`,
    `${int(http.one.rps)} req/s, p99 ${http.one.p99} ms; CPU ${int(http.one.cpu)} µs each${key === 'httpLocal' ? `; ${int(http.one.waitingAfter)} tasks still waiting at the end` : ''}`,
    'route queuing none', `${ratio(http.rpsRatio)} req/s (CPU: ${ratio(http.cpuRatio)}), ${ratio(http.p99Ratio)}x p99`,
    target === true
      ? check(`queuing one task, ${label.split(' (')[0]}: >= ${minimum} req/s, p99 <= 1.2x`, met, `>= ${minimum.toFixed(2)}, p99 <= 1.20x`)
      : `(${target}: ${met ? 'would meet' : 'would miss'} >= ${minimum.toFixed(2)}, p99 <= 1.20x)`)
}
if (results.localDeep !== undefined) {
  const memory = results.localDeep.memory
  row('5', `local memory per waiting task (${int(memory.n)} waiting, consumer not started)`, 'heapUsed after gc()', `${int(memory.perTask)} B`,
    `url + headers + payload: ${int(memory.taskBytes)} B`, ratio(memory.ratio),
    check('local memory per task <= 1.5x its url, headers and payload', memory.ratio <= 1.5, '<= 1.50'))
}
if (results.redisDeep !== undefined) {
  const memory = results.redisDeep.memory
  row('5', `redis memory per waiting task (${int(memory.n)} waiting)`, 'INFO used_memory', `${int(memory.perTask)} B`,
    `url + headers + payload: ${int(memory.taskBytes)} B (stored message: ${int(memory.messageBytes)} B)`, ratio(memory.ratio),
    check('redis memory per task <= 1.5x its url, headers and payload', memory.ratio <= 1.5, '<= 1.50'))
  // Layout v2: the message once in \`tasks\`, the id in the list and as the hash's field.
  if (memory.indexPerTask !== undefined) {
    row('5', 'redis memory per waiting task beside its message: its id in `waiting` and in `tasks` (what finds it by id)', 'INFO used_memory - message',
      `${int(memory.indexPerTask)} B`, `list: ${int(memory.listPerTask)} B, tasks hash: ${int(memory.tasksPerTask)} B per task (MEMORY USAGE)`)
  }
}
if (results.redisSteering !== undefined) {
  const { sequential, concurrent } = results.redisSteering
  for (const call of ['get', 'cancel', 'stats', 'waiting']) {
    row('7', `redis \`${call === 'waiting' ? 'waiting({ limit: 100 })' : `${call}()`}\` with ${int(config.steering.n)} tasks waiting`, `one after another; ${config.steering.concurrency} at a time`,
      `${int(sequential[call])} calls/s; ${int(concurrent[call])} calls/s`)
  }
}
for (const type of ['local', 'redis']) {
  const depth = results[`${type}Deep`]?.depth
  if (depth === undefined) continue
  // Redis: the app's CPU plus redis-server's.
  const cpu = (size) => type === 'redis'
    ? `; CPU ${int(depth.cpu[size])} µs each (app ${int(depth.cpu[size] - depth.serverCpu[size])} + redis-server ${int(depth.serverCpu[size])})`
    : `; app CPU ${int(depth.cpu[size])} µs each`
  row('6', `${type} depth: dispatch with ${int(config.deep.small)} waiting`, 'concurrentLimit 8', `${int(depth.small)} tasks/s${cpu('small')}`)
  row('6', `${type} depth: dispatch with ${int(config.deep.large)} waiting`, 'concurrentLimit 8', `${int(depth.large)} tasks/s${cpu('large')}`,
    `${int(config.deep.small)} waiting`, `${ratio(depth.ratio)} (CPU: ${ratio(depth.cpuRatio)})`, check(`${type} depth ratio >= 0.9, CPU-based`, depth.cpuRatio >= 0.9, 'CPU >= 0.90'))
}

for (const type of ['local', 'redis']) {
  const off = results.observed?.[`${type}Off`]
  const on = results.observed?.[`${type}On`]
  if (off === undefined || on === undefined) continue
  const n = type === 'local' ? config.observed.n : config.observed.redisN
  const setting = `concurrentLimit ${config.observed.concurrency}, N ${int(n)}`
  row('8', `${type} dispatch, metrics and tracing off`, setting, `${int(off.rate)} tasks/s; ${cpuEach(type, off)}`)
  row('8', `${type} dispatch, metrics and tracing on (prom-client registry; OpenTelemetry SDK, spans dropped)`, setting,
    `${int(on.rate)} tasks/s; ${cpuEach(type, on)}`, `${type} dispatch, both off`, `${ratio(on.ratio)} (CPU: ${ratio(on.cpuRatio)})`,
    check(`${type} dispatch with metrics and tracing >= 0.95 of off, CPU-based`, on.cpuRatio >= 0.95, 'CPU >= 0.95'))
}
const spanCpu = results.observed?.spanCpu
const localOff = results.observed?.localOff
if (spanCpu !== undefined && localOff !== undefined) {
  row('8', 'an OpenTelemetry span alone: started and ended with the same SDK, nothing else', `N ${int(config.observed.n)}`, `CPU ${ratio(spanCpu)} µs each`,
    'local dispatch, both off, plus one span per task', `${ratio(localOff.cpu / (localOff.cpu + spanCpu))} (CPU)`, '(reference: the most tracing on could reach)')
}

const flowWhat = {
  rateLimited: 'a rate limit that is never reached (`rateLimit: { max: 1,000,000, timeWindow: 1000 }`): every start is logged',
  grouped: 'tasks of 16 groups, `groupConcurrency` 4',
  scheduled: 'a schedule registered (a tick a second, to another route)'
}
for (const type of ['local', 'redis']) {
  const plain = results.flow?.[`${type}-plain`]
  if (plain === undefined) continue
  const n = type === 'local' ? config.flow.n : config.flow.redisN
  const setting = `concurrentLimit ${config.flow.concurrency}, N ${int(n)}`
  row('9', `${type} dispatch, no rate limit, group or schedule`, setting, `${int(plain.rate)} tasks/s; ${cpuEach(type, plain)}`)
  for (const [name, what] of Object.entries(flowWhat)) {
    const used = results.flow[`${type}-${name}`]
    row('9', `${type} dispatch, ${what}`, setting, `${int(used.rate)} tasks/s; ${cpuEach(type, used)}`,
      `${type} dispatch without`, `${ratio(used.ratio)} (CPU: ${ratio(used.cpuRatio)})`, '(what using it costs)')
  }
}

// 10. Scale-out (issue 15): the target is about one queue; the cluster's ratio is shown beside it.
for (const [key, what, queues] of [
  ['scale', 'one redis queue', 1],
  ['scaleCluster', `redis cluster of 3 masters, a queue on each (${results.scaleCluster?.queues?.join(', ')}), every process consuming the three`, 3]
]) {
  const scale = results[key]
  if (scale === undefined) continue
  const { n, concurrentLimit, taskMs } = config.scale
  for (const count of config.scale.processes) {
    const measured = scale[count]
    // What the slots allow if a task took exactly its wait: processes x queues x concurrentLimit / wait.
    const bound = count * queues * concurrentLimit * 1000 / taskMs
    const goal = count !== 4
      ? ''
      : key === 'scale'
        ? check('4 consumer processes of I/O-bound tasks >= 3.5x one', measured.ratio >= 3.5, '>= 3.50x')
        : `(for comparison: would ${measured.ratio >= 3.5 ? 'meet' : 'miss'} >= 3.50x)`
    row('10', `scale-out: I/O-bound tasks (the route waits ${taskMs} ms), ${what}, N waiting, dispatched by K consumer processes`,
      `K = ${count} x ${queues > 1 ? `${queues} queues x ` : ''}concurrentLimit ${concurrentLimit}, N ${int(n * queues)}`,
      `${int(measured.rate)} tasks/s (${ratio(measured.rate / bound)} of the ${int(bound)} its slots allow); CPU ${int(measured.cpu)} µs each ${cpuSplit(measured)}`,
      count === 1 ? '' : 'K = 1', count === 1 ? '' : `${ratio(measured.ratio)}x`, goal)
  }
}
{
  const measured = results.idleConsumers
  if (measured !== undefined) {
    const { one, many, consumers } = measured
    const figures = (run) => `${ratio(run.perTask)} commands per task (scripts ${ratio(run.scriptsPerTask)}, blocking reads ${ratio(run.blockingPerTask)}); ${ratio(run.msPerTask)} ms per task`
    row('11', `redis commands per task, tasks one at a time, with ${consumers} idle consumers of the queue (\`INFO commandstats\`, calls in scripts included)`,
      `N ${int(config.consumers.n)}, ${consumers} consumers of concurrentLimit 1`, figures(many), `1 idle consumer: ${figures(one)}`, ratio(measured.ratio),
      check(`redis commands per task with ${consumers} idle consumers <= 1.5x those with 1`, measured.ratio <= 1.5, '<= 1.50x'))
  }
}

const cpus = os.cpus()
const machine = {
  cpu: cpus[0]?.model ?? 'unknown',
  cores: cpus.length,
  memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
  os: `${os.type()} ${os.release()} ${os.arch()}`,
  node: process.version,
  redis: redis.skipped === undefined ? `${redis.version}${redis.own ? ' (throwaway, unix socket)' : ' (REDIS_URL)'}` : `skipped: ${redis.skipped}`,
  commit: gitVersion(),
  // Other work on the machine makes every figure noisier: the 1-minute load average before and after.
  load: { before: loadBefore[0], after: os.loadavg()[0] }
}
const date = new Date().toISOString()
const seconds = (performance.now() - startedAt) / 1000

const escape = (text) => String(text).replaceAll('|', '\\|')
const table = [
  `fastify-taskqueue benchmark, ${full ? 'full' : 'short'} run, ${date}: ${machine.cpu}, ${machine.cores} cores, Node.js ${machine.node}, Redis ${machine.redis}, commit ${machine.commit}; ${seconds.toFixed(0)} s, load average ${machine.load.before.toFixed(1)} before, ${machine.load.after.toFixed(1)} after`,
  '',
  '| # | measurement | setting | result | compared with | ratio | target |',
  '| --- | --- | --- | --- | --- | --- | --- |',
  ...rows.map((r) => `| ${[r.section, r.what, r.setting, r.value, r.against, r.ratio, r.target].map(escape).join(' | ')} |`),
  ...notes.map((note) => `\n${note}`)
].join('\n')

console.log(table)
mkdirSync(join(here, 'results'), { recursive: true })
writeFileSync(join(here, 'results', 'latest.json'), JSON.stringify({ date, mode: full ? 'full' : 'short', seconds, machine, config, results, rows, targets, notes }, null, 2) + '\n')
progress(`done in ${seconds.toFixed(0)} s; targets met: ${targets.filter(({ met }) => met).length} of ${targets.length}; written to bench/results/latest.json`)
