// A consumer takes tasks from one queue and dispatches each through `fastify.inject()`, so a task
// runs through the app's routing, hooks and schemas like any request, without a network hop.
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { DeadLetterCause, ReservedTask, TaskMessage, TaskReceiver } from '../types'
import type { ResolvedConsumerOptions } from './options'
import { retryDelay } from './backoff'
import { outcomeOf, retryAfterDelay } from './outcome'
import { dispatchHeader } from './dispatch-mark'

/** A consumer name unique to this process: two live processes never share one by accident. */
export function uniqueConsumerName (): string {
  return `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`
}

/** What came of one try of a task. */
type Attempt =
  | { kind: 'answered', statusCode: number, retryAfter: string | undefined }
  | { kind: 'timeout' }
  | { kind: 'error', error: unknown }

export interface ConsumerContext {
  app: FastifyInstance
  log: FastifyBaseLogger
  /** The secret that marks a request as dispatched by this app's consumers. */
  dispatchKey: string
  /** Called whenever a task settles, so that `drain()` can look again. */
  onSettled: () => void
}

export class Consumer {
  private readonly stopSignal = new AbortController()
  private readonly inFlight = new Set<ReservedTask>()
  /** Tasks given back to the queue at close while their dispatch was still running. */
  private readonly released = new WeakSet<ReservedTask>()
  private slotFreed: (() => void) | undefined
  /** Set while `stop()` waits for the tasks in flight. */
  private allSettled: (() => void) | undefined
  private loop: Promise<void> | undefined

  constructor (
    readonly name: string,
    readonly queue: string,
    private readonly receiver: TaskReceiver,
    private readonly options: ResolvedConsumerOptions,
    private readonly context: ConsumerContext
  ) {}

