// One benchmark scenario per process, so that no scenario inherits another's heap or JIT state.
// Started by run.mjs through fork(); can be run alone (and profiled) too, for instance:
//   node --cpu-prof bench/scenarios.mjs localDispatch '{"n":20000,"concurrency":8,"reps":1,"warmup":3000}'
//   node --cpu-prof bench/scenarios.mjs redisDispatch '{"n":5000,"concurrency":8,"reps":1,"warmup":1000,
//     "redis":{"unixSocketPath":"/tmp/redis.sock"},"prefix":"tq-bench-profile"}'
// The result is sent to the parent over IPC, or printed as JSON when there is none.
import { randomUUID } from 'node:crypto'
import Fastify from 'fastify'
import taskqueue from 'fastify-taskqueue'
import { Registry } from 'prom-client'
import { trace, ROOT_CONTEXT, SpanKind } from '@opentelemetry/api'
import {
  Counter, addBatched, ceilingRequest, commandCalls, commandsBetween, deletePrefix, median, performance, pool, queueApp, redisClient, redisCpu, redisQueue,
  sleep, slimHeaders, taskOptions, taskRoute, taskSize, taskUrl, withDispatchHeaders
} from './common.mjs'
import { setTracing } from './common.mjs'
import { bullmqRun } from './bullmq.mjs'

/**
 * Collects the garbage of the set-up (the fill of a queue makes plenty) before a clock starts, so
 * that it is not collected in the measured part. Needs `node --expose-gc`; without it, does nothing.
 */
function collect () {
  globalThis.gc?.()
}

/** `count` add() options, made before any clock starts; `slim`: with only three of their headers. */
function makeTasks (count, slim = false) {
  return Array.from({ length: count }, (_, i) => slim ? slimTask(taskOptions(i)) : taskOptions(i))
}

/** The same task with only the headers of `slimHeaders`: how much the size of a message costs a Redis dispatch. */
function slimTask ({ headers, ...rest }) {
  return { ...rest, headers: Object.fromEntries(slimHeaders.map((name) => [name, headers[name]])) }
}

/**
 * `inject()` of the task request, N times, by `concurrency` workers. `dispatched`: the request a
 * consumer makes of a task (with its headers and a token this app issued) into an app with the
 * plugin, which marks it as a task: what a dispatched task costs at least, whatever the queue.
 */
async function ceilingRun (n, concurrency, dispatched = false) {
  const counter = new Counter(n)
  let app
  if (dispatched) {
    app = await queueApp({ queue: { type: 'local' }, consumers: [], counter })
  } else {
    app = Fastify({ logger: false })
    taskRoute(app, counter)
  }
  await app.ready()
  // A dispatch token of its own for each request, as a consumer issues one per dispatch.
  const token = () => app.taskqueue.dispatchMarks.issue({ id: randomUUID(), queue: 'default', retries: 0, eta: Date.now(), createdAt: Date.now() }).token
  const requests = Array.from({ length: n }, (_, i) => dispatched ? withDispatchHeaders(ceilingRequest(i), token()) : ceilingRequest(i))
  collect()
  const started = performance.now()
  await pool(n, concurrency, async (i) => {
    const response = await app.inject(requests[i])
    if (response.statusCode !== 204) throw new Error(`ceiling: answered ${response.statusCode}`)
  })
  const elapsed = performance.now() - started
  await app.close()
  return { rate: counter.rate, cpu: counter.cpuPerCall, wallRate: n / elapsed * 1000 }
}

/** 1. Raw `inject()` of the task route, `concurrency` workers each awaiting its inject. */
async function ceiling ({ n, concurrency, reps, warmup }) {
  await ceilingRun(warmup, concurrency)
  const runs = []
  for (let r = 0; r < reps; r++) runs.push(await ceilingRun(n, concurrency))
  return { rate: median(runs.map(({ rate }) => rate)), runs: runs.map(({ rate }) => Math.round(rate)) }
}

/** N tasks queued in a local queue before ready(); its consumer starts with ready(). `options`: more plugin options. */
async function localRun (n, concurrency, options) {
  const counter = new Counter(n)
  const app = await queueApp({ queue: { type: 'local' }, consumers: [{ queue: 'default', concurrentLimit: concurrency }], counter, options })
  await addBatched(app, makeTasks(n))
  collect()
  await app.ready()
  await counter.done
  await app.taskqueue.drain()
  const result = { rate: counter.rate, cpu: counter.cpuPerCall }
  await app.close()
  return result
}

