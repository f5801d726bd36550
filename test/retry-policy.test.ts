// The retry policy (lib/consumer/retry-policy.ts) against the README's "Outcomes" table, row by
// row, then its paragraph on delays: Retry-After (seconds or an HTTP date, at most a day) and the
// backoff (`min` doubled per retry made, capped at `max`, drawn from the upper half). The policy is
// a pure function: time and the jitter's draw are given, so no test here waits or sleeps.
// Moved here from test/retries.test.ts: "outcomeOf: the outcome table", "retryAfterDelay: seconds
// or an HTTP date, only on 429 and 503" and "retryDelay: min doubled per retry made, capped at
// max, drawn from the upper half", each assertion now made through nextStep().
import { test } from 'tap'
import { nextStep, type Chance, type RetryOptions, type Step, type TryResult } from '../lib/consumer/retry-policy'

const now = Date.UTC(2030, 0, 1, 12, 0, 0)
const options: RetryOptions = { retryMaxCount: 3, retryDelay: { min: 100, max: 5000 }, taskTimeout: 60_000 }
/** Room for as many retries as a backoff row needs. */
const endless = Number.MAX_SAFE_INTEGER
const day = 24 * 60 * 60 * 1000

const answered = (statusCode: number, retryAfter?: string | string[]): TryResult => ({ kind: 'answered', statusCode, retryAfter })
const timeout: TryResult = { kind: 'timeout' }
const failed: TryResult = { kind: 'error', error: new Error('inject broke') }

/** What a step must be, leaving out its log message. */
type Expected =
  | { step: 'ack', level: 'debug' | 'warn' }
  | { step: 'retry', delay: number, detail?: string }
  | { step: 'release' }
  | { step: 'bury', cause: { reason: string, detail: string, statusCode?: number } }

interface Case {
  given: TryResult
  /** Retries made before this try (default 0). */
  retries?: number
  /** The consumer is stopping: the app is closing. */
  closing?: boolean
  retryOptions?: Partial<RetryOptions>
  /** What the jitter draws, in [0, 1) (default 0: the lowest delay, half the ceiling). */
  draw?: number
  expect: Expected
}

interface Row {
  /** The row of the README's table, or the rule of its paragraph on delays. */
  row: string
  cases: Case[]
}

const ack = (level: 'debug' | 'warn' = 'debug'): Expected => ({ step: 'ack', level })
const retry = (delay: number, detail?: string): Expected => detail === undefined ? { step: 'retry', delay } : { step: 'retry', delay, detail }
const bury = (reason: string, detail: string, statusCode?: number): Expected =>
  ({ step: 'bury', cause: statusCode === undefined ? { reason, detail } : { reason, detail, statusCode } })

const statusCases = (statuses: number[], expect: (status: number) => Expected, extra: Partial<Case> = {}): Case[] =>
  statuses.map((status) => ({ given: answered(status), expect: expect(status), ...extra }))

/** The part of a step the table speaks of; for a burial, its cause exactly as it is stored. */
function summary (step: Step, expect: Expected): Record<string, unknown> {
  if (step.step === 'ack') return { step: step.step, level: step.level }
  if (step.step === 'retry') return expect.step === 'retry' && expect.detail === undefined ? { step: step.step, delay: step.delay } : { step: step.step, delay: step.delay, detail: step.detail }
  if (step.step === 'bury') return { step: step.step, cause: { ...step.cause } }
  return { step: step.step }
}

function describe (given: TryResult): string {
  if (given.kind === 'answered') return `${given.statusCode}${given.retryAfter === undefined ? '' : ` Retry-After ${JSON.stringify(given.retryAfter)}`}`
  return given.kind
}

