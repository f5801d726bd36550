// The consumer (issue 2): tasks dispatched through inject() with the task headers, at once rather
// than on a polling interval, never more than concurrentLimit at a time; the outcome of each status
// (2xx done, 3xx done with a warning, 409 and TaskConflictError retried then buried, others buried
// at once), each logged with the task id and queue; and `request.taskqueue.task`, which only a
// dispatched task gets and no outside request can forge.
import { test } from 'tap'
import { TaskConflictError } from '../plugin'
import type { ConsumerOptions, TaskQueuePluginOptions } from '../lib/options'
import type { DispatchedTask } from '../types'
import { dispatchHeader, taskHeaderNames, taskHeaderPrefix } from '../lib/consumer/task-headers'
import { gate, levels, pluginLines, sleep, waitFor, type LogLine, type Test } from './helpers/harness'
import { recordingApp, type TaskBehaviour, type TaskRun } from './helpers/app'

/** The options of an app with the default local queue and a consumer of it. */
function consuming (consumer: ConsumerOptions): TaskQueuePluginOptions {
  return { consumers: [{ queue: 'default', ...consumer }] }
}

function of (runs: TaskRun[], name: string): TaskRun[] {
  return runs.filter((run) => run.name === name)
}

function linesOf (lines: LogLine[], taskId: string): LogLine[] {
  return pluginLines(lines).filter((line) => line.taskId === taskId)
}

const fast = { min: 1, max: 5 }

test('a task is dispatched through inject() with the task headers', async (t) => {
  const { app, runs } = await recordingApp(t, consuming({}))
  const id = await app.taskqueue.add('/tasks/hello', { method: 'POST', payload: { a: 1 }, headers: { 'x-lang': 'fi' } })
  await app.taskqueue.drain()
  t.equal(runs.length, 1)
  const [dispatch] = runs
  t.match(dispatch.headers, {
    'x-task-id': id,
    'x-task-queue': 'default',
    'x-task-retries': '0',
    'user-agent': 'fastify-taskqueue',
    'x-lang': 'fi'
  })
  t.notOk('x-taskqueue-dispatch' in dispatch.headers, 'the dispatch token is not left for the handler to read')
  t.same(dispatch.body, { a: 1 })
})

test('the x-task-* headers of lib/consumer/task-headers.ts: written in their order, refused in add()', async (t) => {
  let keys: string[] = []
  const { app } = await recordingApp(t, consuming({}), {
    routes: (app) => {
      app.post('/tasks/keys', async (request) => {
        keys = Object.keys(request.headers)
        return {}
      })
    }
  })
  await app.taskqueue.add('/tasks/keys', { method: 'POST', payload: 'text', headers: { 'x-own': 'mine' } })
  await app.taskqueue.drain()
  // The task's own headers first, then those of the dispatch; the token, spent, is gone.
  t.same(keys, ['content-type', 'x-own', ...taskHeaderNames, 'user-agent', 'host', 'content-length'], 'the order of the keys')
  t.notOk(keys.includes(dispatchHeader))
  for (const name of taskHeaderNames) {
    t.ok(name.startsWith(taskHeaderPrefix), `${name} has the prefix`)
    t.throws(() => app.taskqueue.add('/tasks/keys', { headers: { [name.toUpperCase()]: 'forged' } }), { code: 'FST_TASKQUEUE_INVALID_ARGUMENT' }, `add() refuses ${name}`)
  }
})

test('request.taskqueue.task: { id, queue, retries } for a dispatched task, null for a normal request', async (t) => {
  let normal: DispatchedTask | null | undefined
  const { app, runs } = await recordingApp(t, consuming({}), {
    routes: (app) => {
      app.post('/normal', async (request) => {
        normal = request.taskqueue.task
        return {}
      })
    }
  })
  const id = await app.taskqueue.add('/tasks/one', { method: 'POST', payload: null })
  await app.taskqueue.drain()
  t.match(runs[0].task, { id, queue: 'default', retries: 0 })
  t.type(runs[0].task?.eta, Date)

  t.equal((await app.inject({ method: 'POST', url: '/normal' })).statusCode, 200)
  t.equal(normal, null, 'a request the consumer did not dispatch gets null')
})

