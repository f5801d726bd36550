// Seeing into a queue and steering it (issue 13), on both queue types: stats() in every state,
// pause() / resume() / isPaused(), get() and cancel() by id, waiting() a page at a time, and the
// coded errors of bad arguments. The Redis side across instances is in redis-steering.test.ts.
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { QueueHandle } from '../types'
import { backendFor, codeOf, gate, queueTypes, startApp, waitFor, type Test } from './helpers/both-queues'
import { clockFor, type TestClock } from './helpers/clock'

interface Harness {
  app: FastifyInstance
  queue: QueueHandle
  clock: TestClock
  /** How often each task id started. */
  runs: Map<string, number>
  /** The url each task id last ran with. */
  urls: Map<string, string>
  /** Holds /tasks/hold until opened. */
  hold: ReturnType<typeof gate>
}

/**
 * One queue with a consumer of one slot: /tasks/hold runs until the gate opens, /tasks/bad answers
 * 400 (buried at once, as a final status), any other /tasks/:name answers 200.
 */
async function start (t: Test, type: typeof queueTypes[number]): Promise<Harness> {
  const clock = clockFor(t, type)
  const backend = await backendFor(type)
  const runs = new Map<string, number>()
  const urls = new Map<string, string>()
  const hold = gate()
  const app = await startApp(t, { queues: [backend.queue()], consumers: [{ queue: 'default', concurrentLimit: 1 }] }, (app) => {
    app.all('/tasks/:name', async (request, reply) => {
      const id = request.headers['x-task-id'] as string
      runs.set(id, (runs.get(id) ?? 0) + 1)
      urls.set(id, request.url)
      const { name } = request.params as { name: string }
      if (name === 'hold') await hold.promise
      if (name === 'bad') return reply.code(400).send({})
      return { ok: true }
    })
  })
  t.teardown(() => hold.open())
  return { app, queue: app.taskqueue.queue('default'), clock, runs, urls, hold }
}

/** Adds a task that runs until the gate opens, and waits until it started: the only slot is taken. */
async function occupy (harness: Harness, id = 'held'): Promise<void> {
  await harness.app.taskqueue.add('/tasks/hold', { id })
  await waitFor('the held task to start', () => harness.runs.get(id) === 1)
}

/** Adds a task that is buried at once, and waits until it is dead. */
async function kill (harness: Harness, id: string): Promise<void> {
  await harness.app.taskqueue.add('/tasks/bad', { id, method: 'POST', payload: { why: 'refused' } })
  await waitFor(`task ${id} to die`, async () => (await harness.queue.dead()).some((letter) => letter.id === id))
}