/** 2. Local queue: N tasks waiting, then dispatched by a consumer of `concurrency`. */
async function localDispatch ({ n, concurrency, reps, warmup }) {
  await localRun(warmup, concurrency)
  const runs = []
  for (let r = 0; r < reps; r++) runs.push(await localRun(n, concurrency))
  return { rate: median(runs.map(({ rate }) => rate)), runs: runs.map(({ rate }) => Math.round(rate)) }
}

/** Fills the Redis queue under `prefix` with `count` tasks through a producer app. */
async function fillRedis (redis, prefix, count, slim = false) {
  const producer = await queueApp({ queue: redisQueue(redis, prefix), consumers: [] })
  await producer.ready()
  await addBatched(producer, makeTasks(count, slim))
  await producer.close()
}

/**
 * Starts a consumer app on the Redis queue under `prefix`, whose tasks are already waiting, and
 * closes it once `counter` reached its target (the tasks in flight then are awaited). Resolves
 * with the CPU time (µs) redis-server used meanwhile, and the commands it ran (see commandsBetween).
 */
async function redisConsume (redis, prefix, concurrency, counter, client, options) {
  const app = await queueApp({ queue: redisQueue(redis, prefix), consumers: [{ queue: 'default', concurrentLimit: concurrency }], counter, options })
  const cpuBefore = client === undefined ? 0 : await redisCpu(client)
  const callsBefore = client === undefined ? undefined : await commandCalls(client)
  collect()
  await app.ready()
  await counter.done
  const cpu = client === undefined ? 0 : await redisCpu(client) - cpuBefore
  const commands = client === undefined ? undefined : commandsBetween(callsBefore, await commandCalls(client), counter.target)
  await app.close()
  return { cpu, commands }
}

async function redisRun (redis, prefix, n, concurrency, slim = false, options) {
  const client = redisClient(redis)
  await fillRedis(redis, prefix, n, slim)
  const counter = new Counter(n)
  const { cpu: serverCpu, commands } = await redisConsume(redis, prefix, concurrency, counter, client, options)
  const left = await client.llen(`${prefix}:{default}:v2:waiting`)
  await deletePrefix(client, prefix)
  client.disconnect()
  if (left !== 0) throw new Error(`redis dispatch: ${left} tasks left waiting`)
  // The CPU of the app and of redis-server, per task.
  return { rate: counter.rate, cpu: counter.cpuPerCall + serverCpu / n, serverCpu: serverCpu / n, commands }
}

/**
 * The least a Redis queue can do, as a reference: `concurrency` workers on one plain client,
 * each moving a task id into a processing list (LMOVE), reading its stored message (HGET),
 * parsing it, injecting it into a plain app, and removing both (LREM and HDEL in one MULTI), with
 * no checks, retries, batching or recovery. The messages are those the plugin stores (layout v2:
 * ids in the lists, messages in `tasks`), so the work per task is the same size.
 */
async function redisLoopRun (redis, prefix, n, concurrency) {
  const client = redisClient(redis)
  await fillRedis(redis, prefix, n)
  const counter = new Counter(n)
  const app = Fastify({ logger: false })
  taskRoute(app, counter)
  await app.ready()
  const waiting = `${prefix}:{default}:v2:waiting`
  const processing = `${prefix}:{default}:v2:processing:loop`
  const tasks = `${prefix}:{default}:v2:tasks`
  const cpuBefore = await redisCpu(client)
  collect()
  await pool(concurrency, concurrency, async () => {
    for (;;) {
      const id = await client.lmove(waiting, processing, 'RIGHT', 'LEFT')
      if (id === null) return
      const message = JSON.parse(await client.hget(tasks, id))
      const response = await app.inject(withDispatchHeaders({ method: message.method, url: message.url, headers: message.headers, payload: message.payload }))
      if (response.statusCode !== 204) throw new Error(`redis loop: answered ${response.statusCode}`)
      await client.multi().lrem(processing, -1, id).hdel(tasks, id).exec()
    }
  })
  const serverCpu = await redisCpu(client) - cpuBefore
  await app.close()
  await deletePrefix(client, prefix)
  client.disconnect()
  return { rate: counter.rate, cpu: counter.cpuPerCall + serverCpu / n, serverCpu: serverCpu / n }
}

