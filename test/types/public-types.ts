// Type tests of the public types: compiled by `npm run typecheck` (tsc -p tsconfig.json), never run.
// Correct usages must compile; each wrong one is marked `@ts-expect-error`, which itself fails the
// type check if the line ever compiles.
import Fastify, { type FastifyContextConfig } from 'fastify'
import taskqueue, {
  fastifyTaskqueue,
  taskqueueDashboard,
  CrossSiteError,
  UnsupportedMediaTypeError,
  TaskConflictError,
  InvalidOptionError,
  InvalidUrlError,
  type AddOptions,
  type ConsumerOptions,
  type DispatchedTask,
  type QueueBackend,
  type QueueBackendContext,
  type QueueBackendFactory,
  type QueueHandle,
  type QueueOptions,
  type ScheduleInfo,
  type ScheduleOptions,
  type TaskMethod,
  type TaskQueuePluginOptions
} from '../../plugin'

/** True only when A and B are the same type, not merely assignable. */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false

function expectTrue<T extends true> (check?: T): T | undefined {
  return check
}

/** Compiles only when `value` is exactly of type `Expected`. */
function exactly<Expected> () {
  return <Actual>(value: Actual, ...check: Equal<Actual, Expected> extends true ? [] : ['not the expected type']): Actual => value
}

declare const customBackend: QueueBackend
declare function request (): string | null

