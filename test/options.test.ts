// The plugin options of issue 2: their defaults, the consumers made when none are given, every
// rejected option (with FST_TASKQUEUE_INVALID_OPTION naming its path) and custom queue backends.
import { test } from 'tap'
import { recordingApp } from './helpers/app'
import Fastify, { type FastifyInstance } from 'fastify'
import taskqueue from '../plugin'
import { resolveConsumer, resolveOptions, type TaskQueuePluginOptions } from '../lib/options'
import type { DeadLetter, QueueBackend, QueueBackendContext, ReservedTask, TaskMessage, TaskReceiver } from '../types'

type Test = Parameters<Parameters<typeof test>[0]>[0]

/** Options that the types rightly refuse, handed to the plugin as a JavaScript caller could. */
function untyped (options: unknown): TaskQueuePluginOptions {
  return options as TaskQueuePluginOptions
}

function deferred (): { promise: Promise<void>, resolve: () => void } {
  let resolve!: () => void
  const promise = new Promise<void>((_resolve) => { resolve = _resolve })
  return { promise, resolve }
}

interface Built {
  app: FastifyInstance
  dispatched: Array<{ url: string, queue: string | undefined }>
  /** Resolves once the next task was answered. */
  nextAnswer: () => Promise<void>
}

/** The recording app, with the url and queue of each dispatch, and a wait for the next answer. */
async function build (t: Test, options?: TaskQueuePluginOptions): Promise<Built> {
  const dispatched: Built['dispatched'] = []
  let answered: Array<() => void> = []
  const { app } = await recordingApp(t, options ?? {}, {
    tasks: (request) => { dispatched.push({ url: request.url, queue: request.taskqueue.task?.queue }) },
    routes: (app) => app.addHook('onResponse', async (request) => {
      if (!request.url.startsWith('/tasks/')) return
      const waiters = answered
      answered = []
      for (const resolve of waiters) setImmediate(resolve)
    })
  })
  return { app, dispatched, nextAnswer: () => new Promise((resolve) => answered.push(resolve)) }
}

/** Registers the plugin with `options` and returns the error that `ready()` rejects with. */
async function startError (t: Test, options: unknown): Promise<Error & { code?: string }> {
  const app = Fastify()
  t.teardown(() => app.close().catch(() => {}))
  app.register(taskqueue, untyped(options))
  const error = await app.ready().then(() => undefined, (error: Error) => error)
  if (error === undefined) throw new Error(`the plugin started with ${JSON.stringify(options)}`)
  return error
}

async function rejectsOption (t: Test, options: unknown, path: string): Promise<void> {
  const error = await startError(t, options)
  t.equal(error.code, 'FST_TASKQUEUE_INVALID_OPTION', 'coded as an invalid option')
  t.ok(error.message.startsWith(`Invalid taskqueue option: ${path}:`), `the message names ${path}: ${error.message}`)
}

/** A tiny in-memory QueueBackend, recording how the plugin uses it. */
class MemoryBackend implements QueueBackend {
  tasks: TaskMessage[] = []
  /** Every task ever put, in order. */
  putLog: TaskMessage[] = []
  acked: TaskMessage[] = []
  receivers: string[] = []
  closed = false
  readonly readyCalled = deferred()
  private wake: (() => void) | undefined

  constructor (readonly name: string, readonly shared = false) {}

  async ready (): Promise<void> {
    this.readyCalled.resolve()
  }

  async put (tasks: readonly TaskMessage[]): Promise<void> {
    this.tasks.push(...tasks)
    this.putLog.push(...tasks)
    this.wake?.()
  }

  receive (consumerName: string): TaskReceiver {
    this.receivers.push(consumerName)
    const backend = this
    return {
      async reserve (signal: AbortSignal): Promise<ReservedTask | null> {
        while (!signal.aborted) {
          const message = backend.tasks.shift()
          if (message !== undefined) return { message }
          await new Promise<void>((resolve) => {
            backend.wake = resolve
            signal.addEventListener('abort', () => resolve(), { once: true })
          })
        }
        return null
      },
      async ack (task: ReservedTask): Promise<void> { backend.acked.push(task.message) },
      async retry (task: ReservedTask): Promise<void> { backend.tasks.push({ ...task.message, retries: task.message.retries + 1 }) },
      async release (task: ReservedTask): Promise<void> { backend.tasks.unshift(task.message) },
      async bury (task: ReservedTask): Promise<void> { backend.acked.push(task.message) },
      async close (): Promise<void> {}
    }
  }