/** 3. Redis queue: N tasks waiting, then dispatched by a consumer of `concurrency`. */
async function redisDispatch ({ n, concurrency, reps, warmup, redis, prefix }) {
  await redisRun(redis, `${prefix}-warmup`, warmup, concurrency)
  const runs = []
  for (let r = 0; r < reps; r++) runs.push(await redisRun(redis, `${prefix}-${r}`, n, concurrency))
  return { rate: median(runs.map(({ rate }) => rate)), runs: runs.map(({ rate }) => Math.round(rate)) }
}

/**
 * 1-3. The ceiling and the dispatch of both queues at one concurrency, their runs interleaved (a
 * warm-up of each, then ceiling, local, redis, BullMQ, ceiling, local, redis, BullMQ...), so that
 * a ratio compares runs made moments apart: on a shared machine the speed drifts over a minute.
 */
async function dispatch ({ n, redisN, concurrency, reps, warmup, redis, prefix }) {
  const kinds = {
    ceiling: () => ceilingRun(n, concurrency),
    ceilingTaskHeaders: () => ceilingRun(n, concurrency, true),
    local: () => localRun(n, concurrency)
  }
  if (redis !== undefined) {
    kinds.redisLoop = (r) => redisLoopRun(redis, `${prefix}-loop-${r}`, redisN, concurrency)
    kinds.redis = (r) => redisRun(redis, `${prefix}-${r}`, redisN, concurrency)
    kinds.bullmq = (r) => bullmqRun(redis, `${prefix}-bullmq-${r}`, redisN, concurrency)
    if (concurrency > 1) {
      kinds.redisSlim = (r) => redisRun(redis, `${prefix}-slim-${r}`, redisN, concurrency, true)
      kinds.redisWide = (r) => redisRun(redis, `${prefix}-wide-${r}`, redisN, concurrency * 4)
    }
  }
  await ceilingRun(warmup, concurrency)
  await ceilingRun(warmup, concurrency, true)
  await localRun(warmup, concurrency)
  if (redis !== undefined) {
    await redisLoopRun(redis, `${prefix}-loop-warmup`, Math.min(warmup, redisN), concurrency)
    await redisRun(redis, `${prefix}-warmup`, Math.min(warmup, redisN), concurrency)
    await bullmqRun(redis, `${prefix}-bullmq-warmup`, Math.min(warmup, redisN), concurrency)
  }
  const runs = Object.fromEntries(Object.keys(kinds).map((kind) => [kind, []]))
  for (let r = 0; r < reps; r++) {
    for (const [kind, run] of Object.entries(kinds)) runs[kind].push(await run(r))
  }
  const result = {}
  for (const [kind, measured] of Object.entries(runs)) {
    result[kind] = {
      rate: median(measured.map(({ rate }) => rate)),
      cpu: median(measured.map(({ cpu }) => cpu)),
      serverCpu: median(measured.map(({ serverCpu }) => serverCpu ?? 0)),
      runs: measured.map(({ rate }) => Math.round(rate))
    }
    // The commands Redis ran per task, where the run counts them (the Redis queue's runs and BullMQ's).
    if (measured[0].commands !== undefined) {
      result[kind].commands = {
        perTask: median(measured.map(({ commands }) => commands.perTask)),
        scriptsPerTask: median(measured.map(({ commands }) => commands.scriptsPerTask))
      }
    }
    // From the start of the run to its end, where the run measures it (BullMQ: until every job completed).
    if (measured[0].wallRate !== undefined) result[kind].wallRate = median(measured.map(({ wallRate }) => wallRate))
    if (kind === 'ceiling') continue
    // Medians of the ratios of runs made one after the other: of throughput, and of CPU time
    // per task (ceiling / queue: the throughput ratio if nothing else took the cores).
    result[kind].ratio = median(measured.map(({ rate }, r) => rate / runs.ceiling[r].rate))
    result[kind].cpuRatio = median(measured.map(({ cpu }, r) => runs.ceiling[r].cpu / cpu))
  }
  // Each queue against the least that a queue of its kind costs: the same request with the
  // headers of a dispatch, and, for Redis, the minimal list loop.
  const floors = { local: 'ceilingTaskHeaders', redis: 'redisLoop', redisSlim: 'redis', redisWide: 'redis' }
  for (const [kind, floor] of Object.entries(floors)) {
    if (runs[kind] === undefined) continue
    result[kind].floorRatio = median(runs[kind].map(({ rate }, r) => rate / runs[floor][r].rate))
    result[kind].floorCpuRatio = median(runs[kind].map(({ cpu }, r) => runs[floor][r].cpu / cpu))
  }
  // The Redis queue against BullMQ on the same tasks (issue 15): ours / BullMQ's tasks per second,
  // and BullMQ's / our CPU per task (app and redis-server), above 1 when ours is the cheaper.
  if (runs.bullmq !== undefined) {
    result.redis.bullmqRatio = median(runs.redis.map(({ rate }, r) => rate / runs.bullmq[r].rate))
    result.redis.bullmqCpuRatio = median(runs.redis.map(({ cpu }, r) => runs.bullmq[r].cpu / cpu))
  }
  return result
}

