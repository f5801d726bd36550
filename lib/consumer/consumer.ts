// A consumer reserves tasks from one queue and dispatches each through `fastify.inject()`, so a task
// runs through the app's routing, hooks and schemas like any request, without a network hop.
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { ReservedTask, TaskMessage, TaskReceiver } from '../../types'
import type { ResolvedConsumerOptions } from '../options'
import type { Dispatch, DispatchMarks } from '../request/mark'
import type { TaskEvents } from '../instrumentation/channels'
import { endTrySpan, startTrySpan, withTrySpan, type TrySpan } from '../instrumentation/tracing'
import { byDeadline, closeSlack } from '../deadline'
import { dispatchHeaders } from './task-headers'
import { nextStep, type Step, type TryResult } from './retry-policy'

/** A consumer name unique to this process: two live processes never share one by accident. */
export function uniqueConsumerName (): string {
  return `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`
}

function noop (): void {}

export interface ConsumerContext {
  app: FastifyInstance
  log: FastifyBaseLogger
  /** Issues the single-use token that marks each dispatched request as this app's task. */
  marks: DispatchMarks
  /** Called whenever a task settles, so that `drain()` can look again. */
  onSettled: () => void
  /** Where the task lifecycle is published. */
  events: TaskEvents
}

/** One try of a task in flight: when it times out, and how to end its wait when it does. */
interface Try {
  readonly deadline: number
  /** Set once the try answered, failed or ran out of time: no deadline applies any more. */
  over: boolean
  /** Ends the wait for the try as timed out; set once the try started. */
  expire: () => void
  /** The dispatch of the try, once it started: its request id, for the log lines about it. */
  dispatch?: Dispatch
}

const timeoutResult: TryResult = { kind: 'timeout' }

/** What a consumer without a concurrency limit says it has room for: a batch, not the whole queue. */
const unlimitedRoom = 32

/**
 * The loop of one consumer: reserve a task whenever a slot is free (at most `concurrentLimit`
 * in flight, no limit at 0), try it through inject(), then settle it as the retry policy says.
 */
export class Consumer {
  readonly name: string
  readonly queue: string
  private readonly receiver: TaskReceiver
  private readonly options: ResolvedConsumerOptions
  private readonly context: ConsumerContext
  private readonly stopSignal = new AbortController()
  /**
   * Tasks in flight, in the order they started. Every try has the same timeout, so this is also
   * the order of their deadlines: one timer, armed for the oldest, watches them all, instead of a
   * timer per task.
   */
  private readonly inFlight = new Map<ReservedTask, Try>()
  private deadlineTimer: NodeJS.Timeout | undefined
  /** Tasks released at close while their try was still running: their late end settles nothing. */
  private readonly releasedAtClose = new WeakSet<ReservedTask>()
  /** Tasks whose try has not ended: the tries in flight that are not over. */
  private running = 0
  /** Tasks whose try has ended and whose step is being written to the queue. */
  private settling = 0
  /** Wakes the loop when it waits for a free slot. */
  private slotFreed: (() => void) | undefined
  /** Set while `stop()` waits for the tasks in flight. */
  private allSettled: (() => void) | undefined
  private loop: Promise<void> | undefined

  constructor (name: string, queue: string, receiver: TaskReceiver, options: ResolvedConsumerOptions, context: ConsumerContext) {
    this.name = name
    this.queue = queue
    this.receiver = receiver
    this.options = options
    this.context = context
  }

  /**
   * Tasks running or settling. Counted as they change rather than by a walk over the tasks in
   * flight: it is read as each task settles, which an unlimited consumer with thousands of tasks
   * in flight made quadratic.
   */
  get busy (): number {
    return this.running + this.settling
  }

  get stopping (): boolean { return this.stopSignal.signal.aborted }

  start (): void {
    this.loop ??= this.run()
  }

