// A CommonJS app (`"type": "commonjs"`, `module: NodeNext`): compiled by test/tarball.test.ts
// against the packed tarball, never run; require.js beside it does the same from JavaScript.
// Each `@ts-expect-error` fails the compilation if its line ever compiles.
import Fastify = require('fastify')
import taskqueue = require('fastify-taskqueue')
import defaultImport, { TaskConflictError, type DeadLetter, type TaskQueuePluginOptions } from 'fastify-taskqueue'
import { Cluster, Redis } from 'ioredis'
import { Cluster as Cluster5, Redis as Redis5 } from 'ioredis5'

export async function main (): Promise<void> {
  const app = Fastify()
  await app.register(taskqueue, { queues: [{ queue: 'default' }, { queue: 'mail' }], consumers: [{ queue: 'mail', concurrentLimit: 2 }] })
  await app.register(taskqueue.default, {})
  await app.register(defaultImport, { closeTimeout: 1000 })
  await app.register(taskqueue.taskqueueDashboard, { prefix: '/admin/taskqueue' })
  // @ts-expect-error closeTimeout is a number of milliseconds
  await app.register(taskqueue, { closeTimeout: '1s' })

  // The `client` option takes the app's own ioredis client or Cluster, of version 6 or 5.
  const clients: TaskQueuePluginOptions[] = [
    { queues: [{ queue: 'v6', type: 'redis', client: new Redis({ lazyConnect: true }) }] },
    { queues: [{ queue: 'v6c', type: 'redis', client: new Cluster([{ host: '127.0.0.1', port: 7000 }], { lazyConnect: true }) }] },
    { queues: [{ queue: 'v5', type: 'redis', client: new Redis5({ lazyConnect: true }) }] },
    { queues: [{ queue: 'v5c', type: 'redis', client: new Cluster5([{ host: '127.0.0.1', port: 7000 }], { lazyConnect: true }) }] }
  ]
  // @ts-expect-error an options object is not a client
  const notAClient: TaskQueuePluginOptions = { queues: [{ type: 'redis', client: { host: '127.0.0.1' } }] }

  app.post('/tasks/welcome', { config: { taskOnly: true } }, async (request) => {
    const task = request.taskqueue.task
    if (task === null) return { ran: false }
    if (task.retries === 0) throw new taskqueue.TaskConflictError()
    return { ran: task.id }
  })
  app.post('/signup', async (request) => {
    const id: string = request.taskqueue.add('/tasks/welcome', { method: 'POST', queue: 'mail' })
    // @ts-expect-error the url is a string
    request.taskqueue.add(42)
    // @ts-expect-error the tasks a request holds are internal to the plugin
    console.log(request.taskqueue.held)
    return { id }
  })

  await app.ready()
  const dead: DeadLetter[] = await app.taskqueue.queue('mail').dead()
  const code: 'FST_TASKQUEUE_CONFLICT' = new TaskConflictError().code
  await app.close()
  console.log(clients.length, notAClient, dead.length, code)
}
