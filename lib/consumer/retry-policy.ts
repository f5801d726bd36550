// The retry policy: what a consumer does once a try is over, as one pure function of how the try
// ended, the task's retries and the consumer's options. It is the README's "Outcomes" table; the
// consumer only carries out the step it returns. Time and chance come in as arguments, so the
// table can be tested row by row without a clock or a dispatch.
import type { OutgoingHttpHeader } from 'node:http'
import { isUtf8 } from 'node:buffer'
import type { DeadLetterCause } from '../../types'
import type { ResolvedConsumerOptions } from '../options'

/** How one try of a task ended. */
export type TryResult =
  | { kind: 'answered', statusCode: number, retryAfter: OutgoingHttpHeader | undefined, body?: Buffer }
  | { kind: 'timeout' }
  | { kind: 'error', error: unknown }

/** The options of a consumer that the policy reads. */
export type RetryOptions = Pick<ResolvedConsumerOptions, 'retryMaxCount' | 'retryDelay' | 'taskTimeout'>

/** Where the policy reads the time (for a Retry-After date) and draws the jitter of a backoff. */
export interface Chance {
  now: () => number
  /** A number in [0, 1), as Math.random gives. */
  random: () => number
}

export const systemChance: Chance = { now: Date.now, random: Math.random }

/** Log levels the steps are logged at. */
export type StepLevel = 'debug' | 'info' | 'warn' | 'error'

/**
 * How a consumer settles a task once a try is over, with the log line that says so: exactly one
 * of ack (done: forget it), retry (again after `delay` ms), release (back unchanged, not a try)
 * and bury (into the dead letters with `cause`).
 */
export type Step =
  | { readonly step: 'ack', readonly level: StepLevel, readonly message: string }
  | { readonly step: 'retry', readonly delay: number, readonly detail: string, readonly level: StepLevel, readonly message: string }
  | { readonly step: 'release', readonly level: StepLevel, readonly message: string }
  | { readonly step: 'bury', readonly cause: DeadLetterCause, readonly level: StepLevel, readonly message: string }

// The steps that carry nothing of their task are made once: the policy allocates only for a
// retry or a burial, never for a task that is done.
const done: Step = { step: 'ack', level: 'debug', message: 'taskqueue: task done' }
const redirected: Step = { step: 'ack', level: 'warn', message: 'taskqueue: task answered with a redirect, which is not followed' }
const refusedAtClose: Step = { step: 'release', level: 'debug', message: 'taskqueue: task refused because the app is closing, released to its queue' }
const retryMessage = 'taskqueue: task to be retried'
const finalMessage = 'taskqueue: task failed for good, buried in the dead letters'
const exhaustedMessage = 'taskqueue: task out of retries, buried in the dead letters'

/** Longest wait a Retry-After header may ask for: past it, the consumer's own backoff applies. */
const retryAfterCeiling = 24 * 60 * 60 * 1000

/**
 * The next step for a task whose try ended with `result`, after `retries` retries already made.
 * `closing`: the consumer is stopping, so a failed dispatch or a 503 is the closing app refusing
 * the try, which is not the task's fault and not a try.
 */
export function nextStep (result: TryResult, retries: number, options: RetryOptions, closing: boolean, chance: Chance = systemChance): Step {
  if (closing && (result.kind === 'error' || (result.kind === 'answered' && result.statusCode === 503))) return refusedAtClose
  if (result.kind === 'answered') {
    const { statusCode } = result
    if (statusCode >= 200 && statusCode < 300) return done
    if (statusCode >= 300 && statusCode < 400) return redirected
    if (statusCode !== 409 && statusCode !== 429 && (statusCode < 500 || statusCode === 501)) {
      // Any other status: no try will do better.
      const cause: DeadLetterCause = { reason: 'final status', statusCode, detail: `answered ${statusCode}` }
      const body = bodyStart(result.body)
      if (body !== undefined) cause.body = body
      return { step: 'bury', cause, level: 'error', message: finalMessage }
    }
  }
  // Worth another try: 409, 429, 5xx but 501, a timeout, or a dispatch that failed.
  const detail = result.kind === 'timeout'
    ? `ran past taskTimeout (${options.taskTimeout} ms)`
    : result.kind === 'error' ? `dispatch failed: ${(result.error as Error)?.message}` : `answered ${result.statusCode}`
  if (retries < options.retryMaxCount) {
    const asked = result.kind === 'answered' ? retryAfterDelay(result.statusCode, result.retryAfter, chance.now()) : undefined
    const delay = asked ?? backoffDelay(retries, options.retryDelay, chance.random())
    return { step: 'retry', delay, detail, level: 'info', message: retryMessage }
  }
  const cause: DeadLetterCause = { reason: result.kind === 'timeout' ? 'timeout' : 'retries exhausted', detail }
  if (result.kind === 'answered') {
    cause.statusCode = result.statusCode
    const body = bodyStart(result.body)
    if (body !== undefined) cause.body = body
  }
  return { step: 'bury', cause, level: 'error', message: exhaustedMessage }
}

/** How much of the answer's body a dead letter keeps. */
export const deadBodyBytes = 1024

/**
 * The start of an answer's body as a dead letter keeps it: its first `deadBodyBytes` bytes as text,
 * cut before a character that would not fit whole; bytes that are not UTF-8 are not shown, only
 * counted, since a dead letter is read by people (and a page), not replayed.
 */
export function bodyStart (bytes: Buffer | undefined): string | undefined {
  if (bytes === undefined || bytes.length === 0) return undefined
  let end = Math.min(bytes.length, deadBodyBytes)
  // A continuation byte (10xxxxxx) at the cut means a character runs across it: cut before it.
  if (end < bytes.length) while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--
  const start = bytes.subarray(0, end)
  return isUtf8(start) ? start.toString('utf8') : `<binary body, ${bytes.length} bytes>`
}

/**
 * The delay a 429 or 503 answer asks for in its Retry-After header (seconds or an HTTP date),
 * in ms, or undefined when there is none to honour.
 */
function retryAfterDelay (statusCode: number, header: OutgoingHttpHeader | undefined, now: number): number | undefined {
  if ((statusCode !== 429 && statusCode !== 503) || typeof header !== 'string') return undefined
  const delay = /^\s*\d+\s*$/.test(header) ? Number(header) * 1000 : Date.parse(header) - now
  if (!Number.isFinite(delay)) return undefined
  return Math.min(Math.max(0, delay), retryAfterCeiling)
}

/**
 * Delay before retry number `retries + 1`: `min` doubled for each retry already made, capped at
 * `max`, then drawn from its upper half (by `draw`, in [0, 1)) so that tasks failing together do
 * not return together.
 */
function backoffDelay (retries: number, bounds: { min: number, max: number }, draw: number): number {
  const ceiling = Math.min(bounds.max, bounds.min * 2 ** Math.min(retries, 52))
  return Math.round(ceiling / 2 + draw * ceiling / 2)
}
