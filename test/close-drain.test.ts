// drain(), close() and the queue handle (issue 2): drain() waits for the local queues to empty and
// for every task in flight; close() stops the consumers, waits for the tasks in flight (up to
// closeTimeout), counts the local tasks still waiting in a warning, and refuses add() afterwards;
// queue(name).length() counts waiting tasks only, reset() drops them. Issue 11: drain() asks a
// custom backend that is not shared (point 11); between preClose and onClose a local queue refuses
// tasks and a Redis queue takes them (point 14).
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { DeadLetter, DeadLetterCause, DeadLetterPage, QueueBackend, ReservedTask, TaskMessage, TaskReceiver } from '../types'
import { storedMessages, testRedis, uniquePrefix } from './helpers/redis'
import { gate, levels, pluginLines, settlesWithin, sleep, waitFor } from './helpers/harness'
import { namesOf, recordingApp, type RecordingSetup } from './helpers/app'

/** The options of the recording app whose tasks /tasks/:name run `work(name)`, and more routes. */
function working (work: (name: string) => Promise<void>, routes?: (app: FastifyInstance) => void): RecordingSetup {
  return { tasks: async (request, reply, tries, name) => { await work(name) }, routes }
}

function add (app: FastifyInstance, name: string, options: { queue?: string, delay?: number } = {}): Promise<string> {
  return app.taskqueue.add(`/tasks/${name}`, { method: 'POST', payload: null, ...options })
}

test('drain() resolves at once when nothing waits and nothing runs', async (t) => {
  const { app } = await recordingApp(t, {})
  t.ok(await settlesWithin(app.taskqueue.drain(), 50), 'idle: resolves at once')
  await add(app, 'one')
  await app.taskqueue.drain()
  t.ok(await settlesWithin(app.taskqueue.drain(), 50), 'idle again: resolves at once')
})

test('drain() resolves once the queues are empty and the tasks in flight finished', async (t) => {
  const { app, finished } = await recordingApp(t, {
    queues: [{ queue: 'default' }, { queue: 'mail' }],
    consumers: [{ queue: 'default', concurrentLimit: 2 }, { queue: 'mail', concurrentLimit: 1 }]
  }, working(async () => { await sleep(15) }))
  for (let index = 0; index < 5; index++) await add(app, `d${index}`)
  await add(app, 'm0', { queue: 'mail' })
  await add(app, 'm1', { queue: 'mail' })
  t.same(namesOf(finished), [], 'nothing finished yet')
  await app.taskqueue.drain()
  t.same(namesOf(finished).sort(), ['d0', 'd1', 'd2', 'd3', 'd4', 'm0', 'm1'], 'every task ran before drain() resolved')
  t.equal(await app.taskqueue.queue('default').length(), 0)
  t.equal(await app.taskqueue.queue('mail').length(), 0)
})

test('drain() waits for a request that holds tasks, and for retries', async (t) => {
  const handlerGate = gate()
  const added = gate()
  let tries = 0
  const { app, finished } = await recordingApp(t, { consumers: [{ queue: 'default', retryDelay: { min: 20, max: 40 } }] }, working(async (name) => {
    if (name === 'flaky' && tries++ === 0) throw Object.assign(new Error('conflict'), { statusCode: 409 })
  }, (app) => {
    app.post('/src', async (request) => {
      request.taskqueue.add('/tasks/held', { method: 'POST', payload: null })
      added.open()
      await handlerGate.promise
      return {}
    })
  }))
  const response = app.inject({ method: 'POST', url: '/src' })
  await added.promise
  const drained = app.taskqueue.drain()
  t.notOk(await settlesWithin(drained, 50), 'drain() waits while the request holds a task')
  handlerGate.open()
  await response
  await drained
  t.same(namesOf(finished), ['held'], 'the held task ran before drain() resolved')

  await add(app, 'flaky')
  await app.taskqueue.drain()
  t.equal(tries, 2, 'drain() waited for the retry')
  t.same(namesOf(finished), ['held', 'flaky'])
})

