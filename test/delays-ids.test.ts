// Delays and caller-chosen task ids of issue 4, on both queue types: `add(url, { delay })` and
// `{ notBefore }` put a task off (on Redis it is picked up within about a second of its due time);
// `{ id }` makes a second add of a live task (waiting, delayed or in flight) a no-op returning the
// same id, and frees the id once the task is done or dead. Bad values are coded errors.
import { test } from 'tap'
import { backendFor, codeOf, gate, queueTypes, sleep, waitFor, type Backend, type Test } from './helpers/both-queues'
import { recordingApp, type RecordingApp } from './helpers/app'
import { clockFor } from './helpers/clock'

/** A gate that /tasks/hold waits for; a test may put a new one in. */
interface Hold { gate: ReturnType<typeof gate> }

/**
 * An app with the default queue of `backend` and its consumer; /tasks/hold waits for `hold`,
 * /tasks/flaky answers 503 with Retry-After: 1 on its first try, /tasks/bad answers 400, and
 * GET /src adds two tasks `?delay` and `?id` say and one due at once.
 */
function start (t: Test, backend: Backend, concurrentLimit = 1, hold: Hold = { gate: gate() }): Promise<RecordingApp> {
  return recordingApp(t, {
    queues: [backend.queue()],
    consumers: [{ queue: 'default', concurrentLimit, retryMaxCount: 3, retryDelay: { min: 5, max: 10 } }]
  }, {
    tasks: {
      hold: async () => { await hold.gate.promise },
      flaky: (request, reply, tries) => tries === 0 ? reply.code(503).header('retry-after', '1').send({}) : undefined,
      bad: (request, reply) => reply.code(400).send({})
    },
    routes: (app) => {
      app.get('/src', async (request) => {
        const { delay, id } = request.query as { delay?: string, id?: string }
        return {
          ids: [
            request.taskqueue.add('/tasks/later', { delay: Number(delay ?? 0), id }),
            request.taskqueue.add('/tasks/now'),
            request.taskqueue.add('/tasks/later', { delay: Number(delay ?? 0), id })
          ]
        }
      })
    }
  })
}

/** On Redis a due task is picked up within about a second; locally at once. */
const pickup = 1500

