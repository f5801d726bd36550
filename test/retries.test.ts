// Retries of issue 4 on both queue types: which outcomes are dispatched again and which are final,
// retryMaxCount, the dead letter of a task out of retries, Retry-After, the x-task-retries and
// x-task-eta headers, a retry that waits without holding a concurrency slot, and (Redis) a retry
// that waits in the delayed set and survives a restart. The policy itself, row by row without an
// app, is in test/retry-policy.test.ts.
import { test } from 'tap'
import { TaskConflictError } from '../plugin'
import type { ConsumerOptions, TaskQueuePluginOptions } from '../lib/options'
import type { DispatchedTask } from '../types'
import { decodeMessage } from '../lib/queues/codec'
import { backendFor, queueTypes, scanKeys, sleep, waitFor, type Backend } from './helpers/both-queues'
import { recordingApp, type TaskBehaviour } from './helpers/app'
import { clockFor, timer } from './helpers/clock'

/** The options of an app with the default queue of `backend` and a consumer of it. */
function optionsOf (backend: Backend, consumer: ConsumerOptions): TaskQueuePluginOptions {
  return { queues: [backend.queue()], consumers: [{ queue: 'default', ...consumer }] }
}

const fast = { min: 5, max: 20 }

for (const type of queueTypes) {
  test(`${type}: 409, 429, 500, 503 and TaskConflictError are dispatched again`, async (t) => {
    const backend = await backendFor(type)
    const failOnce = (status: number): TaskBehaviour => (request, reply, tries) => tries === 0 ? reply.code(status).send({ tries }) : { ok: true }
    const { app, runsOf } = await recordingApp(t, optionsOf(backend, { concurrentLimit: 0, retryMaxCount: 3, retryDelay: fast }), {
      tasks: {
        s409: failOnce(409),
        s429: failOnce(429),
        s500: failOnce(500),
        s502: failOnce(502),
        s503: failOnce(503),
        s504: failOnce(504),
        conflict: (request, reply, tries) => {
          if (tries === 0) throw new TaskConflictError()
          return { ok: true }
        }
      }
    })
    const names = ['s409', 's429', 's500', 's502', 's503', 's504', 'conflict']
    const ids = await Promise.all(names.map((name) => app.taskqueue.add(`/tasks/${name}`, { method: 'POST', payload: {} })))
    await waitFor('a second try of every task', () => ids.every((id) => runsOf(id).length === 2))
    await sleep(50)
    for (const [index, id] of ids.entries()) {
      t.same(runsOf(id).map(({ retries }) => retries), ['0', '1'], `${names[index]}: tried twice, then done`)
    }
    t.same(await app.taskqueue.queue('default').dead(), [], 'nothing in the dead letters')
    t.equal(await app.taskqueue.queue('default').length(), 0, 'nothing left waiting')
  })

  test(`${type}: a try that runs past taskTimeout is dispatched again`, async (t) => {
    const backend = await backendFor(type)
    const clock = clockFor(t, type)
    const { app, runsOf } = await recordingApp(t, optionsOf(backend, { retryMaxCount: 2, retryDelay: fast, taskTimeout: 100 }), {
      tasks: {
        slow: async (request, reply, tries) => {
          if (tries === 0) await timer(400)
          return { ok: true }
        }
      }
    })
    const id = await app.taskqueue.add('/tasks/slow', { method: 'POST', payload: {} })
    await waitFor('the first try', () => runsOf(id).length === 1)
    await clock.skip(100)
    await waitFor('the second try', () => runsOf(id).length === 2)
    const [first, second] = runsOf(id)
    t.ok(second.at - first.at >= 90, `the second try waited for the timeout (${second.at - first.at} ms)`)
    t.ok(second.at - first.at < 400, 'and not for the slow handler')
    t.equal(second.retries, '1')
    await clock.pass(450)
    t.equal(runsOf(id).length, 2, 'the late answer of the first try changes nothing')
    t.same(await app.taskqueue.queue('default').dead(), [], 'nothing in the dead letters')
  })

  test(`${type}: an error of inject() itself is dispatched again`, async (t) => {
    const backend = await backendFor(type)
    const { app, runsOf } = await recordingApp(t, optionsOf(backend, { concurrentLimit: 0, retryMaxCount: 2, retryDelay: fast }))
    const realInject = app.inject.bind(app)
    const failures = new Map([['/tasks/rejects', 1], ['/tasks/throws', 1], ['/tasks/always', Infinity]])
    const tries = new Map<string, number>()
    // The consumer calls app.inject(); this one fails as a broken inject would: with an error
    // (through the callback, or a rejection without one) or by throwing at once.
    Object.assign(app, {
      inject (options: { url: string }, callback?: (error: Error) => void) {
        tries.set(options.url, (tries.get(options.url) ?? 0) + 1)
        const left = failures.get(options.url) ?? 0
        if (left > 0) {
          failures.set(options.url, left - 1)
          if (options.url === '/tasks/throws') throw new Error('inject threw')
          if (callback === undefined) return Promise.reject(new Error('inject rejected'))
          process.nextTick(callback, new Error('inject rejected'))
          return
        }
        return realInject(options as never, callback as never)
      }
    })
    const rejects = await app.taskqueue.add('/tasks/rejects', { method: 'POST', payload: {} })
    const throws = await app.taskqueue.add('/tasks/throws', { method: 'POST', payload: {} })
    const always = await app.taskqueue.add('/tasks/always', { method: 'POST', payload: {} })
    await waitFor('the tasks to run once inject works', () => runsOf(rejects).length === 1 && runsOf(throws).length === 1)
    t.same(runsOf(rejects).map(({ retries }) => retries), ['1'], 'a rejected inject: run on the retry')
    t.same(runsOf(throws).map(({ retries }) => retries), ['1'], 'an inject that threw: run on the retry')
    await waitFor('the task whose inject always fails to die', async () => (await app.taskqueue.queue('default').dead()).length === 1)
    const [letter] = await app.taskqueue.queue('default').dead()
    t.equal(letter.id, always)
    t.equal(letter.reason, 'retries exhausted')
    t.equal(letter.statusCode, undefined, 'no status: nothing answered')
    t.match(letter.detail, /inject rejected/)
    t.equal(tries.get('/tasks/always'), 3, 'retryMaxCount 2: three tries')
  })

  test(`${type}: 501 and other 4xx are final at once`, async (t) => {
    const backend = await backendFor(type)
    const always = (status: number): TaskBehaviour => (request, reply) => reply.code(status).send({ status })
    const { app, runsOf } = await recordingApp(t, optionsOf(backend, { concurrentLimit: 0, retryMaxCount: 5, retryDelay: fast }), {
      tasks: {
        s400: always(400), s401: always(401), s403: always(403), s404: always(404), s410: always(410), s422: always(422), s501: always(501)
      }
    })
    const statuses = [400, 401, 403, 404, 410, 422, 501]
    const ids = await Promise.all(statuses.map((status) => app.taskqueue.add(`/tasks/s${status}`, { method: 'POST', payload: {} })))
    // A url no route answers: the app's own 404.
    const unrouted = await app.taskqueue.add('/no/such/route')
    await waitFor('every task in the dead letters', async () => (await app.taskqueue.queue('default').dead()).length === ids.length + 1)
    await sleep(100)
    const letters = await app.taskqueue.queue('default').dead()
    t.equal(letters.length, ids.length + 1, 'nothing else died')
    for (const [index, id] of ids.entries()) {
      t.equal(runsOf(id).length, 1, `${statuses[index]}: dispatched once`)
      const letter = letters.find((letter) => letter.id === id)
      t.equal(letter?.reason, 'final status', `${statuses[index]}: reason`)
      t.equal(letter?.statusCode, statuses[index], `${statuses[index]}: status`)
      t.equal(letter?.queue, 'default')
      t.equal(letter?.task?.url, `/tasks/s${statuses[index]}`)
    }
    const lost = letters.find((letter) => letter.id === unrouted)
    t.equal(lost?.reason, 'final status', 'an unrouted url is final')
    t.equal(lost?.statusCode, 404)
    t.equal(await app.taskqueue.queue('default').length(), 0, 'no retry waits')
  })

  test(`${type}: retryMaxCount + 1 tries, then dead with the reason and the last status`, async (t) => {
    const backend = await backendFor(type)
    const { app, runsOf } = await recordingApp(t, optionsOf(backend, { concurrentLimit: 0, retryMaxCount: 2, retryDelay: fast, taskTimeout: 60 }), {
      tasks: {
        always500: (request, reply) => reply.code(500).send({}),
        always409: () => { throw new TaskConflictError() },
        alwaysSlow: async () => { await sleep(250); return {} },
        // The last try times out: the reason is timeout, with no status.
        endsSlow: async (request, reply, tries) => {
          if (tries < 2) return reply.code(503).send({})
          await sleep(250)
          return {}
        },
        // A timeout on an earlier try, a status on the last: retries exhausted, with that status.
        endsWith429: async (request, reply, tries) => {
          if (tries === 0) await sleep(250)
          return reply.code(429).send({})
        }
      }
    })
    const names = ['always500', 'always409', 'alwaysSlow', 'endsSlow', 'endsWith429']
    const ids = await Promise.all(names.map((name) => app.taskqueue.add(`/tasks/${name}`, { method: 'POST', payload: {} })))
    await waitFor('every task in the dead letters', async () => (await app.taskqueue.queue('default').dead()).length === names.length)
    await sleep(100)
    const letters = await app.taskqueue.queue('default').dead()
    const expected: Array<[string, number | undefined]> = [
      ['retries exhausted', 500], ['retries exhausted', 409], ['timeout', undefined], ['timeout', undefined], ['retries exhausted', 429]
    ]
    for (const [index, id] of ids.entries()) {
      t.same(runsOf(id).map(({ retries }) => retries), ['0', '1', '2'], `${names[index]}: three tries`)
      const letter = letters.find((letter) => letter.id === id)
      t.equal(letter?.reason, expected[index][0], `${names[index]}: reason`)
      t.equal(letter?.statusCode, expected[index][1], `${names[index]}: last status`)
      t.equal(letter?.task?.retries, 2, `${names[index]}: the task as it last ran`)
      t.type(letter?.detail, 'string')
    }
    t.equal(await app.taskqueue.queue('default').length(), 0, 'no retry waits')
  })

  test(`${type}: retryMaxCount 0 gives up after the first try`, async (t) => {
    const backend = await backendFor(type)
    const { app, runsOf } = await recordingApp(t, optionsOf(backend, { retryMaxCount: 0, retryDelay: fast }), {
      tasks: {
        fail: (request, reply) => reply.code(503).send({})
      }
    })
    const id = await app.taskqueue.add('/tasks/fail', { method: 'POST', payload: {} })
    await waitFor('the dead letter', async () => (await app.taskqueue.queue('default').dead()).length === 1)
    await sleep(50)
    t.equal(runsOf(id).length, 1)
    const [letter] = await app.taskqueue.queue('default').dead()
    t.match(letter, { id, reason: 'retries exhausted', statusCode: 503 })
  })

  test(`${type}: Retry-After on 429 and 503 is honoured, on other statuses not`, async (t) => {
    const backend = await backendFor(type)
    const clock = clockFor(t, type)
    const { app, runsOf } = await recordingApp(t, optionsOf(backend, { concurrentLimit: 0, retryMaxCount: 3, retryDelay: fast }), {
      tasks: {
        seconds429: (request, reply, tries) => tries === 0 ? reply.code(429).header('retry-after', '1').send({}) : {},
        date503: (request, reply, tries) => tries === 0
        // An HTTP date 2 s on, which its whole seconds make between 1 and 2 s.
          ? reply.code(503).header('retry-after', new Date(Date.now() + 2000).toUTCString()).send({})
          : {},
        ignored500: (request, reply, tries) => tries === 0 ? reply.code(500).header('retry-after', '5').send({}) : {},
        ignored409: (request, reply, tries) => tries === 0 ? reply.code(409).header('retry-after', '5').send({}) : {}
      }
    })
    const names = ['seconds429', 'date503', 'ignored500', 'ignored409']
    const ids = await Promise.all(names.map((name) => app.taskqueue.add(`/tasks/${name}`, { method: 'POST', payload: {} })))
    await waitFor('the first tries', () => ids.every((id) => runsOf(id).length >= 1))
    await clock.skip(2000)
    // Had Retry-After been honoured for 500 or 409, their second try would come after 5 s.
    await waitFor('the second tries', () => ids.every((id) => runsOf(id).length === 2), 4000)
    const gap = (id: string): number => {
      const [first, second] = runsOf(id)
      return second.at - first.at
    }
    t.ok(gap(ids[0]) >= 900, `429 with Retry-After: 1 waited ${gap(ids[0])} ms`)
    t.ok(gap(ids[1]) >= 900, `503 with an HTTP date waited ${gap(ids[1])} ms`)
    t.same(await app.taskqueue.queue('default').dead(), [])
  })

  test(`${type}: x-task-retries, x-task-eta and request.taskqueue.task say where a task stands`, async (t) => {
    const backend = await backendFor(type)
    const { app, runsOf } = await recordingApp(t, optionsOf(backend, { retryMaxCount: 3, retryDelay: { min: 20, max: 40 } }), {
      tasks: {
        fail: (request, reply) => reply.code(500).send({})
      }
    })
    const before = Date.now()
    const id = await app.taskqueue.add('/tasks/fail', { method: 'POST', payload: {} })
    await waitFor('the dead letter', async () => (await app.taskqueue.queue('default').dead()).length === 1)
    const seen = runsOf(id)
    t.same(seen.map(({ retries }) => retries), ['0', '1', '2', '3'], 'x-task-retries counts up')
    t.same(seen.map(({ task }) => task?.retries), [0, 1, 2, 3], 'task.retries counts up')
    for (const [index, { task, eta: etaHeader, at }] of seen.entries()) {
      t.equal(task?.id, id)
      t.equal(task?.queue, 'default')
      t.ok(task?.eta instanceof Date && Number.isFinite(task.eta.getTime()), `try ${index}: task.eta is a valid date`)
      t.equal(etaHeader, task?.eta.toISOString(), `try ${index}: x-task-eta is the same moment, in ISO 8601`)
      const eta = (task as DispatchedTask).eta.getTime()
      // Redis compares due times on its own clock, this test on the process's: allow a few ms.
      t.ok(eta <= at + 5, `try ${index}: dispatched once due (eta ${eta}, at ${at})`)
      if (index === 0) t.ok(eta >= before && eta <= at, 'the first try was due when added')
      else t.ok(eta > seen[index - 1].at, `retry ${index} was due after the try before it`)
    }
  })

  test(`${type}: a retry waits without holding a concurrency slot`, async (t) => {
    const backend = await backendFor(type)
    const clock = clockFor(t, type)
    const { app, runsOf } = await recordingApp(t, optionsOf(backend, { concurrentLimit: 1, retryMaxCount: 3, retryDelay: fast }), {
      tasks: {
        a: (request, reply, tries) => tries === 0 ? reply.code(503).header('retry-after', '1').send({}) : {}
      }
    })
    const a = await app.taskqueue.add('/tasks/a', { method: 'POST', payload: {} })
    await waitFor('the first try of A', () => runsOf(a).length === 1)
    await waitFor('A to wait for its retry', async () => await app.taskqueue.queue('default').length() === 1)
    if (type === 'redis') {
      const client = backend.redis()
      const delayed = await client.zrange(backend.key('delayed'), '0', '-1', 'WITHSCORES')
      t.equal(delayed.length, 2, 'on Redis the retry waits in the delayed set')
      const retry = decodeMessage(await client.hget(backend.key('tasks'), delayed[0]) as string)
      t.equal(retry.message?.id, a)
      t.equal(retry.message?.retries, 1, 'as its next try')
      t.equal(await client.llen(backend.key('waiting')), 0, 'not in the waiting list')
      t.same(await scanKeys(client, backend.key('processing:*')), [], 'nor in a processing list')
    }
    const b = await app.taskqueue.add('/tasks/b', { method: 'POST', payload: {} })
    await waitFor('B to run', () => runsOf(b).length === 1)
    t.equal(runsOf(a).length, 1, 'B ran while A waited for its retry')
    const firstA = runsOf(a)[0]
    t.ok(runsOf(b)[0].at - firstA.at < 900, 'B did not wait for the retry delay')
    await clock.skip(1000)
    await waitFor('the retry of A', () => runsOf(a).length === 2)
    t.ok(runsOf(a)[1].at - firstA.at >= 900, 'A retried once its Retry-After passed')
  })
}

