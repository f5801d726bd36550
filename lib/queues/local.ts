// The local queue: in-process and volatile. Tasks wait in memory until a consumer of this process
// reserves them; whatever is still waiting when the process ends is lost, by design.
import type { FastifyBaseLogger } from 'fastify'
import type {
  DeadLetter, DeadLetterCause, DeadLetterPage, QueueBackend, QueueStats, ReservedTask, TaskInfo, TaskMessage, TaskPage, TaskReceiver, TaskState
} from '../../types'
import { Fifo } from './fifo'
import { DueLine } from './due-line'
import type { RateLimit } from '../options'
import { RateWindow } from './rate-window'

type Waiter = (message: TaskMessage) => void

/** The longest delay a Node timer takes as it is. */
const longestTimer = 2 ** 31 - 1

/** A task the queue holds, by id: what `get()` and `cancel()` find without a scan. */
interface LiveTask {
  message: TaskMessage
  state: 'waiting' | 'delayed' | 'in-flight' | 'cancelled'
  /** The timer of a delayed task. */
  timer?: NodeJS.Timeout
}

function infoOf (message: TaskMessage, state: TaskState): TaskInfo {
  const { id, url, method, headers, retries, createdAt, eta, group } = message
  const info: TaskInfo = { id, state, url, method, headers, retries, createdAt, eta }
  if (group !== undefined) info.group = group
  return info
}

export class LocalQueue implements QueueBackend {
  readonly name: string
  readonly shared = false
  private readonly deadLetterMax: number
  private readonly log: FastifyBaseLogger | undefined
  /**
   * Due tasks, by group, served in turn (see DueLine); a cancelled one stays in place until it
   * reaches the head of its line.
   */
  private readonly due: DueLine<LiveTask>
  /** Receivers waiting for a task, oldest first. */
  private readonly waiters = new Fifo<Waiter>()
  /** Every task waiting, delayed or in flight, by id: also what keeps a chosen id from running twice. */
  private readonly live = new Map<string, LiveTask>()
  private dueCount = 0
  private delayedCount = 0
  private inFlightCount = 0
  private paused = false
  /** The rate limit's log of starts, when the queue has one. */
  private readonly rate: RateWindow | undefined
  /** Oldest first; bounded by `deadLetterMax`. */
  private deadLetters: DeadLetter[] = []
  /** The newest dead letter of each task id. */
  private readonly deadById = new Map<string, DeadLetter>()

  /**
   * `groupConcurrency`: most tasks of one group in flight at once (left out: no limit);
   * `rateLimit`: most tries started per window (left out: no limit).
   */
  constructor (name: string, deadLetterMax: number, log?: FastifyBaseLogger, groupConcurrency?: number, rateLimit?: RateLimit) {
    this.name = name
    this.deadLetterMax = deadLetterMax
    this.log = log
    this.due = new DueLine(groupConcurrency)
    this.rate = rateLimit === undefined ? undefined : new RateWindow(rateLimit, () => this.serveWaiters())
  }

  /** Tasks waiting, including those waiting for their eta. */
  get size (): number { return this.dueCount + this.delayedCount }

  async put (tasks: readonly TaskMessage[]): Promise<void> {
    const now = Date.now()
    for (const task of tasks) {
      if (task.named === true && this.live.has(task.id)) continue
      if (task.eta > now) this.later(task, task.eta - now)
      else this.offer(task)
    }
  }

  /** Hands a due task to the first waiting receiver, or queues it at the back of its line. */
  private offer (message: TaskMessage): void {
    // A task of a group waits its turn and the room of its group.
    const waiter = message.group !== undefined || this.waiters.size === 0 || !this.mayStart() ? undefined : this.waiters.shift()
    if (waiter !== undefined) {
      this.track(message, 'in-flight')
      waiter(message)
      return
    }
    this.due.push(this.track(message, 'waiting'))
    if (message.group !== undefined) this.serveWaiters()
  }

  /**
   * Whether a task may be handed to a receiver now: the queue is not paused, and the rate limit's
   * window has room. When it has none, the waiting receivers are served once it has.
   */
  private mayStart (): boolean {
    return !this.paused && (this.rate === undefined || this.rate.hasRoom())
  }

  /** Hands due tasks, in turn, to the receivers waiting for one, as long as the queue may start them. */
  private serveWaiters (): void {
    while (this.waiters.size > 0 && this.dueCount > 0 && this.mayStart()) {
      const task = this.takeDue()
      if (task === undefined) return
      const waiter = this.waiters.shift() as Waiter
      waiter(task.message)
    }
  }

