// The local queue: in-process and volatile. Tasks wait in memory until a consumer of this process
// reserves them; whatever is still waiting when the process ends is lost, by design.
import type { FastifyBaseLogger } from 'fastify'
import type { DeadLetter, DeadLetterCause, DeadLetterPage, QueueBackend, ReservedTask, TaskMessage, TaskReceiver } from '../../types'

/** A FIFO that takes from the front in constant time, without Array#shift's copying. */
class Fifo<T> {
  private items: Array<T | undefined> = []
  private head = 0

  get size (): number { return this.items.length - this.head }

  push (item: T): void { this.items.push(item) }

  unshift (item: T): void {
    if (this.head > 0) this.items[--this.head] = item
    else this.items.unshift(item)
  }

  shift (): T | undefined {
    if (this.head === this.items.length) return undefined
    const item = this.items[this.head]
    this.items[this.head++] = undefined
    // Give the consumed front back once it is most of the array.
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return item
  }
}

type Waiter = (message: TaskMessage) => void

/** The longest delay a Node timer takes as it is. */
const longestTimer = 2 ** 31 - 1

export class LocalQueue implements QueueBackend {
  readonly name: string
  readonly shared = false
  private readonly deadLetterMax: number
  private readonly log: FastifyBaseLogger | undefined
  private readonly waiting = new Fifo<TaskMessage>()
  /** Receivers waiting for a task, oldest first. */
  private readonly waiters = new Fifo<Waiter>()
  /** Tasks waiting for their eta (a delay or a retry), by timer. */
  private readonly delayed = new Map<NodeJS.Timeout, TaskMessage>()
  /** Ids of named tasks that are waiting, delayed or in flight. */
  private readonly liveNames = new Set<string>()
  /** Oldest first; bounded by `deadLetterMax`. */
  private deadLetters: DeadLetter[] = []

  constructor (name: string, deadLetterMax: number, log?: FastifyBaseLogger) {
    this.name = name
    this.deadLetterMax = deadLetterMax
    this.log = log
  }

  /** Tasks waiting, including those waiting for their eta. */
  get size (): number { return this.waiting.size + this.delayed.size }

  async put (tasks: readonly TaskMessage[]): Promise<void> {
    const now = Date.now()
    for (const task of tasks) {
      if (task.named === true) {
        if (this.liveNames.has(task.id)) continue
        this.liveNames.add(task.id)
      }
      if (task.eta > now) this.later(task, task.eta - now)
      else this.offer(task)
    }
  }

  private offer (task: TaskMessage): void {
    const waiter = this.waiters.shift()
    if (waiter === undefined) this.waiting.push(task)
    else waiter(task)
  }

  /** Hands the oldest waiting task to a consumer, or waits for one until `signal` aborts. */
  reserve (signal: AbortSignal): Promise<ReservedTask | null> {
    const message = this.waiting.shift()
    if (message !== undefined) return Promise.resolve({ message })
    if (signal.aborted) return Promise.resolve(null)
    return new Promise((resolve) => {
      const onAbort = (): void => {
        // The waiter stays in the list but no longer resolves anything; hand its task on.
        active = false
        resolve(null)
      }
      let active = true
      const waiter: Waiter = (task) => {
        if (!active) {
          this.offer(task)
          return
        }
        signal.removeEventListener('abort', onAbort)
        resolve({ message: task })
      }
      signal.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(waiter)
    })
  }

  /** A reserved task was settled by its receiver; `finished` when it will not run again. */
  settled (message: TaskMessage, finished: boolean): void {
    if (finished && message.named === true) this.liveNames.delete(message.id)
  }

  /** Puts a reserved task back at the head of the queue, unchanged: it is next in line. */
  release (message: TaskMessage): void {
    const waiter = this.waiters.shift()
    if (waiter === undefined) this.waiting.unshift(message)
    else waiter(message)
  }

  later (message: TaskMessage, delayMs: number): void {
    // Node runs a timer of more than 2^31 - 1 ms (about 24.8 days) after 1 ms instead: a longer
    // wait is made of several timers.
    const wait = Math.min(delayMs, longestTimer)
    const timer = setTimeout(() => {
      this.delayed.delete(timer)
      if (wait < delayMs) this.later(message, delayMs - wait)
      else this.offer(message)
    }, wait)
    // Not unref()'d: a script awaiting drain() must stay alive for its retries; close() clears it.
    this.delayed.set(timer, message)
  }

  bury (message: TaskMessage, cause: DeadLetterCause): void {
    this.deadLetters.push({ id: message.id, queue: this.name, ...cause, at: Date.now(), task: message })
    if (this.deadLetters.length > this.deadLetterMax) {
      const dropped = this.deadLetters.splice(0, this.deadLetters.length - this.deadLetterMax)
      this.log?.warn({ queue: this.name, taskIds: dropped.map(({ id }) => id) }, 'taskqueue: dead letters over deadLetterMax dropped, oldest first')
    }
  }

  receive (): TaskReceiver {
    return new LocalReceiver(this)
  }

  async length (): Promise<number> {
    return this.size
  }

  /** Drops the waiting and delayed tasks, and only their names: a task in flight keeps its own. */
  async reset (): Promise<void> {
    for (let task = this.waiting.shift(); task !== undefined; task = this.waiting.shift()) this.forget(task)
    for (const [timer, task] of this.delayed) {
      clearTimeout(timer)
      this.forget(task)
    }
    this.delayed.clear()
  }

  private forget (task: TaskMessage): void {
    if (task.named === true) this.liveNames.delete(task.id)
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
    const live = new Set(this.liveNames)
    const chosen = this.deadLetters.filter((letter) => {
      if (id !== undefined && letter.id !== id) return false
      if ((letter.task as TaskMessage).named !== true) return true
      if (live.has(letter.id as string)) return false
      live.add(letter.id as string)
      return true
    })
    if (chosen.length === 0) return 0
    this.deadLetters = this.deadLetters.filter((letter) => !chosen.includes(letter))
    const now = Date.now()
    await this.put(chosen.map(({ task }) => ({ ...task as TaskMessage, retries: 0, eta: now })))
    return chosen.length
  }

  async purge (): Promise<number> {
    const count = this.deadLetters.length
    this.deadLetters = []
    return count
  }

  async close (): Promise<void> {
    for (const timer of this.delayed.keys()) clearTimeout(timer)
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
    this.queue.settled(task.message, true)
  }

  async retry (task: ReservedTask, delayMs: number): Promise<void> {
    this.queue.settled(task.message, false)
    this.queue.later({ ...task.message, retries: task.message.retries + 1, eta: Date.now() + delayMs }, delayMs)
  }

  async release (task: ReservedTask): Promise<void> {
    this.queue.settled(task.message, false)
    this.queue.release(task.message)
  }

  async bury (task: ReservedTask, cause: DeadLetterCause): Promise<void> {
    this.queue.settled(task.message, true)
    this.queue.bury(task.message, cause)
  }

  async close (): Promise<void> {}
}