/** 3. Enqueue throughput of `app.taskqueue.add` on a Redis queue: one at a time, and `batch` at a time. */
async function redisEnqueue ({ n, batch, warmup, redis, prefix }) {
  const client = redisClient(redis)
  const app = await queueApp({ queue: redisQueue(redis, prefix), consumers: [] })
  await app.ready()
  const result = {}
  await addBatched(app, makeTasks(warmup), batch)
  for (const mode of ['sequential', 'batched', 'sequential', 'batched']) {
    await app.taskqueue.queue('default').reset()
    const tasks = makeTasks(n)
    const started = performance.now()
    if (mode === 'sequential') {
      for (const task of tasks) await app.taskqueue.add(taskUrl, task)
    } else {
      await addBatched(app, tasks, batch)
    }
    const rate = n / (performance.now() - started) * 1000
    const length = await app.taskqueue.queue('default').length()
    if (length !== n) throw new Error(`redis enqueue: ${length} tasks waiting, expected ${n}`)
    result[mode] = Math.max(result[mode] ?? 0, rate)
  }
  await app.close()
  await deletePrefix(client, prefix)
  client.disconnect()
  return result
}

/**
 * 3. Enqueue through requests: `inject()` of a route that queues one task (held with the request,
 * pushed after its response), against the same route queuing none. Timed until every push is done.
 */
async function requestEnqueue ({ n, concurrency, reps, warmup, type, redis, prefix }) {
  const queue = type === 'local' ? { type: 'local' } : redisQueue(redis, prefix)
  const app = Fastify({ logger: false })
  await app.register(taskqueue, { queues: [{ queue: 'default', ...queue }], consumers: [] })
  app.post('/enqueue/none', async () => ({ ok: true }))
  app.post('/enqueue/one', async (request) => ({ ok: true, id: request.taskqueue.add(taskUrl, { method: 'POST' }) }))
  taskRoute(app)
  await app.ready()
  const run = async (route, count) => {
    const requests = Array.from({ length: count }, (_, i) => ({ ...ceilingRequest(i), url: route }))
    const started = performance.now()
    await pool(count, concurrency, async (i) => {
      const response = await app.inject(requests[i])
      if (response.statusCode !== 200) throw new Error(`${route}: answered ${response.statusCode}`)
    })
    await app.taskqueue.drain()
    const rate = count / (performance.now() - started) * 1000
    const waiting = await app.taskqueue.queue('default').length()
    if (route === '/enqueue/one' && waiting !== count) throw new Error(`${route}: ${waiting} tasks waiting, expected ${count}`)
    await app.taskqueue.queue('default').reset()
    return rate
  }
  await run('/enqueue/none', warmup)
  await run('/enqueue/one', warmup)
  const none = []
  const one = []
  for (let r = 0; r < reps; r++) {
    none.push(await run('/enqueue/none', n))
    one.push(await run('/enqueue/one', n))
  }
  await app.close()
  if (type !== 'local') {
    const client = redisClient(redis)
    await deletePrefix(client, prefix)
    client.disconnect()
  }
  return { none: median(none), one: median(one), runs: { none: none.map(Math.round), one: one.map(Math.round) } }
}

async function settledHeap () {
  for (let i = 0; i < 4; i++) {
    globalThis.gc()
    await sleep(10)
  }
  return process.memoryUsage().heapUsed
}

/**
 * 5 and 6 for one queue type, on one fill of `large` tasks:
 * - memory: what `large` waiting tasks take (local: heapUsed after gc(), before and after the
 *   fill, with no consumer running yet; Redis: INFO used_memory, and MEMORY USAGE of the list),
 *   against the bytes of the task's url, headers and payload;
 * - depth: dispatch throughput (consumer of 8) of `reps` consecutive windows of `window` tasks
 *   with those `large` tasks waiting, against a queue holding `small` (`reps` times, a fresh app
 *   each time, half before the large run and half after). In both cases the tasks are queued
 *   before the consumer starts, and the first `skip` tasks, dispatched while the fresh app warms
 *   up, are not counted.
 */
