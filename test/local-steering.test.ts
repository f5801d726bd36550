// Issue 13, the queue handle on a local queue: stats, pause and resume, get, cancel and the page of
// waiting tasks, as a user of one process sees them. The same calls on a Redis queue, shared by
// several instances, have tests of their own.
import { test } from 'tap'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { recordingApp, namesOf } from './helpers/app'
import { gate, waitFor, type Test } from './helpers/harness'
import { fakeClock } from './helpers/clock'
import { LocalQueue } from '../lib/queues/local'
import type { TaskMessage } from '../types'

/** An app whose consumer is held on the task 'hold' until the test opens the gate. */
async function heldApp (t: Test, consumers = 1) {
  const held = gate()
  const recording = await recordingApp(t, {
    queues: [{ queue: 'default', type: 'local' }],
    consumers: consumers === 0 ? [] : [{ queue: 'default', concurrentLimit: consumers, retryMaxCount: 0 }]
  }, {
    tasks: {
      hold: async () => { await held.promise },
      fail: async (_request, reply) => reply.code(422).send({ no: true })
    }
  })
  return { ...recording, handle: recording.app.taskqueue.queue('default'), release: held.open }
}

test('issue 13: stats() counts each state of a local queue, and the type is local', async (t) => {
  const { app, handle, release, runs } = await heldApp(t)
  t.equal(handle.type, 'local')
  t.same(await handle.stats(), { waiting: 0, delayed: 0, inFlight: 0, dead: 0, paused: false, oldestWaitingAge: null }, 'an empty queue')

  await app.taskqueue.add('/tasks/hold', { id: 'held' })
  await waitFor('the held task to start', () => runs.length === 1)
  await app.taskqueue.add('/tasks/a')
  await app.taskqueue.add('/tasks/b')
  await app.taskqueue.add('/tasks/later', { delay: 60_000 })
  const busy = await handle.stats()
  t.match(busy, { waiting: 2, delayed: 1, inFlight: 1, dead: 0, paused: false })
  t.type(busy.oldestWaitingAge, 'number', 'a task waits, so its age is known')
  t.ok((busy.oldestWaitingAge as number) >= 0)

  release()
  await app.taskqueue.add('/tasks/fail')
  await waitFor('the queue to settle', async () => (await handle.stats()).dead === 1)
  t.same(await handle.stats(), { waiting: 0, delayed: 1, inFlight: 0, dead: 1, paused: false, oldestWaitingAge: null }, 'the failed task is dead, the delayed one still waits')
  t.same(namesOf(runs), ['hold', 'a', 'b', 'fail'])
})

test('issue 13: oldestWaitingAge is how long the oldest due task has waited, measured from its due time', async (t) => {
  const clock = fakeClock(t)
  const { app, handle } = await heldApp(t, 0)
  await app.taskqueue.add('/tasks/first')
  await clock.pass(1000)
  await app.taskqueue.add('/tasks/second')
  const age = (await handle.stats()).oldestWaitingAge as number
  t.ok(age >= 1000 && age < 1500, `the first task's age (${age} ms)`)

  await app.taskqueue.add('/tasks/soon', { delay: 500 })
  t.equal((await handle.stats()).delayed, 1)
  await clock.pass(600)
  t.match(await handle.stats(), { waiting: 3, delayed: 0 }, 'a delayed task that came due waits like the others')

  t.equal(await handle.cancel((await handle.waiting())[0].id), true, 'the oldest is cancelled')
  const after = (await handle.stats()).oldestWaitingAge as number
  t.ok(after >= 600 && after < 1000, `the age is now the second task's (${after} ms): a cancelled task is not counted`)
})