test('close(): in-flight tasks are awaited, no new task is taken, waiting ones are counted in a warning', async (t) => {
  const release = gate()
  const { app, lines, finished, runs } = await recordingApp(t, { consumers: [{ queue: 'default', concurrentLimit: 1 }] }, working(async (name) => {
    if (name === 'first') {
      await release.promise
      await sleep(20)
    }
  }))
  await add(app, 'first')
  await add(app, 'second')
  await add(app, 'third')
  await waitFor('the first task in flight', () => runs.length === 1)

  const closing = app.close()
  t.notOk(await settlesWithin(closing, 100), 'close() waits for the task in flight')
  release.open()
  await closing
  t.same(namesOf(finished), ['first'], 'the task in flight finished, and its effect is seen once close() resolved')
  t.same(namesOf(runs), ['first'], 'no waiting task was taken after close began')

  const lost = pluginLines(lines).filter(({ level, waiting }) => level === levels.warn && waiting !== undefined)
  t.equal(lost.length, 1, 'one warning for the queue')
  t.match(lost[0], { queue: 'default', waiting: 2 }, 'counting the two tasks still waiting')
})

test('close() with nothing waiting logs no loss', async (t) => {
  const { app, lines } = await recordingApp(t, {})
  await add(app, 'one')
  await app.taskqueue.drain()
  await app.close()
  t.same(pluginLines(lines).filter(({ level }) => level >= levels.warn), [], 'no warning')
})

test('close() counts the waiting tasks of every local queue, and those waiting for a delay', async (t) => {
  const { app, lines } = await recordingApp(t, { queues: [{ queue: 'default' }, { queue: 'mail' }], consumers: [] })
  await add(app, 'a')
  await add(app, 'b')
  await add(app, 'c', { queue: 'mail' })
  await add(app, 'later', { queue: 'mail', delay: 60_000 })
  await app.close()
  const lost = pluginLines(lines).filter(({ level, waiting }) => level === levels.warn && waiting !== undefined)
  t.same(lost.map(({ queue, waiting }) => ({ queue, waiting })).sort((a, b) => String(a.queue).localeCompare(String(b.queue))), [
    { queue: 'default', waiting: 2 },
    { queue: 'mail', waiting: 2 }
  ])
})

test('add() after close() throws FST_TASKQUEUE_CLOSED', async (t) => {
  const { app } = await recordingApp(t, {})
  await app.close()
  t.throws(() => app.taskqueue.add('/tasks/late'), { code: 'FST_TASKQUEUE_CLOSED' }, 'thrown at once, not a rejection')
  t.throws(() => app.taskqueue.add('/tasks/late', { queue: 'default', method: 'POST' }), { code: 'FST_TASKQUEUE_CLOSED' })
})

test('closeTimeout: a task running past it does not hold close()', async (t) => {
  const stuck = gate()
  const { app, lines, runs, finished } = await recordingApp(t, { closeTimeout: 100 }, working(async () => {
    // Waits 2 s, unless the test lets it go sooner once it is over.
    await Promise.race([stuck.promise, sleep(2000)])
  }))
  t.teardown(stuck.open)
  const id = await add(app, 'slow')
  await waitFor('the slow task in flight', () => runs.length === 1)
  const begun = Date.now()
  await app.close()
  const took = Date.now() - begun
  t.ok(took < 1500, `close() resolved after ${took} ms, well before the task's 2 s`)
  t.ok(took >= 90, 'having waited about closeTimeout for it')
  t.same(namesOf(finished), [], 'the task was still running')
  const givenBack = pluginLines(lines).filter(({ taskId }) => taskId === id).filter(({ level }) => level === levels.warn)
  t.equal(givenBack.length, 1, 'a warning names the task still running')
  t.match(givenBack[0], { taskId: id, queue: 'default' })
})