async function deep ({ type, small, large, window, skip, reps, redis, prefix }) {
  const concurrency = 8
  const smallRates = []
  const largeRates = []
  const smallCpu = []
  const largeCpu = []
  // Redis only: redis-server's CPU per task over each whole run (its windows cannot be told apart).
  const smallServerCpu = []
  const largeServerCpu = []
  const taskBytes = taskSize(1)
  let memory
  const consumers = [{ queue: 'default', concurrentLimit: concurrency }]
  const client = type === 'local' ? undefined : redisClient(redis)

  /**
   * Queues `waiting` tasks, starts the consumer, and records `windows` windows of `size` tasks
   * after the first `skip`; resolves with the memory figures of the fill.
   */
  const measure = async (key, waiting, windows, size, out, outCpu, outServerCpu, withMemory = false) => {
    const counter = new Counter(skip + windows * size, size, skip)
    let figures
    if (type === 'local') {
      const app = await queueApp({ queue: { type: 'local' }, consumers, counter })
      const before = withMemory ? await settledHeap() : 0
      // The tasks are made after the first reading: their strings belong to what the queue holds.
      await addBatched(app, makeTasks(waiting), 1000)
      if (withMemory) {
        const perTask = (await settledHeap() - before) / waiting
        figures = { n: waiting, perTask, taskBytes, ratio: perTask / taskBytes }
      }
      collect()
      await app.ready()
      await counter.done
      await app.taskqueue.queue('default').reset()
      await app.taskqueue.drain()
      await app.close()
    } else {
      const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await client.info('memory'))[1])
      const before = withMemory ? await usedMemory() : 0
      const producer = await queueApp({ queue: redisQueue(redis, key), consumers: [] })
      await producer.ready()
      await addBatched(producer, makeTasks(waiting))
      await producer.close()
      if (withMemory) {
        const perTask = (await usedMemory() - before) / waiting
        const list = `${key}:{default}:v2:waiting`
        const tasks = `${key}:{default}:v2:tasks`
        const listBytes = Number(await client.call('MEMORY', 'USAGE', list, 'SAMPLES', '0'))
        const tasksBytes = Number(await client.call('MEMORY', 'USAGE', tasks, 'SAMPLES', '0'))
        const messageBytes = Buffer.byteLength(await client.hget(tasks, await client.lindex(list, 0)))
        figures = {
          n: waiting,
          perTask,
          listPerTask: listBytes / waiting,
          tasksPerTask: tasksBytes / waiting,
          // What a task takes beside its message: its id in the list and in the hash, and their overhead.
          indexPerTask: perTask - messageBytes,
          messageBytes,
          taskBytes,
          ratio: perTask / taskBytes
        }
      }
      const { cpu: serverCpu } = await redisConsume(redis, key, concurrency, counter, client)
      outServerCpu?.push(serverCpu / counter.target)
      await deletePrefix(client, key)
    }
    out?.push(...counter.windowRates)
    outCpu?.push(...counter.windowCpu)
    return figures
  }

  // Warm-up: as many tasks as two small runs, in one go.
  await measure(`${prefix}-warmup`, 2 * small, 1, 2 * small - skip)
  // Half the small runs before the large one and half after, so that a drift in speed evens out.
  for (let r = 0; r < reps; r++) {
    if (r === reps >> 1) memory = await measure(`${prefix}-large`, large, reps, window, largeRates, largeCpu, largeServerCpu, true)
    await measure(`${prefix}-small-${r}`, small, 1, small - skip, smallRates, smallCpu, smallServerCpu)
  }
  client?.disconnect()
  const serverCpu = type === 'local' ? { small: 0, large: 0 } : { small: median(smallServerCpu), large: median(largeServerCpu) }
  const cpu = { small: median(smallCpu) + serverCpu.small, large: median(largeCpu) + serverCpu.large }
  return {
    memory,
    depth: {
      small: median(smallRates),
      large: median(largeRates),
      ratio: median(largeRates) / median(smallRates),
      // The same from the CPU time per task (small / large: the app's, plus redis-server's for
      // Redis), which other processes barely move.
      cpu,
      serverCpu,
      cpuRatio: cpu.small / cpu.large,
      runs: { small: smallRates.map(Math.round), large: largeRates.map(Math.round) }
    }
  }
}