  async length (): Promise<number> { return this.tasks.length }
  async reset (): Promise<void> { this.tasks = [] }
  async dead (): Promise<DeadLetter[]> { return [] }
  async requeue (): Promise<number> { return 0 }
  async purge (): Promise<number> { return 0 }
  async close (): Promise<void> { this.closed = true }
}

test('defaults: with no options, one volatile local queue "default" and its consumer', async (t) => {
  const { app, dispatched } = await build(t)
  t.same(app.taskqueue.queueNames, ['default'], 'only the queue "default" is registered')
  t.equal(await app.taskqueue.queue('default').length(), 0)
  t.throws(() => app.taskqueue.queue('mail'), { code: 'FST_TASKQUEUE_UNKNOWN_QUEUE' })

  const id = await app.taskqueue.add('/tasks/one')
  await app.taskqueue.drain()
  t.same(dispatched, [{ url: '/tasks/one', queue: 'default' }], 'the default consumer dispatched the task')
  t.equal(await app.taskqueue.queue('default').length(), 0, 'the task left the queue')
  t.match(id, /^[0-9a-f-]{36}$/)
})

test('defaults: the default consumer dispatches one task at a time (concurrentLimit 1)', async (t) => {
  let inFlight = 0
  let most = 0
  const { app } = await recordingApp(t, {}, {
    tasks: {
      slow: async () => {
        inFlight++
        most = Math.max(most, inFlight)
        await new Promise((resolve) => setTimeout(resolve, 10))
        inFlight--
      }
    }
  })
  await Promise.all([1, 2, 3, 4].map(() => app.taskqueue.add('/tasks/slow')))
  await app.taskqueue.drain()
  t.equal(most, 1, 'never more than one task in flight')
})

test('defaults: resolveOptions and resolveConsumer fill in the documented defaults', async (t) => {
  const resolved = resolveOptions({})
  t.equal(resolved.queues.length, 1)
  t.match(resolved.queues[0], { queue: 'default', type: 'local' })
  t.equal(resolved.consumers, undefined, 'no consumer options: one per local queue is made at start')
  t.equal(resolved.closeTimeout, 10_000)
  t.same(resolveOptions(undefined).queues.map(({ queue }) => queue), ['default'], 'no options at all')
  t.match(resolveConsumer({}), { queue: 'default', concurrentLimit: 1, retryMaxCount: 10, retryDelay: { min: 1000, max: 300_000 } })
  t.equal(resolveConsumer({}).name, undefined, 'the consumer name is made unique per process at start')
  t.match(resolveOptions({ consumers: [{ retryDelay: { min: 5 } }] }).consumers, [{ retryDelay: { min: 5, max: 300_000 } }])
})

test('defaults: the caller\'s options object is left as it was', async (t) => {
  const options: TaskQueuePluginOptions = {
    queues: [{ queue: 'a' }, { queue: 'b', type: 'local' }],
    consumers: [{ queue: 'a', retryDelay: { min: 1 } }]
  }
  const copy = JSON.parse(JSON.stringify(options))
  await build(t, options)
  t.same(options, copy)
})

test('queues without consumers: a consumer for every local queue', async (t) => {
  const { app, dispatched } = await build(t, { queues: [{ queue: 'mail' }, { queue: 'billing', type: 'local' }] })
  t.same(app.taskqueue.queueNames.sort(), ['billing', 'mail'])
  await app.taskqueue.add('/tasks/m', { queue: 'mail' })
  await app.taskqueue.add('/tasks/b', { queue: 'billing' })
  await app.taskqueue.drain()
  t.same(dispatched.sort((a, b) => a.url.localeCompare(b.url)), [
    { url: '/tasks/b', queue: 'billing' },
    { url: '/tasks/m', queue: 'mail' }
  ], 'both queues were consumed')
})