test('queue(name).length() counts waiting tasks, not those in flight', async (t) => {
  const release = gate()
  const { app, runs } = await recordingApp(t, {
    queues: [{ queue: 'default' }, { queue: 'idle' }],
    consumers: [{ queue: 'default', concurrentLimit: 2 }]
  }, working(async () => { await release.promise }))
  t.equal(await app.taskqueue.queue('default').length(), 0, 'empty')
  for (let index = 0; index < 5; index++) await add(app, `t${index}`)
  await waitFor('two tasks in flight', () => runs.length === 2)
  t.equal(await app.taskqueue.queue('default').length(), 3, 'five added, two in flight: three waiting')
  await add(app, 'delayed', { delay: 60_000 })
  t.equal(await app.taskqueue.queue('default').length(), 4, 'a delayed task waits too')

  await add(app, 'x', { queue: 'idle' })
  await add(app, 'y', { queue: 'idle' })
  t.equal(await app.taskqueue.queue('idle').length(), 2, 'a queue without consumer keeps its tasks')
  t.equal(app.taskqueue.queue('idle').name, 'idle')

  await app.taskqueue.queue('default').reset()
  release.open()
  await app.taskqueue.drain()
  t.equal(runs.length, 2, 'reset() dropped the waiting tasks')
})

test('queue(name).reset() drops the waiting tasks; those in flight finish', async (t) => {
  const release = gate()
  const { app, runs, finished } = await recordingApp(t, { consumers: [{ queue: 'default', concurrentLimit: 1 }] }, working(async (name) => {
    if (name === 'first') await release.promise
  }))
  await add(app, 'first')
  await add(app, 'second')
  await add(app, 'third')
  await add(app, 'delayed', { delay: 200 })
  await waitFor('the first task in flight', () => runs.length === 1)
  t.equal(await app.taskqueue.queue('default').length(), 3)
  await app.taskqueue.queue('default').reset()
  t.equal(await app.taskqueue.queue('default').length(), 0, 'nothing waits after reset()')
  release.open()
  await app.taskqueue.drain()
  await sleep(300)
  t.same(namesOf(finished), ['first'], 'only the task in flight ran; the delayed one was dropped too')

  await add(app, 'after')
  await app.taskqueue.drain()
  t.same(namesOf(finished), ['first', 'after'], 'the queue works on after reset()')
})

test('queue() with an unknown name throws FST_TASKQUEUE_UNKNOWN_QUEUE', async (t) => {
  const { app } = await recordingApp(t, { queues: [{ queue: 'default' }, { queue: 'mail' }] })
  t.throws(() => app.taskqueue.queue('nope'), { code: 'FST_TASKQUEUE_UNKNOWN_QUEUE', message: /nope.*default, mail/ })
  t.throws(() => app.taskqueue.queue(''), { code: 'FST_TASKQUEUE_UNKNOWN_QUEUE' })
  t.throws(() => app.taskqueue.queue('Default'), { code: 'FST_TASKQUEUE_UNKNOWN_QUEUE' }, 'names are case-sensitive')
  t.equal(app.taskqueue.queue('mail').name, 'mail')
})

/**
 * A queue backend of the user's, in memory and not shared: tasks wait in an array, retries in
 * timers, failures in a list of dead letters. What the plugin knows of it is the QueueBackend
 * contract alone.
 */
class MemoryQueue implements QueueBackend {
  readonly shared = false
  private pending: TaskMessage[] = []
  /** Retries waiting for their time, by timer. */
  private readonly delayed = new Map<NodeJS.Timeout, TaskMessage>()
  private readonly takers: Array<(message: TaskMessage) => void> = []
  private deadLetters: DeadLetter[] = []

  constructor (readonly name: string) {}

  async put (tasks: readonly TaskMessage[]): Promise<void> {
    for (const task of tasks) this.offer(task)
  }

  private offer (task: TaskMessage): void {
    const taker = this.takers.shift()
    if (taker === undefined) this.pending.push(task)
    else taker(task)
  }

  private later (task: TaskMessage, delayMs: number): void {
    const timer = setTimeout(() => {
      this.delayed.delete(timer)
      this.offer(task)
    }, delayMs)
    this.delayed.set(timer, task)
  }

