// An ESM app (`"type": "module"`, `module: NodeNext`) as the README shows it: compiled by
// test/tarball.test.ts against the packed tarball, never run. Each `@ts-expect-error` fails the
// compilation if its line ever compiles, so the types cannot silently turn into `any`.
import Fastify from 'fastify'
import taskqueue, { fastifyTaskqueue, taskqueueDashboard, TaskConflictError, type DeadLetter, type TaskQueue, type TaskQueuePluginOptions } from 'fastify-taskqueue'
import { Cluster, Redis } from 'ioredis'
import { Cluster as Cluster5, Redis as Redis5 } from 'ioredis5'

const app = Fastify()
await app.register(taskqueue, { queues: [{ queue: 'default' }, { queue: 'mail' }], consumers: [{ queue: 'mail', concurrentLimit: 2 }] })
await app.register(fastifyTaskqueue, {})
// The dashboard, behind the app's own authentication, as the README shows it.
await app.register(async (admin) => {
  admin.addHook('onRequest', async (request, reply) => { if (request.headers.authorization !== 'admin') await reply.code(401).send() })
  await admin.register(taskqueueDashboard)
}, { prefix: '/admin/taskqueue' })
// @ts-expect-error concurrentLimit is a number
await app.register(taskqueue, { consumers: [{ concurrentLimit: '2' }] })

// The `client` option takes the app's own ioredis client or Cluster, of version 6 or 5.
const clients: TaskQueuePluginOptions[] = [
  { queues: [{ queue: 'v6', type: 'redis', client: new Redis({ lazyConnect: true }) }] },
  { queues: [{ queue: 'v6c', type: 'redis', client: new Cluster([{ host: '127.0.0.1', port: 7000 }], { lazyConnect: true }) }] },
  { queues: [{ queue: 'v5', type: 'redis', client: new Redis5({ lazyConnect: true }) }] },
  { queues: [{ queue: 'v5c', type: 'redis', client: new Cluster5([{ host: '127.0.0.1', port: 7000 }], { lazyConnect: true }) }] }
]
// @ts-expect-error a connection string is the `url` option, not a client
const notAClient: TaskQueuePluginOptions = { queues: [{ type: 'redis', client: 'redis://127.0.0.1' }] }

app.post('/tasks/welcome', { config: { taskOnly: true } }, async (request) => {
  const task = request.taskqueue.task
  if (task === null) return { ran: false }
  const retries: number = task.retries
  if (retries === 0) throw new TaskConflictError()
  return { ran: task.id }
})

app.post('/signup', async (request) => {
  const id: string = request.taskqueue.add('/tasks/welcome', { method: 'POST', queue: 'mail' })
  // @ts-expect-error TRACE is not a task method
  request.taskqueue.add('/tasks/welcome', { method: 'TRACE' })
  return { id }
})

await app.ready()
const dead: DeadLetter[] = await app.taskqueue.queue('mail').dead({ limit: 10 })
const queues: TaskQueue = app.taskqueue
// @ts-expect-error the registry of dispatch tokens is internal to the plugin
console.log(queues.dispatchMarks)
const code: 'FST_TASKQUEUE_CONFLICT' = new TaskConflictError().code
await app.close()
console.log(clients.length, notAClient, dead.length, code)