test('outside requests cannot forge the mark: x-task-* headers and a made-up dispatch token get null', async (t) => {
  const seen: Array<{ task: DispatchedTask | null, headers: Record<string, unknown> }> = []
  const { app } = await recordingApp(t, consuming({}), {
    routes: (app) => {
      app.post('/open', async (request) => {
        seen.push({ task: request.taskqueue.task, headers: { ...request.headers } })
        return {}
      })
    }
  })
  const forged = { 'x-task-id': 'forged', 'x-task-queue': 'default', 'x-task-retries': '0', 'x-task-eta': new Date().toISOString() }
  await app.inject({ method: 'POST', url: '/open', headers: forged })
  await app.inject({ method: 'POST', url: '/open', headers: { ...forged, 'x-taskqueue-dispatch': 'not-the-key' } })
  await app.inject({ method: 'POST', url: '/open', headers: { ...forged, 'x-taskqueue-dispatch': '' } })
  await app.inject({ method: 'POST', url: '/open', headers: { ...forged, 'user-agent': 'fastify-taskqueue', 'x-taskqueue-dispatch': 'x'.repeat(32) } })
  t.equal(seen.length, 4)
  for (const [index, { task, headers }] of seen.entries()) {
    t.equal(task, null, `forged request ${index + 1} is not a task`)
    t.notOk('x-taskqueue-dispatch' in headers, 'the dispatch header is removed')
  }
})

test('the consumer starts as soon as a task arrives, with no polling interval', async (t) => {
  const { app, runs } = await recordingApp(t, consuming({}), {
    routes: (app) => {
      app.post('/src', async (request) => {
        request.taskqueue.add('/tasks/from-request', { method: 'POST', payload: null })
        return {}
      })
    }
  })
  // A consumer that polled would leave some of these waiting for its next round.
  for (let round = 0; round < 5; round++) {
    await sleep(60)
    const id = await app.taskqueue.add(`/tasks/round-${round}`, { method: 'POST', payload: null })
    await waitFor(`task ${round}`, () => runs.some(({ headers }) => headers['x-task-id'] === id), 150)
  }
  t.equal(runs.length, 5, 'each task ran within 150 ms of being added to an idle consumer')

  // From a request too: right after its response.
  await app.inject({ method: 'POST', url: '/src' })
  await waitFor('the task of the request', () => of(runs, 'from-request').length === 1, 150)
  t.pass('the task of a request ran within 150 ms of its response')
})

/** Counts tasks in flight: every task route holds until `release` opens. */
async function counting (t: Test, concurrentLimit: number) {
  const release = gate()
  const counts = { inFlight: 0, max: 0, started: 0, finished: 0 }
  const { app } = await recordingApp(t, consuming({ concurrentLimit }), {
    tasks: {
      slow: async () => {
        counts.started++
        counts.inFlight++
        counts.max = Math.max(counts.max, counts.inFlight)
        await release.promise
        await sleep(2)
        counts.inFlight--
        counts.finished++
        return { ok: true }
      }
    }
  })
  return { app, counts, release }
}

for (const limit of [1, 3]) {
  test(`concurrentLimit ${limit}: never more than ${limit} tasks in flight`, async (t) => {
    const { app, counts, release } = await counting(t, limit)
    const total = limit * 4
    for (let index = 0; index < total; index++) await app.taskqueue.add('/tasks/slow', { method: 'POST', payload: null })
    await waitFor(`${limit} tasks in flight`, () => counts.inFlight === limit)
    await sleep(50)
    t.equal(counts.started, limit, `only ${limit} started while they are held`)
    t.equal(await app.taskqueue.queue('default').length(), total - limit, 'the rest wait in the queue')
    release.open()
    await app.taskqueue.drain()
    t.equal(counts.finished, total, 'every task ran')
    t.equal(counts.max, limit, `at most ${limit} in flight, and the limit was reached`)
  })
}

test('concurrentLimit 0: no limit, every waiting task is dispatched at once', async (t) => {
  const { app, counts, release } = await counting(t, 0)
  const total = 12
  for (let index = 0; index < total; index++) await app.taskqueue.add('/tasks/slow', { method: 'POST', payload: null })
  await waitFor('every task in flight', () => counts.inFlight === total)
  t.equal(await app.taskqueue.queue('default').length(), 0, 'none waits')
  release.open()
  await app.taskqueue.drain()
  t.equal(counts.max, total, `${total} tasks were in flight together`)
  t.ok(counts.max > 1)
})

test('2xx: done, dispatched once', async (t) => {
  const { app, runs, lines } = await recordingApp(t, consuming({ retryMaxCount: 3, retryDelay: fast }), {
    tasks: {
      created: (request, reply) => reply.code(201).send({}),
      empty: (request, reply) => reply.code(204).send()
    }
  })
  const ids = [
    await app.taskqueue.add('/tasks/ok', { method: 'POST', payload: null }),
    await app.taskqueue.add('/tasks/created', { method: 'POST', payload: null }),
    await app.taskqueue.add('/tasks/empty', { method: 'POST', payload: null })
  ]
  await app.taskqueue.drain()
  await sleep(20)
  t.same(runs.map(({ name }) => name), ['ok', 'created', 'empty'], 'each dispatched once')
  for (const [index, id] of ids.entries()) {
    const taskLines = linesOf(lines, id)
    t.ok(taskLines.length > 0, 'logged')
    t.ok(taskLines.every((line) => line.level < levels.warn && line.queue === 'default'), 'below warning, with the queue')
    t.equal(taskLines.at(-1)?.statusCode, [200, 201, 204][index])
  }
  t.same(await app.taskqueue.queue('default').dead(), [], 'nothing given up')
})