for (const type of queueTypes) {
  test(`${type}: issue 13: stats() counts the tasks in each state and how long the oldest has waited`, async (t) => {
    const harness = await start(t, type)
    const { app, queue, clock } = harness
    t.same(await queue.stats(), { waiting: 0, delayed: 0, inFlight: 0, dead: 0, paused: false, oldestWaitingAge: null }, 'an empty queue')

    await kill(harness, 'dead-1')
    await occupy(harness)
    const before = Date.now()
    await app.taskqueue.add('/tasks/a')
    await app.taskqueue.add('/tasks/b')
    await app.taskqueue.add('/tasks/later', { delay: 60_000 })
    await clock.pass(300)
    const stats = await queue.stats()
    const after = Date.now()
    t.match(stats, { waiting: 2, delayed: 1, inFlight: 1, dead: 1, paused: false }, 'one task in each state, two waiting')
    const age = stats.oldestWaitingAge as number
    t.ok(age >= 300 && age <= after - before, `the oldest has waited since it was added (${age} ms, at most ${after - before})`)

    harness.hold.open()
    await waitFor('the waiting tasks to run', async () => (await queue.stats()).waiting === 0 && (await queue.stats()).inFlight === 0)
    t.match(await queue.stats(), { waiting: 0, delayed: 1, inFlight: 0, dead: 1, oldestWaitingAge: null }, 'the delayed and the dead one are left')
  })

  test(`${type}: issue 13: pause() stops new starts while the task in flight finishes and add() still queues; resume() runs them`, async (t) => {
    const harness = await start(t, type)
    const { app, queue, runs, clock } = harness
    await occupy(harness)
    t.equal(await queue.isPaused(), false, 'not paused at first')
    await queue.pause()
    t.equal(await queue.isPaused(), true, 'isPaused() after pause()')
    const ids = [await app.taskqueue.add('/tasks/a'), await app.taskqueue.add('/tasks/b')]
    harness.hold.open()
    await waitFor('the task in flight to finish', async () => (await queue.stats()).inFlight === 0)
    await clock.pass(500)
    t.same(ids.map((id) => runs.get(id) ?? 0), [0, 0], 'no new task started while paused')
    t.match(await queue.stats(), { waiting: 2, inFlight: 0, paused: true }, 'both were accepted, and wait')

    await queue.resume()
    t.equal(await queue.isPaused(), false, 'isPaused() after resume()')
    await waitFor('both to run after resume()', () => ids.every((id) => runs.get(id) === 1), 3000)
    t.match(await queue.stats(), { waiting: 0, paused: false })
  })

  test(`${type}: issue 13: get() tells a task in each state, with or without a chosen id, and null for any other`, async (t) => {
    const harness = await start(t, type)
    const { app, queue } = harness
    await kill(harness, 'dead-1')
    await occupy(harness, 'flight-1')
    const added = Date.now()
    await app.taskqueue.add('/tasks/wait', { id: 'wait-1', method: 'PUT', headers: { 'x-custom': 'yes' }, payload: { n: 1 } })
    const uuid = await app.taskqueue.add('/tasks/wait')
    await app.taskqueue.add('/tasks/later', { id: 'later-1', delay: 60_000 })

    t.match(await queue.get('dead-1'), { id: 'dead-1', state: 'dead', url: '/tasks/bad', method: 'POST', retries: 0 }, 'a dead task')
    t.match(await queue.get('flight-1'), { id: 'flight-1', state: 'in-flight', url: '/tasks/hold', method: 'GET' }, 'a task in flight')
    const waiting = await queue.get('wait-1')
    t.match(waiting, { id: 'wait-1', state: 'waiting', url: '/tasks/wait', method: 'PUT', retries: 0, headers: { 'x-custom': 'yes' } }, 'a waiting task')
    t.ok(waiting !== null && waiting.createdAt >= added && waiting.eta === waiting.createdAt, 'added now, due at once')
    t.notOk('payload' in (waiting ?? {}), 'without its payload')
    t.match(await queue.get(uuid), { id: uuid, state: 'waiting' }, 'a task with a UUID id')
    const later = await queue.get('later-1')
    t.match(later, { state: 'delayed' }, 'a delayed task')
    t.equal(later !== null && later.eta - later.createdAt, 60_000, 'due after its delay')
    t.equal(await queue.get('nobody'), null, 'an unknown id')

    harness.hold.open()
    await waitFor('the held task to finish', async () => await queue.get('flight-1') === null)
    t.pass('a task that is done is no longer known')
  })

  test(`${type}: issue 13: requeue() and purge() keep get() of dead tasks right`, async (t) => {
    const harness = await start(t, type)
    const { queue } = harness
    await kill(harness, 'dead-1')
    await kill(harness, 'dead-2')
    await occupy(harness)
    t.equal(await queue.requeue('dead-1'), 1, 'one requeued')
    t.match(await queue.get('dead-1'), { state: 'waiting' }, 'a requeued task is waiting again')
    t.equal(await queue.purge(), 1, 'the other purged')
    t.equal(await queue.get('dead-2'), null, 'a purged task is unknown')
    t.equal((await queue.stats()).dead, 0)
  })

  test(`${type}: issue 13: cancel() forgets a waiting or delayed task for good, frees its id, and touches nothing else`, async (t) => {
    const harness = await start(t, type)
    const { app, queue, runs, urls, clock } = harness
    await kill(harness, 'dead-1')
    await occupy(harness, 'flight-1')
    await app.taskqueue.add('/tasks/first', { id: 'wait-1' })
    const uuid = await app.taskqueue.add('/tasks/wait')
    await app.taskqueue.add('/tasks/later', { id: 'later-1', delay: 500 })
    await app.taskqueue.add('/tasks/keep', { id: 'keep-1' })

    t.equal(await queue.cancel('wait-1'), true, 'a waiting task with a chosen id')
    t.equal(await queue.cancel('wait-1'), false, 'once')
    t.equal(await queue.cancel(uuid), true, 'a waiting task with a UUID id')
    t.equal(await queue.cancel('later-1'), true, 'a delayed task')
    t.equal(await queue.cancel('flight-1'), false, 'not a task in flight')
    t.equal(await queue.cancel('dead-1'), false, 'not a dead task')
    t.equal(await queue.cancel('nobody'), false, 'not an unknown id')
    t.equal(await queue.get('wait-1'), null, 'a cancelled task is forgotten')
    t.match(await queue.get('dead-1'), { state: 'dead' }, 'the dead one is still dead')
    t.match(await queue.stats(), { waiting: 1, delayed: 0, inFlight: 1, dead: 1 }, 'stats count only what is left')
    t.equal(await queue.length(), 1, 'and so does length()')

    t.equal(await app.taskqueue.add('/tasks/second', { id: 'wait-1' }), 'wait-1', 'the chosen id is free: added again')
    t.match(await queue.get('wait-1'), { state: 'waiting', url: '/tasks/second' }, 'as the new task')
    t.match(await queue.stats(), { waiting: 2 })

    harness.hold.open()
    await clock.pass(700)
    await waitFor('the tasks left to run', () => runs.get('wait-1') === 1 && runs.get('keep-1') === 1, 3000)
    await clock.pass(300)
    t.equal(urls.get('wait-1'), '/tasks/second', 'the id ran once, as the task added after the cancel')
    t.equal(runs.get(uuid), undefined, 'the cancelled waiting task never ran')
    t.equal(runs.get('later-1'), undefined, 'nor the cancelled delayed one, past its time')
    t.match(await queue.stats(), { waiting: 0, delayed: 0, inFlight: 0, dead: 1 })
  })

  test(`${type}: issue 13: waiting() pages the due tasks, next to run first, cancelled ones left out`, async (t) => {
    const harness = await start(t, type)
    const { app, queue } = harness
    await occupy(harness)
    const ids: string[] = []
    for (let n = 0; n < 5; n++) ids.push(await app.taskqueue.add(`/tasks/t${n}`, { id: `t${n}` }))
    await app.taskqueue.add('/tasks/later', { delay: 60_000 })
    const page = await queue.waiting()
    t.same(page.map(({ id }) => id), ids, 'every due task, in the order they run (not the delayed one)')
    t.ok(page.every(({ state }) => state === 'waiting'), 'each waiting')
    t.match(page[0], { url: '/tasks/t0', method: 'GET', retries: 0 })
    t.same((await queue.waiting({ offset: 1, limit: 2 })).map(({ id }) => id), ['t1', 't2'], 'a page')
    t.same(await queue.waiting({ limit: 0 }), [], 'limit 0: none')
    t.same(await queue.waiting({ offset: 5 }), [], 'past the end: none')
    await queue.cancel('t0')
    await queue.cancel('t2')
    t.same((await queue.waiting()).map(({ id }) => id), ['t1', 't3', 't4'], 'cancelled tasks are left out')
    t.same((await queue.waiting({ offset: 1, limit: 1 })).map(({ id }) => id), ['t3'], 'and not counted by offset')
  })

  test(`${type}: issue 13: reset() leaves the figures exact after cancels`, async (t) => {
    const harness = await start(t, type)
    const { app, queue } = harness
    await occupy(harness)
    for (let n = 0; n < 4; n++) await app.taskqueue.add(`/tasks/t${n}`, { id: `t${n}` })
    await app.taskqueue.add('/tasks/later', { delay: 60_000 })
    await queue.cancel('t1')
    await queue.reset()
    t.match(await queue.stats(), { waiting: 0, delayed: 0, inFlight: 1, oldestWaitingAge: null }, 'only the task in flight is left')
    t.same(await queue.waiting(), [])
    await app.taskqueue.add('/tasks/t1', { id: 't1' })
    t.match(await queue.stats(), { waiting: 1 }, 'an id cancelled before the reset can be added again')
  })

  test(`${type}: issue 13: bad arguments of get(), cancel() and waiting() are coded errors`, async (t) => {
    const { queue } = await start(t, type)
    for (const [what, call] of [
      ['get(5)', () => queue.get(5 as unknown as string)],
      ['cancel()', () => queue.cancel(undefined as unknown as string)],
      ['waiting("x")', () => queue.waiting('x' as unknown as object)],
      ['waiting({ offset: -1 })', () => queue.waiting({ offset: -1 })],
      ['waiting({ limit: 1.5 })', () => queue.waiting({ limit: 1.5 })],
      ['waiting({ page: 1 })', () => queue.waiting({ page: 1 } as unknown as object)]
    ] as const) {
      t.equal(await codeOf(call), 'FST_TASKQUEUE_INVALID_ARGUMENT', what)
    }
  })
}