for (const type of queueTypes) {
  test(`${type}: { delay } puts the task off`, async (t) => {
    const clock = clockFor(t, type)
    const harness = await start(t, await backendFor(type), 0)
    const queue = harness.app.taskqueue.queue('default')
    const added = Date.now()
    const id = await harness.app.taskqueue.add('/tasks/later', { delay: 600 })
    const now = await harness.app.taskqueue.add('/tasks/now')
    await waitFor('the task without delay', () => harness.runsOf(now).length === 1)
    t.equal(await queue.length(), 1, 'the delayed task counts as waiting')
    await clock.passUntil(added + 400)
    t.equal(harness.runsOf(id).length, 0, 'not run before its delay')
    await clock.skip(200)
    await waitFor('the delayed task', () => harness.runsOf(id).length === 1, 600 + pickup)
    const ran = harness.runsOf(id)[0].at - added
    t.ok(ran >= 590, `ran after its delay (${ran} ms)`)
    t.ok(ran <= 600 + pickup, 'and within the pickup bound')
    t.equal(harness.runsOf(id)[0].retries, '0', 'a delay is not a retry')
    t.equal(await queue.length(), 0)
  })

  test(`${type}: { notBefore } puts the task off until then`, async (t) => {
    const clock = clockFor(t, type)
    const harness = await start(t, await backendFor(type), 0)
    const due = new Date(Date.now() + 700)
    const id = await harness.app.taskqueue.add('/tasks/later', { notBefore: due })
    const past = await harness.app.taskqueue.add('/tasks/now', { notBefore: new Date(Date.now() - 60_000) })
    await waitFor('the task due in the past, at once', () => harness.runsOf(past).length === 1)
    await clock.passUntil(due.getTime() - 250)
    t.equal(harness.runsOf(id).length, 0, 'not run before notBefore')
    await clock.skip(250)
    await waitFor('the task to run', () => harness.runsOf(id).length === 1, 700 + pickup)
    const at = harness.runsOf(id)[0].at
    t.ok(at >= due.getTime() - 10, `ran once due (${at - due.getTime()} ms after)`)
    t.ok(at <= due.getTime() + pickup, 'and within the pickup bound')
  })

  test(`${type}: delayed and due tasks of one request`, async (t) => {
    const clock = clockFor(t, type)
    const harness = await start(t, await backendFor(type), 0)
    const response = await harness.app.inject('/src?delay=400')
    const [later, now, later2] = response.json().ids
    t.not(later, later2, 'two unnamed tasks')
    await waitFor('the due task', () => harness.runsOf(now).length === 1)
    t.equal(harness.runsOf(later).length + harness.runsOf(later2).length, 0, 'the delayed ones wait')
    await clock.skip(400)
    await waitFor('the delayed ones', () => harness.runsOf(later).length === 1 && harness.runsOf(later2).length === 1, 400 + pickup)
  })

  test(`${type}: bad delay, notBefore and id are coded errors`, async (t) => {
    const harness = await start(t, await backendFor(type))
    const bad = 'FST_TASKQUEUE_INVALID_ARGUMENT'
    const add = (options: unknown) => () => harness.app.taskqueue.add('/tasks/now', options as never)
    t.equal(await codeOf(add({ delay: 100, notBefore: new Date(Date.now() + 100) })), bad, 'delay and notBefore together')
    t.equal(await codeOf(add({ delay: 0, notBefore: new Date() })), bad, 'even a zero delay')
    for (const delay of [-1, -1000, 1.5, '100', NaN, Infinity, null, 366 * 24 * 60 * 60 * 1000, {}]) {
      t.equal(await codeOf(add({ delay })), bad, `delay ${String(delay)}`)
    }
    const notBefores = [Date.now() + 1000, new Date(Date.now() + 1000).toISOString(), {}, null, new Date('not a date'), 'tomorrow']
    for (const notBefore of notBefores) {
      t.equal(await codeOf(add({ notBefore })), bad, `notBefore ${String(notBefore)}`)
    }
    for (const id of ['', 'with space', 'a/b', 'ä', 'x'.repeat(201), 'new\nline', 42, null, {}, ['a']]) {
      t.equal(await codeOf(add({ id })), bad, `id ${JSON.stringify(id)}`)
    }
    t.equal(await codeOf(add({ id: 'Az09_.:-', delay: 0 })), 'no error', 'letters, digits, _ . : - are fine')
    t.equal(await codeOf(add({ id: 'x'.repeat(200) })), 'no error', '200 characters are fine')
    const response = await harness.app.inject('/src?delay=-5')
    t.equal(response.statusCode, 500, 'request.taskqueue.add throws too')
    t.equal(response.json().code, bad)
    await sleep(50)
    t.equal(new Set(harness.runs.map(({ id }) => id)).size, 2, 'only the good tasks ran')
  })

  test(`${type}: { id } while the task waits, is delayed or in flight: a no-op returning the id`, async (t) => {
    const backend = await backendFor(type)
    const clock = clockFor(t, type)
    const hold = { gate: gate() }
    const harness = await start(t, backend, 1, hold)
    const { app } = harness
    const queue = app.taskqueue.queue('default')

    // In flight: the only slot is taken by the task itself.
    t.equal(await app.taskqueue.add('/tasks/hold', { id: 'flight' }), 'flight', 'the id is returned')
    await waitFor('the task to start', () => harness.runsOf('flight').length === 1)
    t.equal(await app.taskqueue.add('/tasks/hold', { id: 'flight' }), 'flight', 'in flight: the same id')
    // Waiting: behind the task in flight.
    t.equal(await app.taskqueue.add('/tasks/now', { id: 'wait' }), 'wait')
    t.equal(await app.taskqueue.add('/tasks/now', { id: 'wait', method: 'POST', payload: { other: true } }), 'wait', 'waiting: the same id')
    // Delayed.
    t.equal(await app.taskqueue.add('/tasks/now', { id: 'later', delay: 500 }), 'later')
    t.equal(await app.taskqueue.add('/tasks/now', { id: 'later' }), 'later', 'delayed: the same id, not run at once')
    t.equal(await queue.length(), 2, 'one waiting, one delayed: the second adds were dropped')
    if (type === 'redis') {
      const client = backend.redis()
      t.same((await client.hkeys(backend.key('tasks'))).sort(), ['flight', 'later', 'wait'], 'the live ids')
      t.equal(await client.llen(backend.key('waiting')), 1)
      t.equal(await client.zcard(backend.key('delayed')), 1)
    }
    // From a request: twice in one request, and once more while it lives.
    const response = await app.inject('/src?delay=300&id=req')
    t.same(response.json().ids.filter((id: string) => id === 'req').length, 2, 'the request got the id twice')

    hold.gate.open()
    await clock.skip(500)
    await waitFor('the named tasks to run', () => ['flight', 'wait', 'later', 'req'].every((id) => harness.runsOf(id).length === 1), 3000)
    const laterRun = harness.runsOf('later')[0]
    t.ok(laterRun.at >= harness.runsOf('wait')[0].at, 'the delayed one kept its delay')
    await clock.pass(200)
    t.same(['flight', 'wait', 'later', 'req'].map((id) => harness.runsOf(id).length), [1, 1, 1, 1], 'each ran once')
    t.equal(await queue.length(), 0)
    if (type === 'redis') t.same(await backend.redis().hkeys(backend.key('tasks')), [], 'no live id left')
  })

  test(`${type}: { id } while its retry waits is a no-op too`, async (t) => {
    const clock = clockFor(t, type)
    const harness = await start(t, await backendFor(type))
    t.equal(await harness.app.taskqueue.add('/tasks/flaky', { id: 'retrying' }), 'retrying')
    await waitFor('the first try', () => harness.runsOf('retrying').length === 1)
    await waitFor('the retry to wait', async () => await harness.app.taskqueue.queue('default').length() === 1)
    t.equal(await harness.app.taskqueue.add('/tasks/flaky', { id: 'retrying' }), 'retrying')
    await clock.pass(200)
    t.equal(harness.runsOf('retrying').length, 1, 'not run again at once')
    await clock.skip(800)
    await waitFor('the retry', () => harness.runsOf('retrying').length === 2, 1000 + pickup)
    await clock.pass(100)
    t.same(harness.runsOf('retrying').map(({ retries }) => retries), ['0', '1'], 'the first try and its retry, nothing more')
  })

  test(`${type}: { id } is free again once its task is done or dead`, async (t) => {
    const hold = { gate: gate() }
    const harness = await start(t, await backendFor(type), 1, hold)
    const queue = harness.app.taskqueue.queue('default')
    t.equal(await harness.app.taskqueue.add('/tasks/now', { id: 'again' }), 'again')
    await waitFor('the first run', () => harness.runsOf('again').length === 1)
    await sleep(50)
    t.equal(await harness.app.taskqueue.add('/tasks/now', { id: 'again' }), 'again')
    await waitFor('the second run', () => harness.runsOf('again').length === 2)

    t.equal(await harness.app.taskqueue.add('/tasks/bad', { id: 'dies' }), 'dies')
    await waitFor('the dead letter', async () => (await queue.dead()).length === 1)
    t.equal(await harness.app.taskqueue.add('/tasks/bad', { id: 'dies' }), 'dies')
    await waitFor('the second run', () => harness.runsOf('dies').length === 2)
    await waitFor('the second dead letter', async () => (await queue.dead()).length === 2)

    // A requeued dead letter is live again under its id.
    hold.gate = gate()
    t.equal(await harness.app.taskqueue.add('/tasks/hold', { id: 'blocker' }), 'blocker')
    await waitFor('the blocker to start', () => harness.runsOf('blocker').length === 1)
    t.equal(await queue.requeue('dies'), 1, 'one of the two dead letters of the id is put back: one live task per id')
    t.equal(await queue.length(), 1)
    t.same((await queue.dead()).map(({ id }) => id), ['dies'], 'the other stays dead')
    t.equal(await queue.requeue('dies'), 0, 'while the id is live')
    t.equal(await harness.app.taskqueue.add('/tasks/bad', { id: 'dies' }), 'dies', 'and a new add is a no-op')
    t.equal(await queue.length(), 1)
    hold.gate.open()
    await waitFor('the requeued task', () => harness.runsOf('dies').length === 3)
    await sleep(100)
    t.equal(harness.runsOf('dies').length, 3, 'it ran once')
    await waitFor('it to die again', async () => (await queue.dead()).length === 2)
  })
}