test('3xx: done with a warning, the redirect not followed', async (t) => {
  let followed = 0
  const { app, runs, lines } = await recordingApp(t, consuming({ retryMaxCount: 3, retryDelay: fast }), {
    tasks: {
      moved: (request, reply) => reply.redirect('/elsewhere', 301),
      found: (request, reply) => reply.redirect('/elsewhere')
    },
    routes: (app) => {
      app.all('/elsewhere', async () => { followed++; return {} })
    }
  })
  const moved = await app.taskqueue.add('/tasks/moved', { method: 'POST', payload: null })
  const found = await app.taskqueue.add('/tasks/found', { method: 'POST', payload: null })
  await app.taskqueue.drain()
  await sleep(20)
  t.same(runs.map(({ name }) => name), ['moved', 'found'], 'each dispatched once')
  t.equal(followed, 0, 'the redirect was not followed')
  for (const [id, statusCode] of [[moved, 301], [found, 302]] as const) {
    const warnings = linesOf(lines, id).filter(({ level }) => level === levels.warn)
    t.equal(warnings.length, 1, `${statusCode}: one warning`)
    t.match(warnings[0], { taskId: id, queue: 'default', statusCode })
  }
  t.same(await app.taskqueue.queue('default').dead(), [], 'done, not given up')
})

test('409 is dispatched again up to retryMaxCount times, then given up with an error', async (t) => {
  const retryMaxCount = 3
  const { app, runs, lines } = await recordingApp(t, consuming({ retryMaxCount, retryDelay: fast }), {
    tasks: {
      conflict: (request, reply) => reply.code(409).send({ conflict: true })
    }
  })
  const id = await app.taskqueue.add('/tasks/conflict', { method: 'POST', payload: null })
  await app.taskqueue.drain()
  await sleep(30)
  const tries = of(runs, 'conflict')
  t.equal(tries.length, retryMaxCount + 1, 'the first try and retryMaxCount retries')
  t.same(tries.map(({ headers }) => headers['x-task-retries']), ['0', '1', '2', '3'], 'x-task-retries counts up')
  t.same(tries.map(({ task }) => task?.retries), [0, 1, 2, 3], 'so does request.taskqueue.task.retries')
  t.ok(tries.every(({ headers, task }) => headers['x-task-id'] === id && task?.id === id), 'always the same task')

  const taskLines = linesOf(lines, id)
  t.ok(taskLines.every((line) => line.queue === 'default'), 'every line carries the queue')
  t.equal(taskLines.filter(({ msg }) => msg.includes('retried')).length, retryMaxCount, 'each retry logged')
  const givenUp = taskLines.filter(({ level }) => level >= levels.warn)
  t.equal(givenUp.length, 1, 'given up once, logged as a warning or an error')
  t.match(givenUp[0], { taskId: id, queue: 'default', statusCode: 409, retries: retryMaxCount })
  t.equal(await app.taskqueue.queue('default').length(), 0, 'nothing left waiting')
})

test('throwing TaskConflictError is a 409: retried, then given up', async (t) => {
  const statuses: number[] = []
  const { app, runs, lines } = await recordingApp(t, consuming({ retryMaxCount: 2, retryDelay: fast }), {
    tasks: {
      always: () => { throw new TaskConflictError() },
      once: (request, reply, tries) => {
        if (tries === 0) throw new TaskConflictError()
        return { ok: true }
      }
    },
    routes: (app) => {
      app.addHook('onResponse', async (request, reply) => {
        if (request.taskqueue.task !== null) statuses.push(reply.statusCode)
      })
    }
  })
  const always = await app.taskqueue.add('/tasks/always', { method: 'POST', payload: null })
  await app.taskqueue.drain()
  await app.taskqueue.add('/tasks/once', { method: 'POST', payload: null })
  await app.taskqueue.drain()
  await sleep(30)
  t.equal(of(runs, 'always').length, 3, 'retryMaxCount 2: three tries')
  t.same(of(runs, 'always').map(({ task }) => task?.retries), [0, 1, 2])
  t.equal(of(runs, 'once').length, 2, 'a conflict that clears: done on the second try')
  t.same(statuses, [409, 409, 409, 409, 200], 'TaskConflictError answers 409')
  t.equal(linesOf(lines, always).filter(({ level }) => level >= levels.warn).length, 1, 'the task given up is logged')
  const dead = await app.taskqueue.queue('default').dead()
  t.same(dead.map(({ id }) => id), [always], 'only the task that kept conflicting was given up')
})