/**
 * 7. The calls by task id (issue 13) on a Redis queue of `n` waiting tasks, half of them with an id
 * of the caller's choosing: `get()`, `cancel()`, `stats()` and a page of `waiting()`, each `calls`
 * times, one after another (each a round trip) and `concurrency` at a time. What the index by id
 * costs per task in memory is row 5.
 */
async function steering ({ n, calls, concurrency, redis, prefix }) {
  const client = redisClient(redis)
  const app = await queueApp({ queue: redisQueue(redis, prefix), consumers: [] })
  await app.ready()
  const options = makeTasks(n).map((task, i) => i % 2 === 0 ? { ...task, id: `chosen-${i}` } : task)
  const ids = []
  for (let i = 0; i < n; i += 500) {
    ids.push(...await Promise.all(options.slice(i, i + 500).map((task) => app.taskqueue.add(taskUrl, task))))
  }
  const queue = app.taskqueue.queue('default')
  const pick = (i) => ids[(i * 7919) % ids.length]
  const rate = async (what, at, fn) => {
    const started = performance.now()
    await pool(calls, at, fn)
    return calls / (performance.now() - started) * 1000
  }
  const result = {}
  for (const at of [1, concurrency]) {
    const key = at === 1 ? 'sequential' : 'concurrent'
    result[key] = {
      get: await rate('get', at, async (i) => { if ((await queue.get(pick(i)))?.state !== 'waiting') throw new Error('get: not waiting') }),
      stats: await rate('stats', at, () => queue.stats()),
      waiting: await rate('waiting', at, async () => { if ((await queue.waiting({ limit: 100 })).length !== 100) throw new Error('waiting: short page') })
    }
  }
  // Each cancel takes a distinct task, one after another, then `concurrency` at a time.
  const cancelled = new Set()
  for (const at of [1, concurrency]) {
    const base = cancelled.size
    result[at === 1 ? 'sequential' : 'concurrent'].cancel = await rate('cancel', at, async (i) => {
      const id = ids[base + i]
      if (!await queue.cancel(id)) throw new Error('cancel: not cancelled')
      cancelled.add(id)
    })
  }
  const stats = await queue.stats()
  if (stats.waiting !== n - cancelled.size) throw new Error(`steering: ${stats.waiting} waiting, expected ${n - cancelled.size}`)
  await app.close()
  await deletePrefix(client, prefix)
  client.disconnect()
  return result
}

/** Runs `work` with metrics (a registry of its own) and tracing on, or with both off. */
async function observedRun (on, work) {
  setTracing(on)
  try {
    return await work(on ? { metrics: { registry: new Registry() } } : {})
  } finally {
    setTracing(false)
  }
}

/**
 * 8. Issue 13: what metrics and tracing cost a dispatch. The local and Redis dispatch of rows 2-3
 * with both on and with both off, runs interleaved; each ratio (on / off) is the median of the
 * ratios of runs made one after the other.
 */
async function observed ({ n, redisN, concurrency, reps, warmup, redis, prefix }) {
  const kinds = {
    localOff: () => observedRun(false, (options) => localRun(n, concurrency, options)),
    localOn: () => observedRun(true, (options) => localRun(n, concurrency, options))
  }
  if (redis !== undefined) {
    kinds.redisOff = (r) => observedRun(false, (options) => redisRun(redis, `${prefix}-off-${r}`, redisN, concurrency, false, options))
    kinds.redisOn = (r) => observedRun(true, (options) => redisRun(redis, `${prefix}-on-${r}`, redisN, concurrency, false, options))
  }
  for (const [kind, run] of Object.entries(kinds)) {
    if (kind.startsWith('local')) await observedRun(kind.endsWith('On'), (options) => localRun(warmup, concurrency, options))
    else await run('warmup')
  }
  const runs = Object.fromEntries(Object.keys(kinds).map((kind) => [kind, []]))
  for (let r = 0; r < reps; r++) {
    for (const [kind, run] of Object.entries(kinds)) runs[kind].push(await run(r))
  }
  const result = {}
  for (const [kind, measured] of Object.entries(runs)) {
    result[kind] = {
      rate: median(measured.map(({ rate }) => rate)),
      cpu: median(measured.map(({ cpu }) => cpu)),
      serverCpu: median(measured.map(({ serverCpu }) => serverCpu ?? 0)),
      runs: measured.map(({ rate }) => Math.round(rate))
    }
  }
  for (const type of ['local', 'redis']) {
    if (runs[`${type}On`] === undefined) continue
    result[`${type}On`].ratio = median(runs[`${type}On`].map(({ rate }, r) => rate / runs[`${type}Off`][r].rate))
    result[`${type}On`].cpuRatio = median(runs[`${type}On`].map(({ cpu }, r) => runs[`${type}Off`][r].cpu / cpu))
  }
  result.spanCpu = await observedRun(true, async () => spanAlone(n))
  return result
}