test('issue 13: a paused local queue accepts tasks but starts none until resumed; the task in flight finishes', async (t) => {
  const { app, handle, release, runs, finished } = await heldApp(t)
  await app.taskqueue.add('/tasks/hold')
  await waitFor('the held task to start', () => runs.length === 1)
  await handle.pause()
  t.equal(await handle.isPaused(), true)
  await app.taskqueue.add('/tasks/a')
  await app.taskqueue.add('/tasks/b')
  release()
  await waitFor('the held task to finish', () => finished.length === 1)
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.same(namesOf(runs), ['hold'], 'nothing new started while paused')
  t.match(await handle.stats(), { waiting: 2, inFlight: 0, paused: true })

  await handle.resume()
  t.equal(await handle.isPaused(), false)
  await waitFor('the waiting tasks to run', () => finished.length === 3)
  t.same(namesOf(runs), ['hold', 'a', 'b'], 'in their order')
})

test('issue 13: resume() hands the tasks that came while paused to every consumer that waits', async (t) => {
  const { app, handle, runs, release } = await heldApp(t, 3)
  t.teardown(release)
  await handle.pause()
  for (const name of ['hold', 'hold', 'hold', 'd']) await app.taskqueue.add(`/tasks/${name}`)
  await new Promise((resolve) => setTimeout(resolve, 30))
  t.equal(runs.length, 0)
  await handle.resume()
  await waitFor('three tasks to start at once', () => runs.length === 3)
  t.match(await handle.stats(), { waiting: 1, inFlight: 3 }, 'the fourth waits for a free slot')
  await handle.pause()
  await handle.resume()
  t.match(await handle.stats(), { waiting: 1, inFlight: 3 }, 'resuming with no free consumer leaves it waiting')
  release()
  await waitFor('the fourth to run', () => runs.length === 4)
})

test('issue 13: get() tells each state of a local task, and null for one it does not know', async (t) => {
  const { app, handle, release, runs } = await heldApp(t)
  const before = Date.now()
  const inFlight = await app.taskqueue.add('/tasks/hold?x=1', { method: 'POST', headers: { 'x-custom': 'yes' }, payload: { a: 1 } })
  await waitFor('the held task to start', () => runs.length === 1)
  const waiting = await app.taskqueue.add('/tasks/a')
  const delayed = await app.taskqueue.add('/tasks/b', { delay: 60_000, id: 'chosen' })

  const info = await handle.get(inFlight)
  t.match(info, { id: inFlight, state: 'in-flight', url: '/tasks/hold?x=1', method: 'POST', retries: 0 })
  t.equal(info?.headers['x-custom'], 'yes', 'with its headers')
  t.ok((info?.createdAt as number) >= before && (info?.eta as number) >= before, 'createdAt and eta in ms since the epoch')
  t.match(await handle.get(waiting), { id: waiting, state: 'waiting', url: '/tasks/a', method: 'GET' })
  t.match(await handle.get(delayed), { id: 'chosen', state: 'delayed' })
  t.ok(((await handle.get(delayed))?.eta as number) >= before + 60_000, 'a delayed task\'s eta is its due time')
  t.equal(await handle.get('unknown'), null)

  release()
  await app.taskqueue.add('/tasks/fail', { id: 'dies' })
  await waitFor('the failing task to be dead', async () => (await handle.get('dies'))?.state === 'dead')
  t.match(await handle.get('dies'), { id: 'dies', state: 'dead', url: '/tasks/fail' })
  await waitFor('the held task to finish', async () => await handle.get(inFlight) === null)
  t.pass('a finished task is forgotten')
  t.equal(await handle.purge(), 1)
  t.equal(await handle.get('dies'), null, 'a purged dead letter is forgotten')
})

