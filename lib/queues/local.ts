// The local queue: in-process and volatile. Tasks wait in memory until a consumer of this process
// takes them; whatever is still waiting when the process ends is lost, by design.
import type { QueueBackend, ReservedTask, TaskMessage, TaskReceiver } from '../../types'

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

  clear (): void {
    this.items = []
    this.head = 0
  }
}

type Waiter = (message: TaskMessage) => void

export class LocalQueue implements QueueBackend {
  readonly shared = false
  private readonly waiting = new Fifo<TaskMessage>()
  /** Receivers waiting for a task, oldest first. */
  private readonly waiters = new Fifo<Waiter>()
  /** Tasks handed to a receiver and not yet settled by it. */
  reserved = 0
  /** Retries waiting for their delay, by timer. */
  private readonly delayed = new Map<NodeJS.Timeout, TaskMessage>()

  constructor (readonly name: string) {}

  /** Tasks waiting, including retries waiting for their delay. */
  get size (): number { return this.waiting.size + this.delayed.size }

  async put (tasks: readonly TaskMessage[]): Promise<void> {
    for (const task of tasks) this.offer(task)
  }

  private offer (task: TaskMessage): void {
    const waiter = this.waiters.shift()
    if (waiter === undefined) this.waiting.push(task)
    else waiter(task)
  }

  take (signal: AbortSignal): Promise<ReservedTask | null> {
    const message = this.waiting.shift()
    if (message !== undefined) {
      this.reserved++
      return Promise.resolve({ message })
    }
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
        this.reserved++
        resolve({ message: task })
      }
      signal.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(waiter)
    })
  }

  /** A reserved task was settled by its receiver. */
  settled (): void {
    this.reserved--
  }

  putBack (message: TaskMessage): void {
    const waiter = this.waiters.shift()
    if (waiter === undefined) this.waiting.unshift(message)
    else waiter(message)
  }

  later (message: TaskMessage, delayMs: number): void {
    const timer = setTimeout(() => {
      this.delayed.delete(timer)
      this.offer(message)
    }, delayMs)
    // A pending retry must not keep the process alive on its own: the queue is volatile anyway.
    timer.unref()
    this.delayed.set(timer, message)
  }

  receive (): TaskReceiver {
    return new LocalReceiver(this)
  }

  async length (): Promise<number> {
    return this.size
  }

  async reset (): Promise<void> {
    this.waiting.clear()
    for (const timer of this.delayed.keys()) clearTimeout(timer)
    this.delayed.clear()
  }

  async close (): Promise<void> {
    for (const timer of this.delayed.keys()) clearTimeout(timer)
  }
}

class LocalReceiver implements TaskReceiver {
  constructor (private readonly queue: LocalQueue) {}

  reserve (signal: AbortSignal): Promise<ReservedTask | null> {
    return this.queue.take(signal)
  }

  async ack (): Promise<void> {
    this.queue.settled()
  }

  async retry (task: ReservedTask, delayMs: number): Promise<void> {
    this.queue.settled()
    this.queue.later({ ...task.message, retries: task.message.retries + 1 }, delayMs)
  }

  async release (task: ReservedTask): Promise<void> {
    this.queue.settled()
    this.queue.putBack(task.message)
  }

  async close (): Promise<void> {}
}