  receive (): TaskReceiver {
    const queue = this
    return {
      reserve (signal: AbortSignal): Promise<ReservedTask | null> {
        const message = queue.pending.shift()
        if (message !== undefined) return Promise.resolve({ message })
        if (signal.aborted) return Promise.resolve(null)
        return new Promise((resolve) => {
          const taker = (task: TaskMessage): void => {
            signal.removeEventListener('abort', onAbort)
            resolve({ message: task })
          }
          const onAbort = (): void => {
            queue.takers.splice(queue.takers.indexOf(taker), 1)
            resolve(null)
          }
          signal.addEventListener('abort', onAbort, { once: true })
          queue.takers.push(taker)
        })
      },
      async ack () {},
      async retry (task: ReservedTask, delayMs: number) {
        queue.later({ ...task.message, retries: task.message.retries + 1, eta: Date.now() + delayMs }, delayMs)
      },
      async release (task: ReservedTask) { queue.pending.unshift(task.message) },
      async bury (task: ReservedTask, cause: DeadLetterCause) {
        queue.deadLetters.unshift({ id: task.message.id, queue: queue.name, ...cause, at: Date.now(), task: task.message })
      },
      async close () {}
    }
  }

  async length (): Promise<number> { return this.pending.length + this.delayed.size }
  async reset (): Promise<void> {
    this.pending = []
    for (const timer of this.delayed.keys()) clearTimeout(timer)
    this.delayed.clear()
  }

  async dead ({ offset = 0, limit = 100 }: DeadLetterPage = {}): Promise<DeadLetter[]> {
    return this.deadLetters.slice(offset, offset + limit)
  }

  async requeue (id?: string): Promise<number> {
    const chosen = this.deadLetters.filter((letter) => id === undefined || letter.id === id)
    this.deadLetters = this.deadLetters.filter((letter) => !chosen.includes(letter))
    await this.put(chosen.map(({ task }) => ({ ...task as TaskMessage, retries: 0, eta: Date.now() })))
    return chosen.length
  }

  async purge (): Promise<number> {
    const count = this.deadLetters.length
    this.deadLetters = []
    return count
  }

  async close (): Promise<void> { await this.reset() }
}

test('issue 11, point 11: drain() waits for the tasks of a custom backend that is not shared', async (t) => {
  let conflicts = 0
  const { app, finished } = await recordingApp(t, {
    queues: [{ queue: 'default', type: new MemoryQueue('default') }],
    consumers: [{ queue: 'default', concurrentLimit: 1, retryDelay: { min: 30, max: 60 } }]
  }, working(async (name) => {
    await sleep(10)
    if (name === 'conflict' && conflicts++ === 0) throw Object.assign(new Error('conflict'), { statusCode: 409 })
  }))
  for (const name of ['a', 'b', 'conflict', 'c']) await add(app, name)
  await app.taskqueue.drain()
  t.same(namesOf(finished).sort(), ['a', 'b', 'c', 'conflict'], 'every waiting task, and the retry, ran before drain() resolved')
  t.equal(conflicts, 2, 'the retry waited in the backend and ran')
  t.equal(await app.taskqueue.queue('default').length(), 0)
  t.ok(await settlesWithin(app.taskqueue.drain(), 50), 'idle: drain() resolves at once')
})

/** Adds a preClose hook that runs after the plugin's own: the app is closing, its consumers stopped. */
function duringPreClose (app: FastifyInstance, step: () => Promise<void>): void {
  app.addHook('preClose', step)
}