test('queues without consumers: none for a shared queue', async (t) => {
  const shared = new MemoryBackend('shared', true)
  const own = new MemoryBackend('own', false)
  const { app, dispatched } = await build(t, { queues: [{ queue: 'shared', type: shared }, { queue: 'own', type: own }, { queue: 'local' }] })
  t.same(shared.receivers, [], 'nobody receives from the shared queue')
  t.equal(own.receivers.length, 1, 'a custom queue that is not shared gets a consumer')
  await app.taskqueue.add('/tasks/s', { queue: 'shared' })
  await app.taskqueue.add('/tasks/l', { queue: 'local' })
  await app.taskqueue.drain()
  t.same(dispatched, [{ url: '/tasks/l', queue: 'local' }])
  t.equal(await app.taskqueue.queue('shared').length(), 1, 'the shared task still waits')
})

test('consumers given: only those consume; an empty list consumes nothing', async (t) => {
  const { app, dispatched } = await build(t, { queues: [{ queue: 'a' }, { queue: 'b' }], consumers: [{ queue: 'b' }] })
  await app.taskqueue.add('/tasks/a', { queue: 'a' })
  await app.taskqueue.add('/tasks/b', { queue: 'b' })
  await app.taskqueue.drain()
  t.same(dispatched, [{ url: '/tasks/b', queue: 'b' }])
  t.equal(await app.taskqueue.queue('a').length(), 1, 'queue a has no consumer')

  const none = await build(t, { consumers: [] })
  await none.app.taskqueue.add('/tasks/x')
  await new Promise((resolve) => setTimeout(resolve, 20))
  t.same(none.dispatched, [])
  t.equal(await none.app.taskqueue.queue('default').length(), 1)
})

test('consumers given: concurrentLimit is honoured, 0 is unlimited', async (t) => {
  for (const [concurrentLimit, expected] of [[2, 2], [0, 5]]) {
    let inFlight = 0
    let most = 0
    const { app } = await recordingApp(t, { consumers: [{ concurrentLimit }] }, {
      tasks: {
        slow: async () => {
          inFlight++
          most = Math.max(most, inFlight)
          await new Promise((resolve) => setTimeout(resolve, 20))
          inFlight--
        }
      }
    })
    for (let i = 0; i < 5; i++) await app.taskqueue.add('/tasks/slow')
    await app.taskqueue.drain()
    t.equal(most, expected, `concurrentLimit ${concurrentLimit}: at most ${expected} in flight`)
  }
})

test('consumers given: retryMaxCount and retryDelay bound the retries of a 409', async (t) => {
  // The local queue's retry timers are unref()ed: without something holding the event loop, the
  // process would end while drain() waits for them.
  const keepAlive = setInterval(() => {}, 1000)
  t.teardown(() => clearInterval(keepAlive))
  const retries: string[] = []
  const { app } = await recordingApp(t, { consumers: [{ retryMaxCount: 2, retryDelay: { min: 1, max: 2 } }] }, {
    tasks: {
      conflict: async (request, reply) => {
        retries.push(request.headers['x-task-retries'] as string)
        return reply.code(409).send({ conflict: true })
      }
    }
  })
  await app.taskqueue.add('/tasks/conflict')
  await app.taskqueue.drain()
  t.same(retries, ['0', '1', '2'], 'dispatched once and retried twice')
})

test('consumers given: the consumer name may be chosen', async (t) => {
  const backend = new MemoryBackend('default')
  await build(t, { queues: [{ type: backend }], consumers: [{ name: 'web-1' }] })
  t.same(backend.receivers, ['web-1'])
})

test('consumers left without name: a name unique to the process', async (t) => {
  const backend = new MemoryBackend('default')
  await build(t, { queues: [{ type: backend }], consumers: [{}, {}] })
  t.equal(backend.receivers.length, 2)
  t.not(backend.receivers[0], backend.receivers[1], 'two consumers, two names')
  t.ok(backend.receivers[0].includes(String(process.pid)), 'the name carries the process id')
})

test('invalid: unknown keys', async (t) => {
  await rejectsOption(t, { queue: 'default' }, 'queue')
  await rejectsOption(t, { queues: [{ queue: 'a', concurrency: 2 }] }, 'queues[0].concurrency')
  await rejectsOption(t, { consumers: [{ queue: 'default', retries: 2 }] }, 'consumers[0].retries')
  await rejectsOption(t, { consumers: [{ retryDelay: { min: 1, max: 2, factor: 2 } }] }, 'consumers[0].retryDelay.factor')
})

