// The blocking read of a Redis consumer: how an idle consumer waits for work on its own connection
// (a blocking read holds its connection for its whole wait), reconnecting when that connection
// looks stuck. The read only tells that work may wait: the tasks are reserved by the consumer's
// script, on the queue's connection. What it waits for is a wake-up token (the `wake` key), of
// which Redis hands each to one blocked consumer: one task made reservable wakes one consumer.
import { blockingGrace, connect, type QueueContext, type RedisClient } from './connection'

export class BlockingRead {
  private readonly queue: QueueContext
  private connection: RedisClient

  constructor (queue: QueueContext) {
    this.queue = queue
    this.connection = queue.connection.blockingConnection()
  }

  /** Connects within `connectTimeout`. */
  async connect (): Promise<void> {
    await connect(this.connection, true, this.queue.options.connectTimeout as number).catch((error: unknown) => {
      // connect() gives up on a connection that failed (it disconnects it, which leaves ioredis
      // in 'reconnecting' with no reconnection to come): waiting on that one again would hang
      // for ever. Next time, a new one.
      this.connection = this.queue.connection.blockingConnection()
      throw error
    })
  }

  close (): void {
    this.connection.disconnect()
  }

  /**
   * Waits until this consumer is woken, or `waitSeconds`, or abort; false only when a blocking
   * read ran out, true when there may be work: a token came, or the read could not be made (the
   * consumer then looks with its script, on the other connection, rather than rely on this one
   * to come back).
   *
   * The read takes a token, never a task: the tasks are reserved by the consumer's own script. So
   * a read whose reply is lost, or one that a client library sends after it gave up on it, can
   * take no task away from the consumers (a read that moved tasks into the processing list did,
   * after a Cluster node came back); it loses a wake-up, made good within a second by the
   * consumers' promote script. (A read on `waiting` itself, which moved nothing, woke every
   * consumer blocked on it at each push, all but one to reserve nothing.)
   */
  async waitForWork (waitSeconds: number, signal: AbortSignal): Promise<boolean> {
    if (this.connection.status !== 'ready') {
      // Not queued offline (see blockingConnection): wait for the connection, a while at most.
      await this.untilReady(waitSeconds * 1000, signal)
      return true
    }
    const { wake } = this.queue.keys
    const blocking = this.connection
    let onAbort: (() => void) | undefined
    const aborted = new Promise<null>((resolve) => {
      onAbort = () => resolve(null)
      signal.addEventListener('abort', onAbort, { once: true })
    })
    // A read in flight when its connection drops is never answered, and ioredis settles it only
    // once its blocking timeout and grace ran out (6 s): the consumer would be deaf that long
    // after Redis came back. It is settled as soon as the connection closes, as "look again".
    let onClose: (() => void) | undefined
    const closed = new Promise<[Buffer, Buffer]>((resolve) => {
      onClose = () => resolve([Buffer.alloc(0), Buffer.alloc(0)])
      blocking.once('close', onClose)
      blocking.once('end', onClose)
    })
    const sentAt = Date.now()
    try {
      const seen = await Promise.race([blocking.blpopBuffer(wake, waitSeconds), aborted, closed])
      if (seen === null && !signal.aborted && Date.now() - sentAt >= waitSeconds * 1000 + blockingGrace) {
        // ioredis gave up waiting (blockingTimeout) and settled the read with null: the server did
        // not answer in time. The connection is taken for stuck and started afresh.
        this.queue.log.warn({ queue: this.queue.name }, 'taskqueue: blocking read unanswered, reconnecting')
        this.connection.disconnect(true)
        return true
      }
      return seen !== null
    } catch (error) {
      // Start over on a fresh connection in case this one is stuck.
      this.queue.log.warn({ err: error, queue: this.queue.name }, 'taskqueue: blocking read failed, reconnecting')
      this.connection.disconnect(true)
      await new Promise((resolve) => setTimeout(resolve, 200))
      return true
    } finally {
      signal.removeEventListener('abort', onAbort as () => void)
      blocking.off('close', onClose as () => void)
      blocking.off('end', onClose as () => void)
    }
  }

  /** Resolves once the blocking connection is ready, on abort, or after `ms`. */
  private untilReady (ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.connection.off('ready', done)
        signal.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.connection.once('ready', done)
      signal.addEventListener('abort', done, { once: true })
    })
  }
}