  private track (message: TaskMessage, state: LiveTask['state']): LiveTask {
    const task: LiveTask = { message, state }
    this.live.set(message.id, task)
    if (state === 'waiting') this.dueCount++
    else if (state === 'in-flight') this.inFlightCount++
    else this.delayedCount++
    return task
  }

  /** The next due task in turn that was not cancelled, taken off the queue. */
  private takeDue (): LiveTask | undefined {
    const task = this.due.take()
    if (task === undefined) return undefined
    this.dueCount--
    this.inFlightCount++
    task.state = 'in-flight'
    return task
  }

  /** Hands the oldest waiting task to a consumer, or waits for one until `signal` aborts. */
  reserve (signal: AbortSignal): Promise<ReservedTask | null> {
    const task = this.dueCount > 0 && this.mayStart() ? this.takeDue() : undefined
    if (task !== undefined) {
      this.rate?.record()
      return Promise.resolve({ message: task.message })
    }
    if (signal.aborted) return Promise.resolve(null)
    return new Promise((resolve) => {
      const onAbort = (): void => {
        // The waiter stays in the list but no longer resolves anything; hand its task on.
        active = false
        resolve(null)
      }
      let active = true
      const waiter: Waiter = (message) => {
        if (!active) {
          this.handBack(message)
          return
        }
        signal.removeEventListener('abort', onAbort)
        this.rate?.record()
        resolve({ message })
      }
      signal.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(waiter)
    })
  }

  /** A task handed to a waiter that had stopped waiting: it is due again, next in line. */
  private handBack (message: TaskMessage): void {
    this.settled(message)
    this.release(message)
  }

  /** A reserved task was settled by its receiver: it is no longer in flight (nor live, unless put back). */
  settled (message: TaskMessage): void {
    const task = this.live.get(message.id)
    if (task?.message !== message) return
    this.inFlightCount--
    this.live.delete(message.id)
    // Its group's slot is free: a receiver waiting for work may take the group's next task.
    if (message.group !== undefined && this.due.settled(message.group)) this.serveWaiters()
  }

  /** Puts a settled task back at the head of its line, unchanged: it is next of its group. */
  release (message: TaskMessage): void {
    this.due.unshift(this.track(message, 'waiting'))
    this.serveWaiters()
  }

  later (message: TaskMessage, delayMs: number): void {
    const task = this.track(message, 'delayed')
    this.arm(task, delayMs)
  }

  private arm (task: LiveTask, delayMs: number): void {
    // Node runs a timer of more than 2^31 - 1 ms (about 24.8 days) after 1 ms instead: a longer
    // wait is made of several timers.
    const wait = Math.min(delayMs, longestTimer)
    // Not unref()'d: a script awaiting drain() must stay alive for its retries; close() clears it.
    task.timer = setTimeout(() => {
      if (wait < delayMs) {
        this.arm(task, delayMs - wait)
        return
      }
      this.delayedCount--
      this.live.delete(task.message.id)
      this.offer(task.message)
    }, wait)
  }

  bury (message: TaskMessage, cause: DeadLetterCause): void {
    const letter: DeadLetter = { id: message.id, queue: this.name, ...cause, at: Date.now(), task: message }
    this.deadLetters.push(letter)
    this.deadById.set(message.id, letter)
    if (this.deadLetters.length > this.deadLetterMax) {
      const dropped = this.deadLetters.splice(0, this.deadLetters.length - this.deadLetterMax)
      for (const old of dropped) if (this.deadById.get(old.id as string) === old) this.deadById.delete(old.id as string)
      this.log?.warn({ queue: this.name, taskIds: dropped.map(({ id }) => id) }, 'taskqueue: dead letters over deadLetterMax dropped, oldest first')
    }
  }

  receive (): TaskReceiver {
    return new LocalReceiver(this)
  }

  async length (): Promise<number> {
    return this.size
  }

  /** Drops the waiting and delayed tasks, and only their ids: a task in flight keeps its own. */
  async reset (): Promise<void> {
    for (const task of this.live.values()) this.drop(task)
    // The dropped tasks leave the due line now, not as a consumer reaches them: there may be none.
    this.due.prune()
  }

  /** Forgets a waiting or delayed task; false for a task in flight. */
  private drop (task: LiveTask): boolean {
    if (task.state === 'waiting') {
      this.dueCount--
    } else if (task.state === 'delayed') {
      clearTimeout(task.timer)
      this.delayedCount--
    } else {
      return false
    }
    // A waiting one stays in the due list, skipped when it reaches the head.
    task.state = 'cancelled'
    this.live.delete(task.message.id)
    return true
  }