  private async run (): Promise<void> {
    const limit = this.options.concurrentLimit
    const signal = this.stopSignal.signal
    while (!signal.aborted) {
      if (limit !== 0 && this.inFlight.size >= limit) {
        await new Promise<void>((resolve) => { this.slotFreed = resolve })
        continue
      }
      let task: ReservedTask | null
      try {
        task = await this.receiver.reserve(signal, limit === 0 ? unlimitedRoom : limit - this.inFlight.size)
      } catch (error) {
        // A backend that failed to reserve (Redis unreachable, say) is asked again shortly: the
        // consumer never dies of a transient error.
        this.context.log.error({ err: error, queue: this.queue, consumer: this.name }, 'taskqueue: reserving a task failed')
        await new Promise((resolve) => setTimeout(resolve, 1000).unref())
        continue
      }
      if (task === null) break
      const attempt: Try = { deadline: Date.now() + this.options.taskTimeout, over: false, expire: noop }
      this.inFlight.set(task, attempt)
      this.running++
      this.deadlineTimer ??= this.armDeadline()
      this.dispatch(task, attempt).catch((error: unknown) => {
        this.context.log.error({ err: error, taskId: task.message.id, queue: this.queue }, 'taskqueue: dispatch failed unexpectedly')
      })
    }
  }

  /** A timer for the oldest try still running, if any. */
  private armDeadline (): NodeJS.Timeout | undefined {
    for (const attempt of this.inFlight.values()) {
      if (!attempt.over) return setTimeout(this.expireOverdue, Math.max(0, attempt.deadline - Date.now()))
    }
    return undefined
  }

  private readonly expireOverdue = (): void => {
    const now = Date.now()
    for (const attempt of this.inFlight.values()) {
      if (attempt.over) continue
      if (attempt.deadline > now) break
      this.end(attempt)
      attempt.expire()
    }
    this.deadlineTimer = this.armDeadline()
  }

  /** Sends the task through the app; resolves with how the try ended, never rejects. */
  private tryTask (message: TaskMessage, attempt: Try, traced: TrySpan | undefined): Promise<TryResult> {
    return new Promise<TryResult>((resolve) => {
      // A handler that runs past the deadline cannot be stopped, only no longer waited for.
      attempt.expire = () => resolve(timeoutResult)
      const marks = this.context.marks
      const dispatch = marks.issue(message)
      attempt.dispatch = dispatch
      const token = dispatch.token
      try {
        // inject() with a callback: without one it wraps the same work in a chainable promise.
        // Started inside the try's span, so that the spans of the request nest inside it.
        withTrySpan(traced, () => this.context.app.inject({
          method: message.method,
          url: message.url,
          payload: message.payload,
          headers: dispatchHeaders(message, token, traced?.headers)
        }, (error, response) => {
          // The request is over: its token, spent or not (a hook may have answered before
          // anything asked for the mark), must not mark any later request.
          marks.forget(token)
          if (error != null || response === undefined) resolve({ kind: 'error', error })
          else resolve({ kind: 'answered', statusCode: response.statusCode, retryAfter: response.headers['retry-after'], body: response.rawPayload })
        }))
      } catch (error) {
        marks.forget(token)
        // An inject() that throws at once (rather than failing through its callback) still makes
        // a try that is retried, instead of leaving the task reserved and never settled.
        resolve({ kind: 'error', error })
      }
    })
  }

  /** Tries the task, then settles it as the retry policy says. */
  private async dispatch (task: ReservedTask, attempt: Try): Promise<void> {
    const { message } = task
    const events = this.context.events
    events.started(message, this.name)
    const startedAt = performance.now()
    const traced = startTrySpan(message)
    const result = await this.tryTask(message, attempt, traced)
    const durationMs = performance.now() - startedAt
    if (!attempt.over) this.end(attempt)
    endTrySpan(traced, result)
    const step = nextStep(result, message.retries, this.options, this.stopping)
    const reqId = attempt.dispatch?.reqId
    events.finished(message, reqId, result, durationMs, step)
    // A task that is done gives its slot up before it is acknowledged: a Redis consumer then
    // acknowledges it and reserves the next in one round trip. Any other step keeps the slot
    // until it is written, so that a retry is known before the consumer looks for work again.
    const freedEarly = step.step === 'ack' && !this.stopping
    if (freedEarly) this.freeSlot(task)
    this.settling++
    try {
      this.logStep(message, result, step, reqId)
      if (await this.settle(task, step)) events.settled(message, reqId, result, step)
    } finally {
      if (!freedEarly) this.freeSlot(task)
      this.settling--
      if (this.busy === 0) this.allSettled?.()
      this.context.onSettled()
    }
  }