test('retryMaxCount 0: a 409 is tried once', async (t) => {
  const { app, runs } = await recordingApp(t, consuming({ retryMaxCount: 0, retryDelay: fast }), {
    tasks: {
      conflict: (request, reply) => reply.code(409).send({})
    }
  })
  await app.taskqueue.add('/tasks/conflict', { method: 'POST', payload: null })
  await app.taskqueue.drain()
  await sleep(30)
  t.equal(runs.length, 1)
})

test('other 4xx and 501: dispatched once and logged as an error', async (t) => {
  const statuses = [400, 403, 404, 422, 501]
  const behaviours: Record<string, TaskBehaviour> = {}
  for (const status of statuses) behaviours[`s${status}`] = (request, reply) => reply.code(status).send({ status })
  const { app, runs, lines } = await recordingApp(t, consuming({ retryMaxCount: 3, retryDelay: fast }), { tasks: behaviours })
  const ids: string[] = []
  for (const status of statuses) ids.push(await app.taskqueue.add(`/tasks/s${status}`, { method: 'POST', payload: null }))
  // A url no route has answers 404 as well.
  ids.push(await app.taskqueue.add('/no/such/route', { method: 'POST', payload: null }))
  await app.taskqueue.drain()
  await sleep(50)
  t.same(runs.map(({ name }) => name), statuses.map((status) => `s${status}`), 'each dispatched once, never again')
  for (const [index, id] of ids.entries()) {
    const errors = linesOf(lines, id).filter(({ level }) => level === levels.error)
    t.equal(errors.length, 1, `${statuses[index] ?? 'unknown route'}: one error line`)
    t.match(errors[0], { taskId: id, queue: 'default', statusCode: statuses[index] ?? 404 })
  }
})

test('500 (a thrown error) is retried like a conflict and logged as an error when given up', async (t) => {
  // Issue 2 acknowledged any other status at once; the retry policy of the README (5xx but 501
  // retried) replaced that. With retryMaxCount 1 the task is tried twice, then given up.
  const { app, runs, lines } = await recordingApp(t, consuming({ retryMaxCount: 1, retryDelay: fast }), {
    tasks: {
      broken: () => { throw new Error('broken') }
    }
  })
  const id = await app.taskqueue.add('/tasks/broken', { method: 'POST', payload: null })
  await app.taskqueue.drain()
  await sleep(30)
  t.equal(of(runs, 'broken').length, 2)
  const errors = linesOf(lines, id).filter(({ level }) => level === levels.error)
  t.equal(errors.length, 1)
  t.match(errors[0], { taskId: id, queue: 'default', statusCode: 500 })
})

test('every log line of the consumer about a task carries its id and queue', async (t) => {
  const { app, lines } = await recordingApp(t, consuming({ retryMaxCount: 1, retryDelay: fast }), {
    tasks: {
      conflict: (request, reply) => reply.code(409).send({}),
      redirect: (request, reply) => reply.redirect('/x'),
      bad: (request, reply) => reply.code(400).send({})
    }
  })
  for (const name of ['ok', 'conflict', 'redirect', 'bad']) await app.taskqueue.add(`/tasks/${name}`, { method: 'POST', payload: null })
  await app.taskqueue.drain()
  await sleep(30)
  const taskLines = pluginLines(lines)
  t.ok(taskLines.length >= 5, 'the consumer logged')
  for (const line of taskLines) {
    t.type(line.taskId, 'string', `"${line.msg}" has the task id`)
    t.equal(line.queue, 'default', `"${line.msg}" has the queue`)
  }
})

// Issue 11, point 17: the README said a timed-out try is aborted through an AbortSignal; the
// consumer only stops waiting for it. This pins what the README now says.
test('a try past taskTimeout is not aborted: it runs to its end while the next try runs', async (t) => {
  const events: string[] = []
  const firstMayEnd = gate()
  const { app, runs } = await recordingApp(t, consuming({ taskTimeout: 50, retryMaxCount: 1, retryDelay: { min: 1, max: 1 } }), {
    tasks: {
      slow: async (request, reply, tries) => {
        if (tries > 0) {
          events.push('second try ran')
          firstMayEnd.open()
          return { ok: true }
        }
        await firstMayEnd.promise
        // Still a live request: nothing aborted or destroyed it when its time ran out.
        events.push(`first try ended, aborted: ${String(request.raw.destroyed)}`)
        return { late: true }
      }
    }
  })
  await app.taskqueue.add('/tasks/slow', { method: 'POST', payload: {} })
  await waitFor('both tries to end', () => events.length === 2)
  await app.taskqueue.drain()
  t.same(events, ['second try ran', 'first try ended, aborted: false'], 'the timed-out try went on after the next one ran')
  t.same(runs.map(({ task }) => task?.retries), [0, 1])
  t.same(await app.taskqueue.queue('default').dead(), [], 'the retry\'s answer settled the task; the late answer changed nothing')
})