test('invalid: wrong types', async (t) => {
  await rejectsOption(t, { queues: { queue: 'a' } }, 'queues')
  await rejectsOption(t, { queues: ['a'] }, 'queues[0]')
  await rejectsOption(t, { queues: [{ queue: 1 }] }, 'queues[0].queue')
  await rejectsOption(t, { queues: [{ queue: 'a' }, { queue: 'b', type: 'memory' }] }, 'queues[1].type')
  await rejectsOption(t, { consumers: 'default' }, 'consumers')
  await rejectsOption(t, { consumers: [{ concurrentLimit: '1' }] }, 'consumers[0].concurrentLimit')
  await rejectsOption(t, { consumers: [{ name: 7 }] }, 'consumers[0].name')
  await rejectsOption(t, { consumers: [{ retryDelay: 100 }] }, 'consumers[0].retryDelay')
  await rejectsOption(t, { closeTimeout: '1s' }, 'closeTimeout')
})

test('invalid: out-of-range numbers and malformed names', async (t) => {
  await rejectsOption(t, { consumers: [{}, { concurrentLimit: -1 }] }, 'consumers[1].concurrentLimit')
  await rejectsOption(t, { consumers: [{ retryMaxCount: 1.5 }] }, 'consumers[0].retryMaxCount')
  await rejectsOption(t, { consumers: [{ retryMaxCount: -1 }] }, 'consumers[0].retryMaxCount')
  await rejectsOption(t, { consumers: [{ retryDelay: { min: -5 } }] }, 'consumers[0].retryDelay.min')
  await rejectsOption(t, { closeTimeout: -1 }, 'closeTimeout')
  await rejectsOption(t, { queues: [] }, 'queues')
  await rejectsOption(t, { queues: [{ queue: '' }] }, 'queues[0].queue')
  await rejectsOption(t, { queues: [{ queue: 'has space' }] }, 'queues[0].queue')
  await rejectsOption(t, { consumers: [{ name: '' }] }, 'consumers[0].name')
})

test('invalid: the message says what was wrong and what is allowed', async (t) => {
  const error = await startError(t, { consumers: [{ concurrentLimit: -1 }] })
  t.match(error.message, /greater or equal to 0/)
  t.match(error.message, /got -1/)
  const name = await startError(t, { queues: [{ queue: 'has space' }] })
  t.match(name.message, /letters, digits/, 'the allowed characters of a queue name')
})

test('invalid: duplicate queue names', async (t) => {
  await rejectsOption(t, { queues: [{ queue: 'a' }, { queue: 'a' }] }, 'queues[1].queue')
  await rejectsOption(t, { queues: [{}, { queue: 'b' }, { queue: 'default' }] }, 'queues[2].queue')
})

test('invalid: a consumer for an unregistered queue', async (t) => {
  await rejectsOption(t, { queues: [{ queue: 'mail' }], consumers: [{ queue: 'mail' }, { queue: 'sms' }] }, 'consumers[1].queue')
  await rejectsOption(t, { queues: [{ queue: 'mail' }], consumers: [{}] }, 'consumers[0].queue')
  const error = await startError(t, { queues: [{ queue: 'mail' }], consumers: [{ queue: 'sms' }] })
  t.match(error.message, /mail/, 'the registered queues are listed')
})

test('invalid: a Redis-only key on a local queue', async (t) => {
  await rejectsOption(t, { queues: [{ queue: 'a', host: 'redis.example' }] }, 'queues[0].host')
  await rejectsOption(t, { queues: [{}, { queue: 'b', type: 'local', port: 6380 }] }, 'queues[1].port')
  await rejectsOption(t, { queues: [{ prefix: 'tq' }] }, 'queues[0].prefix')
  await rejectsOption(t, { queues: [{ type: new MemoryBackend('default'), db: 1 }] }, 'queues[0].db')
})

test('invalid: retryDelay min above max', async (t) => {
  await rejectsOption(t, { consumers: [{ retryDelay: { min: 500, max: 100 } }] }, 'consumers[0].retryDelay')
  await rejectsOption(t, { consumers: [{ retryDelay: { max: 10 } }] }, 'consumers[0].retryDelay')
  const { app } = await build(t, { consumers: [{ retryDelay: { min: 100, max: 100 } }] })
  t.ok(app.taskqueue, 'min equal to max is fine')
})

