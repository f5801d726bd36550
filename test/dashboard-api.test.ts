// The dashboard's JSON API (issue 13, "The dashboard"), on both queue types: every route reads or
// steers the queue through its handle, answers masked tasks, and answers coded errors for an
// unknown queue, an unknown task and a malformed request.
import { test } from 'tap'
import { backendFor, queueTypes, sleep, waitFor, type Backend, type Test } from './helpers/both-queues'
import { act, actions, dashboardApp, read, reads, steers } from './helpers/dashboard'
import type { RecordingApp } from './helpers/app'
import type { DeadLetter, TaskMessage } from '../types'
import { MASKED } from '../lib/dashboard/mask'

/** Tasks named `fail` answer 400 on their first try (buried: a final status), then 200. */
async function start (t: Test, backend: Backend, consumers = true): Promise<RecordingApp> {
  return await dashboardApp(t, {
    queues: [backend.queue('default'), backend.queue('mail')],
    consumers: consumers ? [{ queue: 'default' }, { queue: 'mail' }] : []
  }, {
    tasks: {
      fail: async (request, reply, tries) => tries === 0 ? await reply.code(400).send({ refused: 'the task was wrong' }) : { ok: true }
    }
  })
}

for (const type of queueTypes) {
  test(`${type}: issue 13: GET api/queues answers every queue with its type and stats()`, async (t) => {
    const backend = await backendFor(type)
    const { app } = await start(t, backend, false)
    if (!await steers(t, app, type)) return
    await app.taskqueue.add('/tasks/now', { queue: 'mail' })
    await app.taskqueue.add('/tasks/later', { queue: 'mail', delay: 60_000 })
    const response = await read(app, '/api/queues')
    t.equal(response.statusCode, 200)
    t.equal(response.headers['content-type'], 'application/json; charset=utf-8')
    t.match(response.json(), [
      { queue: 'default', type, ...await app.taskqueue.queue('default').stats() },
      { queue: 'mail', type, waiting: 1, delayed: 1, inFlight: 0, dead: 0, paused: false, oldestWaitingAge: Number }
    ], 'one line per queue, in the order of queueNames')
    const one = await read(app, '/api/queues/mail')
    t.match(one.json(), { queue: 'mail', type, waiting: 1, delayed: 1, inFlight: 0, dead: 0, paused: false }, 'GET api/queues/:queue answers one line')
  })

  test(`${type}: issue 13: waiting and get answer tasks with their credentials masked`, async (t) => {
    const backend = await backendFor(type)
    const { app } = await start(t, backend, false)
    if (!await steers(t, app, type)) return
    const headers = { cookie: 'sid=secret', authorization: 'Bearer secret', 'x-api-key': 'secret', 'x-lang': 'fi' }
    const ids: string[] = []
    for (let n = 0; n < 3; n++) ids.push(await app.taskqueue.add(`/tasks/n${n}?token=secret&page=${n}`, { headers, method: 'POST', payload: { password: 'secret' } }))

    const page = await read(app, '/api/queues/default/waiting?offset=1&limit=1')
    t.equal(page.statusCode, 200)
    t.match(page.json(), [{ id: ids[1], state: 'waiting', method: 'POST', url: `/tasks/n1?token=${MASKED}&page=1`, retries: 0, createdAt: Number, eta: Number }], 'the page asked for, next to run first')
    t.same(page.json()[0].headers, { cookie: MASKED, authorization: MASKED, 'x-api-key': MASKED, 'x-lang': 'fi', 'content-type': 'application/json' }, 'credential headers masked, the others as they are')
    t.equal((await read(app, '/api/queues/default/waiting')).json().length, 3, 'the first 100 without a page')
    t.notMatch(page.body, /secret/, 'no secret anywhere in the answer')

    const one = await read(app, `/api/queues/default/tasks/${ids[2]}`)
    t.equal(one.statusCode, 200)
    t.match(one.json(), { id: ids[2], state: 'waiting', url: `/tasks/n2?token=${MASKED}&page=2`, headers: { cookie: MASKED, 'x-lang': 'fi' } }, 'GET tasks/:id answers the task, masked')
    t.notMatch(one.body, /secret/)
    const grouped = await app.taskqueue.add('/tasks/grouped', { group: 'tenant-7' })
    t.match((await read(app, `/api/queues/default/tasks/${grouped}`)).json(), { id: grouped, group: 'tenant-7' }, 'a task\'s group (issue 14)')

    const unknown = await read(app, '/api/queues/default/tasks/no-such-task')
    t.equal(unknown.statusCode, 404)
    t.match(unknown.json(), { statusCode: 404, code: 'FST_TASKQUEUE_UNKNOWN_TASK', message: 'Queue "default" has no task "no-such-task"' })
  })

  test(`${type}: issue 13: dead answers the dead letters masked, without their payload`, async (t) => {
    const backend = await backendFor(type)
    const { app, runs } = await start(t, backend)
    const id = await app.taskqueue.add('/tasks/fail?session=abc', { method: 'PUT', headers: { 'x-auth-token': 'secret', 'x-trace': 'kept' }, payload: 'password=secret' })
    await waitFor('the task to die', async () => (await app.taskqueue.queue('default').dead()).length === 1, 10_000)
    const response = await read(app, '/api/queues/default/dead')
    t.equal(response.statusCode, 200)
    t.match(response.json(), [{
      id,
      queue: 'default',
      reason: 'final status',
      statusCode: 400,
      at: Number,
      task: { id, method: 'PUT', url: `/tasks/fail?session=${MASKED}`, headers: { 'x-auth-token': MASKED, 'x-trace': 'kept' }, payloadBytes: 15, retries: 0 }
    }])
    t.notOk('payload' in response.json()[0].task, 'the payload is left out')
    t.notMatch(response.body, /secret/, 'no secret anywhere in the answer')
    t.same((await read(app, '/api/queues/default/dead?offset=1')).json(), [], 'a page past the end is empty')
    t.equal(runs.length, 1)
  })

  test(`${type}: issue 13: Requeue of one dead letter and Requeue all run them again, Purge empties the dead letters`, async (t) => {
    const backend = await backendFor(type)
    const { app, finished } = await start(t, backend)
    const queue = app.taskqueue.queue('default')
    const ids = [await app.taskqueue.add('/tasks/fail'), await app.taskqueue.add('/tasks/fail'), await app.taskqueue.add('/tasks/fail'), await app.taskqueue.add('/tasks/fail')]
    await waitFor('the tasks to die', async () => (await queue.dead()).length === 4, 10_000)

    const one = await act(app, 'POST', `/api/queues/default/dead/requeue/${ids[0]}`)
    t.equal(one.statusCode, 200)
    t.same(one.json(), { requeued: 1 })
    await waitFor('the requeued task to run', () => finished.some((run) => run.id === ids[0]), 10_000)
    t.same(await (await act(app, 'POST', `/api/queues/default/dead/requeue/${ids[0]}`)).json(), { requeued: 0 }, 'it is not dead any more: nothing to requeue')

    // An action may come with no body at all, as a DELETE usually does; a body must be JSON.
    const garbled = await act(app, 'POST', `/api/queues/default/dead/requeue/${ids[1]}`, { payload: '{nope' })
    t.equal(garbled.statusCode, 400, 'a body that is not JSON is refused')
    t.equal(garbled.json().code, 'FST_ERR_CTP_INVALID_JSON_BODY', "by Fastify's own JSON parser")
    const empty = await act(app, 'POST', `/api/queues/default/dead/requeue/${ids[1]}`, { payload: '' })
    t.same(empty.json(), { requeued: 1 }, 'a POST without a body')

    const all = await act(app, 'POST', '/api/queues/default/dead/requeue')
    t.same(all.json(), { requeued: 2 })
    await waitFor('every requeued task to run', () => ids.every((id) => finished.some((run) => run.id === id)), 10_000)
    t.same(await queue.dead(), [], 'no dead letter is left')

    await app.taskqueue.add('/tasks/fail')
    await waitFor('another task to die', async () => (await queue.dead()).length === 1, 10_000)
    const purge = await act(app, 'DELETE', '/api/queues/default/dead', { payload: undefined })
    t.equal(purge.statusCode, 200, 'a DELETE without a body')
    t.same(purge.json(), { purged: 1 })
    t.same(await queue.dead(), [])
  })

  test(`${type}: issue 13: Pause stops the dispatch, Resume restarts it, Cancel forgets a waiting task`, async (t) => {
    const backend = await backendFor(type)
    const { app, runs } = await start(t, backend)
    if (!await steers(t, app, type)) return
    const queue = app.taskqueue.queue('default')
    const pause = await act(app, 'POST', '/api/queues/default/pause')
    t.equal(pause.statusCode, 200)
    t.same(pause.json(), { paused: true })
    t.equal(await queue.isPaused(), true)
    const kept = await app.taskqueue.add('/tasks/kept')
    const cancelled = await app.taskqueue.add('/tasks/cancelled')
    // Not a timing assertion: a paused queue must not start a task however long we wait.
    await sleep(300)
    t.same(runs, [], 'nothing ran while the queue was paused')
    t.match((await read(app, '/api/queues/default')).json(), { paused: true, waiting: 2 })

    const cancel = await act(app, 'DELETE', `/api/queues/default/tasks/${cancelled}`)
    t.equal(cancel.statusCode, 200)
    t.same(cancel.json(), { cancelled: true })
    t.same((await act(app, 'DELETE', `/api/queues/default/tasks/${cancelled}`)).json(), { cancelled: false }, 'a task cancelled already')
    t.equal(await queue.get(cancelled), null, 'the cancelled task is forgotten')

    const resume = await act(app, 'POST', '/api/queues/default/resume')
    t.same(resume.json(), { paused: false })
    await waitFor('the kept task to run', () => runs.some((run) => run.id === kept), 10_000)
    t.same(runs.map(({ id }) => id), [kept], 'the cancelled task never ran')
  })

  test(`${type}: issue 13: every route of an unknown queue answers 404 FST_TASKQUEUE_UNKNOWN_QUEUE`, async (t) => {
    const backend = await backendFor(type)
    const { app } = await start(t, backend, false)
    for (const path of reads('nope')) {
      const response = await read(app, path)
      t.equal(response.statusCode, 404, `GET ${path}`)
      t.match(response.json(), { code: 'FST_TASKQUEUE_UNKNOWN_QUEUE', message: 'Unknown task queue "nope"; registered queues: default, mail' })
    }
    for (const [method, path] of actions('nope')) {
      const response = await act(app, method, path)
      t.equal(response.statusCode, 404, `${method} ${path}`)
      t.equal(response.json().code, 'FST_TASKQUEUE_UNKNOWN_QUEUE')
    }
  })
}