export async function publicTypes (): Promise<unknown[]> {
  const app = Fastify()

  // Registering: no options, the documented ones, a named export, custom backends.
  await app.register(taskqueue)
  await app.register(taskqueue, {
    queues: [{ queue: 'default', type: 'local' }, { queue: 'mail' }, { queue: 'shared', type: 'redis', host: 'localhost', port: 6379, rateLimit: { max: 10, timeWindow: 1000 } }],
    consumers: [
      { queue: 'default', name: 'web-1', concurrentLimit: 1, retryMaxCount: 10, retryDelay: { min: 10, max: 1000 } },
      { queue: 'mail' }
    ],
    closeTimeout: 5000
  })
  await app.register(fastifyTaskqueue, {})
  const factory: QueueBackendFactory = (context: QueueBackendContext) => {
    exactly<string>()(context.queue)
    context.log.info('making a backend')
    return customBackend
  }
  await app.register(taskqueue, { queues: [{ queue: 'own', type: customBackend }, { queue: 'made', type: factory }] })
  const options: TaskQueuePluginOptions = { queues: [{ queue: 'a' }], consumers: [{ queue: 'a' }] }
  const queueOptions: QueueOptions = { queue: 'b', type: 'local' }
  const consumerOptions: ConsumerOptions = { concurrentLimit: 0 }
  await app.register(taskqueue, { ...options, queues: [queueOptions], consumers: [consumerOptions] })

  // The dashboard: in a scope of its own behind the app's hook, or alone with a prefix.
  await app.register(async (admin) => {
    admin.addHook('onRequest', async () => {})
    await admin.register(taskqueueDashboard)
  }, { prefix: '/admin/taskqueue' })
  await app.register(taskqueueDashboard, { prefix: '/admin' })
  exactly<'FST_TASKQUEUE_CROSS_SITE'>()(new CrossSiteError().code)
  exactly<'FST_TASKQUEUE_UNSUPPORTED_MEDIA_TYPE'>()(new UnsupportedMediaTypeError('text/plain').code)
  // @ts-expect-error the media type is part of the message
  exactly<'FST_TASKQUEUE_UNSUPPORTED_MEDIA_TYPE'>()(new UnsupportedMediaTypeError().code)

  // Wrong options do not compile.
  // @ts-expect-error concurrentLimit is a number
  await app.register(taskqueue, { consumers: [{ concurrentLimit: '1' }] })
  // @ts-expect-error retryMaxCount is a number
  await app.register(taskqueue, { consumers: [{ retryMaxCount: true }] })
  // @ts-expect-error retryDelay bounds are numbers
  await app.register(taskqueue, { consumers: [{ retryDelay: { min: '1s' } }] })
  // @ts-expect-error retryDelay is an object
  await app.register(taskqueue, { consumers: [{ retryDelay: 100 }] })
  // @ts-expect-error unknown top-level option
  await app.register(taskqueue, { queue: 'default' })
  // @ts-expect-error unknown queue option
  await app.register(taskqueue, { queues: [{ queue: 'a', concurrency: 2 }] })
  // @ts-expect-error unknown consumer option
  await app.register(taskqueue, { consumers: [{ queue: 'a', retries: 2 }] })
  // @ts-expect-error a rate limit takes both max and timeWindow
  await app.register(taskqueue, { queues: [{ rateLimit: { max: 10 } }] })
  // @ts-expect-error timeWindow is in ms, a number
  await app.register(taskqueue, { queues: [{ rateLimit: { max: 10, timeWindow: '1 minute' } }] })
  // @ts-expect-error queues is an array
  await app.register(taskqueue, { queues: { queue: 'a' } })
  // @ts-expect-error a queue name is a string
  await app.register(taskqueue, { queues: [{ queue: 1 }] })
  // @ts-expect-error no such queue type
  await app.register(taskqueue, { queues: [{ type: 'memory' }] })
  // @ts-expect-error a custom backend implements the whole interface
  await app.register(taskqueue, { queues: [{ type: { name: 'default', shared: false } }] })
  // @ts-expect-error a factory returns a backend
  await app.register(taskqueue, { queues: [{ type: (context: QueueBackendContext) => context.queue }] })
  // @ts-expect-error closeTimeout is a number of milliseconds
  await app.register(taskqueue, { closeTimeout: '10s' })
  // @ts-expect-error consumers is an array
  const badOptions: TaskQueuePluginOptions = { consumers: { queue: 'a' } }

  // Route config: taskOnly is a boolean.
  app.post('/tasks/welcome', { config: { taskOnly: true } }, async (request) => {
    const task = request.taskqueue.task
    exactly<DispatchedTask | null>()(task)
    if (task !== null) {
      exactly<string>()(task.id)
      exactly<string>()(task.queue)
      exactly<number>()(task.retries)
      exactly<{ name: string, tick: Date } | undefined>()(task.schedule)
    }
    // @ts-expect-error task is null outside a dispatched task
    return request.taskqueue.task.id
  })
  // @ts-expect-error taskOnly is a boolean
  app.get('/tasks/bad', { config: { taskOnly: 'yes' } }, async () => 'no')
  app.route({ method: 'GET', url: '/tasks/routed', config: { taskOnly: false }, handler: async () => 'ok' })
  expectTrue<Equal<FastifyContextConfig['taskOnly'], boolean | undefined>>()
  // @ts-expect-error taskOnly is a boolean
  const badConfig: FastifyContextConfig = { taskOnly: 1 }

  // request.taskqueue.add: the id at once.
  app.post('/signup', async (request) => {
    const id = request.taskqueue.add('/tasks/welcome', {
      method: 'POST', params: { user: '42', list: ['a', 'b'], page: 2, all: true }, headers: { 'x-lang': 'fi' }, payload: { a: 1 }, queue: 'mail'
    })
    exactly<string>()(id)
    request.taskqueue.add('/tasks/plain')
    request.taskqueue.add('/tasks/none', { method: 'DELETE', payload: null })
    request.taskqueue.add('/tasks/bytes', { method: 'PUT', payload: Buffer.from('x') })

    // @ts-expect-error TRACE is not a task method
    request.taskqueue.add('/tasks/welcome', { method: 'TRACE' })
    // @ts-expect-error methods are upper case
    request.taskqueue.add('/tasks/welcome', { method: 'get' })
    // @ts-expect-error the url is a string
    request.taskqueue.add(42)
    // @ts-expect-error the url is required
    request.taskqueue.add()
    // @ts-expect-error unknown add option
    request.taskqueue.add('/tasks/welcome', { bogus: 1 })
    // @ts-expect-error header values are strings
    request.taskqueue.add('/tasks/welcome', { headers: { 'x-n': 1 } })
    // @ts-expect-error param values are strings, numbers, booleans or arrays of them
    request.taskqueue.add('/tasks/welcome', { params: { nested: { a: 1 } } })
    // @ts-expect-error a queue is named by a string
    request.taskqueue.add('/tasks/welcome', { queue: 1 })
    // @ts-expect-error add returns the id, a string
    const wrongId: number = request.taskqueue.add('/tasks/welcome')
    return { queued: id, wrongId }
  })

  // app.taskqueue: add resolves to the id; queue handles; drain.
  const pending = app.taskqueue.add('/tasks/welcome', { queue: 'mail' })
  exactly<Promise<string>>()(pending)
  // @ts-expect-error app.taskqueue.add returns a promise, not the id
  const notYet: string = app.taskqueue.add('/tasks/welcome')
  // @ts-expect-error TRACE is not a task method
  await app.taskqueue.add('/tasks/welcome', { method: 'TRACE' })
  // @ts-expect-error the url is a string
  await app.taskqueue.add(42)

  const handle = app.taskqueue.queue('mail')
  exactly<QueueHandle>()(handle)
  const waiting = await handle.length()
  exactly<number>()(waiting)
  // @ts-expect-error length() resolves to a number
  const waitingText: string = await app.taskqueue.queue('mail').length()
  const cleared = handle.reset()
  exactly<Promise<void>>()(cleared)
  const drained = app.taskqueue.drain()
  exactly<Promise<void>>()(drained)

  // Schedules: an option, and app.taskqueue.schedules() with the next run of each.
  const schedule: ScheduleOptions = { name: 'nightly', cron: '0 3 * * *', url: '/tasks/night', method: 'POST', payload: { a: 1 }, timezone: 'Europe/Helsinki' }
  await app.register(taskqueue, { schedules: [schedule] })
  // @ts-expect-error a schedule needs a cron expression
  const noCron: ScheduleOptions = { name: 'nightly', url: '/tasks/night' }
  // @ts-expect-error HEAD is not a task method, in a schedule either
  const headSchedule: ScheduleOptions = { ...schedule, method: 'HEAD' }
  const listed = app.taskqueue.schedules()
  exactly<ScheduleInfo[]>()(listed)
  exactly<Date | null>()(listed[0].nextRun)
  exactly<string>()(listed[0].timezone)
  // @ts-expect-error a queue is named by a string
  app.taskqueue.queue(1)

  // Public types and errors.
  const method: TaskMethod = 'PATCH'
  // @ts-expect-error HEAD is not a task method
  const badMethod: TaskMethod = 'HEAD'
  const addOptions: AddOptions = { method, queue: 'mail' }
  // @ts-expect-error unknown add option
  const badAddOptions: AddOptions = { retries: 2 }
  const conflict = new TaskConflictError()
  exactly<'FST_TASKQUEUE_CONFLICT'>()(conflict.code)
  const invalid = new InvalidOptionError('queues[0].queue: bad')
  exactly<'FST_TASKQUEUE_INVALID_OPTION'>()(invalid.code)
  const error: Error = new InvalidUrlError('bad url')

  // The checks above can fail: a near miss is refused.
  // @ts-expect-error string | null is not string
  exactly<string>()(request())
  // @ts-expect-error Promise<string> is not string
  exactly<string>()(pending)

  await app.close()
  return [badConfig, badOptions, notYet, waitingText, badMethod, addOptions, badAddOptions, error, noCron, headSchedule]
}
