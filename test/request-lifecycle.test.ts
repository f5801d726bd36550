// The tasks a request adds (issue 2): held with the request and handed to their queues, in the
// order added, in onResponse, only when the response was sent with a status below 400. A status of
// 400 or more, a handler error (even one an error handler answers with a success) and a request
// whose client went away drop them, with a debug log line.
import { once } from 'node:events'
import http from 'node:http'
import { test } from 'tap'
import type { TaskQueuePluginOptions } from '../lib/options'
import { gate, levels, listenLocal, pluginLines, settlesWithin, sleep, waitFor, type LogLine } from './helpers/harness'
import { namesOf, recordingApp } from './helpers/app'

const oneByOne: TaskQueuePluginOptions = { consumers: [{ queue: 'default', concurrentLimit: 1 }] }

function droppedLines (lines: LogLine[]): LogLine[] {
  return pluginLines(lines).filter(({ msg }) => msg.includes('dropped'))
}

test('tasks of a successful request are queued after the response is sent, in the order added', async (t) => {
  const first = gate()
  const seen: Record<string, number> = {}
  let returned: string[] = []
  const { app, runs } = await recordingApp(t, oneByOne, {
    tasks: { a: async () => { await first.promise } },
    routes: (app) => {
      app.post('/signup', {
        onSend: async (request, reply, payload) => {
        // The response is about to be sent: nothing may be queued yet.
          seen.lengthInOnSend = await app.taskqueue.queue('default').length()
          seen.ranInOnSend = runs.length
          return payload
        }
      }, async (request) => {
        returned = ['a', 'b', 'c'].map((name) => request.taskqueue.add(`/tasks/${name}`, { method: 'POST', payload: {} }))
        seen.lengthAfterAdd = await app.taskqueue.queue('default').length()
        // A consumer that had the tasks already would run one while the handler waits.
        await sleep(30)
        seen.ranInHandler = runs.length
        seen.lengthInHandler = await app.taskqueue.queue('default').length()
        return { queued: returned }
      })
    }
  })

  const response = await app.inject({ method: 'POST', url: '/signup', payload: {} })
  t.equal(response.statusCode, 200)
  t.same(response.json().queued, returned, 'add() returned the ids at once')
  t.same(seen, { lengthAfterAdd: 0, ranInHandler: 0, lengthInHandler: 0, lengthInOnSend: 0, ranInOnSend: 0 },
    'neither queued nor run while the handler runs or in onSend')

  // Once the response was sent the three are queued: the first runs (held by the test), two wait.
  await waitFor('the first task', () => runs.length === 1)
  t.same(namesOf(runs), ['a'])
  t.equal(await app.taskqueue.queue('default').length(), 2, 'the other two wait in the queue')
  first.open()
  await app.taskqueue.drain()
  t.same(namesOf(runs), ['a', 'b', 'c'], 'dispatched in the order added')
  t.same(runs.map(({ id }) => id), returned, 'with the ids add() returned')
})

test('with concurrentLimit 1 the order is kept across requests and within each queue', async (t) => {
  const { app, runs } = await recordingApp(t, {
    queues: [{ queue: 'default' }, { queue: 'mail' }],
    consumers: [{ queue: 'default', concurrentLimit: 1 }, { queue: 'mail', concurrentLimit: 1 }]
  }, {
    tasks: async () => { await sleep(Math.floor(Math.random() * 4)) },
    routes: (app) => {
      app.post('/src', async (request) => {
        const { from, to } = request.query as { from: string, to: string }
        for (let index = Number(from); index < Number(to); index++) {
          request.taskqueue.add(`/tasks/${index % 2 === 0 ? 'd' : 'm'}${index}`, { method: 'POST', payload: null, queue: index % 2 === 0 ? 'default' : 'mail' })
        }
        return {}
      })
    }
  })

  await app.inject({ method: 'POST', url: '/src?from=0&to=10' })
  await app.inject({ method: 'POST', url: '/src?from=10&to=20' })
  await app.taskqueue.drain()
  t.equal(runs.length, 20, 'every task ran once')
  t.same(namesOf(runs).filter((name) => name.startsWith('d')), ['d0', 'd2', 'd4', 'd6', 'd8', 'd10', 'd12', 'd14', 'd16', 'd18'], 'default: in the order added')
  t.same(namesOf(runs).filter((name) => name.startsWith('m')), ['m1', 'm3', 'm5', 'm7', 'm9', 'm11', 'm13', 'm15', 'm17', 'm19'], 'mail: in the order added')
})