test('issue 13: a malformed queue name, task id or page answers 400 FST_TASKQUEUE_INVALID_REQUEST', async (t) => {
  const { app } = await start(t, await backendFor('local'), false)
  const bad = [
    ['/api/queues/a%7Bb%7D', 'params.queue must match pattern'],
    ['/api/queues/default/tasks/a%2Fb', 'params.id must match pattern'],
    ['/api/queues/default/tasks/a/b', 'params.id must match pattern'],
    [`/api/queues/default/tasks/${'i'.repeat(201)}`, 'params.id must NOT have more than 200 characters'],
    ['/api/queues/default/waiting?limit=-1', 'querystring.limit must be >= 0'],
    ['/api/queues/default/waiting?limit=1001', 'querystring.limit must be <= 1000'],
    ['/api/queues/default/dead?offset=1.5', 'querystring.offset must be integer'],
    ['/api/queues/default/dead?limit=ten', 'querystring.limit must be integer']
  ]
  for (const [path, message] of bad) {
    const response = await read(app, path)
    t.equal(response.statusCode, 400, path)
    t.match(response.json(), { statusCode: 400, code: 'FST_TASKQUEUE_INVALID_REQUEST', message: `Invalid dashboard request: ${message}` })
  }
  for (const [method, path] of actions('default', 'a%20b')) {
    if (!path.includes('a%20b')) continue
    const response = await act(app, method, path)
    t.equal(response.statusCode, 400, `${method} ${path}`)
    t.equal(response.json().code, 'FST_TASKQUEUE_INVALID_REQUEST')
  }
  // Queue names have at most 100 characters, as many as Fastify's router takes in a parameter.
  const long = await read(app, `/api/queues/${'q'.repeat(101)}/dead`)
  t.equal(long.statusCode, 414, "a longer name is refused by Fastify's router")
  t.equal(long.json().code, 'FST_ERR_MAX_PARAM_LENGTH')
  t.equal((await read(app, `/api/queues/default/tasks/${'i'.repeat(200)}`)).json().code, 'FST_TASKQUEUE_UNKNOWN_TASK', 'a task id of 200 characters reaches the queue')
  const unknownKey = await read(app, '/api/queues/default/dead?other=1')
  t.equal(unknownKey.statusCode, 200, 'an unknown query parameter is dropped, as Fastify does')
})