const outcomes: Row[] = [
  { row: '2xx: done', cases: statusCases([200, 201, 202, 204, 299], () => ack()) },
  {
    row: '3xx: done, with a warning: the redirect is not followed',
    cases: statusCases([300, 301, 302, 303, 304, 307, 308, 399], () => ack('warn'))
  },
  {
    row: '409 Conflict (also TaskConflictError), 429, 5xx except 501: retried',
    cases: statusCases([409, 429, 500, 502, 503, 504, 505, 599], (status) => retry(50, `answered ${status}`))
  },
  {
    row: 'the try ran past taskTimeout: retried; when it was the last try, dead with reason timeout',
    cases: [
      { given: timeout, expect: retry(50, 'ran past taskTimeout (60000 ms)') },
      { given: timeout, retries: 2, expect: retry(200, 'ran past taskTimeout (60000 ms)') },
      { given: timeout, retries: 3, expect: bury('timeout', 'ran past taskTimeout (60000 ms)') },
      { given: timeout, retryOptions: { retryMaxCount: 0, taskTimeout: 250 }, expect: bury('timeout', 'ran past taskTimeout (250 ms)') }
    ]
  },
  {
    row: 'inject() itself failed: retried',
    cases: [
      { given: failed, expect: retry(50, 'dispatch failed: inject broke') },
      { given: { kind: 'error', error: undefined }, expect: retry(50, 'dispatch failed: undefined') },
      // Out of retries it is dead like any retried task, with no status: nothing answered.
      { given: failed, retries: 3, expect: bury('retries exhausted', 'dispatch failed: inject broke') }
    ]
  },
  {
    row: 'any other 4xx, 501: dead at once, reason final status',
    cases: [
      ...statusCases([400, 401, 403, 404, 405, 408, 410, 413, 422, 428, 431, 451, 499, 501, 100, 199],
        (status) => bury('final status', `answered ${status}`, status)),
      // Whatever retries are left, and a Retry-After asks for nothing.
      { given: answered(400, '5'), retries: 2, expect: bury('final status', 'answered 400', 400) }
    ]
  },
  {
    row: 'retried retryMaxCount times already: dead, reason retries exhausted',
    cases: [
      { given: answered(500), retries: 2, expect: retry(200, 'answered 500') },
      ...statusCases([409, 429, 500, 503], (status) => bury('retries exhausted', `answered ${status}`, status), { retries: 3 }),
      { given: answered(429, '1'), retries: 3, expect: bury('retries exhausted', 'answered 429', 429) },
      // retryMaxCount 0 gives up after the first try.
      { given: answered(503), retryOptions: { retryMaxCount: 0 }, expect: bury('retries exhausted', 'answered 503', 503) }
    ]
  },
  // Two rows of the table are not decisions of this policy, and are tested where they are made:
  // "its consumer died while running it more than recoveryMaxCount times (Redis): dead, reason
  // recovered too often" is the Redis queue's recovery (test/redis-recovery.test.ts), and "the
  // queue held something that is not a task of this queue (Redis): dead, reason unreadable" is its
  // receiver reading a message (test/queue-state.test.ts, test/fuzz.test.ts). No try ran for them.
  {
    row: 'refused because the app is closing: released to its queue, not counted as a try',
    cases: [
      { given: failed, closing: true, expect: { step: 'release' } },
      { given: answered(503), closing: true, expect: { step: 'release' } },
      { given: answered(503, '1'), closing: true, retries: 3, expect: { step: 'release' } },
      { given: failed, closing: true, retries: 3, expect: { step: 'release' } },
      // What the closing app still answered is an outcome like any other.
      { given: answered(200), closing: true, expect: ack() },
      { given: answered(500), closing: true, expect: retry(50, 'answered 500') },
      { given: answered(404), closing: true, expect: bury('final status', 'answered 404', 404) },
      { given: timeout, closing: true, expect: retry(50, 'ran past taskTimeout (60000 ms)') }
    ]
  }
]

