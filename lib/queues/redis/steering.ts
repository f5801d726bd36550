// Seeing into a Redis queue and steering it: its figures, the pause shared by every instance, and
// tasks by id (get, cancel) or a page of those waiting. Every call is one round trip of bounded
// work: the figures are sizes of keys, a task is found by its id in `tasks` (or `dead-index`), and
// a cancelled waiting task leaves a tombstone rather than have its list scanned.
import type { QueueStats, TaskInfo, TaskPage, TaskState } from '../../../types'
import { decodeDeadLetter, decodeTaskOf } from '../codec'
import type { QueueContext } from './connection'

export class RedisSteering {
  private readonly queue: QueueContext
  /** Told when the queue is resumed here, so that its consumers ask again at once. */
  private readonly onResume: () => void

  constructor (queue: QueueContext, onResume: () => void) {
    this.queue = queue
    this.onResume = onResume
  }

  /** A stored message as what get() and waiting() tell; null when it cannot be read. */
  private infoOf (raw: string, state: TaskState): TaskInfo | null {
    const { message } = decodeTaskOf(this.queue.name, raw)
    if (message === undefined) return null
    const { id, url, method, headers, retries, createdAt, eta, group } = message
    const info: TaskInfo = { id, state, url, method, headers, retries, createdAt, eta }
    if (group !== undefined) info.group = group
    return info
  }

  async stats (): Promise<QueueStats> {
    const { keys, connection: { client } } = this.queue
    const [waiting, delayed, inFlight, dead, paused, eta] = await client.taskqueueStats(keys.waiting, keys.recovered, keys.delayed,
      keys.inflight, keys.dead, keys.paused, keys.cancelled, keys.tasks, keys.base)
    // The eta was written by an instance's clock, as on a local queue: the age is read on this one's.
    const oldestWaitingAge = eta === '' ? null : Math.max(0, Date.now() - Number(eta))
    return { waiting, delayed, inFlight, dead, paused: paused === 1, oldestWaitingAge }
  }

  /** Waiting and delayed tasks, as `length()` counts them: the same figures, not a second count. */
  async length (): Promise<number> {
    const { waiting, delayed } = await this.stats()
    return waiting + delayed
  }

  /** A key in Redis: every consumer of the queue, in any instance, sees it at its next reservation. */
  async pause (): Promise<void> {
    await this.queue.connection.client.set(this.queue.keys.paused, '1')
  }

  /** Also wakes a consumer blocked since before the pause, anywhere (see the resume script). */
  async resume (): Promise<void> {
    const { keys, connection: { client } } = this.queue
    await client.taskqueueResume(keys.paused, keys.base)
    this.onResume()
  }

  async isPaused (): Promise<boolean> {
    return await this.queue.connection.client.exists(this.queue.keys.paused) === 1
  }

  async get (id: string): Promise<TaskInfo | null> {
    const { keys, connection: { client } } = this.queue
    const found = await client.taskqueueGet(keys.tasks, keys.delayed, keys.inflight, keys.deadIndex, id)
    if (found.length === 0) return null
    const [state, text] = found
    if (state !== 'dead') return this.infoOf(text, state as TaskState)
    // A dead letter keeps the task as it was stored.
    const { letter } = decodeDeadLetter(text)
    return letter === undefined ? null : this.infoOf(letter.task, 'dead')
  }

  async cancel (id: string): Promise<boolean> {
    const { keys, connection: { client } } = this.queue
    return await client.taskqueueCancel(keys.tasks, keys.delayed, keys.inflight, keys.cancelled, keys.recoveries, id, keys.base) === 1
  }

  async waiting ({ offset = 0, limit = 100 }: TaskPage = {}): Promise<TaskInfo[]> {
    if (limit <= 0) return []
    const { keys, connection: { client } } = this.queue
    const reply = await client.taskqueueWaiting(keys.recovered, keys.waiting, keys.tasks, keys.cancelled, offset, limit, keys.base)
    const page: TaskInfo[] = []
    for (let index = 1; index < reply.length; index += 2) {
      const info = this.infoOf(reply[index], 'waiting')
      if (info !== null) page.push(info)
    }
    return page
  }
}