test('issue 13: a queue whose backend lacks stats() shows its coded error in GET api/queues, the others their figures', async (t) => {
  const local = await backendFor('local')
  // What a backend's dead letters may carry beyond the fields the dashboard knows (the start of
  // the answer's body, on another branch) passes through; an unreadable one gives only its size.
  const task: TaskMessage = { v: 1, id: 't1', queue: 'custom', url: '/tasks/x', method: 'POST', headers: { cookie: 'secret' }, payload: Buffer.from('abc'), retries: 2, createdAt: 1, eta: 2 }
  const letters: DeadLetter[] = [
    { id: 't1', queue: 'custom', reason: 'final status', statusCode: 422, at: 3, task, ...{ body: '{"error":"no such user"}' } },
    { id: null, queue: 'custom', reason: 'unreadable', at: 0, task: null, raw: 'garbage' }
  ]
  const { app } = await dashboardApp(t, {
    queues: [local.queue('default'), {
      queue: 'custom',
      type: {
        name: 'custom',
        shared: true,
        put: async () => {},
        receive: () => { throw new Error('never consumed') },
        length: async () => 0,
        reset: async () => {},
        dead: async () => letters,
        requeue: async () => 0,
        purge: async () => 0,
        close: async () => {}
      }
    }],
    consumers: []
  })
  const response = await read(app, '/api/queues')
  t.equal(response.statusCode, 200)
  t.same(response.json(), [
    { queue: 'default', type: 'local', waiting: 0, delayed: 0, inFlight: 0, dead: 0, paused: false, oldestWaitingAge: null },
    { queue: 'custom', type: 'custom', error: { code: 'FST_TASKQUEUE_UNSUPPORTED', message: 'Queue "custom": its backend does not implement stats()' } }
  ])
  const one = await read(app, '/api/queues/custom')
  t.equal(one.statusCode, 501, 'asked alone, the queue answers the coded error itself')
  t.equal(one.json().code, 'FST_TASKQUEUE_UNSUPPORTED')
  const pause = await act(app, 'POST', '/api/queues/custom/pause')
  t.equal(pause.statusCode, 501)
  t.same((await read(app, '/api/queues/custom/dead')).json(), [
    { id: 't1', queue: 'custom', reason: 'final status', statusCode: 422, at: 3, body: '{"error":"no such user"}', task: { v: 1, id: 't1', queue: 'custom', url: '/tasks/x', method: 'POST', headers: { cookie: MASKED }, payloadBytes: 3, retries: 2, createdAt: 1, eta: 2 } },
    { id: null, queue: 'custom', reason: 'unreadable', at: 0, task: null, rawBytes: 7 }
  ], 'what the backend does implement works, masked')
})