/**
 * CPU time (µs) of one span of the SDK alone, started and ended with nothing else: what any
 * span per try costs, whatever the plugin does around it. A bound on the ratio of tracing on.
 */
async function spanAlone (n) {
  const tracer = trace.getTracer('bench')
  for (let i = 0; i < 2_000; i++) tracer.startSpan('process default', { kind: SpanKind.CONSUMER }, ROOT_CONTEXT).end()
  collect()
  const before = process.cpuUsage()
  for (let i = 0; i < n; i++) tracer.startSpan('process default', { kind: SpanKind.CONSUMER }, ROOT_CONTEXT).end()
  const used = process.cpuUsage(before)
  return (used.user + used.system) / n
}

/**
 * The setups of row 9 (issue 14): a queue without flow control, then each feature in use. Every
 * setup dispatches the same tasks; `grouped` gives them 16 groups of at most 4 in flight each.
 */
const flowSetups = {
  plain: {},
  rateLimited: { queue: { rateLimit: { max: 1_000_000, timeWindow: 1000 } } },
  grouped: { queue: { groupConcurrency: 4 }, groups: 16 },
  scheduled: { options: { schedules: [{ name: 'tick', cron: '* * * * * *', url: '/tasks/tick' }] } }
}

/** A flow setup's app: the task route, and the route of its schedule's ticks. */
async function flowApp (setup, queue, consumers, counter) {
  const app = await queueApp({ queue: { ...queue, ...setup.queue }, consumers, counter, options: setup.options })
  app.get('/tasks/tick', { config: { taskOnly: true } }, async (request, reply) => { reply.code(204) })
  return app
}

function flowTasks (setup, n) {
  const tasks = makeTasks(n)
  if (setup.groups !== undefined) tasks.forEach((task, i) => { task.group = `group-${i % setup.groups}` })
  return tasks
}

async function flowLocalRun (setup, n, concurrency) {
  const counter = new Counter(n)
  const app = await flowApp(setup, { type: 'local' }, [{ queue: 'default', concurrentLimit: concurrency }], counter)
  await addBatched(app, flowTasks(setup, n))
  collect()
  await app.ready()
  await counter.done
  const result = { rate: counter.rate, cpu: counter.cpuPerCall }
  await app.close()
  return result
}

async function flowRedisRun (setup, redis, prefix, n, concurrency) {
  const client = redisClient(redis)
  const producer = await flowApp(setup, redisQueue(redis, prefix), [], undefined)
  await producer.ready()
  await addBatched(producer, flowTasks(setup, n))
  await producer.close()
  const counter = new Counter(n)
  const app = await flowApp(setup, redisQueue(redis, prefix), [{ queue: 'default', concurrentLimit: concurrency }], counter)
  const cpuBefore = await redisCpu(client)
  collect()
  await app.ready()
  await counter.done
  const serverCpu = await redisCpu(client) - cpuBefore
  await app.close()
  await deletePrefix(client, prefix)
  client.disconnect()
  return { rate: counter.rate, cpu: counter.cpuPerCall + serverCpu / n, serverCpu: serverCpu / n }
}

/**
 * 9. Issue 14: what rate limits, groups and schedules cost a dispatch when used, against the same
 * queue without them; runs interleaved, each ratio the median of those of runs made one after the
 * other. What they cost unused is the plain setup itself, which every other row measures too.
 */
