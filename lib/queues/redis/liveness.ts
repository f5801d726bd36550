// Liveness of a Redis consumer: its heartbeat, the recovery of expired consumers under the lease,
// and its own processing list, whose orphans it releases.
//
// A consumer renews `heartbeat:<id>` every `heartbeatInterval` (the key lives three intervals).
// Whoever wins the lease then recovers every registered consumer whose heartbeat expired: its
// tasks go to `recovered`, from which each is reserved alone, and a task recovered too often is
// buried. Orphans are tasks in a consumer's own list that it does not know it holds (a reservation
// whose reply was lost, or that a client sent twice after a reconnection): released to the queue.
import { byDeadline } from '../../deadline'
import type { QueueContext } from './connection'

/** What liveness needs to know of the consumer it keeps alive. */
export interface LivenessHost {
  /** The ids of the tasks the consumer knows it holds (reserved, not yet settled). */
  known (): string[]
  /** True while a reservation is on its way: the tasks it moved are not known yet, yet no orphans. */
  reserving (): boolean
  /** Recovered tasks wait: an idle consumer should look at its next turn rather than block again. */
  workMayWait (): void
}

export class Liveness {
  readonly heartbeatKey: string
  /**
   * Set when a reservation failed (its reply is lost, its moves may have happened) or the
   * connection was lost (ioredis then sends the commands in flight again, so a reservation may run
   * twice): the processing list may hold orphans. They are released as soon as no reservation is
   * on its way, busy or not (see releaseOrphans).
   */
  ownListSuspect = false
  private readonly queue: QueueContext
  private readonly consumerId: string
  private readonly processing: string
  private readonly host: LivenessHost
  private readonly heartbeatInterval: number
  private heartbeatTimer: NodeJS.Timeout | undefined

  constructor (queue: QueueContext, consumerId: string, processing: string, host: LivenessHost) {
    this.queue = queue
    this.consumerId = consumerId
    this.processing = processing
    this.host = host
    this.heartbeatKey = queue.keys.heartbeat(consumerId)
    this.heartbeatInterval = queue.options.heartbeatInterval as number
  }

  /** How long a heartbeat lives unless renewed (ms). */
  get lifetime (): number {
    return this.heartbeatInterval * 3
  }

  /** Beats once, then every `heartbeatInterval`. */
  async start (): Promise<void> {
    await this.beat()
    this.heartbeatTimer = setInterval(() => { this.beat().catch(() => {}) }, this.heartbeatInterval).unref()
  }

  stop (): void {
    clearInterval(this.heartbeatTimer)
  }

  /**
   * Renews the heartbeat, releases the orphans of the consumer's own list (when it holds no task,
   * or may hold unknown ones), and recovers expired consumers when this one wins the lease.
   */
  private async beat (): Promise<void> {
    const { keys, connection: { client }, options, log, name, events } = this.queue
    const recoveredWaiting = await client.taskqueueHeartbeat(keys.consumers, this.heartbeatKey, keys.recovered, this.consumerId, this.lifetime)
    // Recovery by another instance wakes one idle consumer; this one looks too, in case that wake-up was lost.
    if (recoveredWaiting > 0) this.host.workMayWait()
    if (this.ownListSuspect || this.host.known().length === 0) await this.releaseOrphans()
    const outcome = await client.taskqueueRecover(keys.consumers, keys.recovered, keys.dead, keys.recoveries,
      keys.lease, keys.tasks, keys.inflight, keys.deadIndex, keys.base, this.consumerId, this.heartbeatInterval, options.recoveryMaxCount as number,
      this.consumerId, options.deadLetterMax as number)
    // Another instance holds the lease: it recovers, and publishes what it did.
    if (outcome.length === 1) return
    const [recovered, buried] = outcome
    if (recovered.length > 0) {
      this.host.workMayWait()
      log.warn({ queue: name, recovered: recovered.length, taskIds: recovered }, 'taskqueue: tasks of an expired consumer recovered')
      for (const id of recovered) events.recovered(name, id)
    }
    if (buried.length > 0) {
      log.error({ queue: name, buried: buried.length, taskIds: buried }, 'taskqueue: tasks recovered too often buried in the dead letters')
      for (const id of buried) events.dead(name, id, { reason: 'recovered too often' })
    }
  }

  /**
   * Releases the orphans of the processing list. A reservation whose reply was lost may still have
   * moved tasks there, ioredis sends the commands in flight again after a reconnection (a
   * reservation that ran before the link broke runs twice, and the reply is that of the second
   * run), and a client library may yet send a command it has given up on (ioredis' Cluster sent
   * blocking reads it had settled once a node came back): such tasks would sit there, not running,
   * until the consumer stopped or expired. Skipped while a reservation is on its way. The known
   * tasks are read and the script is sent in one go, on the connection that carries the
   * reservations, so a reservation sent after it runs after it. The ids of all known tasks
   * travel, which is why a busy consumer does this only when its list is suspect.
   */
  async releaseOrphans (): Promise<void> {
    if (this.host.reserving()) return
    const { keys, connection: { client }, log, name } = this.queue
    const known = this.host.known()
    this.ownListSuspect = false
    let released: number
    try {
      released = await client.taskqueueReleaseOrphans(this.processing, keys.waiting, keys.recoveries, keys.recovered, keys.inflight, keys.base, ...known)
    } catch (error) {
      this.ownListSuspect = true
      throw error
    }
    if (released > 0) log.warn({ queue: name, released }, 'taskqueue: orphans in this consumer\'s own list released')
  }

  /**
   * Once `settling` (the acknowledgements on their way) is done, releases every task left in the
   * processing list, known or not, deletes the heartbeat and leaves the consumer set, by `deadline`
   * (ms since the epoch); what is not done by then is left to recovery once the heartbeat expires.
   */
  async leave (deadline: number, settling: Promise<void>): Promise<void> {
    this.stop()
    const { keys, connection: { client }, log, name } = this.queue
    try {
      // Acknowledgements still on their way go first: what is released must not include finished tasks.
      await byDeadline(settling, deadline, 'acknowledgements on their way')
      await byDeadline(client.taskqueueReleaseOrphans(this.processing, keys.waiting, keys.recoveries, keys.recovered, keys.inflight, keys.base), deadline, 'releasing the tasks left')
      await byDeadline(client.multi().del(this.heartbeatKey).srem(keys.consumers, this.consumerId).exec(), deadline, 'leaving the consumer set')
    } catch (error) {
      log.error({ err: error, queue: name, consumer: this.consumerId },
        'taskqueue: releasing the tasks left at close failed; left to recovery by another instance once this consumer\'s heartbeat expires')
    }
  }
}