  /** Says what becomes of the task, with the request id of the try: its request's lines join these. */
  private logStep (message: TaskMessage, result: TryResult, step: Step, reqId: string | undefined): void {
    const taskId = message.id
    const queue = message.queue
    const statusCode = result.kind === 'answered' ? result.statusCode : undefined
    const log = this.context.log
    if (step.step === 'ack') log[step.level]({ taskId, queue, reqId, statusCode }, step.message)
    else if (step.step === 'retry') log[step.level]({ taskId, queue, reqId, statusCode, retries: message.retries, delay: step.delay, detail: step.detail }, step.message)
    else if (step.step === 'bury') log[step.level]({ taskId, queue, reqId, statusCode, retries: message.retries, detail: step.cause.detail }, step.message)
    else log[step.level]({ taskId, queue, reqId, statusCode }, step.message)
  }

  /** The try is over: answered, failed or out of time. */
  private end (attempt: Try): void {
    attempt.over = true
    this.running--
  }

  private freeSlot (task: ReservedTask): void {
    this.inFlight.delete(task)
    if (this.inFlight.size === 0 && this.deadlineTimer !== undefined) {
      // Nothing left to time out: an idle consumer keeps no timer (nor the process) alive.
      clearTimeout(this.deadlineTimer)
      this.deadlineTimer = undefined
    }
    const slotFreed = this.slotFreed
    this.slotFreed = undefined
    slotFreed?.()
  }

  /**
   * Carries out the step of a task in its queue, unless close released the task already; true once
   * the queue holds the step (a retry or a burial is published only then).
   */
  private async settle (task: ReservedTask, step: Step): Promise<boolean> {
    if (this.releasedAtClose.has(task)) return false
    try {
      if (step.step === 'ack') await this.receiver.ack(task)
      else if (step.step === 'retry') await this.receiver.retry(task, step.delay)
      else if (step.step === 'bury') await this.receiver.bury(task, step.cause)
      else await this.receiver.release(task)
      return true
    } catch (error) {
      this.context.log.error({ taskId: task.message.id, queue: task.message.queue, err: error }, 'taskqueue: settling the task failed')
      return false
    }
  }

  /**
   * Stops taking tasks and waits until `waitUntil` (ms since the epoch) for those in flight. Tasks
   * still running then are released to their queue (their try is left to finish on its own), and
   * the receiver is closed, both by `releaseBy`: what is not released by then is left to the
   * queue's recovery (a Redis consumer's heartbeat expires).
   */
  async stop (waitUntil: number, releaseBy: number): Promise<void> {
    this.stopSignal.abort()
    this.slotFreed?.()
    // A reservation stuck on a server that does not answer may hold the loop: not waited for past
    // the deadline (the loop ends by itself once the reservation fails or returns).
    await byDeadline(this.loop ?? Promise.resolve(), waitUntil, 'the consumer loop').catch(() => {})
    if (this.busy > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(0, waitUntil - Date.now()))
        this.allSettled = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
    clearTimeout(this.deadlineTimer)
    this.deadlineTimer = undefined
    const releases: Array<Promise<void>> = []
    for (const [task, attempt] of this.inFlight) {
      if (attempt.over) continue
      this.releasedAtClose.add(task)
      const { id: taskId, queue } = task.message
      this.context.log.warn({ taskId, queue, reqId: attempt.dispatch?.reqId }, 'taskqueue: task still running at close, released to its queue')
      releases.push(byDeadline(this.receiver.release(task), releaseBy, 'releasing the task').catch((error: unknown) => {
        this.context.log.error({ taskId, queue, err: error }, 'taskqueue: releasing the task at close failed; left to recovery by another instance')
      }))
    }
    await Promise.all(releases)
    await byDeadline(this.receiver.close(releaseBy), releaseBy + closeSlack, 'closing the receiver').catch((error: unknown) => {
      this.context.log.error({ queue: this.queue, consumer: this.name, err: error }, 'taskqueue: closing the consumer failed')
    })
  }
}