test('issue 13: cancel() forgets a waiting or delayed local task for good, and frees its id; false for any other', async (t) => {
  const { app, handle, release, runs, finished } = await heldApp(t)
  const inFlight = await app.taskqueue.add('/tasks/hold', { id: 'busy' })
  await waitFor('the held task to start', () => runs.length === 1)
  const waiting = await app.taskqueue.add('/tasks/a', { id: 'mine' })
  const other = await app.taskqueue.add('/tasks/b')
  const delayed = await app.taskqueue.add('/tasks/c', { delay: 60_000 })

  t.equal(await handle.cancel(waiting), true, 'a waiting task')
  t.equal(await handle.cancel(waiting), false, 'cancelled once only')
  t.equal(await handle.get(waiting), null, 'and forgotten')
  t.equal(await handle.cancel(delayed), true, 'a delayed task')
  t.equal(await handle.get(delayed), null)
  t.equal(await handle.cancel(inFlight), false, 'a task in flight runs on')
  t.equal(await handle.cancel('unknown'), false, 'an unknown id')
  t.match(await handle.stats(), { waiting: 1, delayed: 0, inFlight: 1 })
  t.same((await handle.waiting()).map(({ id }) => id), [other], 'the cancelled task is not in the page')

  t.equal(await app.taskqueue.add('/tasks/again', { id: 'mine' }), 'mine', 'the chosen id is free again')
  t.match(await handle.get('mine'), { state: 'waiting', url: '/tasks/again' })

  release()
  await waitFor('the rest to run', () => finished.length === 3)
  t.same(namesOf(runs), ['hold', 'b', 'again'], 'the cancelled tasks never ran')

  await app.taskqueue.add('/tasks/fail', { id: 'dead' })
  await waitFor('the failing task to be dead', async () => (await handle.get('dead'))?.state === 'dead')
  t.equal(await handle.cancel('dead'), false, 'a dead letter is not cancelled')
  t.equal(await handle.cancel(inFlight), false, 'nor a task that is done')
})

test('issue 13: waiting() pages the due tasks, next to run first', async (t) => {
  const { app, handle } = await heldApp(t, 0)
  const ids: string[] = []
  for (let index = 0; index < 5; index++) ids.push(await app.taskqueue.add(`/tasks/t${index}`, { method: 'PUT' }))
  await app.taskqueue.add('/tasks/later', { delay: 60_000 })
  t.same((await handle.waiting()).map(({ id }) => id), ids, 'the delayed task is not waiting yet')
  t.match((await handle.waiting())[0], { id: ids[0], state: 'waiting', url: '/tasks/t0', method: 'PUT', retries: 0 })
  t.same((await handle.waiting({ limit: 2 })).map(({ id }) => id), ids.slice(0, 2))
  t.same((await handle.waiting({ offset: 3, limit: 10 })).map(({ id }) => id), ids.slice(3))
  t.same(await handle.waiting({ offset: 5 }), [])
  t.same(await handle.waiting({ limit: 0 }), [])
  t.equal(await handle.cancel(ids[1]), true)
  t.same((await handle.waiting({ offset: 1, limit: 2 })).map(({ id }) => id), [ids[2], ids[3]], 'a cancelled task takes no place in a page')
})

test('issue 13: reset() drops waiting and delayed local tasks from stats and get, and keeps the one in flight', async (t) => {
  const { app, handle, release, runs, finished } = await heldApp(t)
  const inFlight = await app.taskqueue.add('/tasks/hold')
  await waitFor('the held task to start', () => runs.length === 1)
  const waiting = await app.taskqueue.add('/tasks/a')
  await app.taskqueue.add('/tasks/b', { delay: 60_000 })
  await handle.reset()
  t.match(await handle.stats(), { waiting: 0, delayed: 0, inFlight: 1, oldestWaitingAge: null })
  t.equal(await handle.get(waiting), null)
  t.match(await handle.get(inFlight), { state: 'in-flight' })
  await app.taskqueue.add('/tasks/c')
  release()
  await waitFor('the held task and the new one to finish', () => finished.length === 2)
  t.same(namesOf(runs), ['hold', 'c'], 'the dropped tasks never ran')
})

test('issue 13: the steering calls check their arguments', async (t) => {
  const { handle } = await heldApp(t, 0)
  for (const id of [undefined, null, 42, {}]) {
    t.throws(() => handle.get(id as unknown as string), { code: 'FST_TASKQUEUE_INVALID_ARGUMENT' }, `get(${String(id)})`)
    t.throws(() => handle.cancel(id as unknown as string), { code: 'FST_TASKQUEUE_INVALID_ARGUMENT' }, `cancel(${String(id)})`)
  }
  for (const page of [null, 5, [], { offset: -1 }, { limit: 1.5 }, { first: 1 }]) {
    t.throws(() => handle.waiting(page as never), { code: 'FST_TASKQUEUE_INVALID_ARGUMENT' }, `waiting(${JSON.stringify(page)})`)
  }
})

