// The pushes of the tasks of sent responses: a response is gone, so a push that fails cannot fail
// it any more; it is tried again, with a growing delay, until the app closes. Closing tries every
// waiting push once more and gives up on what still fails, logged as lost.
import type { FastifyBaseLogger } from 'fastify'
import type { QueueBackend, TaskMessage } from '../../types'

/** How long a failed push waits before it is tried again, at most. */
const pushRetryCeiling = 30_000

export class ResponsePushes {
  /** Pushes started and not yet finished, with those waiting to be tried again. */
  private pending = 0
  /**
   * Per queue, the pushes waiting to be tried again after a failure, each as a function that tries
   * it at once: a push to that queue that succeeds shows that the cause has passed.
   */
  private readonly waitingRetries = new Map<string, Set<() => void>>()
  /** Called once no push is pending: what closing waits for. */
  private endWaiters: Array<() => void> = []
  /** Set as the app closes: a push that fails from then on is not tried again. */
  private lastTry = false
  private readonly log: FastifyBaseLogger
  /** Called whenever a push ended, done or lost. */
  private readonly onEnded: () => void
  /** Called with each batch that its queue took. */
  private readonly onPushed: (batch: TaskMessage[]) => void

  constructor (log: FastifyBaseLogger, onEnded: () => void, onPushed: (batch: TaskMessage[]) => void) {
    this.log = log
    this.onEnded = onEnded
    this.onPushed = onPushed
  }

  /**
   * Pushes one queue's batch. A failed push is logged and tried again, with a growing delay; and
   * at once when another push to the same queue succeeds, so that the tasks of an outage land as
   * soon as the queue is back, not up to `pushRetryCeiling` later.
   */
  push (backend: QueueBackend, batch: TaskMessage[]): void {
    const queue = backend.name
    this.pending++
    const attempt = (tries: number): void => {
      backend.put(batch).then(() => {
        this.onPushed(batch)
        this.ended()
        this.retryWaiting(queue)
      }, (error: unknown) => {
        const taskIds = batch.map(({ id }) => id)
        if (this.lastTry) {
          this.log.error({ err: error, queue, taskIds, attempt: tries }, 'taskqueue: queuing tasks failed as the app closed, they are lost')
          this.ended()
          return
        }
        const delay = Math.min(pushRetryCeiling, 100 * 2 ** tries)
        this.log.error({ err: error, queue, taskIds, attempt: tries, delay }, 'taskqueue: queuing tasks failed, trying again')
        this.retryLater(queue, delay, () => attempt(tries + 1))
      })
    }
    attempt(0)
  }

  /**
   * Closing, while the connections are still open: the pushes waiting to be tried again are tried
   * once more, now (a retry left for later would find the connection closed, and keep the process
   * alive trying), and none fails into another try. Resolves once no push is pending, or after
   * `timeout` ms: true if none is.
   */
  finish (timeout: number): Promise<boolean> {
    this.lastTry = true
    for (const queue of [...this.waitingRetries.keys()]) this.retryWaiting(queue)
    if (this.pending === 0) return Promise.resolve(true)
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeout)
      this.endWaiters.push(() => {
        clearTimeout(timer)
        resolve(true)
      })
    })
  }

  /** How many pushes are still to be done. */
  get count (): number {
    return this.pending
  }

  private ended (): void {
    this.pending--
    if (this.pending === 0) {
      const waiters = this.endWaiters
      this.endWaiters = []
      for (const resolve of waiters) resolve()
    }
    this.onEnded()
  }

  /** Runs `retry` after `delay` ms, or sooner when a push to `queue` succeeds meanwhile. */
  private retryLater (queue: string, delay: number, retry: () => void): void {
    const waiting = this.waitingRetries.get(queue) ?? new Set<() => void>()
    this.waitingRetries.set(queue, waiting)
    const now = (): void => {
      clearTimeout(timer)
      waiting.delete(now)
      retry()
    }
    const timer = setTimeout(now, delay)
    waiting.add(now)
  }

  private retryWaiting (queue: string): void {
    // A copy: a retry that fails again adds itself back.
    for (const now of [...this.waitingRetries.get(queue) ?? []]) now()
  }
}
