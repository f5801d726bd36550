// Fuzzing of issue 4, with a seeded PRNG (set FUZZ_SEED to replay a run):
// (a) many random, mostly malformed `add()` calls, from the app and from requests, on both queue
//     types: each one either succeeds or throws an error coded FST_TASKQUEUE_*, and every task it
//     accepted can be read back and dispatched;
// (b) raw messages pushed straight into a Redis queue (invalid JSON, wrong shapes, prototype
//     pollution attempts, another queue's task, a url that is not a path, bytes that are not UTF-8,
//     an oversized message) between valid tasks: the consumer keeps going, every bad message ends
//     in the dead letters as 'unreadable', every valid task runs once, and no prototype is polluted.
import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { maxMessageBytes } from '../lib/queues/codec'
import { backendFor, queueTypes, sleep, startApp, storeRaw, waitFor, type Backend } from './helpers/both-queues'

const seed = Number(process.env.FUZZ_SEED ?? 0x5eed) >>> 0

/** mulberry32: a tiny seeded PRNG, uniform in [0, 1). */
function mulberry32 (start: number): () => number {
  let state = start >>> 0
  return () => {
    state = (state + 0x6D2B79F5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

class Fuzzer {
  readonly random: () => number
  constructor (seedValue: number) { this.random = mulberry32(seedValue) }

  int (below: number): number { return Math.floor(this.random() * below) }
  chance (p: number): boolean { return this.random() < p }
  pick<T> (items: readonly T[]): T { return items[this.int(items.length)] }

  string (maxLength = 12): string {
    const alphabet = ['a', 'Z', '0', '/', '?', '&', '=', '%', ' ', '\n', '\r', '\t', '\u0000', '\\', '.', ':', '-', '_', '#', 'é', '💥', '"', '{', '}', '\ud800']
    return Array.from({ length: this.int(maxLength + 1) }, () => this.pick(alphabet)).join('')
  }

  /** Any JavaScript value, the kind a careless or hostile caller might pass. */
  value (depth = 0): unknown {
    const circular: Record<string, unknown> = { a: 1 }
    circular.self = circular
    const makers: Array<() => unknown> = [
      () => undefined, () => null, () => true, () => false, () => 0, () => -1, () => 1.5, () => NaN, () => Infinity,
      () => -Infinity, () => 2 ** 53, () => this.int(1e6), () => 10n, () => Symbol('s'), () => () => 'fn', () => '',
      () => this.string(), () => 'x'.repeat(this.int(20_000)), () => Buffer.from(this.string()), () => new Uint8Array([1, 2, 3]),
      () => new Date(), () => new Date('not a date'), () => [], () => circular, () => Object.create(null),
      () => JSON.parse('{"__proto__": {"polluted": 1}}'), () => JSON.parse('{"constructor": {"prototype": {"polluted": 1}}}'),
      () => new Map([['a', 1]]), () => new (class Thing { x = 1 })(), () => Object('/ok'), () => ({ toJSON () { throw new Error('toJSON') } }),
      () => depth < 2 ? [this.value(depth + 1), this.value(depth + 1)] : [],
      () => depth < 2 ? { [this.string(4)]: this.value(depth + 1), k: this.value(depth + 1) } : {}
    ]
    return this.pick(makers)()
  }

  url (): unknown {
    if (this.chance(0.1)) return this.value()
    return this.pick([
      '/ok', '/ok?x=1', '/ok/é', '/ok/%20', '/%zz', '', '/', '//evil.example/x', '/\\evil', 'http://x/', 'ok', '/a b', '/a\nb',
      '/a\u0000', `/${this.string()}`, this.string(), '/ok?' + this.string()
    ])
  }

  options (): unknown {
    if (this.chance(0.1)) return this.value()
    if (this.chance(0.1)) return undefined
    const options: Record<string, unknown> = {}
    const valid = this.chance(0.3)
    const maybe = (good: () => unknown): unknown => valid || this.chance(0.5) ? good() : this.value()
    if (this.chance(0.5)) options.method = maybe(() => this.pick(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'get', 'TRACE', 'CONNECT', '']))
    if (this.chance(0.3)) {
      options.params = maybe(() => this.pick([{ a: '1', b: [1, true] }, { q: this.string() }, {}, { [this.string(4)]: this.int(9) }, { a: { nested: 1 } }, { a: [[1]] }]))
    }
    if (this.chance(0.3)) {
      options.headers = maybe(() => this.pick([
        { 'x-a': 'b' }, { 'X-Lang': 'fi' }, {}, { 'bad name': 'x' }, { 'x-a': 'a\nb' }, { 'x-task-id': 'forged' }, { 'x-a': 1 }, { '': 'x' },
        { 'x-a': this.string() }, { [this.string(5)]: 'v' }, { 'x-a': ['1', '2'] }
      ]))
    }
    if (this.chance(0.4)) {
      options.payload = maybe(() => this.pick([{ a: 1 }, [1, 2], 'text', Buffer.from([0, 255]), null, { deep: { er: [this.string()] } }, this.string()]))
    }
    if (this.chance(0.2)) options.queue = maybe(() => this.pick(['default', 'nope', '', 'DEFAULT']))
    if (this.chance(0.2)) options.id = maybe(() => this.pick([`id-${this.int(20)}`, 'a.b:c-d_e', '', 'with space', 'x'.repeat(201), this.string(8)]))
    if (this.chance(0.2)) options.delay = maybe(() => this.pick([0, this.int(1500), -1, 1.5, 400 * 24 * 3600 * 1000, '5']))
    if (this.chance(0.2)) options.notBefore = maybe(() => this.pick([new Date(Date.now() + this.int(1500)), new Date(0), Date.now(), '2030-01-01']))
    if (this.chance(0.1)) options[this.pick(['retries', 'timeout', 'priority', this.string(5)])] = this.value()
    if (this.chance(0.03)) return Object.assign(JSON.parse('{"__proto__": {"polluted": 1}}'), options)
    return options
  }
}

const isCoded = (error: unknown): boolean => {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' && code.startsWith('FST_TASKQUEUE_')
}

const describe = (value: unknown): string => {
  try {
    return typeof value === 'string' ? JSON.stringify(value) : String(value)
  } catch {
    return typeof value
  }
}

async function startFuzzApp (t: Parameters<Parameters<typeof test>[0]>[0], backend: Backend, calls: Map<number, [unknown, unknown]>): Promise<FastifyInstance> {
  return await startApp(t, {
    queues: [backend.queue('default', { deadLetterMax: 100_000 })],
    consumers: [{ queue: 'default', concurrentLimit: 0, retryMaxCount: 0 }]
  }, (app) => {
    // Whatever the body, the task route takes it: only what the queue did is under test.
    app.addContentTypeParser('*', { parseAs: 'buffer' }, (request, body, done) => { done(null, body) })
    app.all('/*', async () => ({ ok: true }))
    // Adds the task of fuzz call `n` from a request, answering the error's code or the id.
    app.post('/fuzz/:n', async (request) => {
      const [url, options] = calls.get(Number((request.params as { n: string }).n)) as [unknown, unknown]
      try {
        return { id: request.taskqueue.add(url as string, options as never) }
      } catch (error) {
        if (isCoded(error)) return { code: (error as { code: string }).code }
        return { escaped: describe(error), stack: (error as Error)?.stack }
      }
    })
  })
}

for (const type of queueTypes) {
  test(`${type}: random add() calls either succeed or throw a coded error (seed ${seed})`, async (t) => {
    const backend = await backendFor(type)
    const fuzz = new Fuzzer(seed + (type === 'redis' ? 1 : 0))
    const calls = new Map<number, [unknown, unknown]>()
    const app = await startFuzzApp(t, backend, calls)
    const escaped: string[] = []
    const codes = new Map<string, number>()
    let accepted = 0
    // Accepted tasks due later than the test waits for.
    let farOff = 0
    const isFarOff = (options: unknown): boolean => {
      const { delay, notBefore } = (options ?? {}) as { delay?: unknown, notBefore?: unknown }
      return (typeof delay === 'number' && delay > 2000) || (notBefore instanceof Date && notBefore.getTime() > Date.now() + 2000)
    }
    for (let n = 0; n < 2000; n++) {
      const url = fuzz.url()
      const options = fuzz.options()
      calls.set(n, [url, options])
      const where = `call ${n}: add(${describe(url)}, ${describe(options)})`
      if (n % 10 === 0) {
        // From a request: held with it, queued once its response is sent.
        const response = await app.inject({ method: 'POST', url: `/fuzz/${n}`, payload: { from: 'request' } })
        const body = response.json()
        if (body.escaped !== undefined) escaped.push(`${where} from a request: ${body.escaped}`)
        else if (body.code !== undefined) codes.set(body.code, (codes.get(body.code) ?? 0) + 1)
        else {
          accepted++
          if (isFarOff(options)) farOff++
        }
        continue
      }
      try {
        await app.taskqueue.add(url as string, options as never)
        accepted++
        if (isFarOff(options)) farOff++
      } catch (error) {
        if (!isCoded(error)) escaped.push(`${where}: ${describe(error)}`)
        else codes.set((error as { code: string }).code, (codes.get((error as { code: string }).code) ?? 0) + 1)
      }
    }
    t.same(escaped, [], 'no error without a FST_TASKQUEUE_ code escaped')
    t.ok(accepted > 100, `many calls were accepted (${accepted})`)
    t.ok([...codes.values()].reduce((a, b) => a + b, 0) > 500, `many were refused: ${JSON.stringify(Object.fromEntries(codes))}`)
    for (const code of ['FST_TASKQUEUE_INVALID_URL', 'FST_TASKQUEUE_INVALID_ARGUMENT', 'FST_TASKQUEUE_INVALID_METHOD', 'FST_TASKQUEUE_UNKNOWN_QUEUE']) {
      t.ok((codes.get(code) ?? 0) > 0, `${code} came up`)
    }

    // Every accepted task can be read back and dispatched: none is unreadable, none breaks inject().
    const queue = app.taskqueue.queue('default')
    await waitFor('every accepted task to be dispatched', async () => await queue.length() <= farOff, 15_000)
    await sleep(300)
    const letters = await queue.dead({ limit: 100_000 })
    const unexpected = letters.filter(({ reason, statusCode }) => reason !== 'final status' || statusCode !== 400)
    t.same(unexpected.map(({ reason, detail, task, raw }) => ({ reason, detail, url: task?.url, raw: raw?.slice(0, 200) })), [],
      'nothing died but the urls the router refuses (400)')
    const before = await queue.length()
    const id = await app.taskqueue.add('/ok/after', { id: 'after-the-fuzz' })
    await waitFor('a task after the fuzz to run', async () => await queue.length() === before)
    t.notOk((await queue.dead()).some((letter) => letter.id === id), 'the queue still works')
  })
}

test(`redis: raw malformed messages go to the dead letters, valid tasks around them run (seed ${seed})`, async (t) => {
  const backend = await backendFor('redis')
  const client = backend.redis()
  const fuzz = new Fuzzer(seed + 2)
  const ran = new Map<number, number>()
  const app = await startApp(t, {
    queues: [backend.queue('default', { deadLetterMax: 100_000 })],
    consumers: [{ queue: 'default', concurrentLimit: 4, retryMaxCount: 0 }]
  }, (app) => {
    app.post('/ok', async (request) => {
      const { n } = request.body as { n: number }
      ran.set(n, (ran.get(n) ?? 0) + 1)
      return {}
    })
  })

  const valid = { v: 1, id: 'raw-valid', queue: 'default', url: '/ok', method: 'POST', headers: { 'content-type': 'application/json' }, payload: '{"n":-1}', retries: 0, createdAt: 1, eta: 1 }
  const validText = JSON.stringify(valid)
  const variant = (change: Record<string, unknown>): string => JSON.stringify({ ...valid, ...change })
  const without = (key: string): string => {
    const copy: Record<string, unknown> = { ...valid }
    delete copy[key]
    return JSON.stringify(copy)
  }
  const fixed: Array<string | Buffer> = [
    'not json', '', ' ', '{', '}', 'null', 'true', '42', '"a string"', '[]', '[1,2]', '{}',
    '{"__proto__": {"polluted": 1}}',
    '{"constructor": {"prototype": {"polluted": 1}}}',
    validText.replace('{', '{"__proto__": {"polluted": 1}, '),
    validText.replace('"headers":{', '"headers":{"__proto__":{"polluted":"1"},'),
    variant({ queue: 'other' }),
    variant({ url: 'http://x/' }), variant({ url: '//evil/x' }), variant({ url: 'ok' }), variant({ url: '' }), variant({ url: '/a b' }),
    variant({ url: '/a\u0000' }), variant({ url: 7 }),
    variant({ method: 'TRACE' }), variant({ method: 'post' }),
    variant({ v: 2 }), variant({ v: '1' }),
    variant({ id: '' }), variant({ id: 5 }), variant({ id: 'x'.repeat(201) }),
    variant({ headers: 'x' }), variant({ headers: { a: 1 } }), variant({ headers: null }), variant({ headers: ['a'] }),
    variant({ retries: -1 }), variant({ retries: 1.5 }), variant({ retries: '0' }),
    variant({ createdAt: 'x' }), variant({ eta: 1e300 }), variant({ eta: null }),
    variant({ payload: 5 }), variant({ payload: {} }), variant({ binary: 'yes' }), variant({ named: false }),
    ...['v', 'id', 'queue', 'url', 'method', 'headers', 'retries', 'createdAt', 'eta'].map(without),
    Buffer.from([0xff, 0xfe, 0xfd]),
    Buffer.concat([Buffer.from(validText.slice(0, -10)), Buffer.from([0xc3]), Buffer.from(validText.slice(-10))]),
    // Over 16 MiB: buried unread.
    variant({ payload: 'x'.repeat(maxMessageBytes) })
  ]
  const wrong: Record<string, unknown[]> = {
    v: [0, 2, '1', null, true],
    id: ['', 5, null, []],
    queue: ['', 'other', 3, null],
    url: ['', 'x', '//x', 'http://x/', 4, null],
    method: ['get', 'TRACE', '', 1, null],
    headers: ['h', 1, null, [], { a: 2 }, { a: null }],
    retries: [-1, 0.5, '1', null],
    createdAt: ['now', null, {}],
    eta: [null, '1', 1e300, []],
    payload: [1, {}, [], true],
    binary: [false, 'true', 1],
    named: [false, 'yes', 1]
  }
  const randomBad = (): string => {
    switch (fuzz.int(4)) {
      case 0: return validText.slice(0, 1 + fuzz.int(validText.length - 1))
      case 1: return without(fuzz.pick(Object.keys(wrong).filter((key) => !['payload', 'binary', 'named'].includes(key))))
      case 2: {
        const key = fuzz.pick(Object.keys(wrong))
        return variant({ [key]: fuzz.pick(wrong[key]) })
      }
      default: return 'x' + fuzz.string(40)
    }
  }
  const bad: Array<string | Buffer> = [...fixed, ...Array.from({ length: 150 }, randomBad)]
  // Shuffled, and some of them in the delayed set (due at once), which feeds the queue too.
  for (let index = bad.length - 1; index > 0; index--) {
    const other = fuzz.int(index + 1)
    ;[bad[index], bad[other]] = [bad[other], bad[index]]
  }
  let validCount = 0
  for (const [index, message] of bad.entries()) {
    // Each under an id of its own, as the queue stores a task: its message in `tasks`.
    if (fuzz.chance(0.1)) {
      await client.multi().hset(backend.key('tasks'), `bad-${index}`, message).zadd(backend.key('delayed'), 0, `bad-${index}`).exec()
    } else {
      await storeRaw(client, backend.key, `bad-${index}`, message)
    }
    if (index % 2 === 0) await app.taskqueue.add('/ok', { method: 'POST', payload: { n: validCount++ } })
  }
  await waitFor('every bad message in the dead letters and every valid task run', async () =>
    await client.llen(backend.key('dead')) >= bad.length && ran.size === validCount, 20_000).catch(() => {})
  await sleep(200)
  // Where things stand, so that a failure below says what went missing.
  const consumerId = (await client.smembers(backend.key('consumers')))[0]
  t.same({
    dead: await client.llen(backend.key('dead')),
    ran: ran.size,
    waiting: await client.llen(backend.key('waiting')),
    delayed: await client.zcard(backend.key('delayed')),
    processing: await client.llen(backend.key(`processing:${consumerId}`))
  }, { dead: bad.length, ran: validCount, waiting: 0, delayed: 0, processing: 0 }, 'every message was handled')

  t.same([...ran.keys()].sort((a, b) => a - b), Array.from({ length: validCount }, (_, n) => n), 'every valid task ran')
  t.ok([...ran.values()].every((count) => count === 1), 'each once')
  const letters = await app.taskqueue.queue('default').dead({ limit: 100_000 })
  t.equal(letters.length, bad.length, 'one dead letter per bad message')
  t.ok(letters.every(({ reason }) => reason === 'unreadable'), 'each unreadable')
  t.ok(letters.every(({ detail }) => typeof detail === 'string' && detail.length > 0), 'each says why')
  const deadRaw = new Map<string, number>()
  for (const { raw } of letters) if (raw !== undefined) deadRaw.set(raw, (deadRaw.get(raw) ?? 0) + 1)
  const missing = bad.filter((message) => {
    if (Buffer.isBuffer(message)) return false
    // As Redis holds it: a lone surrogate was written as U+FFFD.
    const stored = Buffer.from(message).toString()
    const count = deadRaw.get(stored) ?? 0
    deadRaw.set(stored, count - 1)
    return count === 0
  })
  t.same(missing.map((message) => message.toString().slice(0, 100)), [], 'each bad message is in the dead letters as it was')
  t.ok(letters.some(({ detail }) => /over the limit/.test(detail ?? '')), 'the oversized message was refused for its size')
  t.ok(letters.some(({ detail }) => /UTF-8/.test(detail ?? '')), 'bytes that are not UTF-8 were refused for it')
  t.ok(letters.some(({ detail }) => /queue "other"/.test(detail ?? '')), 'a task of another queue was refused')

  t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype is not polluted')
  t.equal(Object.hasOwn(Object.prototype, 'polluted'), false)
})