  async stats (): Promise<QueueStats> {
    return {
      waiting: this.dueCount,
      delayed: this.delayedCount,
      inFlight: this.inFlightCount,
      dead: this.deadLetters.length,
      paused: this.paused,
      oldestWaitingAge: this.oldestWaitingAge()
    }
  }

  /** From the head of each line: the ungrouped tasks and every group's. */
  private oldestWaitingAge (): number | null {
    let oldest = Infinity
    for (const task of this.due.heads()) oldest = Math.min(oldest, task.message.eta)
    return oldest === Infinity ? null : Math.max(0, Date.now() - oldest)
  }

  async pause (): Promise<void> {
    this.paused = true
  }

  async resume (): Promise<void> {
    this.paused = false
    // Receivers that waited while the queue was paused get the tasks that came meanwhile.
    this.serveWaiters()
  }

  async isPaused (): Promise<boolean> {
    return this.paused
  }

  async get (id: string): Promise<TaskInfo | null> {
    const task = this.live.get(id)
    if (task !== undefined) return infoOf(task.message, task.state as TaskState)
    const letter = this.deadById.get(id)
    return letter === undefined ? null : infoOf(letter.task as TaskMessage, 'dead')
  }

  async cancel (id: string): Promise<boolean> {
    const task = this.live.get(id)
    return task !== undefined && this.drop(task)
  }

  async waiting ({ offset = 0, limit = 100 }: TaskPage = {}): Promise<TaskInfo[]> {
    const page: TaskInfo[] = []
    let skipped = 0
    for (const task of this.due.values()) {
      if (page.length >= limit) break
      if (skipped++ < offset) continue
      page.push(infoOf(task.message, 'waiting'))
    }
    return page
  }

  async dead ({ offset = 0, limit = 100 }: DeadLetterPage = {}): Promise<DeadLetter[]> {
    const newestFirst = this.deadLetters.length - 1 - offset
    const page: DeadLetter[] = []
    for (let index = newestFirst; index >= 0 && page.length < limit; index--) page.push(this.deadLetters[index])
    return page
  }

  async requeue (id?: string): Promise<number> {
    // A named task whose id is live (or put back just before, oldest first) stays dead, as on
    // Redis: it was removed from the dead letters, counted, and then dropped by put().
    const live = new Set<string>()
    const chosen = this.deadLetters.filter((letter) => {
      if (id !== undefined && letter.id !== id) return false
      if ((letter.task as TaskMessage).named !== true) return true
      if (this.live.has(letter.id as string) || live.has(letter.id as string)) return false
      live.add(letter.id as string)
      return true
    })
    if (chosen.length === 0) return 0
    this.deadLetters = this.deadLetters.filter((letter) => !chosen.includes(letter))
    for (const letter of chosen) if (this.deadById.get(letter.id as string) === letter) this.deadById.delete(letter.id as string)
    const now = Date.now()
    await this.put(chosen.map(({ task }) => ({ ...task as TaskMessage, retries: 0, eta: now })))
    return chosen.length
  }

  async purge (): Promise<number> {
    const count = this.deadLetters.length
    this.deadLetters = []
    this.deadById.clear()
    return count
  }

  async close (): Promise<void> {
    this.rate?.close()
    for (const task of this.live.values()) if (task.state === 'delayed') clearTimeout(task.timer)
  }
}

class LocalReceiver implements TaskReceiver {
  private readonly queue: LocalQueue

  constructor (queue: LocalQueue) {
    this.queue = queue
  }

  reserve (signal: AbortSignal): Promise<ReservedTask | null> {
    return this.queue.reserve(signal)
  }

  async ack (task: ReservedTask): Promise<void> {
    this.queue.settled(task.message)
  }

  async retry (task: ReservedTask, delayMs: number): Promise<void> {
    this.queue.settled(task.message)
    this.queue.later({ ...task.message, retries: task.message.retries + 1, eta: Date.now() + delayMs }, delayMs)
  }

  async release (task: ReservedTask): Promise<void> {
    this.queue.settled(task.message)
    this.queue.release(task.message)
  }

  async bury (task: ReservedTask, cause: DeadLetterCause): Promise<void> {
    this.queue.settled(task.message)
    this.queue.bury(task.message, cause)
  }

  async close (): Promise<void> {}
}