test('issue 11, point 14: between preClose and onClose, add() to a local queue throws FST_TASKQUEUE_CLOSED', async (t) => {
  const handlerGate = gate()
  const seen: Record<string, unknown> = {}
  const inFlight: { response?: Promise<{ statusCode: number, json: () => { code?: string } }> } = {}
  const { app, runs } = await recordingApp(t, {}, working(async () => {}, (app) => {
    app.post('/src', async (request) => {
      await handlerGate.promise
      return { id: request.taskqueue.add('/tasks/late', { method: 'POST', payload: null }) }
    })
    duringPreClose(app, async () => {
      try {
        await app.taskqueue.add('/tasks/outside')
        seen.outside = 'accepted'
      } catch (error) {
        seen.outside = (error as { code: string }).code
      }
      handlerGate.open()
      const answered = await inFlight.response
      seen.request = { statusCode: answered?.statusCode, code: answered?.json().code }
    })
  }))
  inFlight.response = app.inject({ method: 'POST', url: '/src' })
  await sleep(20)
  await app.close()
  t.same(seen, {
    outside: 'FST_TASKQUEUE_CLOSED',
    request: { statusCode: 503, code: 'FST_TASKQUEUE_CLOSED' }
  }, 'app.taskqueue.add() throws, and a request that adds a task then fails with the coded error')
  t.same(namesOf(runs), [], 'no task was taken')
})

test('issue 11, point 14: tasks held by a request answered after the local queue stopped are logged as lost, with their ids', async (t) => {
  const handlerGate = gate()
  const ids: string[] = []
  const inFlight: { response?: Promise<{ statusCode: number }> } = {}
  let statusCode: number | undefined
  const { app, lines } = await recordingApp(t, {}, working(async () => {}, (app) => {
    app.post('/src', async (request) => {
      ids.push(request.taskqueue.add('/tasks/held-1', { method: 'POST', payload: null }))
      ids.push(request.taskqueue.add('/tasks/held-2', { method: 'POST', payload: null }))
      await handlerGate.promise
      return {}
    })
    duringPreClose(app, async () => {
      handlerGate.open()
      statusCode = (await inFlight.response)?.statusCode
    })
  }))
  inFlight.response = app.inject({ method: 'POST', url: '/src' })
  await waitFor('the tasks held', () => ids.length === 2)
  await app.close()
  t.equal(statusCode, 200, 'the request succeeded after its tasks were added')
  const lost = pluginLines(lines).filter(({ level, taskIds }) => level === levels.error && Array.isArray(taskIds))
  t.equal(lost.length, 1, 'one error line')
  t.match(lost[0], { queue: 'default', taskIds: ids }, 'naming the tasks lost')
  t.same(pluginLines(lines).filter(({ waiting }) => waiting !== undefined), [], 'they were never put into the stopped queue')
})

test('issue 11, point 14: a shared (Redis) queue still takes tasks between preClose and onClose', async (t) => {
  const redis = await testRedis()
  t.teardown(() => redis.close())
  const prefix = uniquePrefix()
  const seen: string[] = []
  const { app } = await recordingApp(t, {
    queues: [{ queue: 'default' }, { queue: 'shared', type: 'redis', prefix, ...redis.connection }]
  }, working(async () => {}, (app) => {
    duringPreClose(app, async () => {
      // Other instances consume it: a task added while this one closes is not lost.
      seen.push(await app.taskqueue.add('/tasks/elsewhere', { queue: 'shared' }))
      t.throws(() => app.taskqueue.add('/tasks/here'), { code: 'FST_TASKQUEUE_CLOSED' }, 'while the local queue refuses')
    })
  }))
  await app.close()
  t.equal(seen.length, 1, 'accepted')
  const stored = await storedMessages(redis.client(), `${prefix}:{shared}:v2:waiting`)
  t.equal(stored.length, 1, 'and held in Redis')
  t.match(stored[0], seen[0])
})

test('a backend of the user\'s own that leaves out the steering calls: the handle rejects them with FST_TASKQUEUE_UNSUPPORTED', async (t) => {
  const { app } = await recordingApp(t, { queues: [{ queue: 'default', type: new MemoryQueue('default') }] })
  const handle = app.taskqueue.queue('default')
  t.equal(handle.type, 'custom')
  for (const call of [async () => { await handle.stats() }, () => handle.pause(), () => handle.resume(), async () => { await handle.isPaused() },
    async () => { await handle.get('x') }, async () => { await handle.cancel('x') }, async () => { await handle.waiting() }]) {
    await t.rejects(call(), { code: 'FST_TASKQUEUE_UNSUPPORTED', statusCode: 501 })
  }
})
