// Fixtures and helpers shared by the benchmark scenarios: the task every scenario queues (a POST
// with about 1 KB of realistic headers and a small JSON body), the apps, timing and Redis keys.
import { performance } from 'node:perf_hooks'
import { randomBytes, randomUUID } from 'node:crypto'
import Fastify from 'fastify'
import taskqueue from 'fastify-taskqueue'
import { Redis } from 'ioredis'
import { context, propagation, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base'

export const taskUrl = '/tasks/noop'

/** Headers of a browser request behind a proxy, about 1 KB; every one of them is copied into a task. */
const headerTemplate = {
  host: 'shop.example.com',
  accept: 'application/json, text/plain, */*',
  'accept-language': 'fi-FI,fi;q=0.9,sv-FI;q=0.8,en-US;q=0.7,en;q=0.6',
  'accept-encoding': 'gzip, deflate, br, zstd',
  'content-type': 'application/json',
  origin: 'https://shop.example.com',
  referer: 'https://shop.example.com/account/orders?page=2&sort=-created',
  authorization: 'Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6IjJmNGE5YyJ9.eyJzdWIiOiI0MiIsImlzcyI6Imh0dHBzOi8vYXV0aC5leGFtcGxlLmNvbSIsImF1ZCI6InNob3AiLCJleHAiOjE4OTM0NTYwMDAsInNjb3BlIjoib3JkZXJzOnJlYWQgb3JkZXJzOndyaXRlIn0.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU',
  cookie: 'session=SESSION; csrftoken=Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0; _ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; theme=dark; consent=analytics%3Dyes%26ads%3Dno; cart=3f1c2e',
  'sec-fetch-site': 'same-origin',
  'sec-fetch-mode': 'cors',
  'sec-fetch-dest': 'empty',
  'sec-ch-ua': '"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"',
  'sec-ch-ua-mobile': '?0',
  'sec-ch-ua-platform': '"Linux"',
  'x-request-id': 'REQUEST',
  'x-forwarded-for': '203.0.113.7, 10.0.0.12',
  'x-forwarded-proto': 'https'
}
const headerJson = JSON.stringify(headerTemplate)

/**
 * The headers of task `i`, as fresh strings (parsed, not shared literals): a queue holds the
 * headers of many different requests, which share no strings but their names.
 */
export function taskHeaders (i = 0) {
  const id = randomUUID()
  return JSON.parse(headerJson.replace('SESSION', `${id.slice(0, 8)}${i}`).replace('REQUEST', id))
}

/** The body of task `i`, a fresh object. */
export function taskPayload (i = 0) {
  return { orderId: 100000 + i, userId: 42, action: 'send-confirmation', locale: 'fi', items: [1, 2, 3] }
}

/**
 * The few headers an app might let its tasks inherit with `headerPolicy: { allow: [...] }`: the
 * rows that use them measure what a smaller task message gives.
 */
export const slimHeaders = ['host', 'content-type', 'authorization']

/** What `add()` is given for task `i`. */
export function taskOptions (i = 0) {
  return { method: 'POST', headers: taskHeaders(i), payload: taskPayload(i) }
}

/** Bytes of url, header names and values, and payload of a task made from `taskOptions(i)`. */
export function taskSize (i = 0) {
  const { headers, payload } = taskOptions(i)
  let bytes = Buffer.byteLength(taskUrl) + Buffer.byteLength(JSON.stringify(payload))
  for (const [name, value] of Object.entries(headers)) bytes += Buffer.byteLength(name) + Buffer.byteLength(value)
  return bytes
}

/** The inject() options of the ceiling: the same request a consumer makes of a task, without the x-task-* headers. */
export function ceilingRequest (i = 0) {
  return { method: 'POST', url: taskUrl, headers: taskHeaders(i), payload: JSON.stringify(taskPayload(i)) }
}

/** What an HTTP client sends in the request-path scenarios (with the headers no task copies). */
export function clientHeaders () {
  const { host, ...rest } = taskHeaders(0)
  return { ...rest, 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36', connection: 'keep-alive' }
}

export const clientBody = JSON.stringify(taskPayload(0))

/**
 * Counts the calls of the task route and keeps when they happened: throughput is measured between
 * the first call and the `target`-th, the same way for the ceiling and both queues. With a
 * `window`, the time of call `offset` and of every `window`-th call after it is kept too.
 */
export class Counter {
  constructor (target = Infinity, window = 0, offset = 0) {
    this.count = 0
    this.first = 0
    this.last = 0
    this.window = window
    this.offset = offset
    this.marks = []
    this.cpuMarks = []
    this.target = target
    this.done = new Promise((resolve) => { this.resolve = resolve })
  }

  hit () {
    const now = performance.now()
    if (++this.count === 1) {
      this.first = now
      this.cpuFirst = process.cpuUsage()
    }
    this.last = now
    if (this.window > 0 && this.count >= this.offset && (this.count - this.offset) % this.window === 0) {
      this.marks.push(now)
      this.cpuMarks.push(process.cpuUsage())
    }
    if (this.count === this.target) {
      this.cpuLast = process.cpuUsage(this.cpuFirst)
      this.resolve(now)
    }
  }

  /**
   * CPU time (µs, user and system, every thread of the process) per call between the first call
   * and the target: unlike calls per second, barely moved by other processes taking the cores.
   */
  get cpuPerCall () {
    return (this.cpuLast.user + this.cpuLast.system) / (this.count - 1)
  }

  /** Calls per second between each pair of consecutive marks. */
  get windowRates () {
    return this.marks.slice(1).map((mark, i) => this.window / (mark - this.marks[i]) * 1000)
  }

  /** CPU time (µs) per call between each pair of consecutive marks. */
  get windowCpu () {
    const total = ({ user, system }) => user + system
    return this.cpuMarks.slice(1).map((mark, i) => (total(mark) - total(this.cpuMarks[i])) / this.window)
  }

  /** Calls per second between the first call and the last. */
  get rate () {
    return (this.count - 1) / (this.last - this.first) * 1000
  }
}

/** Adds the trivial task route (204, no body), counted by `counter`. */
export function taskRoute (app, counter, taskOnly = true) {
  app.post(taskUrl, { config: { taskOnly } }, async (request, reply) => {
    counter?.hit()
    reply.code(204)
  })
}

/** An app with the plugin: `queue` is `{ type: 'local' }` or the options of a Redis queue. */
export async function queueApp ({ queue, consumers, counter, options = {} }) {
  const app = Fastify({ logger: false })
  await app.register(taskqueue, { queues: [{ queue: 'default', ...queue }], consumers, ...options })
  taskRoute(app, counter)
  return app
}

/** Options of a Redis queue under `prefix`, on the server `redis` names ({ unixSocketPath } or { url }). */
export function redisQueue (redis, prefix) {
  return { type: 'redis', prefix, ...redis }
}

/** A plain client of the benchmark's Redis server. */
export function redisClient (redis) {
  const client = redis.url === undefined ? new Redis({ path: redis.unixSocketPath }) : new Redis(redis.url)
  client.on('error', () => {})
  return client
}

/** CPU time (µs) that redis-server has used so far. */
export async function redisCpu (client) {
  const info = await client.info('cpu')
  return (Number(/used_cpu_user:([\d.]+)/.exec(info)[1]) + Number(/used_cpu_sys:([\d.]+)/.exec(info)[1])) * 1e6
}

/** Calls of every command Redis served so far (`INFO commandstats`), but INFO's own, and their sum. */
export async function commandCalls (client) {
  const info = await client.info('commandstats')
  const calls = {}
  let total = 0
  for (const [, name, count] of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    if (name === 'info') continue
    calls[name] = Number(count)
    total += Number(count)
  }
  return { calls, total }
}

/**
 * What Redis ran for `n` tasks between two readings of commandCalls: commands per task (those run
 * inside scripts included, as INFO counts them), and script calls per task, each a request of its
 * own: how many tasks a round trip carries.
 */
export function commandsBetween (before, after, n) {
  const delta = (name) => (after.calls[name] ?? 0) - (before.calls[name] ?? 0)
  return { perTask: (after.total - before.total) / n, scriptsPerTask: (delta('evalsha') + delta('eval')) / n }
}

/**
 * The headers a consumer adds to a task's own when it dispatches it (`x-task-*`, its user-agent,
 * the dispatch token `key`). Built the way the consumer builds them (copied one by one into a new
 * object, then added to): an object made with spread syntax instead cost `inject()` about 7 µs
 * more per request in a micro-benchmark, which made a reference slower than the queue it bounds.
 */
export function withDispatchHeaders (request, key = foreignKey) {
  const headers = {}
  for (const name in request.headers) headers[name] = request.headers[name]
  headers['x-task-id'] = randomUUID()
  headers['x-task-queue'] = 'default'
  headers['x-task-retries'] = '0'
  headers['x-task-eta'] = new Date().toISOString()
  headers['x-task-created-at'] = new Date().toISOString()
  headers['user-agent'] = 'fastify-taskqueue'
  headers['x-taskqueue-dispatch'] = key
  request.headers = headers
  return request
}

/** A dispatch token of no app: for the plain apps, which do not look at it. */
const foreignKey = randomBytes(24).toString('base64url')

/** Deletes every key under `prefix` (only the benchmark's own prefixes are ever given). */
export async function deletePrefix (client, prefix) {
  let cursor = '0'
  let deleted = 0
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000)
    cursor = next
    if (keys.length > 0) deleted += await client.unlink(...keys)
  } while (cursor !== '0')
  return deleted
}