  get busy (): number { return this.inFlight.size }

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
        task = await this.receiver.reserve(signal)
      } catch (error) {
        // A backend that failed to reserve (Redis unreachable, say) is asked again shortly: the
        // consumer never dies of a transient error.
        this.context.log.error({ err: error, queue: this.queue, consumer: this.name }, 'taskqueue: reserving a task failed')
        await new Promise((resolve) => setTimeout(resolve, 1000).unref())
        continue
      }
      if (task === null) break
      this.inFlight.add(task)
      this.dispatch(task).catch((error: unknown) => {
        this.context.log.error({ err: error, taskId: task.message.id, queue: this.queue }, 'taskqueue: dispatch failed unexpectedly')
      })
    }
  }

  /** Sends the task through the app; resolves with what came of it, never rejects. */
  private async tryTask (message: TaskMessage): Promise<Attempt> {
    const abort = new AbortController()
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<Attempt>((resolve) => {
      timer = setTimeout(() => {
        abort.abort()
        resolve({ kind: 'timeout' })
      }, this.options.taskTimeout)
    })
    // Called from a promise so that an inject() that throws at once (rather than rejecting) still
    // makes an attempt that is retried, instead of leaving the task reserved and never settled.
    const injection = Promise.resolve().then(() => this.context.app.inject({
      method: message.method,
      url: message.url,
      payload: message.payload,
      signal: abort.signal,
      headers: {
        ...message.headers,
        'x-task-id': message.id,
        'x-task-queue': message.queue,
        'x-task-retries': String(message.retries),
        'x-task-eta': new Date(message.eta).toISOString(),
        'user-agent': 'fastify-taskqueue',
        [dispatchHeader]: this.context.dispatchKey
      }
    })).then(
      (response): Attempt => ({ kind: 'answered', statusCode: response.statusCode, retryAfter: response.headers['retry-after'] as string | undefined }),
      (error: unknown): Attempt => ({ kind: 'error', error })
    )
    try {
      // A handler that runs past the deadline cannot be stopped, only no longer waited for.
      return await Promise.race([injection, deadline])
    } finally {
      clearTimeout(timer)
    }
  }

  private async dispatch (task: ReservedTask): Promise<void> {
    const { message } = task
    const log = this.context.log
    const where = { taskId: message.id, queue: message.queue }
    try {
      const attempt = await this.tryTask(message)
      // Refused because the app is closing: not the task's fault, and not a try.
      if (this.stopping && (attempt.kind === 'error' || (attempt.kind === 'answered' && attempt.statusCode === 503))) {
        await this.settle(task, () => this.receiver.release(task))
        return
      }
      const statusCode = attempt.kind === 'answered' ? attempt.statusCode : undefined
      const outcome = attempt.kind === 'answered' ? outcomeOf(attempt.statusCode) : 'retry'
      if (outcome === 'done') {
        log.debug({ ...where, statusCode }, 'taskqueue: task done')
        await this.settle(task, () => this.receiver.ack(task))
      } else if (outcome === 'redirected') {
        log.warn({ ...where, statusCode }, 'taskqueue: task answered with a redirect, which is not followed')
        await this.settle(task, () => this.receiver.ack(task))
      } else if (outcome === 'final') {
        log.error({ ...where, statusCode }, 'taskqueue: task failed for good, set aside in the dead letters')
        await this.settle(task, () => this.receiver.bury(task, { reason: 'final status', statusCode, detail: `answered ${statusCode}` }))
      } else {
        const detail = attempt.kind === 'timeout'
          ? `ran past taskTimeout (${this.options.taskTimeout} ms)`
          : attempt.kind === 'error' ? `dispatch failed: ${(attempt.error as Error)?.message}` : `answered ${statusCode}`
        if (message.retries < this.options.retryMaxCount) {
          const asked = attempt.kind === 'answered' ? retryAfterDelay(attempt.statusCode, attempt.retryAfter, Date.now()) : undefined
          const delay = asked ?? retryDelay(message.retries, this.options.retryDelay)
          log.info({ ...where, statusCode, retries: message.retries, delay, detail }, 'taskqueue: task to be retried')
          await this.settle(task, () => this.receiver.retry(task, delay))
        } else {
          const reason = attempt.kind === 'timeout' ? 'timeout' : 'retries exhausted'
          log.error({ ...where, statusCode, retries: message.retries, detail }, 'taskqueue: task out of retries, set aside in the dead letters')
          const cause: DeadLetterCause = { reason, detail }
          if (statusCode !== undefined) cause.statusCode = statusCode
          await this.settle(task, () => this.receiver.bury(task, cause))
        }
      }
    } finally {
      this.inFlight.delete(task)
      const slotFreed = this.slotFreed
      this.slotFreed = undefined
      slotFreed?.()
      if (this.inFlight.size === 0) this.allSettled?.()
      this.context.onSettled()
    }
  }

  /** Runs the settling step of a task unless close already gave the task back. */
  private async settle (task: ReservedTask, step: () => Promise<void>): Promise<void> {
    if (this.released.has(task)) return
    try {
      await step()
    } catch (error) {
      this.context.log.error({ taskId: task.message.id, queue: task.message.queue, err: error }, 'taskqueue: settling the task failed')
    }
  }

  /**
   * Stops taking tasks and waits up to `timeout` ms for those in flight. Tasks still running then
   * are given back to their queue; their dispatch is left to finish on its own.
   */
  async stop (timeout: number): Promise<void> {
    this.stopSignal.abort()
    this.slotFreed?.()
    await this.loop
    if (this.inFlight.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeout)
        this.allSettled = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
    for (const task of this.inFlight) {
      this.released.add(task)
      this.context.log.warn({ taskId: task.message.id, queue: task.message.queue }, 'taskqueue: task still running at close, given back to its queue')
      await this.receiver.release(task).catch((error: unknown) => {
        this.context.log.error({ taskId: task.message.id, queue: task.message.queue, err: error }, 'taskqueue: giving the task back failed')
      })
    }
    await this.receiver.close()
  }
}