test('statuses below 400 queue the tasks, 400 and above drop them', async (t) => {
  const { app, runs, lines } = await recordingApp(t, { consumers: [{ queue: 'default', concurrentLimit: 0 }] }, {
    routes: (app) => {
      app.post('/status/:code', async (request, reply) => {
        const code = Number((request.params as { code: string }).code)
        const id = request.taskqueue.add(`/tasks/s${code}`, { method: 'POST', payload: null })
        if (code >= 300 && code < 400) reply.header('location', '/elsewhere')
        reply.code(code)
        return code === 204 ? '' : { id }
      })
    }
  })

  const kept = [200, 201, 202, 204, 301, 302, 399]
  const dropped = [400, 401, 404, 409, 422, 500, 503]
  for (const code of [...kept, ...dropped]) {
    const response = await app.inject({ method: 'POST', url: `/status/${code}` })
    t.equal(response.statusCode, code, `answered ${code}`)
  }
  await app.taskqueue.drain()
  await sleep(20)
  t.same(namesOf(runs).sort(), kept.map((code) => `s${code}`).sort(), 'only the tasks of responses below 400 ran')
  t.equal(await app.taskqueue.queue('default').length(), 0, 'nothing of the failed ones waits in the queue')

  const drops = droppedLines(lines)
  t.same(drops.map(({ statusCode }) => statusCode), dropped, 'each drop is logged with its status')
  for (const line of drops) {
    t.equal(line.level, levels.debug, 'at debug level')
    t.equal((line.taskIds as string[]).length, 1, 'naming the dropped task')
    t.same(line.queues, ['default'], 'and its queue')
  }
})

test('a status of 400 or more drops every task of the request, on every queue', async (t) => {
  const { app, runs, lines } = await recordingApp(t, { queues: [{ queue: 'default' }, { queue: 'mail' }] }, {
    routes: (app) => {
      app.post('/signup', async (request, reply) => {
        const ids = [
          request.taskqueue.add('/tasks/one', { method: 'POST', payload: null }),
          request.taskqueue.add('/tasks/two', { method: 'POST', payload: null, queue: 'mail' }),
          request.taskqueue.add('/tasks/three', { method: 'POST', payload: null })
        ]
        return reply.code(400).send({ ids })
      })
    }
  })
  const response = await app.inject({ method: 'POST', url: '/signup' })
  t.equal(response.statusCode, 400)
  await app.taskqueue.drain()
  await sleep(20)
  t.same(namesOf(runs), [], 'no task ran')
  t.equal(await app.taskqueue.queue('default').length(), 0)
  t.equal(await app.taskqueue.queue('mail').length(), 0)
  const [drop] = droppedLines(lines)
  t.same(drop?.taskIds, response.json().ids, 'the log line names the dropped tasks')
  t.same([...drop?.queues as string[]].sort(), ['default', 'mail'])
  t.equal(drop?.statusCode, 400)
})

test('a thrown handler error drops the tasks', async (t) => {
  const { app, runs, lines } = await recordingApp(t, {}, {
    routes: (app) => {
      app.post('/async-throw', async (request) => {
        request.taskqueue.add('/tasks/async', { method: 'POST', payload: null })
        throw new Error('boom')
      })
      app.post('/sync-throw', (request) => {
        request.taskqueue.add('/tasks/sync', { method: 'POST', payload: null })
        throw new Error('boom')
      })
      app.post('/send-error', (request, reply) => {
        request.taskqueue.add('/tasks/sent', { method: 'POST', payload: null })
        reply.send(Object.assign(new Error('teapot'), { statusCode: 418 }))
      })
      app.post('/control', async (request) => {
        request.taskqueue.add('/tasks/control', { method: 'POST', payload: null })
        return { ok: true }
      })
    }
  })
  t.equal((await app.inject({ method: 'POST', url: '/async-throw' })).statusCode, 500)
  t.equal((await app.inject({ method: 'POST', url: '/sync-throw' })).statusCode, 500)
  t.equal((await app.inject({ method: 'POST', url: '/send-error' })).statusCode, 418)
  t.equal((await app.inject({ method: 'POST', url: '/control' })).statusCode, 200)
  await app.taskqueue.drain()
  await sleep(20)
  t.same(namesOf(runs), ['control'], 'only the task of the request that succeeded ran')
  t.equal(droppedLines(lines).length, 3, 'each drop logged')
})