async function flow ({ n, redisN, concurrency, reps, redis, prefix }) {
  const kinds = {}
  for (const name of Object.keys(flowSetups)) {
    kinds[`local-${name}`] = () => flowLocalRun(flowSetups[name], n, concurrency)
    if (redis !== undefined) kinds[`redis-${name}`] = (r) => flowRedisRun(flowSetups[name], redis, `${prefix}-${name}-${r}`, redisN, concurrency)
  }
  for (const run of Object.values(kinds)) await run('warmup')
  const runs = Object.fromEntries(Object.keys(kinds).map((kind) => [kind, []]))
  for (let r = 0; r < reps; r++) {
    for (const [kind, run] of Object.entries(kinds)) runs[kind].push(await run(r))
  }
  const result = {}
  for (const [kind, measured] of Object.entries(runs)) {
    const plain = runs[kind.replace(/-.*/, '-plain')]
    result[kind] = {
      rate: median(measured.map(({ rate }) => rate)),
      cpu: median(measured.map(({ cpu }) => cpu)),
      serverCpu: median(measured.map(({ serverCpu }) => serverCpu ?? 0)),
      ratio: median(measured.map(({ rate }, i) => rate / plain[i].rate)),
      cpuRatio: median(measured.map(({ cpu }, i) => plain[i].cpu / cpu))
    }
  }
  return result
}

/** How many clients are blocked on the server (the idle consumers' reads). */
async function blockedClients (client) {
  return Number(/blocked_clients:(\d+)/.exec(await client.info('clients'))?.[1])
}

/**
 * `consumers` idle consumers (one app, a slot each) on a fresh queue, then `n` tasks added one at a
 * time by a producer app, each once the one before it ran and every consumer blocked again: the Redis commands (`INFO commandstats`,
 * calls inside scripts included) per task, in all and for the script calls and blocking reads.
 */
async function idleConsumersRun (redis, prefix, consumers, n) {
  const client = redisClient(redis)
  let ran = () => {}
  const counter = { hit: () => ran() }
  const producer = await queueApp({ queue: redisQueue(redis, prefix), consumers: [] })
  const app = await queueApp({ queue: redisQueue(redis, prefix), consumers: Array.from({ length: consumers }, () => ({ queue: 'default', concurrentLimit: 1 })), counter })
  await producer.ready()
  const blockedBefore = await blockedClients(client)
  await app.ready()
  // Every consumer blocked: idle, as the tasks come.
  while (await blockedClients(client) < blockedBefore + consumers) await sleep(10)
  const before = await commandCalls(client)
  const started = performance.now()
  for (let i = 0; i < n; i++) {
    const done = new Promise((resolve) => { ran = resolve })
    await producer.taskqueue.add(taskUrl, taskOptions(i))
    await done
    // Idle again (acknowledged, every consumer blocked) before the next task: else a lone consumer
    // would find the next task with its acknowledgement, and never block.
    while (await blockedClients(client) < blockedBefore + consumers) await sleep(1)
  }
  const elapsed = performance.now() - started
  const after = await commandCalls(client)
  await app.close()
  await producer.close()
  await deletePrefix(client, prefix)
  client.disconnect()
  const delta = (name) => ((after.calls[name] ?? 0) - (before.calls[name] ?? 0)) / n
  return {
    ...commandsBetween(before, after, n),
    blockingPerTask: delta('blpop') + delta('blmove'),
    msPerTask: elapsed / n
  }
}

/**
 * Issue 15: what a dispatched task costs Redis with 1 and with many idle consumers of its queue,
 * tasks arriving one at a time: a push that wakes every idle consumer makes each of them reserve.
 */
async function idleConsumers ({ n, many, redis, prefix }) {
  const one = await idleConsumersRun(redis, `${prefix}-1`, 1, n)
  const lots = await idleConsumersRun(redis, `${prefix}-${many}`, many, n)
  return { one, many: lots, consumers: many, ratio: lots.perTask / one.perTask }
}

const scenarios = { dispatch, ceiling, localDispatch, redisDispatch, redisEnqueue, requestEnqueue, deep, steering, observed, flow, idleConsumers }

async function main () {
  const [name, json = '{}'] = process.argv.slice(2)
  const scenario = scenarios[name]
  if (scenario === undefined) throw new Error(`unknown scenario "${name}"; one of ${Object.keys(scenarios).join(', ')}`)
  const result = await scenario(JSON.parse(json))
  if (process.send !== undefined) process.send({ result }, () => process.exit(0))
  else {
    console.log(JSON.stringify(result, null, 2))
    process.exit(0)
  }
}

main().catch((error) => {
  console.error(error)
  if (process.send !== undefined) process.send({ error: error.stack ?? String(error) }, () => process.exit(1))
  else process.exit(1)
})
