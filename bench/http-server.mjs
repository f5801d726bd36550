// The app of the request-path scenarios, listening on 127.0.0.1 in a process of its own, so that
// autocannon (in run.mjs) does not share its event loop. Two routes, identical but for the task:
//   POST /enqueue/none answers { ok: true };
//   POST /enqueue/one  queues one task (inheriting the request's headers and body), then answers.
// Options (JSON, argv[2]): `type` and `consumer` of the queue; `plugin: false` for an app without
// the plugin at all (no /enqueue/one then); `observed: true` for metrics (a fresh prom-client
// registry) and tracing (an OpenTelemetry SDK that drops its spans) on; `emptyEvery`, see below.
// Controlled over IPC: { cmd: 'settle' } empties the queue (waiting tasks dropped, those in flight
// awaited) and answers with how many were waiting, the CPU time used since the last settle and
// the heap in use; { cmd: 'close' } closes the app.
import Fastify from 'fastify'
import taskqueue from 'fastify-taskqueue'
import { Registry } from 'prom-client'
import { redisClient, deletePrefix, redisQueue, setTracing, taskRoute, taskUrl } from './common.mjs'

const options = JSON.parse(process.argv[2] ?? '{}')
const { type = 'local', consumer = false, redis, prefix, headerPolicy, plugin = true, observed = false, emptyEvery } = options

const app = Fastify({ logger: false })
if (plugin) {
  if (observed) setTracing(true)
  const queue = type === 'local' ? { type: 'local' } : redisQueue(redis, prefix)
  await app.register(taskqueue, {
    queues: [{ queue: 'default', ...queue }],
    consumers: consumer ? [{ queue: 'default', concurrentLimit: 8 }] : [],
    headerPolicy,
    ...(observed ? { metrics: { registry: new Registry() } } : {})
  })
  app.post('/enqueue/one', async (request) => {
    request.taskqueue.add(taskUrl, { method: 'POST' })
    return { ok: true }
  })
}
app.post('/enqueue/none', async () => ({ ok: true }))
taskRoute(app)
await app.listen({ host: '127.0.0.1', port: 0 })

// `emptyEvery` (ms): the waiting tasks are dropped that often during a run too, as a consumer
// that keeps up would take them, so that a queue without one does not pile up a run's tasks.
if (plugin && emptyEvery !== undefined) setInterval(() => { app.taskqueue.queue('default').reset() }, emptyEvery).unref()

/**
 * Drops the waiting tasks and awaits those in flight and the pushes of the last responses; a
 * second reset drops what those pushes added after the first, so that nothing carries over into
 * the next run.
 */
async function settle () {
  if (!plugin) return 0
  const handle = app.taskqueue.queue('default')
  const waiting = await handle.length()
  await handle.reset()
  await app.taskqueue.drain()
  await handle.reset()
  return waiting
}

/** CPU time (µs, user and system) used since the last settle ended: a run's, idle gaps aside. */
let cpuMark = process.cpuUsage()

process.on('message', async ({ cmd }) => {
  if (cmd === 'settle') {
    const { user, system } = process.cpuUsage(cpuMark)
    const waiting = await settle()
    // With --expose-gc (as run.mjs starts it): the heap that the run left reachable, its garbage
    // collected now rather than in the next run.
    globalThis.gc?.()
    process.send({ waiting, cpu: user + system, cpuSystem: system, heapUsed: process.memoryUsage().heapUsed })
    cpuMark = process.cpuUsage()
  } else if (cmd === 'close') {
    await app.close()
    if (plugin && type !== 'local') {
      const client = redisClient(redis)
      await deletePrefix(client, prefix)
      client.disconnect()
    }
    process.send({ closed: true }, () => process.exit(0))
  }
})
process.send({ port: app.server.address().port })
