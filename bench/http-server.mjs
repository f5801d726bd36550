// The app of the request-path scenarios, listening on 127.0.0.1 in a process of its own, so that
// autocannon (in run.mjs) does not share its event loop. Two routes, identical but for the task:
//   POST /enqueue/none answers { ok: true };
//   POST /enqueue/one  queues one task (inheriting the request's headers and body), then answers.
// Controlled over IPC: { cmd: 'settle' } empties the queue (waiting tasks dropped, those in flight
// awaited) and answers with how many were waiting; { cmd: 'close' } closes the app.
import Fastify from 'fastify'
import taskqueue from 'fastify-taskqueue'
import { redisClient, deletePrefix, redisQueue, taskRoute, taskUrl } from './common.mjs'

const options = JSON.parse(process.argv[2] ?? '{}')
const { type = 'local', consumer = false, redis, prefix, headerPolicy } = options

const app = Fastify({ logger: false })
const queue = type === 'local' ? { type: 'local' } : redisQueue(redis, prefix)
await app.register(taskqueue, {
  queues: [{ queue: 'default', ...queue }],
  consumers: consumer ? [{ queue: 'default', concurrentLimit: 8 }] : [],
  headerPolicy
})
app.post('/enqueue/none', async () => ({ ok: true }))
app.post('/enqueue/one', async (request) => {
  request.taskqueue.add(taskUrl, { method: 'POST' })
  return { ok: true }
})
taskRoute(app)
await app.listen({ host: '127.0.0.1', port: 0 })

process.on('message', async ({ cmd }) => {
  if (cmd === 'settle') {
    const handle = app.taskqueue.queue('default')
    const waiting = await handle.length()
    await handle.reset()
    await app.taskqueue.drain()
    process.send({ waiting })
  } else if (cmd === 'close') {
    await app.close()
    if (type !== 'local') {
      const client = redisClient(redis)
      await deletePrefix(client, prefix)
      client.disconnect()
    }
    process.send({ closed: true }, () => process.exit(0))
  }
})
process.send({ port: app.server.address().port })
