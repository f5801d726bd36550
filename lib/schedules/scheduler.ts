// The schedules of an app: each adds a task to its queue at every tick of its cron expression. A
// timer per schedule waits for its next tick (at most the longest wait of a Node timer at a
// time), adds the task of the latest tick due when it fires, and waits for the next one. The
// timers start when the app is ready and stop as it begins to close; they never keep it alive.
//
// Once per tick: this process never adds a tick that is not later than the last one it added, and
// a backend with `putTick` (Redis) keeps that record for every instance that shares the queue,
// atomically with the add (see lib/queues/redis/scripts/add-tick.lua).
import type { FastifyBaseLogger } from 'fastify'
import type { Cron } from 'croner'
import type { AddOptions, QueueBackend, ScheduleInfo, TaskMessage } from '../../types'
import type { ResolvedSchedule } from '../options'
import { InvalidOptionError, ScheduleFailedError } from '../errors'
import { parseCron } from './check'

/** A Node timer fires a longer wait after 1 ms: a far tick is waited for in steps of this. */
const longestTimer = 2 ** 31 - 1

/** Most ticks stepped over one by one when the process was held up; past it, croner finds the latest. */
const stepLimit = 10_000

/** The task id of a tick: `schedule:<name>:<tick as ISO 8601>`, made of the characters of an id. */
export function tickTaskId (name: string, tick: number): string {
  return `schedule:${name}:${new Date(tick).toISOString()}`
}

/** What the scheduler needs of `app.taskqueue`. */
export interface ScheduleHost {
  log: FastifyBaseLogger
  /** Makes a task message as `app.taskqueue.add()` does (no request to inherit from). */
  createMessage: (url: string, options: AddOptions) => TaskMessage
  backend: (queue: string) => QueueBackend
  /** Publishes the task as added (channels, metrics). */
  enqueued: (message: TaskMessage) => void
}

interface Entry {
  readonly schedule: ResolvedSchedule
  readonly cron: Cron
  /** The next tick this process waits for (ms), or null when the cron has none left. */
  next: number | null
  timer: NodeJS.Timeout | undefined
  /** The last tick this process added or saw added (ms); 0 before the first. */
  lastTick: number
}

export class Scheduler {
  private readonly entries = new Map<string, Entry>()
  private readonly host: ScheduleHost
  private state: 'idle' | 'running' | 'stopped' = 'idle'
  /** The adds on their way, awaited at close. */
  private readonly pending = new Set<Promise<void>>()

  /**
   * Checks each schedule's task as add() would check it (url, params, headers, payload), and
   * throws FST_TASKQUEUE_INVALID_OPTION naming the schedule when add() would refuse it.
   */
  constructor (schedules: readonly ResolvedSchedule[], host: ScheduleHost) {
    this.host = host
    schedules.forEach((schedule, index) => {
      try {
        host.createMessage(schedule.url, this.addOptions(schedule, Date.now()))
      } catch (error) {
        const { message, code } = error as { message: string, code?: string }
        const field = code === 'FST_TASKQUEUE_INVALID_URL' ? 'url' : /^Invalid task argument: (header|payload)/.exec(message)?.[1].replace('header', 'headers')
        const where = `schedules[${index}] (${JSON.stringify(schedule.name)})${field === undefined ? '' : `.${field}`}`
        throw new InvalidOptionError(`${where}: ${message}`)
      }
      this.entries.set(schedule.name, { schedule, cron: parseCron(schedule), next: null, timer: undefined, lastTick: 0 })
    })
  }

  private addOptions (schedule: ResolvedSchedule, tick: number): AddOptions {
    const { method, params, headers, payload, queue, name } = schedule
    return { method, params, headers, payload: payload ?? null, queue, id: tickTaskId(name, tick) }
  }

  /** Starts the timers (the app is ready). */
  start (): void {
    this.state = 'running'
    const now = Date.now()
    for (const entry of this.entries.values()) this.arm(entry, now)
  }