const delays: Row[] = [
  {
    row: 'Retry-After on 429 and 503, in seconds',
    cases: [
      { given: answered(429, '1'), expect: retry(1000) },
      { given: answered(503, '120'), expect: retry(120_000) },
      { given: answered(503, ' 7 '), expect: retry(7000) },
      { given: answered(429, '0'), expect: retry(0) }
    ]
  },
  {
    row: 'Retry-After on 429 and 503, as an HTTP date (one in the past: at once)',
    cases: [
      { given: answered(503, new Date(now + 30_000).toUTCString()), expect: retry(30_000) },
      { given: answered(429, 'Wed, 01 Jan 2030 12:01:00 GMT'), expect: retry(60_000) },
      { given: answered(503, new Date(now - 30_000).toUTCString()), expect: retry(0) }
    ]
  },
  {
    row: 'Retry-After: at most a day',
    cases: [
      { given: answered(429, '99999999'), expect: retry(day) },
      { given: answered(503, new Date(now + 3 * day).toUTCString()), expect: retry(day) }
    ]
  },
  {
    row: 'Retry-After unreadable, empty, missing or repeated: the backoff applies',
    cases: [
      { given: answered(429, 'soon'), expect: retry(50) },
      { given: answered(429, ''), expect: retry(50) },
      { given: answered(429), expect: retry(50) },
      { given: answered(429, ['1', '2']), retries: 1, expect: retry(100) }
    ]
  },
  {
    row: 'Retry-After on any other status: ignored',
    cases: [200, 409, 500, 502, 504, 400].flatMap((status): Case[] => {
      const expect = status === 200 ? ack() : status === 400 ? bury('final status', 'answered 400', 400) : retry(50)
      return [
        { given: answered(status, '1'), expect },
        { given: answered(status, new Date(now + 5000).toUTCString()), expect }
      ]
    })
  },
  {
    row: 'backoff: min doubled for every retry made, lowest draw half of that',
    cases: [0, 1, 2, 3, 4, 5].map((retries, index) => ({ given: answered(500), retries, retryOptions: { retryMaxCount: endless }, expect: retry([50, 100, 200, 400, 800, 1600][index]) }))
  },
  {
    row: 'backoff: highest draw the whole of it',
    cases: [0, 1, 2, 3, 4, 5].map((retries, index) => ({ given: answered(500), retries, draw: 0.999999, retryOptions: { retryMaxCount: endless }, expect: retry([100, 200, 400, 800, 1600, 3200][index]) }))
  },
  {
    row: 'backoff: capped at max, and never below half of it once capped',
    cases: [
      ...[6, 7, 20, 1000, 1e9].map((retries): Case => ({ given: timeout, retries, draw: 0.999999, retryOptions: { retryMaxCount: endless }, expect: retry(5000) })),
      ...[6, 1000].map((retries): Case => ({ given: failed, retries, retryOptions: { retryMaxCount: endless }, expect: retry(2500) }))
    ]
  },
  {
    row: 'backoff: bounds of a single value',
    cases: [
      { given: answered(409), draw: 0.5, retryOptions: { retryDelay: { min: 0, max: 0 } }, expect: retry(0) },
      { given: answered(409), retries: 3, draw: 0.999999, retryOptions: { retryMaxCount: endless, retryDelay: { min: 1000, max: 1000 } }, expect: retry(1000) }
    ]
  }
]

for (const [table, rows] of [['outcomes', outcomes], ['delays', delays]] as const) {
  test(`the README's ${table}, row by row`, async (t) => {
    for (const { row, cases } of rows) {
      t.test(row, async (t) => {
        for (const { given, retries = 0, closing = false, retryOptions, draw = 0, expect } of cases) {
          const chance: Chance = { now: () => now, random: () => draw }
          const step = nextStep(given, retries, { ...options, ...retryOptions }, closing, chance)
          t.strictSame(summary(step, expect), expect, `${describe(given)} after ${retries} retries${closing ? ', closing' : ''}`)
          t.match(step.message, /^taskqueue: /, 'with a log message of the plugin')
        }
      })
    }
  })
}

test('backoff with Math.random: every delay an integer in the upper half, jittered', async (t) => {
  const bounds = { min: 100, max: 5000 }
  const unlimited = { ...options, retryMaxCount: endless, retryDelay: bounds }
  const delayOf = (retries: number, retryOptions: RetryOptions = unlimited): number => {
    // No chance given: the policy draws from Math.random and reads Date.now.
    const step = nextStep(answered(500), retries, retryOptions, false)
    return step.step === 'retry' ? step.delay : NaN
  }
  for (let retries = 0; retries < 12; retries++) {
    const ceiling = Math.min(bounds.max, bounds.min * 2 ** retries)
    const draws = Array.from({ length: 200 }, () => delayOf(retries))
    t.ok(draws.every((delay) => Number.isInteger(delay) && delay >= ceiling / 2 && delay <= ceiling),
      `retry ${retries}: every delay in [${ceiling / 2}, ${ceiling}]`)
    t.ok(new Set(draws).size > 1 || ceiling < 4, `retry ${retries}: jittered`)
  }
  // The default: the first retry within about a second, capped at a few minutes.
  const defaults = { ...unlimited, retryDelay: { min: 1000, max: 300_000 } }
  t.ok(delayOf(0, defaults) <= 1000)
  t.ok(delayOf(50, defaults) <= 300_000)
})

test('the steps that carry nothing of their task are the same object every time', async (t) => {
  // The hot path: a task that is done costs the policy no allocation.
  t.equal(nextStep(answered(200), 0, options, false), nextStep(answered(204), 2, options, false), 'done')
  t.equal(nextStep(answered(301), 0, options, false), nextStep(answered(302), 1, options, false), 'redirected')
  t.equal(nextStep(failed, 0, options, true), nextStep(answered(503), 3, options, true), 'refused at close')
})