/** Runs `fn(i)` for i in [0, n) with `concurrency` workers, each awaiting its call before the next. */
export async function pool (n, concurrency, fn) {
  let next = 0
  const worker = async () => {
    while (next < n) await fn(next++)
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
}

/** Adds `tasks` (add() options) through `app.taskqueue.add`, `batch` at a time. */
export async function addBatched (app, tasks, batch = 500) {
  for (let start = 0; start < tasks.length; start += batch) {
    const end = Math.min(tasks.length, start + batch)
    const pending = []
    for (let i = start; i < end; i++) pending.push(app.taskqueue.add(taskUrl, tasks[i]))
    await Promise.all(pending)
  }
}

/** An exporter that drops what it gets: the spans are made, recorded and ended, and go nowhere. */
const droppingExporter = { export (spans, done) { done({ code: 0 }) }, async shutdown () {} }

/**
 * Tracing on: an SDK registered as an app in production registers it (a BasicTracerProvider with
 * the batching span processor, whose exporter drops the spans, the AsyncLocalStorage context
 * manager, the W3C propagator); off: none, as in an app without OpenTelemetry. The plugin reads
 * them through @opentelemetry/api at each try.
 */
export function setTracing (on) {
  trace.disable()
  context.disable()
  propagation.disable()
  if (!on) return
  trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(droppingExporter, { maxQueueSize: 65_536 })] }))
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
}

export function median (values) {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

export function sleep (ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export { performance }
