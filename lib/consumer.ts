// A consumer takes tasks from one queue and dispatches each through `fastify.inject()`, so a task
// runs through the app's routing, hooks and schemas like any request, without a network hop.
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { ReservedTask, TaskReceiver } from '../types'
import type { ResolvedConsumerOptions } from './options'
import { retryDelay } from './backoff'
import { outcomeOf } from './outcome'
import { dispatchHeader } from './dispatch-mark'

/** A consumer name unique to this process: two live processes never share one by accident. */
export function uniqueConsumerName (): string {
  return `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`
}

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

  private async dispatch (task: ReservedTask): Promise<void> {
    const { message } = task
    const log = this.context.log
    const where = { taskId: message.id, queue: message.queue }
    try {
      let statusCode: number
      try {
        const response = await this.context.app.inject({
          method: message.method,
          url: message.url,
          payload: message.payload,
          headers: {
            ...message.headers,
            'x-task-id': message.id,
            'x-task-queue': message.queue,
            'x-task-retries': String(message.retries),
            'user-agent': 'fastify-taskqueue',
            [dispatchHeader]: this.context.dispatchKey
          }
        })
        statusCode = response.statusCode
      } catch (error) {
        if (this.stopping) {
          // The app refused the request because it is closing: not the task's fault.
          await this.settle(task, () => this.receiver.release(task))
          return
        }
        log.error({ ...where, err: error }, 'taskqueue: dispatching the task failed')
        await this.settle(task, () => this.receiver.ack(task))
        return
      }
      if (statusCode === 503 && this.stopping) {
        await this.settle(task, () => this.receiver.release(task))
        return
      }
      switch (outcomeOf(statusCode)) {
        case 'done':
          log.debug({ ...where, statusCode }, 'taskqueue: task done')
          await this.settle(task, () => this.receiver.ack(task))
          break
        case 'redirected':
          log.warn({ ...where, statusCode }, 'taskqueue: task answered with a redirect, which is not followed')
          await this.settle(task, () => this.receiver.ack(task))
          break
        case 'retry':
          if (message.retries < this.options.retryMaxCount) {
            const delay = retryDelay(message.retries, this.options.retryDelay)
            log.info({ ...where, statusCode, retries: message.retries, delay }, 'taskqueue: task to be retried')
            await this.settle(task, () => this.receiver.retry(task, delay))
          } else {
            log.error({ ...where, statusCode, retries: message.retries }, 'taskqueue: task skipped after too many retries')
            await this.settle(task, () => this.receiver.ack(task))
          }
          break
        default:
          log.error({ ...where, statusCode }, 'taskqueue: task failed')
          await this.settle(task, () => this.receiver.ack(task))
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