test('redis: a waiting retry stays in Redis across a restart, and a new app runs it', async (t) => {
  const backend = await backendFor('redis')
  const client = backend.redis()
  const first = await recordingApp(t, optionsOf(backend, { retryMaxCount: 3, retryDelay: fast }), {
    tasks: {
      later: (request, reply) => reply.code(503).header('retry-after', '2').send({})
    }
  })
  const id = await first.app.taskqueue.add('/tasks/later', { method: 'POST', payload: { n: 1 } })
  await waitFor('the retry in the delayed set', async () => await client.zcard(backend.key('delayed')) === 1)
  await first.app.close()
  t.equal(first.runsOf(id).length, 1, 'the first app tried it once')
  const [stored] = await client.zrange(backend.key('delayed'), '0', '-1')
  t.equal(stored, id, 'the retry is still in the delayed set once the app closed')
  t.equal(decodeMessage(await client.hget(backend.key('tasks'), stored) as string).message?.retries, 1, 'as its next try')
  t.same(await scanKeys(client, backend.key('processing:*')), [], 'and in no processing list')

  const second = await recordingApp(t, optionsOf(backend, { retryMaxCount: 3, retryDelay: fast }))
  await waitFor('the new app to run the retry', () => second.runsOf(id).length === 1, 5000)
  const [run] = second.runsOf(id)
  t.equal(run.retries, '1', 'as the first retry')
  await sleep(50)
  t.equal(await client.zcard(backend.key('delayed')), 0, 'the delayed set is empty')
  t.equal(await client.llen(backend.key('waiting')), 0)
  t.same(await second.app.taskqueue.queue('default').dead(), [])
})