test('issue 14: GET api/schedules answers each schedule with its next run, ISO 8601', async (t) => {
  const { app } = await dashboardApp(t, {
    schedules: [
      { name: 'new-year', cron: '0 0 1 1 *', url: '/tasks/new-year', timezone: 'Europe/Helsinki' },
      { name: 'quarter', cron: '*/15 * * * *', url: '/tasks/quarter' }
    ]
  })
  const response = await read(app, '/api/schedules')
  t.equal(response.statusCode, 200)
  const expected = app.taskqueue.schedules().map((schedule) => ({ ...schedule, nextRun: schedule.nextRun?.toISOString() }))
  t.same(response.json(), expected, 'as schedules() lists them')
  t.match(response.json(), [
    { name: 'new-year', cron: '0 0 1 1 *', timezone: 'Europe/Helsinki', queue: 'default', nextRun: /^\d{4}-12-31T22:00:00\.000Z$/ },
    { name: 'quarter', cron: '*/15 * * * *', timezone: 'UTC', queue: 'default', nextRun: /^\d{4}-\d\d-\d\dT\d\d:(00|15|30|45):00\.000Z$/ }
  ])
  const none = await dashboardApp(t, {})
  t.same((await read(none.app, '/api/schedules')).json(), [], 'an app without schedules answers an empty list')
})
