// The BullMQ row of the dispatch scenario (issue 15): the same tasks, through the same route of a
// plain app and the same inject() as the minimal Redis loop, but queued and handed out by BullMQ,
// so that the Redis queue of this plugin is compared with a queue that apps use in production.
import Fastify from 'fastify'
import { Queue, Worker } from 'bullmq'
import { Redis } from 'ioredis'
import {
  Counter, commandCalls, commandsBetween, deletePrefix, performance, redisClient, redisCpu, taskOptions, taskRoute, taskUrl, withDispatchHeaders
} from './common.mjs'

/** Jobs given to one addBulk() call while the queue is filled. */
const fillChunk = 500

/**
 * A connection BullMQ can use for blocking commands (it asks for no retry limit per request).
 * Given as an instance, so that REDIS_URL and a unix socket go the same way; BullMQ leaves such a
 * connection open at close, the run quits it.
 */
function bullmqConnection (redis) {
  const options = { maxRetriesPerRequest: null }
  const client = redis.url === undefined ? new Redis({ ...options, path: redis.unixSocketPath }) : new Redis(redis.url, options)
  client.on('error', () => {})
  return client
}

/**
 * What a job holds: the task of our rows (method, url, the 18 headers, the payload). The payload
 * is stored as the JSON text add() makes of it, so that each dispatch sends the same body and
 * serializes nothing more than our consumer does.
 */
function jobData (i) {
  const { method, headers, payload } = taskOptions(i)
  return { method, url: taskUrl, headers, payload: JSON.stringify(payload) }
}

/**
 * `n` jobs waiting in a BullMQ queue under `prefix` (filled before any clock starts, `fillChunk`
 * at a time), then a Worker of `concurrency` whose processor injects each job's request, with the
 * headers our consumer adds, into a plain app. Throughput and the app's CPU are counted by the
 * route, between its first call and the `n`-th, as in every other row; redis-server's CPU from the
 * worker's start until then. Resolves with `{ rate, cpu, serverCpu, wallRate, commands }` (CPU in
 * µs per task, app plus redis-server; `wallRate`: from the worker's start until every job
 * completed; `commands`: what Redis ran per job over the same span, as for our queue).
 */
export async function bullmqRun (redis, prefix, n, concurrency) {
  const client = redisClient(redis)
  const queueConnection = bullmqConnection(redis)
  const workerConnection = bullmqConnection(redis)
  // removeOnComplete: a production queue drops its finished jobs rather than keep millions of
  // them, and ours deletes a task once done too, so both do the same writes per task.
  const queue = new Queue('default', { connection: queueConnection, prefix, defaultJobOptions: { removeOnComplete: true } })
  for (let start = 0; start < n; start += fillChunk) {
    const end = Math.min(n, start + fillChunk)
    const jobs = []
    for (let i = start; i < end; i++) jobs.push({ name: 'task', data: jobData(i) })
    await queue.addBulk(jobs)
  }

  const counter = new Counter(n)
  const app = Fastify({ logger: false })
  taskRoute(app, counter)
  await app.ready()
  let failure
  const failed = new Promise((resolve, reject) => { failure = reject })
  const worker = new Worker('default', async (job) => {
    const { method, url, headers, payload } = job.data
    const response = await app.inject(withDispatchHeaders({ method, url, headers, payload }))
    if (response.statusCode !== 204) throw new Error(`bullmq: answered ${response.statusCode}`)
  }, { connection: workerConnection, prefix, concurrency, autorun: false })
  worker.on('failed', (job, error) => failure(new Error(`bullmq: job ${job?.id} failed: ${error.message}`)))
  let completed = 0
  let allCompleted
  worker.on('completed', () => { if (++completed === n) allCompleted = performance.now() })
  worker.on('error', (error) => failure(error))
  await worker.waitUntilReady()

  const cpuBefore = await redisCpu(client)
  const callsBefore = await commandCalls(client)
  globalThis.gc?.()
  const started = performance.now()
  const running = worker.run()
  await Promise.race([counter.done, failed])
  const serverCpu = await redisCpu(client) - cpuBefore
  const commands = commandsBetween(callsBefore, await commandCalls(client), n)
  // close() waits for the jobs in flight, which completes the last ones.
  await worker.close()
  if (completed !== n) throw new Error(`bullmq: ${completed} jobs completed, expected ${n}`)
  const wallRate = n / (allCompleted - started) * 1000
  await running
  const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed')
  await queue.close()
  await app.close()
  await deletePrefix(client, prefix)
  for (const connection of [client, queueConnection, workerConnection]) connection.disconnect()
  const left = Object.entries(counts).filter(([, count]) => count !== 0)
  if (left.length > 0) throw new Error(`bullmq: jobs left behind: ${left.map(([state, count]) => `${count} ${state}`).join(', ')}`)
  return { rate: counter.rate, cpu: counter.cpuPerCall + serverCpu / n, serverCpu: serverCpu / n, wallRate, commands }
}