test('a handler error drops the tasks even when an error handler answers 200', async (t) => {
  const { app, runs, lines } = await recordingApp(t, {}, {
    routes: (app) => {
      app.register(async (scope) => {
        scope.setErrorHandler(async (error: Error, request, reply) => {
          return reply.code(200).send({ handled: error.message })
        })
        scope.post('/handled', async (request) => {
          request.taskqueue.add('/tasks/handled', { method: 'POST', payload: null })
          throw new Error('boom')
        })
        scope.post('/late-error', {
        // Fails the handler's answer, not the error handler's.
          preSerialization: async (request, reply, payload) => {
            if ((payload as { ok?: boolean }).ok === true) throw new Error('after the handler')
            return payload
          }
        }, async (request) => {
          request.taskqueue.add('/tasks/late', { method: 'POST', payload: null })
          return { ok: true }
        })
      })
    }
  })
  const handled = await app.inject({ method: 'POST', url: '/handled' })
  t.equal(handled.statusCode, 200, 'the error handler answered 200')
  t.same(handled.json(), { handled: 'boom' })
  const late = await app.inject({ method: 'POST', url: '/late-error' })
  t.equal(late.statusCode, 200, 'an error of a later hook answered 200 too')
  await app.taskqueue.drain()
  await sleep(20)
  t.same(namesOf(runs), [], 'the tasks were dropped all the same')
  t.same(droppedLines(lines).map(({ statusCode }) => statusCode), [200, 200], 'and the drops logged')
})

test('an aborted request drops its tasks, also those added after the client went away', async (t) => {
  const started = gate()
  const aborted = gate()
  const handlerDone = gate()
  const { app, runs, lines } = await recordingApp(t, {}, {
    routes: (app) => {
      app.get('/slow', {
        onRequestAbort: async () => { aborted.open() }
      }, async (request) => {
        request.taskqueue.add('/tasks/before-abort', { method: 'POST', payload: null })
        started.open()
        // Waits for the client to go away (or gives up after 2 s, and the test fails below).
        const wasAborted = await settlesWithin(aborted.promise, 2000)
        request.taskqueue.add('/tasks/after-abort', { method: 'POST', payload: null })
        handlerDone.open()
        return { wasAborted }
      })
      app.get('/fine', async (request) => {
        request.taskqueue.add('/tasks/fine', { method: 'POST', payload: null })
        return {}
      })
    }
  })
  const port = await listenLocal(app)

  const client = http.get({ host: '127.0.0.1', port, path: '/slow', agent: false })
  const clientError = once(client, 'error').catch(() => {})
  await started.promise
  client.destroy()
  await clientError
  t.ok(await settlesWithin(aborted.promise, 3000), 'the server saw the abort')
  await handlerDone.promise

  t.ok(await settlesWithin(app.taskqueue.drain(), 2000), 'drain() does not wait for the aborted request')
  await sleep(50)
  t.same(namesOf(runs), [], 'no task of the aborted request ran')
  t.equal(await app.taskqueue.queue('default').length(), 0, 'nor waits in the queue')
  const drops = droppedLines(lines)
  t.equal(drops.length, 2, 'both drops logged')
  for (const line of drops) t.equal(line.level, levels.debug)

  // The app goes on queuing the tasks of requests that succeed.
  const fine = await new Promise<number>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/fine', agent: false }, (response) => {
      response.resume()
      response.on('end', () => resolve(response.statusCode as number))
    }).on('error', reject)
  })
  t.equal(fine, 200)
  await waitFor('the task of the request that succeeded', () => runs.length === 1)
  t.same(namesOf(runs), ['fine'])
})

test('a task that fails drops the tasks it added; its successful retry queues them', async (t) => {
  let tries = 0
  const { app, runs } = await recordingApp(t, { consumers: [{ queue: 'default', retryMaxCount: 3, retryDelay: { min: 1, max: 5 } }] }, {
    routes: (app) => {
      app.post('/parent', async (request, reply) => {
        tries++
        request.taskqueue.add(`/tasks/child-of-try-${tries}`, { method: 'POST', payload: null })
        if (tries === 1) return reply.code(409).send({ conflict: true })
        return { ok: true }
      })
    }
  })
  await app.taskqueue.add('/parent', { method: 'POST', payload: null })
  await waitFor('the child task', () => runs.length === 1)
  await app.taskqueue.drain()
  t.equal(tries, 2, 'the parent ran twice')
  t.same(namesOf(runs), ['child-of-try-2'], 'only the child of the successful try ran')
})