test('invalid: register itself rejects, not only ready()', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close().catch(() => {}))
  await t.rejects(async () => { await app.register(taskqueue, untyped({ consumers: [{ concurrentLimit: -1 }] })) }, { code: 'FST_TASKQUEUE_INVALID_OPTION' })
})

test('custom backend: an object passed as type is used', async (t) => {
  const backend = new MemoryBackend('custom')
  const { app, dispatched, nextAnswer } = await build(t, { queues: [{ queue: 'custom', type: backend }] })
  await backend.readyCalled.promise
  t.same(backend.receivers.length, 1, 'its consumer receives from it')

  const done = nextAnswer()
  const id = await app.taskqueue.add('/tasks/custom')
  await done
  t.same(dispatched, [{ url: '/tasks/custom', queue: 'custom' }], 'the task went through the custom backend')
  for (let turn = 0; turn < 100 && backend.acked.length === 0; turn++) await new Promise((resolve) => setTimeout(resolve, 5))
  t.same(backend.acked.map((message) => message.id), [id], 'and was acknowledged there')
  t.match(backend.acked[0], { v: 1, id, queue: 'custom', url: '/tasks/custom', method: 'GET', retries: 0 })

  await app.close()
  t.ok(backend.closed, 'closed with the app')
})

test('custom backend: queue(name).length() and reset() go to the backend', async (t) => {
  const backend = new MemoryBackend('custom', true)
  const { app } = await build(t, { queues: [{ queue: 'custom', type: backend }] })
  const ids = [await app.taskqueue.add('/tasks/a', { queue: 'custom' }), await app.taskqueue.add('/tasks/b', { queue: 'custom' })]
  t.same(backend.tasks.map(({ id }) => id), ids, 'put into the backend, in order')
  t.equal(await app.taskqueue.queue('custom').length(), 2)
  backend.tasks.pop()
  t.equal(await app.taskqueue.queue('custom').length(), 1, 'the backend answers, not a copy')
  await app.taskqueue.queue('custom').reset()
  t.same(backend.tasks, [], 'reset() empties the backend')
})

test('custom backend: a factory passed as type gets the queue name and the logger', async (t) => {
  const contexts: QueueBackendContext[] = []
  const made: MemoryBackend[] = []
  const factory = (context: QueueBackendContext): QueueBackend => {
    contexts.push(context)
    const backend = new MemoryBackend(context.queue)
    made.push(backend)
    return backend
  }
  const { app } = await build(t, { queues: [{ queue: 'made', type: factory }] })
  t.equal(contexts.length, 1, 'called once')
  t.equal(contexts[0].queue, 'made')
  t.type(contexts[0].log.info, 'function', 'a Fastify logger')
  const id = await app.taskqueue.add('/nowhere', { queue: 'made' })
  t.same(made[0].putLog.map((message) => message.id), [id], 'the task went into the backend the factory made')
})

test('custom backend: malformed ones are rejected', async (t) => {
  await rejectsOption(t, { queues: [{ type: { name: 'default', shared: false } }] }, 'queues[0].type')
  const noop = async (): Promise<void> => {}
  const complete = { name: 'default', shared: false, put: noop, receive: noop, length: noop, reset: noop, close: noop }
  await rejectsOption(t, { queues: [{ type: { ...complete, put: 'nope' } }] }, 'queues[0].type')
  await rejectsOption(t, { queues: [{ type: { ...complete, shared: 'no' } }] }, 'queues[0].type')
  const { length, ...withoutLength } = complete
  t.type(length, 'function')
  await rejectsOption(t, { queues: [{ type: withoutLength }] }, 'queues[0].type')
  await rejectsOption(t, { queues: [{ type: 42 }] }, 'queues[0].type')
  await rejectsOption(t, { queues: [{ type: null }] }, 'queues[0].type')
  await rejectsOption(t, { queues: [{ queue: 'a', type: new MemoryBackend('b') }] }, 'queues[0].type')
  await rejectsOption(t, { queues: [{ queue: 'a', type: () => new MemoryBackend('b') }] }, 'queues[0].type')
  await rejectsOption(t, { queues: [{ type: () => null }] }, 'queues[0].type')
  await rejectsOption(t, { queues: [{ type: () => ({ name: 'default', shared: false }) }] }, 'queues[0].type')
})