test('issue 13: a local task put off for longer than one timer can wait stays delayed until its time, then runs', async (t) => {
  const clock = fakeClock(t)
  const { app, handle, runs } = await heldApp(t)
  const day = 24 * 60 * 60 * 1000
  const id = await app.taskqueue.add('/tasks/late', { delay: 30 * day })
  await clock.pass(25 * day)
  t.match(await handle.get(id), { state: 'delayed' }, 'past the first timer, it still waits')
  t.equal(runs.length, 0)
  await clock.pass(5 * day + 10)
  await waitFor('the task to run', () => runs.length === 1)
  t.same(namesOf(runs), ['late'])
})

test('issue 13: a task offered to a receiver that stopped waiting goes to the next one, or back to the head, and the counts stay right', async (t) => {
  const queue = new LocalQueue('direct', 10)
  const message = (id: string): TaskMessage => ({ v: 1, id, queue: 'direct', url: `/tasks/${id}`, method: 'GET', headers: {}, retries: 0, createdAt: Date.now(), eta: Date.now() })
  const gone = new AbortController()
  const stopped = queue.reserve(gone.signal)
  const waiting = new AbortController()
  const next = queue.reserve(waiting.signal)
  gone.abort()
  t.equal(await stopped, null, 'the stopped receiver got nothing')
  await queue.put([message('a')])
  t.equal((await next)?.message.id, 'a', 'the task went to the receiver still waiting')
  t.match(await queue.stats(), { waiting: 0, inFlight: 1 })

  const alone = new AbortController()
  const lonely = queue.reserve(alone.signal)
  alone.abort()
  t.equal(await lonely, null)
  await queue.put([message('b')])
  t.match(await queue.stats(), { waiting: 1, inFlight: 1 }, 'with no receiver left, the task waits')
  t.match(await queue.get('b'), { state: 'waiting' })
  t.equal((await queue.reserve(new AbortController().signal))?.message.id, 'b', 'and is next in line')
  await queue.close()
})

test('issue 15: reset() lets go of the tasks it dropped at once, though nothing consumes the queue', async (t) => {
  // The collector, to tell whether the queue still holds a dropped task: only a reachable one survives it.
  setFlagsFromString('--expose-gc')
  const collect = runInNewContext('gc') as () => void
  const queue = new LocalQueue('direct', 10, undefined, 2)
  const kept = async (): Promise<Array<WeakRef<TaskMessage>>> => {
    const message = (id: string): TaskMessage => ({ v: 1, id, queue: 'direct', url: `/tasks/${id}`, method: 'GET', headers: {}, retries: 0, createdAt: Date.now(), eta: Date.now() })
    // Half of them in a group: each line of the queue is emptied.
    const messages = ['a', 'b', 'c', 'd'].map((id, index) => index % 2 === 0 ? { ...message(id), group: 'g' } : message(id))
    await queue.put(messages)
    return messages.map((message) => new WeakRef(message))
  }
  const dropped = await kept()
  t.match(await queue.stats(), { waiting: 4 })
  await queue.reset()
  // A WeakRef holds its target until the end of the job that made it.
  await new Promise((resolve) => setImmediate(resolve))
  collect()
  t.same(dropped.map((ref) => ref.deref()?.id ?? null), [null, null, null, null], 'no dropped task is still held')
  const refill = await kept()
  t.match(await queue.stats(), { waiting: 4 }, 'the same ids wait again')
  const taken = []
  for (let index = 0; index < 4; index++) taken.push((await queue.reserve(new AbortController().signal))?.message.id)
  t.same(taken.sort(), ['a', 'b', 'c', 'd'], 'and are served, groups and all')
  t.equal(refill.length, 4)
  await queue.close()
})