  /** Stops the timers for good (the app begins to close); an add on its way carries on. */
  stop (): void {
    this.state = 'stopped'
    for (const entry of this.entries.values()) {
      clearTimeout(entry.timer)
      entry.timer = undefined
      entry.next = null
    }
  }

  /** Resolves once the adds on their way have settled. */
  async settled (): Promise<void> {
    await Promise.allSettled([...this.pending])
  }

  /** The schedules with their next tick: null once stopped; before start, the next from now. */
  list (): ScheduleInfo[] {
    return [...this.entries.values()].map(({ schedule, cron, next }) => {
      const nextRun = this.state === 'running' ? (next === null ? null : new Date(next)) : this.state === 'idle' ? cron.nextRun() : null
      return { name: schedule.name, cron: schedule.cron, timezone: schedule.timezone, queue: schedule.queue, nextRun }
    })
  }

  /** Waits for the first tick after `after` (ms). */
  private arm (entry: Entry, after: number): void {
    entry.next = entry.cron.nextRun(new Date(after))?.getTime() ?? null
    if (entry.next !== null) this.wait(entry)
  }

  private wait (entry: Entry): void {
    const delay = Math.min(Math.max(0, (entry.next as number) - Date.now()), longestTimer)
    entry.timer = setTimeout(() => { this.fire(entry) }, delay)
    entry.timer.unref()
  }

  private fire (entry: Entry): void {
    entry.timer = undefined
    if (this.state !== 'running' || entry.next === null) return
    const now = Date.now()
    // A wait cut to the longest timer, or a timer that fired a little early: wait on.
    if (now < entry.next) {
      this.wait(entry)
      return
    }
    const tick = this.latestDue(entry, entry.next, now)
    this.arm(entry, now)
    const adding: Promise<void> = this.addTick(entry.schedule.name, tick).then(() => {}, (error: unknown) => {
      const { name, queue } = entry.schedule
      const failure = new ScheduleFailedError(name, new Date(tick).toISOString(), queue, (error as Error)?.message ?? String(error), { cause: error })
      this.host.log.error({ err: failure, schedule: name, queue }, 'taskqueue: the task of a schedule\'s tick could not be added; the schedule goes on with its next tick')
    }).finally(() => { this.pending.delete(adding) })
    this.pending.add(adding)
  }

  /**
   * The latest tick due by `now`, from the first one missed (`first`): a process held up past
   * several ticks (a blocked event loop, a machine asleep) adds only the latest, never a backlog.
   */
  private latestDue (entry: Entry, first: number, now: number): number {
    let tick = first
    for (let step = 0; step < stepLimit; step++) {
      const next = entry.cron.nextRun(new Date(tick))?.getTime()
      if (next === undefined || next > now) return tick
      tick = next
    }
    return entry.cron.previousRuns(1, new Date(now + 1))[0]?.getTime() ?? tick
  }

  /**
   * Adds the task of `tick` of schedule `name`, unless this process, or (with `putTick`) any
   * instance sharing the queue, added that tick or a later one already. Resolves to whether it
   * added it. Called by the timers; a test calls it to play an instance that ticks late.
   */
  async addTick (name: string, tick: number): Promise<boolean> {
    const entry = this.entries.get(name)
    if (entry === undefined) throw new Error(`no schedule named ${JSON.stringify(name)}`)
    if (tick <= entry.lastTick) return false
    // Recorded before the add: a failed add is not tried again, the next tick is.
    entry.lastTick = tick
    const { schedule } = entry
    const message = this.host.createMessage(schedule.url, this.addOptions(schedule, tick))
    message.schedule = { name, tick }
    message.eta = tick
    const backend = this.host.backend(schedule.queue)
    const added = backend.putTick === undefined ? await backend.put([message]).then(() => true) : await backend.putTick(message)
    if (added) this.host.enqueued(message)
    this.host.log.debug({ schedule: name, queue: schedule.queue, taskId: message.id, added }, added ? 'taskqueue: added the task of a schedule\'s tick' : 'taskqueue: the tick of the schedule was added already, by another instance')
    return added
  }
}