test('custom backend: kept as given, never copied (object literal, class instance, factory)', async (t) => {
  const instance = new MemoryBackend('b')
  const factory = (context: QueueBackendContext): QueueBackend => new MemoryBackend(context.queue)
  const puts: TaskMessage[] = []
  const literal: QueueBackend = {
    name: 'a',
    shared: true,
    put: async (tasks) => { puts.push(...tasks) },
    receive: () => { throw new Error('a shared queue gets no default consumer') },
    length: async () => puts.length,
    reset: async () => { puts.length = 0 },
    dead: async () => [],
    requeue: async () => 0,
    purge: async () => 0,
    close: async () => {}
  }
  const resolved = resolveOptions({ queues: [{ queue: 'a', type: literal }, { queue: 'b', type: instance }, { queue: 'c', type: factory }] })
  t.equal(resolved.queues[0].type, literal)
  t.equal(resolved.queues[1].type, instance)
  t.equal(resolved.queues[2].type, factory)
  t.equal(resolved.queues[0].queue, 'a')

  const { app } = await build(t, { queues: [{ queue: 'a', type: literal }] })
  const id = await app.taskqueue.add('/tasks/x', { queue: 'a' })
  t.same(puts.map((message) => message.id), [id], 'an object literal with functions of its own is used as it is')
  t.equal(await app.taskqueue.queue('a').length(), 1)
})

test('issue 11, point 18: a queue type that is not one of the choices says the choices', async (t) => {
  for (const type of ['mysql', 42, 'Local', '']) {
    const error = await startError(t, { queues: [{ type }] })
    t.equal(error.code, 'FST_TASKQUEUE_INVALID_OPTION', `type ${JSON.stringify(type)}: coded as an invalid option`)
    t.match(error.message, /^Invalid taskqueue option: queues\[0\]\.type: /, 'the message names the option')
    t.match(error.message, /'local', 'redis', a queue backend object or a factory returning one/, `the choices are listed: ${error.message}`)
    t.match(error.message, new RegExp(`got ${JSON.stringify(type)}$`), 'and what was given')
  }
})

test('issue 11, point 18: headerPolicy with both allow and exclude is refused', async (t) => {
  await rejectsOption(t, { headerPolicy: { allow: ['authorization'], exclude: ['cookie'] } }, 'headerPolicy')
  await rejectsOption(t, { headerPolicy: { allow: [], exclude: [] } }, 'headerPolicy')
  const error = await startError(t, { headerPolicy: { allow: ['a'], exclude: ['b'] } })
  t.match(error.message, /allow .* or exclude .*, not both/, 'the message says to give one of them')
  t.same(resolveOptions({ headerPolicy: { allow: ['a'] } }).headerPolicy, { allow: ['a'] }, 'allow alone is fine')
  t.same(resolveOptions({ headerPolicy: { exclude: ['b'] } }).headerPolicy, { exclude: ['b'] }, 'exclude alone is fine')
})

// Found looking for bad input that passes (issue 11, point 18): Node fires a timer of more than
// 2^31 - 1 ms after 1 ms, so closeTimeout: 2 ** 40 waited for nothing, taskTimeout: 2 ** 40 woke
// the consumer every ms, and heartbeatInterval: 2 ** 40 beat every ms.
test('invalid: an option that sets a timer longer than a timer can wait', async (t) => {
  const tooLong = 2 ** 31
  await rejectsOption(t, { closeTimeout: tooLong }, 'closeTimeout')
  await rejectsOption(t, { consumers: [{ taskTimeout: tooLong }] }, 'consumers[0].taskTimeout')
  await rejectsOption(t, { queues: [{ type: 'redis', heartbeatInterval: 2 ** 40 }] }, 'queues[0].heartbeatInterval')
  const error = await startError(t, { closeTimeout: tooLong })
  t.match(error.message, /less or equal to 2147483647 \(ms, at most 2147483647 \(about 24\.8 days/, `the bound is said: ${error.message}`)
  t.equal(resolveOptions({ closeTimeout: tooLong - 1, consumers: [{ taskTimeout: tooLong - 1 }] }).closeTimeout, tooLong - 1, 'the longest timer is fine')
})
